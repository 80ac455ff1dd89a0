"""The header-rewriting hook the proxy benchmark loads with ``-s bench/hooks_rewrite.py``.

It adds one response header, so every response's header block is decoded,
changed and HPACK-encoded again: the cost of the common "tag the traffic" hook.
"""
SERVER_TO_CLIENT = "server->client"


class AddResponseHeader:
    def on_headers(self, ctx, frame, headers):
        if ctx.direction == SERVER_TO_CLIENT:
            return list(headers) + [("x-bench-proxy", "h2proxy")]
        return None
