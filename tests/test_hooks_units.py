"""The built-in hooks' rules, options and config examples, without sockets.

The end-to-end behaviour through real peers is in test_hooks_peers.py.
"""
from __future__ import annotations

import mimetypes
import re
from pathlib import Path

import pytest

from framecodec.frame import AltSvcFrame, ExtensionFrame, HeadersFrame
from proxy.hooks.api import CLIENT_TO_SERVER, SERVER_TO_CLIENT, Headers, PushRefused, PushStarted
from proxy.hooks.builtin.altsvc import AltSvcHook, HookOptionError
from proxy.hooks.builtin.extension import ExtensionHook
from proxy.hooks.builtin.headers import HeadersHook
from proxy.hooks.builtin.push import PushHook
from proxy.hooks.chain import HookChain, HookLoadError, load_hook

ROOT = Path(__file__).resolve().parents[1]


class FakeStream:
    def __init__(self, sid=1, request_headers=None):
        self.id = sid
        self.request_headers = request_headers


class FakeConn:
    id = 7

    def __init__(self, client_settings=None):
        #: (client's, server's) as ConnView.settings gives them.
        self.settings = (dict(client_settings or {}), {})


class FakeCtx:
    """What the built-ins use of a HookCtx: direction, stream, request_headers, conn, push."""

    def __init__(self, direction, stream=None, refuse=None, client_settings=None):
        self.direction = direction
        self.stream = stream
        self.conn = FakeConn(client_settings)
        self.pushes = []
        self.refuse = refuse

    @property
    def request_headers(self):
        return self.stream.request_headers if self.stream is not None else None

    def push(self, path, headers=(), body=b"", status=200):
        if self.refuse:
            return PushRefused(self.refuse)
        self.pushes.append((path, list(headers), body, status))
        return PushStarted(2 * len(self.pushes))


REQ = [(":method", "GET"), (":scheme", "http"), (":authority", "example.test"), (":path", "/api/users?id=1"),
       ("user-agent", "curl/8.0"), ("accept", "*/*")]
RESP = [(":status", "200"), ("content-type", "application/json"), ("server", "origin/1.0"),
        ("x-powered-by", "php"), ("x-powered-extra", "y")]


# ------------------------------------------------------------------ altsvc

@pytest.mark.parametrize("options, field, expected", [
    ({"remove": ["h3*"]}, 'h3=":443"; ma=86400, h3-29=":443", h2="alt:443"', 'h2="alt:443"'),
    ({"remove": ["h3*"]}, 'h3=":443"', "clear"),
    ({"ma": 30}, 'h2="a:1"; ma=5; persist=1, h3=":443"', 'h2="a:1"; persist=1; ma=30, h3=":443"; ma=30'),
    ({"add": ['h2="b:2"']}, "clear", 'h2="b:2"'),
    ({"field": 'h2=":8443"', "remove": ["h3"]}, 'h3=":443"', 'h2=":8443"'),
    ({"remove": ['*"x,y:1"*']}, 'h2="x,y:1", h2="z:2"', 'h2="z:2"'),
])
def test_altsvc_rewrite_rules(options, field, expected):
    assert AltSvcHook(mode="rewrite", **options).rewrite_field(field) == expected


def test_altsvc_frame_modes():
    ctx = FakeCtx(SERVER_TO_CLIENT)
    frame = AltSvcFrame(0, origin=b"https://o.test", field=b'h3=":443", h2=":443"')
    drop = AltSvcHook()
    assert drop.on_altsvc(ctx, frame) == [] and drop.dropped == 1
    fwd = AltSvcHook(mode="forward")
    assert fwd.on_altsvc(ctx, frame) is None and fwd.forwarded == 1
    rw = AltSvcHook(mode="rewrite", origin="https://proxy.test", remove=["h3*"], ma=9)
    out = rw.on_altsvc(ctx, frame)
    assert out.origin == b"https://proxy.test" and out.field == b'h2=":443"; ma=9'
    stream_frame = AltSvcFrame(3, field=b'h2=":443"')
    out = rw.on_altsvc(ctx, stream_frame)
    assert out.origin == b"" and out.field == b'h2=":443"; ma=9'     # no origin on stream-level frames


