"""gRPC at the level of messages (sans-I/O): recognising calls, reassembling and decoding messages.

* :mod:`.framing`: the 5-byte length prefix, :class:`~.framing.MessageReader`, (de)compression;
* :mod:`.protowire`: a schema-less protobuf decoder (``protoc --decode_raw`` layout);
* :mod:`.schema`: named fields from a FileDescriptorSet (needs ``protobuf``: ``h2proxy[grpc]``);
* :mod:`.status`: status names and ``grpc-message`` percent-encoding;
* :mod:`.tracker`: ``grpc_message`` / ``grpc_call`` records from frame records (recording, ``-v``);
* :mod:`.hook`: ``on_grpc_message`` hooks and ``ctx.grpc_abort`` in the relay.
"""
from .calls import GrpcOptions, is_grpc_content_type, is_grpc_request, split_path
from .framing import DEFAULT_MAX_MESSAGE, Message, MessageReader, Oversized, frame_message
from .status import STATUS_CODES, STATUS_NAMES, percent_decode, percent_encode, status_name

__all__ = ["GrpcOptions", "is_grpc_content_type", "is_grpc_request", "split_path", "DEFAULT_MAX_MESSAGE",
           "Message", "MessageReader", "Oversized", "frame_message", "STATUS_CODES", "STATUS_NAMES",
           "percent_decode", "percent_encode", "status_name"]
