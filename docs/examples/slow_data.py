"""Delay every DATA frame from the server by a few milliseconds (an async hook).

Awaiting holds the frame, and the frames behind it in the same direction,
back; the other direction keeps flowing.

    h2proxy --upstream h2c://127.0.0.1:9000 -s docs/examples/slow_data.py
"""
import asyncio

from proxy.hooks.api import SERVER_TO_CLIENT, Hook


class SlowData(Hook):
    name = "slow-data"

    def __init__(self, delay_ms: float = 5):
        super().__init__(delay_ms=delay_ms)
        self.delay = delay_ms / 1000
        self.delayed = 0

    async def on_data(self, ctx, frame):
        if ctx.direction == SERVER_TO_CLIENT:
            self.delayed += 1
            await asyncio.sleep(self.delay)
        return None