def test_altsvc_header_mode_reads_headers_only_when_asked():
    assert not hasattr(AltSvcHook(), "on_headers")            # the default keeps the header fast path
    assert not HookChain([AltSvcHook()]).needs_headers
    rw = AltSvcHook(mode="rewrite", header="rewrite", remove=["h3*"])
    assert HookChain([rw]).needs_headers
    ctx = FakeCtx(SERVER_TO_CLIENT)
    hdrs = [(":status", "200"), ("alt-svc", 'h3=":443", h2=":443"')]
    assert rw.on_headers(ctx, None, hdrs) == [(":status", "200"), ("alt-svc", 'h2=":443"')]
    assert rw.on_headers(ctx, None, [(":status", "200")]) is None
    assert rw.on_headers(FakeCtx(CLIENT_TO_SERVER), None, hdrs) is None
    drop = AltSvcHook(header="drop")
    assert drop.on_headers(ctx, None, hdrs) == [(":status", "200")]


@pytest.mark.parametrize("options", [{"mode": "rewite"}, {"header": "strip"}, {"ma": "soon"}, {"ma": -1},
                                     {"add": 'h2=":1"'}])
def test_altsvc_bad_options(options):
    with pytest.raises(HookOptionError):
        AltSvcHook(**options)
    with pytest.raises(HookLoadError):          # what the command line reports as a clean error
        load_hook("altsvc", options)


# ------------------------------------------------------------------ headers

def test_headers_set_remove_replace_add_in_order():
    hook = HeadersHook(rules=[
        {"match": {"direction": "response"}, "remove": ["server", "x-powered-*"],
         "set": {"x-a": "1", "content-type": "text/plain"}},
        {"match": {"direction": "response", "path": "/api/*"},
         "replace": {"content-type": ["^text/(.*)$", r"text/\1; charset=utf-8"]}, "add": {"x-a": "2"}},
    ])
    ctx = FakeCtx(SERVER_TO_CLIENT, FakeStream(1, REQ))
    out = hook.on_headers(ctx, None, RESP)
    assert out == [(":status", "200"), ("content-type", "text/plain; charset=utf-8"), ("x-a", "1"), ("x-a", "2")]
    assert [r.applied for r in hook.rules] == [1, 1] and hook.changed == 1
    # A request goes by untouched: both rules are for responses.
    assert hook.on_headers(FakeCtx(CLIENT_TO_SERVER, FakeStream(1, REQ)), None, REQ) is None


def test_headers_request_match_on_method_path_authority_and_header_globs():
    rule = {"match": {"direction": "request", "method": "GET", "path": "/api/*", "authority": "*.test",
                      "header": {"user-agent": "curl/*"}},
            "replace": {"user-agent": ["^curl/", "curl-via-h2proxy/"]}, "set": {":path": "/v2/users"}}
    hook = HeadersHook(rules=[rule])
    out = hook.on_headers(FakeCtx(CLIENT_TO_SERVER, FakeStream(1, REQ)), None, REQ)
    assert ("user-agent", "curl-via-h2proxy/8.0") in out and (":path", "/v2/users") in out
    assert [n for n, _ in out][:4] == [":method", ":scheme", ":authority", ":path"]
    for name, value in [(":method", "POST"), (":path", "/web/x"), (":authority", "example.org"),
                        ("user-agent", "nghttp2/1.52")]:
        other = [(n, value if n == name else v) for n, v in REQ]
        assert hook.on_headers(FakeCtx(CLIENT_TO_SERVER, FakeStream(1, other)), None, other) is None, name


def test_headers_status_informational_and_trailers():
    hook = HeadersHook(rules=[{"match": {"status": "4*"}, "set": {"x-err": "1"}},
                              {"set": {"x-any": "1"}},
                              {"match": {"trailers": True}, "remove": ["grpc-message"]}])
    ctx = FakeCtx(SERVER_TO_CLIENT, FakeStream(1, REQ))
    out = hook.on_headers(ctx, None, [(":status", "404")])
    assert out == [(":status", "404"), ("x-err", "1"), ("x-any", "1")]
    assert hook.on_headers(ctx, None, [(":status", "103"), ("link", "</a>")]) is None   # 1xx: only by status
    assert hook.on_headers(ctx, None, [("grpc-status", "0"), ("grpc-message", "ok")]) == [("grpc-status", "0")]
    # The rule without match also applies to requests (direction defaults to both).
    assert ("x-any", "1") in hook.on_headers(FakeCtx(CLIENT_TO_SERVER, FakeStream(1, REQ)), None, REQ)


