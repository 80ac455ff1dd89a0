"""The web view in a real browser: Debian's chromium driven by Playwright, while nghttp and h2load
go through a proxy started from the command line with --web.

Screenshots go to the run's artifacts directory ($H2PROXY_ARTIFACTS, else a pytest tmp dir); with
$H2PROXY_SCREENSHOTS set they are copied there too (that is how docs/images/web-*.png are made).
Without chromium or playwright these tests skip, except under CI=true, where they fail.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.peers import free_port, need, run
from tests.test_web_model import expected_fingerprint, grpc_say

pytestmark = pytest.mark.peers

CHROMIUM = os.environ.get("H2PROXY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 15000


def _require_browser() -> None:
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"chromium (looked for {CHROMIUM}; apt-get install chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[test]')")
    if missing:
        message = "the browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    given = os.environ.get("H2PROXY_ARTIFACTS")
    path = Path(given) / "web" if given else tmp_path_factory.mktemp("web-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
async def browser():
    _require_browser()
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def page(browser):
    # bypass_csp: the page forbids eval; Playwright's wait_for_function needs it in the test only
    ctx = await browser.new_context(viewport={"width": 1600, "height": 1000}, bypass_csp=True)
    pg = await ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    await ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


async def shot(page, artifacts: Path, name: str) -> Path:
    path = artifacts / name
    await page.evaluate("for (const id of ['center', 'right']) document.getElementById(id).scrollTop = 0")
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10000
    copy = os.environ.get("H2PROXY_SCREENSHOTS")
    if copy:
        Path(copy).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(copy) / name)
    return path


class CliProcess:
    """``python -m proxy.cli ARGS``; its stderr is read all along, :meth:`wait_for` waits for a pattern in it."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.text = ""
        self.proc = None
        self._changed = asyncio.Event()

    async def start(self) -> "CliProcess":
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy.cli", *self.args,
                                                         stdout=asyncio.subprocess.DEVNULL,
                                                         stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                break
            self.text += line.decode(errors="replace")
            self._changed.set()
        self._changed.set()

    async def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text)
            if m:
                return m
            if self.proc.returncode is not None or self._reader.done():
                raise AssertionError(f"h2proxy exited; its output:\n{self.text}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.05, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise AssertionError(f"no {pattern!r} within {timeout} s in:\n{self.text}") from None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader


async def _proxy(tmp_path, *extra):
    port = free_port()
    cli = await CliProcess("--listen", f"h2c://127.0.0.1:{port}", "--web", "127.0.0.1:0", "--web-stall", "500",
                           "--record", str(tmp_path / "frames.jsonl"), *extra).start()
    try:
        page_url = (await cli.wait_for(r"web view and admin API on (http://127\.0\.0\.1:\d+/#token=\S+)")).group(1)
        await cli.wait_for(r"listening on h2c://127\.0\.0\.1:\d+")
        yield cli, f"http://127.0.0.1:{port}", page_url
    finally:
        await cli.stop()


@pytest.fixture
async def proxy(tmp_path):
    """A proxy with --web (no fault hook) and its embedded demo origin: (CliProcess, proxy URL, page URL)."""
    async for running in _proxy(tmp_path):
        yield running


@pytest.fixture
async def proxy_faults(tmp_path):
    """The same with --admin too: a fault hook, so rules can be managed from the page."""
    async for running in _proxy(tmp_path, "--admin", "127.0.0.1:0"):
        yield running


async def open_page(page, url: str, badge: str = "live") -> None:
    await page.goto(url)
    await page.wait_for_function(f"document.getElementById('live').textContent === {badge!r}")


async def wait_rows(page, selector: str, n: int) -> None:
    await page.wait_for_function(f"document.querySelectorAll({selector!r}).length >= {n}")


async def select_conn(page, conn: int) -> None:
    await page.click(f"#conns tr.conn[data-conn='{conn}']")
    await page.wait_for_selector(f"#conn-detail h2:has-text('Connection {conn}')")


# ---------------------------------------------------------------- the tests

async def test_connections_streams_and_frames_appear_live_with_nghttps_fingerprint(proxy, page, artifacts):
    cli, url, page_url = proxy
    await open_page(page, page_url)
    assert await page.locator("#conns tr.conn").count() == 0          # nothing yet: what follows is live
    rc, out = await run(need("nghttp"), "-nv", f"{url}/size/50000")
    assert rc == 0, out
    rc, load = await run(need("h2load"), "-n", "100", "-c", "2", "-m", "4", f"{url}/size/100")
    assert rc == 0 and "100 succeeded" in load, load
    await wait_rows(page, "#conns tr.conn", 3)
    await page.wait_for_function("[...document.querySelectorAll('#frames tr.frame')].some(r => r.dataset.conn === '3')")
    # --web alone has no fault hook (it would slow every frame); the panel says how to get one
    assert "--admin" in await page.inner_text("#no-faults")
    await select_conn(page, 1)
    # the details refresh while records arrive: wait for the stream's end
    row = page.locator("#streams tr.stream", has_text="/size/50000").filter(has_text="END_STREAM")
    await row.wait_for()
    cells = await row.locator("td").all_inner_texts()
    assert cells[1:4] == ["GET", "/size/50000", "200"] and cells[7] == "END_STREAM", cells
    assert cells[5] == "48.8 KiB"
    assert await page.inner_text("#fp-client") == expected_fingerprint(out)
    assert (await page.inner_text("#fp-server")).endswith("|st")
    await row.click()
    await page.wait_for_selector("#stream-frames tr.frame[data-type='DATA']")
    kinds = await page.eval_on_selector_all(
        "#stream-frames tr.frame", "rows => rows.map(r => r.children[3].textContent + ' ' + r.children[4].textContent"
                                   " + ' ' + r.dataset.type)")
    assert {"client recv HEADERS", "upstream send HEADERS", "upstream recv DATA", "client send DATA"} <= set(kinds)
    await page.locator("#stream-frames tr.frame[data-type='HEADERS']").first.click()
    detail = page.locator("#stream-frames tr.frame-detail")
    await detail.wait_for()
    text = await detail.inner_text()
    assert ":path" in text and "/size/50000" in text and "00000000" in text        # headers and the hex dump
    await shot(page, artifacts, "web-live.png")


async def test_a_filter_narrows_the_lists(proxy, page, artifacts):
    cli, url, page_url = proxy
    await open_page(page, page_url)
    for path in ("/size/10", "/size/20"):
        rc, out = await run(need("nghttp"), "-n", f"{url}{path}")
        assert rc == 0, out
    rc, load = await run(need("h2load"), "-n", "20", "-c", "1", f"{url}/size/30")
    assert rc == 0, load
    await wait_rows(page, "#conns tr.conn", 3)
    await page.wait_for_function("[...document.querySelectorAll('#frames tr.frame')].some(r => r.dataset.conn === '3')")
    all_frames = await page.locator("#frames tr.frame").count()

    async def frame_attr(attr):
        return set(await page.eval_on_selector_all("#frames tr.frame", f"rows => rows.map(r => r.dataset.{attr})"))

    await page.fill("#f-conn", "2")
    await page.wait_for_function("document.querySelectorAll('#conns tr.conn').length === 1")
    assert await frame_attr("conn") == {"2"}
    assert await page.locator("#frames tr.frame").count() < all_frames
    await page.select_option("#f-type", "HEADERS")
    await page.wait_for_function("[...document.querySelectorAll('#frames tr.frame')]"
                                 ".every(r => r.dataset.type === 'HEADERS')")
    assert await frame_attr("type") == {"HEADERS"} and await frame_attr("conn") == {"2"}
    await page.click("#f-clear")
    await page.wait_for_function("document.querySelectorAll('#conns tr.conn').length === 3")
    await page.fill("#f-path", "/size/20")
    await page.wait_for_function("[...document.querySelectorAll('#frames tr.frame')]"
                                 ".every(r => r.dataset.conn === '2')")
    assert await frame_attr("conn") == {"2"} and await frame_attr("stream") == {"13"}
    await page.fill("#f-path", "")
    await page.fill("#f-status", "2xx")
    await select_conn(page, 3)
    await page.wait_for_function("document.querySelectorAll('#streams tr.stream').length === 20")
    await page.fill("#f-stream", "5")
    await page.wait_for_function("document.querySelectorAll('#streams tr.stream').length === 1")
    await page.fill("#f-stream", "")
    await page.check("#f-violations")
    await page.wait_for_function("document.querySelectorAll('#conns tr.conn').length === 0")
    await page.uncheck("#f-violations")
    await page.wait_for_function("document.querySelectorAll('#conns tr.conn').length === 3")
    await page.fill("#f-conn", "2")
    await page.select_option("#f-type", "HEADERS")
    await shot(page, artifacts, "web-filter.png")


async def test_a_fault_rule_added_from_the_page_resets_the_next_matching_stream(proxy_faults, page, artifacts):
    cli, url, page_url = proxy_faults
    await open_page(page, page_url)
    await page.fill("#fault-line", "rst_stream code=REFUSED_STREAM path=/size/77 type=headers direction=s2c "
                                   "towards=client")
    await page.fill("#fault-name", "refuse77")
    await page.click("#fault-add")
    rule = page.locator("#faults tr.fault[data-name='refuse77']")
    await rule.wait_for()
    rc, out = await run(need("nghttp"), "-nv", f"{url}/size/77")
    assert "error_code=REFUSED_STREAM(0x07)" in out, out
    rc, ok = await run(need("nghttp"), "-n", f"{url}/size/78")
    assert rc == 0 and "REFUSED" not in ok, ok
    await page.wait_for_function(
        "document.querySelector(\"#faults tr.fault[data-name='refuse77'] .fault-hits\").textContent === '1'")
    await wait_rows(page, "#conns tr.conn", 2)
    await select_conn(page, 1)
    stream = page.locator("#streams tr.stream", has_text="/size/77").filter(
        has_text="RST_STREAM REFUSED_STREAM from the proxy to client")
    await stream.wait_for()
    await stream.click()
    await page.wait_for_selector("#stream-frames tr.hook")
    await shot(page, artifacts, "web-faults.png")
    # disable from the page: the next matching stream goes through
    await rule.locator("input.fault-enabled").uncheck()
    await page.wait_for_function("document.querySelector(\"#faults tr.fault[data-name='refuse77'] input\") && "
                                 "!document.querySelector(\"#faults tr.fault[data-name='refuse77'] input\").checked")
    rc, out = await run(need("curl"), "-s", "-H", f"Authorization: Bearer {page_url.split('token=')[1]}",
                        page_url.split("/#")[0] + "/faults/refuse77")
    assert '"enabled": false' in out, out
    rc, ok = await run(need("nghttp"), "-n", f"{url}/size/77")
    assert rc == 0 and "REFUSED" not in ok, ok
    await rule.locator("button.fault-remove").click()
    await page.wait_for_function("!document.querySelector(\"#faults tr.fault[data-name='refuse77']\")")


async def test_a_stalled_download_shows_a_marked_stall_in_the_window_chart(proxy_faults, page, artifacts):
    cli, url, page_url = proxy_faults
    await open_page(page, page_url)
    await page.fill("#fault-line", "stall towards=server type=data direction=s2c ms=1500")
    await page.fill("#fault-name", "slow")
    await page.click("#fault-add")
    await page.locator("#faults tr.fault[data-name='slow']").wait_for()
    started = time.monotonic()
    rc, out = await run(need("nghttp"), "-n", f"{url}/size/300000")
    assert rc == 0, out
    assert time.monotonic() - started >= 1.4          # the download did wait for the window
    await wait_rows(page, "#conns tr.conn", 1)
    await select_conn(page, 1)
    await page.wait_for_selector("#conn-chart rect.stall[data-side='server']")
    row = page.locator("#conn-stalls tr.stall-row").filter(has_text="WINDOW_UPDATE").first
    await row.wait_for()
    cells = await row.locator("td").all_inner_texts()
    assert cells[0] == "server" and cells[1] == "13" and cells[4] == "WINDOW_UPDATE", cells
    assert 1300 <= int(cells[3].split()[0]) <= 5000, cells
    assert await page.locator("#conn-chart rect.stall[data-side='client']").count() == 0
    await page.click("#streams tr.stream[data-stream='13']")
    await page.wait_for_selector("#stream-chart rect.stall[data-side='server']")
    await page.wait_for_selector("#stream-chart path[data-side='server']")
    await shot(page, artifacts, "web-stall.png")


async def test_log_web_shows_a_recorded_log(proxy, page, artifacts, tmp_path):
    cli, url, page_url = proxy
    rc, out = await run(need("nghttp"), "-nv", f"{url}/size/1000", f"{url}/size/2000")
    assert rc == 0, out
    await cli.stop()                                 # the log is complete once the proxy stopped
    log = tmp_path / "frames.jsonl"
    viewer = await CliProcess("log", "web", str(log), "--listen", "127.0.0.1:0", "--token", "t0ken").start()
    try:
        m = await viewer.wait_for(r"web view of \S+ on (http://127\.0\.0\.1:\d+/#token=t0ken)")
        await open_page(page, m.group(1), badge="recorded log")
        await wait_rows(page, "#conns tr.conn", 1)
        assert "frames.jsonl" in await page.inner_text("#title")
        await select_conn(page, 1)
        assert await page.inner_text("#fp-client") == expected_fingerprint(out)
        await wait_rows(page, "#streams tr.stream", 2)
        await page.click("#streams tr.stream[data-stream='15']")
        await page.wait_for_selector("#stream-frames tr.frame[data-type='DATA']")
        assert "no proxy" in await page.inner_text("#faults-panel")
        await shot(page, artifacts, "web-log.png")
    finally:
        await viewer.stop()


async def test_a_grpcio_client_shows_its_messages(grpc_echo, tmp_path, page, artifacts):
    async for _cli, url, page_url in _proxy(tmp_path, "--upstream", grpc_echo):
        await open_page(page, page_url)
        answers = await grpc_say(url.split("://")[-1], b"web view", b"y" * 300)
        assert answers == [b"hello web view", b"hello " + b"y" * 300]
        await wait_rows(page, "#conns tr.conn", 1)
        await select_conn(page, 1)
        row = page.locator("#streams tr.stream[data-stream='1']").filter(has_text="END_STREAM")
        await row.wait_for()
        cells = await row.locator("td").all_inner_texts()
        assert cells[1:4] == ["POST", "/demo.Echo/Say", "200"] and cells[7] == "END_STREAM", cells
        await row.click()
        messages = page.locator("#grpc-messages")
        await messages.wait_for()
        text = await messages.inner_text()
        assert f"8 bytes: {b'web view'.hex()}" in text and f"14 bytes: {b'hello web view'.hex()}" in text, text
        await shot(page, artifacts, "web-grpc.png")
