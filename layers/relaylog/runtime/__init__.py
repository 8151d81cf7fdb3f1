"""Running the relay on AWS Lambda with streamed responses, without a binary adapter.

`events` turns a Function URL event into an ASGI request, `invoke` runs the app for one event into
any `ResponseStream`, `runtime_api` is the Lambda Runtime API transport (streamed responses with
error trailers), `loop` is the invocation loop, `buffered` the plain-handler fallback, `factory`
says which app both serve.
"""
