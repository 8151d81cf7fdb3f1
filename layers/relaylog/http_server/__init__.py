"""relaylog serve's HTTP/1.1 server protocol: httptools parsing, each request an ASGI 3 call.

uvicorn still runs the server (sockets, workers, signals, lifespan, graceful shutdown); this is
the protocol it is given as `http=`, in place of its own httptools protocol. That one does per
request what a proxy pays for on every call and does not need: an asyncio.Event and a cycle
object of a dozen fields, two regular expressions per response header, a keep-alive timer made
and cancelled per request. Here a request is one small object (`request.Request`) whose receive
waits on a plain future, a response head is checked for line breaks once as a whole, and one
timer per connection keeps every deadline. The response head is held until the first body bytes
(or the end of this pass of the event loop), so a whole response leaves in one write.

It keeps what relaylog relies on from a server: keep-alive with its timeout, pipelined requests
answered in order, `Expect: 100-continue`, request bodies streamed with read back-pressure,
write back-pressure, `http.disconnect` once the client is gone (or the response is complete), a
500 for an app that fails before answering and a cut connection for one that fails after, and
graceful shutdown through uvicorn's server state. It also bounds the request head, which uvicorn
does not (`connection.HeadLimits`).
"""

from .connection import HeadLimits, HttpProtocol

__all__ = ["HeadLimits", "HttpProtocol"]
