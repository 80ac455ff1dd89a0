"""Helpers for testing HTTP/2 clients and servers through h2proxy."""
