"""h2proxy: a frame-level HTTP/2 man-in-the-middle proxy."""
__version__ = "0.1.0"
