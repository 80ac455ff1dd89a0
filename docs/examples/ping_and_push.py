"""Answer requests for /ping-me with a PING towards the client, and push /hello.txt with /.

Shows ``ctx.inject`` and ``ctx.push``; a module-level ``hooks`` list is what
``-s file.py`` loads when the file defines one.

    h2proxy --upstream h2c://127.0.0.1:9000 -s docs/examples/ping_and_push.py
"""
from framecodec.frame import PingFrame
from proxy.hooks.api import CLIENT_TO_SERVER, SERVER_TO_CLIENT


class PingOnRequest:
    name = "ping-on-request"

    def on_headers(self, ctx, frame, headers):
        if ctx.direction == CLIENT_TO_SERVER and (":path", "/ping-me") in headers:
            ctx.inject(PingFrame(0, opaque_data=b"h2proxy!"), direction=SERVER_TO_CLIENT)
        return None


class PushHello:
    name = "push-hello"

    def __init__(self):
        self.results = []

    def on_headers(self, ctx, frame, headers):
        # On the response, so that the PUSH_PROMISE goes out before the response HEADERS.
        if ctx.direction == SERVER_TO_CLIENT and ctx.request_headers and (":path", "/") in ctx.request_headers:
            result = ctx.push("/hello.txt", [("content-type", "text/plain")], b"hello from the proxy\n")
            self.results.append(result)    # PushStarted(stream_id) or PushRefused(reason)
        return None


hooks = [PingOnRequest(), PushHello()]
