"""What relaylog needs to run on AWS: where things live (`layout`), clients created once per process,
Athena, the stack's outputs and the proxy function's app. The AWS implementations of the gateway's
stores and of the key store live beside their interfaces (`gateway/cache/`, `gateway/counters/`,
`keys/`)."""