def test_headers_removing_every_trailer_sends_an_empty_block_not_a_drop():
    hook = HeadersHook(rules=[{"match": {"trailers": True}, "remove": ["*"]}])
    frame = HeadersFrame(1, data=b"\x00", flags=["END_STREAM", "END_HEADERS"])
    out = hook.on_headers(FakeCtx(SERVER_TO_CLIENT, FakeStream(1, REQ)), frame, [("x-t", "1")])
    assert isinstance(out, Headers) and out.headers == [] and out.end_stream and out.stream_id == 1


def test_headers_rewrites_remembered_give_the_same_lists_and_counts():
    from framecodec.hpack import NeverIndexed
    hook = HeadersHook(rules=[{"match": {"direction": "response", "path": "/api/*"}, "set": {"x-api": "1"}}])
    resp = [(":status", "200"), ("server", "s")]
    api = [(n, "/api/v" if n == ":path" else v) for n, v in REQ]
    web = [(n, "/web/v" if n == ":path" else v) for n, v in REQ]
    first = hook.rewrite(SERVER_TO_CLIENT, resp, api)
    first.append(("mutated", "by the caller"))
    # The same list again: the same outcome (a fresh list), counted again; another request: its own.
    assert hook.rewrite(SERVER_TO_CLIENT, list(resp), api) == resp + [("x-api", "1")]
    assert hook.rewrite(SERVER_TO_CLIENT, resp, web) is None
    assert hook.rewrite(SERVER_TO_CLIENT, resp, api) == resp + [("x-api", "1")]
    assert hook.rules[0].applied == 3
    # A never-indexed field keeps its mark (such lists are not taken from the memo).
    secret = resp + [NeverIndexed("set-cookie", "a=b")]
    for _ in range(2):
        out = hook.rewrite(SERVER_TO_CLIENT, secret, api)
        assert [type(h).__name__ for h in out] == ["tuple", "tuple", "NeverIndexed", "tuple"]


@pytest.mark.parametrize("rules", [
    {"match": {}}, [{"mach": {}}], [{"match": {"direction": "sideways"}}], [{"match": {"colour": "red"}}],
    [{"replace": {"a": ["(", "x"]}}], [{"replace": {"a": "x"}}], [{"set": {"a": {"b": 1}}}],
    [{"match": {"direction": "request", "status": "200"}}], [{"match": {"trailers": "yes"}}],
])
def test_headers_bad_rules(rules):
    with pytest.raises(HookOptionError):
        HeadersHook(rules=rules)


# ------------------------------------------------------------------ push

def test_push_on_response_of_matching_request(tmp_path):
    (tmp_path / "app.js").write_bytes(b"console.log(1)")
    hook = PushHook(base_dir=str(tmp_path), rules=[
        {"path": "/index.html", "push": [{"path": "/style.css", "body": "b{}", "headers": {"Cache-Control": "x"}},
                                         {"path": "/app.js", "file": "app.js", "status": 203},
                                         "/index.html"]}])
    req = [(":method", "GET"), (":path", "/index.html?x=1"), (":authority", "a")]
    ctx = FakeCtx(SERVER_TO_CLIENT, FakeStream(1, req))
    assert hook.on_headers(ctx, None, [(":status", "100")]) is None and ctx.pushes == []   # not on 1xx
    assert hook.on_headers(ctx, None, [(":status", "200")]) is None
    assert ctx.pushes == [("/style.css", [("cache-control", "x"), ("content-type", "text/css")], b"b{}", 200),
                          ("/app.js", [("content-type", mimetypes.guess_type("a.js")[0])], b"console.log(1)", 203)]
    assert hook.pushed == 2       # never the requested resource itself
    # Not on the request (when = response), not on other paths, not on pushed (even) streams.
    for direction, stream, hdrs in [(CLIENT_TO_SERVER, FakeStream(1, req), req),
                                    (SERVER_TO_CLIENT, FakeStream(1, [(":path", "/other")]), [(":status", "200")]),
                                    (SERVER_TO_CLIENT, FakeStream(2, req), [(":status", "200")])]:
        c = FakeCtx(direction, stream)
        hook.on_headers(c, None, hdrs)
        assert c.pushes == []


