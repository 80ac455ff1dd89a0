"""Rewrite one field of every gRPC request: field 1 (a string) gets the prefix "via-proxy-".

Works without the .proto: the message is parsed and rebuilt with the
schema-less wire-format helpers. (With --proto-descriptor, ``message.decoded``
gives named fields, and returning a changed dict re-encodes it.)

    h2proxy --upstream h2c://127.0.0.1:50051 -s docs/examples/grpc_rename.py
"""
from proxy.grpc.protowire import LEN, encode_fields
from proxy.hooks.api import Hook


class RenameRequests(Hook):
    name = "grpc-rename"

    def __init__(self, prefix: str = "via-proxy-"):
        super().__init__(prefix=prefix)
        self.prefix = prefix
        self.changed = 0

    def on_grpc_message(self, ctx, message):
        if not message.is_request:
            return None                          # responses unchanged
        fields = message.fields()
        for f in fields:
            if f.number == 1 and f.wire_type == LEN and isinstance(f.value, str):
                f.value = self.prefix + f.value
                self.changed += 1
        return encode_fields(fields)             # the new message bytes
