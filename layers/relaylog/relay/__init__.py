"""The relay: ASGI app, upstream client, stream handling."""
