"""A gRPC hook that looks at every message and changes none: the cost of decoding in the relay.

    h2proxy --upstream h2c://127.0.0.1:50051 -s bench/grpc_passthrough.py
"""
from proxy.hooks.api import Hook


class SeeMessages(Hook):
    name = "see-messages"

    def __init__(self):
        super().__init__()
        self.seen = 0

    def on_grpc_message(self, ctx, message):
        self.seen += 1
        return None
