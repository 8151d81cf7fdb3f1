"""What relaylog needs to run on AWS: where things live, and clients created once per process."""
