"""Named decoding of gRPC messages from a FileDescriptorSet (``--proto-descriptor``).

A descriptor set is what ``protoc --include_imports --descriptor_set_out=FILE``
or ``buf build -o FILE`` writes: the compiled ``.proto`` files. With it, a
method path (``/package.Service/Method``) gives the request and response
message types, and messages decode to named fields as JSON. This needs the
``protobuf`` package (``pip install 'h2proxy[grpc]'``); without it, loading a
descriptor set fails with a message that says so, and everything else works
with the schema-less decoder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple


class SchemaError(ValueError):
    """The descriptor set cannot be used (missing package, unreadable or malformed file)."""


class Schema:
    """The services and message types of one descriptor set."""

    def __init__(self, path) -> None:
        self.path = str(path)
        try:
            from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        except ImportError:
            raise SchemaError(f"--proto-descriptor {self.path}: needs the protobuf package "
                              f"(pip install 'h2proxy[grpc]')") from None
        try:
            blob = Path(path).read_bytes()
        except OSError as exc:
            raise SchemaError(f"--proto-descriptor {self.path}: cannot read it: {exc.strerror or exc}") from None
        fds = descriptor_pb2.FileDescriptorSet()
        try:
            fds.ParseFromString(blob)
        except Exception as exc:
            raise SchemaError(f"--proto-descriptor {self.path}: not a FileDescriptorSet ({exc})") from None
        if not fds.file:
            raise SchemaError(f"--proto-descriptor {self.path}: the descriptor set holds no files "
                              f"(is it a FileDescriptorSet, as protoc --descriptor_set_out writes?)")
        self._pool = descriptor_pool.DescriptorPool()
        pending = list(fds.file)
        # Add files once their dependencies are in (a set need not be in dependency order).
        added: set = set()
        while pending:
            progress = False
            for f in list(pending):
                if all(dep in added for dep in f.dependency):
                    try:
                        self._pool.Add(f)
                    except Exception as exc:
                        raise SchemaError(f"--proto-descriptor {self.path}: file {f.name}: {exc}") from None
                    added.add(f.name)
                    pending.remove(f)
                    progress = True
            if not progress:
                missing = sorted({d for f in pending for d in f.dependency if d not in added})
                raise SchemaError(f"--proto-descriptor {self.path}: imports missing from the set: "
                                  f"{', '.join(missing)} (build it with protoc --include_imports)")
        self._factory = message_factory
        self._methods: Dict[str, Tuple[Any, Any]] = {}
        for f in fds.file:
            fd = self._pool.FindFileByName(f.name)
            for service in fd.services_by_name.values():
                for m in service.methods:
                    self._methods[f"/{service.full_name}/{m.name}"] = (m.input_type, m.output_type)
        self._classes: Dict[str, Any] = {}

    @property
    def methods(self) -> Dict[str, Tuple[str, str]]:
        """Method path -> (request type, response type) full names."""
        return {k: (i.full_name, o.full_name) for k, (i, o) in self._methods.items()}

    def message_type(self, path: Optional[str], request: bool):
        """The message class of a method's requests (``request``) or responses, or None when unknown."""
        if not path:
            return None
        types = self._methods.get(path.split("?", 1)[0])
        if types is None:
            return None
        desc = types[0] if request else types[1]
        cls = self._classes.get(desc.full_name)
        if cls is None:
            cls = self._classes[desc.full_name] = self._factory.GetMessageClass(desc)
        return cls

    def decode(self, path: Optional[str], request: bool, data: bytes) -> Optional[dict]:
        """The message as a JSON-able dict of named fields; None when the method is not in the set.

        Raises :class:`SchemaError` when the bytes do not parse as that type.
        """
        cls = self.message_type(path, request)
        if cls is None:
            return None
        from google.protobuf import json_format
        msg = cls()
        try:
            msg.ParseFromString(bytes(data))
        except Exception as exc:
            raise SchemaError(f"not a {cls.DESCRIPTOR.full_name}: {exc}") from None
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)

    def encode(self, path: Optional[str], request: bool, value: dict) -> bytes:
        """A dict of named fields (as :meth:`decode` gives) as message bytes."""
        cls = self.message_type(path, request)
        if cls is None:
            raise SchemaError(f"method {path} is not in {self.path}")
        from google.protobuf import json_format
        try:
            return json_format.ParseDict(value, cls()).SerializeToString()
        except Exception as exc:
            raise SchemaError(f"cannot encode {cls.DESCRIPTOR.full_name}: {exc}") from None


_loaded: Dict[str, Schema] = {}


def load_schema(path) -> Schema:
    """A :class:`Schema`, loaded once per path per process."""
    key = str(path)
    schema = _loaded.get(key)
    if schema is None:
        schema = _loaded[key] = Schema(path)
    return schema
