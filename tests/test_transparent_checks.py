"""What transparent mode checks, as docs/proxy.md ("What is checked") and README say (issue 13,
item 10): framing rules always; header block contents with decode_headers and strict mode, and
in the blocks a hook is handed (issue 16: blocks decoded only to keep the HPACK table in step for
a hook that wants other streams are forwarded unchecked, as in plain transparent mode). A raw-socket client sends a
request with an upper-case field name, one with a connection-specific field and a WINDOW_UPDATE
with increment 0 on a stream; the h2-library origin shows what was forwarded."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from framecodec import frame as fc
from proxy.faults import build_fault_hook
from proxy.hooks.chain import HookChain
from tests.rawpeers import Origin, RawClient, raw, req

ROOT = Path(__file__).resolve().parents[1]


async def _violations(proxy_factory, caplog, **kw) -> tuple:
    caplog.set_level(logging.INFO, logger="h2proxy")
    origin = await Origin().start()
    try:
        proxy = await proxy_factory(origin.url, **kw)
        client = await RawClient.connect(proxy.port)
        client.send(client.headers(1, req("/") + [("X-Upper", "1")]))
        client.send(client.headers(3, req("/") + [("connection", "close")]))
        client.send(raw(0x8, 0, 3, (0).to_bytes(4, "big")))            # WINDOW_UPDATE 0 on a stream (6.9)
        client.send(client.headers(5, req("/last")))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5

        def headers_received() -> list:      # (the h2 origin itself rejects the malformed ones: raw frames)
            return sorted(f.stream_id for c in origin.conns for f in c.frames() if isinstance(f, fc.HeadersFrame))
        while 5 not in headers_received():    # the last request reached the origin: all was handled
            assert loop.time() < deadline, headers_received()
            await asyncio.sleep(0.01)
        client.close()
        texts = [r.getMessage() for r in caplog.records if "violation by the client" in r.getMessage()]
        return texts, headers_received()
    finally:
        await origin.stop()


class _ReadsRequests:
    """A hook handed every request block (it only reads them)."""

    def on_headers(self, ctx, frame, headers):
        return None


@pytest.mark.parametrize("how", ["nothing installed", "fault rule on other streams"])
async def test_plain_transparent_mode_checks_framing_but_not_header_contents(proxy_factory, caplog, how):
    # A fault rule decodes the requests (to match paths) but acts on none of these streams: their
    # blocks are forwarded as in plain transparent mode, unchecked.
    kw = {} if how == "nothing installed" else \
        {"hooks": HookChain([build_fault_hook([], ["rst_stream path=/never/*"])])}
    texts, forwarded = await _violations(proxy_factory, caplog, **kw)
    assert len(texts) == 1 and "WINDOW_UPDATE" in texts[0] and "section 6.9" in texts[0], texts
    assert forwarded == [1, 3, 5]


@pytest.mark.parametrize("how", ["decode_headers", "hook reading requests"])
async def test_transparent_mode_reports_header_contents_where_headers_are_decoded(proxy_factory, caplog, how):
    kw = {"decode_headers": True} if how == "decode_headers" else {"hooks": HookChain([_ReadsRequests()])}
    texts, forwarded = await _violations(proxy_factory, caplog, **kw)
    assert any("'x-upper'" in t.lower() and "uppercase" in t and t.endswith("forwarded") for t in texts), texts
    assert any("connection-specific" in t and t.endswith("forwarded") for t in texts), texts
    assert any("WINDOW_UPDATE" in t for t in texts), texts
    assert forwarded == [1, 3, 5]


def test_the_docs_say_what_transparent_mode_checks():
    readme = (ROOT / "README.md").read_text()
    proxy_md = (ROOT / "docs" / "proxy.md").read_text()
    assert "## What is checked" in proxy_md and "What is checked" in readme
    assert "decode_headers = true" in readme
