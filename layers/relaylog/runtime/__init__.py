"""Running the relay on AWS Lambda with streamed responses, without a binary adapter.

`events` turns a Function URL event into an ASGI request, `invoke` runs the app for one event into
any `ResponseStream`, `runtime_api` is the Lambda Runtime API transport (streamed responses with
error trailers), `invocations` serves one invocation under its deadline, `loop` is the invocation
loop (one at a time), `pollers` serves many at once (Lambda Managed Instances), `context` says which
invocation the running code serves, `buffered` is the plain-handler fallback, `factory` says which
app both serve.
"""
