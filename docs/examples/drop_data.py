"""Drop some DATA frames in the middle of a response, as a lossy middlebox would.

The frame that ends the stream is never dropped, so the stream still ends and
the client sees a body shorter than its content-length. The proxy gives the
sender back the flow-control window the dropped frames used, so the download
does not stall.

    h2proxy --upstream h2c://127.0.0.1:9000 -s docs/examples/drop_data.py
"""
from proxy.hooks.api import SERVER_TO_CLIENT, Hook


class DropData(Hook):
    name = "drop-data"

    def __init__(self, after_bytes: int = 1 << 20, frames: int = 10):
        super().__init__(after_bytes=after_bytes, frames=frames)
        self.after_bytes = after_bytes     # let this much of each stream through first
        self.frames = frames               # then drop this many frames per stream
        self.streams = {}                  # (connection, stream) -> [bytes forwarded, frames dropped]
        self.dropped = 0
        self.dropped_bytes = 0

    def on_data(self, ctx, frame):
        if ctx.direction != SERVER_TO_CLIENT or "END_STREAM" in frame.flags:
            return None
        state = self.streams.setdefault((ctx.conn.id, frame.stream_id), [0, 0])
        if state[0] >= self.after_bytes and state[1] < self.frames:
            state[1] += 1
            self.dropped += 1
            self.dropped_bytes += len(frame.data)
            return []                      # drop it
        state[0] += len(frame.data)
        return None

    def stream_closed(self, ctx, stream):
        self.streams.pop((ctx.conn.id, stream.id), None)