def test_push_on_response_is_refused_at_the_request_where_the_client_disabled_push():
    """Responses are not decoded where the client's first SETTINGS disabled push (the hook's interest):
    what would have been pushed is reported refused at the request instead, and only there."""
    from proxy.core.protocol import Setting
    hook = PushHook(rules=[{"path": "/index.html", "push": ["/a.css", "/b.js"]}])
    interest = hook.interest()
    assert set(interest.decode) == {CLIENT_TO_SERVER} and set(interest.decode_if_push) == {SERVER_TO_CLIENT}
    req = [(":method", "GET"), (":path", "/index.html"), (":authority", "a")]
    no_push = {int(Setting.ENABLE_PUSH): 0}
    refusing = FakeCtx(CLIENT_TO_SERVER, FakeStream(1, req), refuse="the client disabled push", client_settings=no_push)
    assert hook.on_headers(refusing, None, req) is None
    assert hook.refused == 2 and [p for p, _ in hook.refusals] == ["/a.css", "/b.js"]
    # A client that allows push: nothing at the request; the pushes wait for the response.
    allowing = FakeCtx(CLIENT_TO_SERVER, FakeStream(3, req))
    hook.on_headers(allowing, None, req)
    assert allowing.pushes == [] and hook.refused == 2
    response = FakeCtx(SERVER_TO_CLIENT, FakeStream(3, req))
    hook.on_headers(response, None, [(":status", "200")])
    assert [p for p, *_ in response.pushes] == ["/a.css", "/b.js"]


def test_push_on_request_and_refusals_are_kept(caplog):
    hook = PushHook(when="request", rules=[{"path": "/*", "method": "GET", "push": [{"path": "/a.css"}]}])
    req = [(":method", "GET"), (":path", "/")]
    ctx = FakeCtx(CLIENT_TO_SERVER, FakeStream(1, req))
    hook.on_headers(ctx, None, req)
    assert [p[0] for p in ctx.pushes] == ["/a.css"]
    refusing = FakeCtx(CLIENT_TO_SERVER, FakeStream(3, req), refuse="the client disabled push")
    with caplog.at_level("WARNING", logger="h2proxy"):
        hook.on_headers(refusing, None, req)
        hook.on_headers(refusing, None, req)
    assert hook.refused == 2 and list(hook.refusals)[-1] == ("/a.css", "the client disabled push")
    assert sum("the client disabled push" in r.getMessage() for r in caplog.records) == 1    # logged once
    post = [(":method", "POST"), (":path", "/")]
    c = FakeCtx(CLIENT_TO_SERVER, FakeStream(5, post))
    hook.on_headers(c, None, post)
    assert c.pushes == []


@pytest.mark.parametrize("options", [
    {"rules": {"path": "/"}}, {"rules": [{"push": [{"path": "/a"}]}]}, {"rules": [{"path": "/", "push": []}]},
    {"rules": [{"path": "/", "push": [{"path": "a.css"}]}]},
    {"rules": [{"path": "/", "push": [{"path": "/a", "status": 100}]}]},
    {"rules": [{"path": "/", "push": [{"path": "/a", "body": "x", "file": "y"}]}]},
    {"rules": [{"path": "/", "push": [{"path": "/a", "file": "/nonexistent/file"}]}]},
    {"rules": [{"path": "/", "push": [{"path": "/a", "headers": {":status": "200"}}]}]},
    {"rules": [{"path": "/", "push": [{"path": "/a", "bdy": "x"}]}]},
    {"when": "later"},
])
def test_push_bad_options(options):
    with pytest.raises(HookLoadError):
        load_hook("push", options)


# ------------------------------------------------------------------ extension

def test_extension_forward_and_drop():
    ctx = FakeCtx(CLIENT_TO_SERVER)
    hook = ExtensionHook(drop_types=[0xEE])
    assert hook.on_extension(ctx, ExtensionFrame(0xEF, 0, body=b"x")) is None
    assert hook.on_extension(ctx, ExtensionFrame(0xEE, 1, body=b"x")) == []
    assert hook.seen == {0xEF: 1, 0xEE: 1} and hook.dropped == {0xEE: 1}
    strict = ExtensionHook(mode="drop", keep_types=[0x10])
    assert strict.on_extension(ctx, ExtensionFrame(0x10, 0)) is None
    assert strict.on_extension(ctx, ExtensionFrame(0x0C, 0)) == []
    for bad in ({"drop_types": [0x1]}, {"drop_types": 0xEE}, {"drop_types": [256]}, {"mode": "eat"}):
        with pytest.raises(HookLoadError):
            load_hook("extension", bad)


