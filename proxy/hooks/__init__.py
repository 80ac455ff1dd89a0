"""Hooks: user code that sees, changes, drops and injects frames in flight."""
from .api import CLIENT_TO_SERVER, SERVER_TO_CLIENT, Headers, Hook, HookContext, PushRefused, RawBytes

__all__ = ["Hook", "HookContext", "Headers", "RawBytes", "PushRefused",
           "CLIENT_TO_SERVER", "SERVER_TO_CLIENT"]
