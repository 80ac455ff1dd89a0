"""The sans-I/O heart of h2proxy: bytes in, bytes and commands out, no sockets, time passed in."""