# ------------------------------------------------------------------ configs and docs examples

def test_config_examples_load_into_hooks(monkeypatch):
    from proxy.cli import build_hooks
    from proxy.config import load_config
    monkeypatch.chdir(ROOT)         # hooks-push.toml reads docs/examples/pushed.js relative to the working dir

    chain = build_hooks(load_config(str(ROOT / "config/hooks-altsvc-rewrite.toml")))
    [alt] = chain.hooks          # the [[hooks]] altsvc table replaces the default drop
    assert (alt.mode, alt.remove, alt.ma, alt.origin, alt.header) == ("rewrite", ["h3*"], 60, "https://www.example.test",
                                                                      "rewrite")
    assert alt.rewrite_field('h3=":443", h2=":443"') == 'h2=":443"; ma=60, h2="alt.example.test:8443"; ma=60'

    chain = build_hooks(load_config(str(ROOT / "config/hooks-push.toml")))
    assert [type(h).__name__ for h in chain.hooks] == ["AltSvcHook", "PushHook"]
    push = chain.hooks[1]
    assert push.when == "response" and [r.path for r in push.rules] == ["/index.html", "/docs/*"]
    res = push.rules[0].resources
    assert [r.path for r in res] == ["/style.css", "/app.js"]
    assert res[1].body == (ROOT / "docs/examples/pushed.js").read_bytes()
    assert ("cache-control", "max-age=60") in res[0].headers

    chain = build_hooks(load_config(str(ROOT / "config/hooks-headers.toml")))
    hdr = chain.hooks[1]
    assert len(hdr.rules) == 4
    req = [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/api/x"),
           ("user-agent", "curl/8.1")]
    out = hdr.rewrite(CLIENT_TO_SERVER, req, req)
    assert ("user-agent", "curl-via-h2proxy/8.1") in out and ("x-forwarded-proto", "http") in out
    out = hdr.rewrite(SERVER_TO_CLIENT, [(":status", "502"), ("server", "o")], req)
    assert out == [(":status", "502"), ("x-via-h2proxy", "1"), ("strict-transport-security", "max-age=60"),
                   ("x-upstream-error", "yes")]


def test_every_config_key_is_commented():
    """Each key has a comment right above it (table headers between are fine) where it first appears."""
    for path in sorted(ROOT.glob("config/hooks-*.toml")):
        lines = path.read_text().splitlines()
        commented = set()
        for i, line in enumerate(lines):
            m = re.match(r'^\s*"?([A-Za-z_][\w-]*)"?\s*=', line)
            if not m:
                continue
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("["):
                j -= 1
            if j >= 0 and lines[j].strip().startswith("#"):
                commented.add(m.group(1))
            assert m.group(1) in commented, f"{path.name}:{i + 1}: {m.group(1)} has no comment"


def test_docs_show_every_example_file_verbatim():
    doc = (ROOT / "docs/hooks.md").read_text()
    examples = sorted((ROOT / "docs/examples").glob("*.py"))
    assert len(examples) >= 4
    for path in examples:
        assert path.read_text() in doc, f"docs/hooks.md does not show {path.name} as it is"


def test_docs_examples_load_with_the_hook_loader():
    loaded = {}
    for path in sorted((ROOT / "docs/examples").glob("*.py")):
        loaded[path.stem] = load_hook(str(path), {})
    assert [type(h).__name__ for h in loaded["stamp_header"]] == ["StampHeader"]
    assert [type(h).__name__ for h in loaded["ping_and_push"]] == ["PingOnRequest", "PushHello"]
    assert HookChain(loaded["stamp_header"]).needs_headers
    [drop] = load_hook(str(ROOT / "docs/examples/drop_data.py"), {"after_bytes": 10, "frames": 1})
    assert (drop.after_bytes, drop.frames) == (10, 1)


def test_a_bad_hook_option_is_one_clean_error_line(tmp_path, capsys):
    from proxy.cli import main
    cfg = tmp_path / "bad.toml"
    cfg.write_text('upstream = "h2c://127.0.0.1:9"\n[[hooks]]\nuse = "push"\n'
                   '[[hooks.rules]]\npath = "/"\n[[hooks.rules.push]]\npath = "/a.js"\nfile = "missing.js"\n')
    assert main(["--config", str(cfg), "--listen", "h2c://127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert "h2proxy: error: push: rules[0].push[0].file: cannot read" in err and "Traceback" not in err
