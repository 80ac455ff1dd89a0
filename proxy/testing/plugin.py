"""The pytest plugin h2proxy registers (entry point ``pytest11``)."""
