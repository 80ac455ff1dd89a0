"""Stamp every response with ``x-h2proxy-conn`` and drop the ``server`` header.

    h2proxy --upstream h2c://127.0.0.1:9000 -s docs/examples/stamp_header.py
"""
from proxy.hooks.api import SERVER_TO_CLIENT, Hook


class StampHeader(Hook):
    name = "stamp"

    def __init__(self, header: str = "x-h2proxy-conn"):
        super().__init__(header=header)
        self.header = header
        self.stamped = 0

    def on_headers(self, ctx, frame, headers):
        # headers is the whole decoded block; trailers have no ":status".
        if ctx.direction != SERVER_TO_CLIENT or not any(n == ":status" for n, _ in headers):
            return None                      # forward unchanged
        self.stamped += 1
        kept = [(n, v) for n, v in headers if n != "server"]
        return kept + [(self.header, str(ctx.conn.id))]   # the proxy HPACK-encodes it
