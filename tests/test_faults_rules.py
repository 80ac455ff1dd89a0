"""Fault rules without sockets: the one-line and TOML forms, their errors, matching, "how often",
and what each action does to frames in the sans-I/O relay (exact bytes in, exact frames out)."""
from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import hpack
import pytest

from framecodec import frame as fc
from framecodec.reader import PREFACE
from proxy.config import load_config
from proxy.core.commands import AwaitHook, Wake
from proxy.core.relay import C2S, S2C, Relay, RelayOptions
from proxy.faults import ACTIONS, KEYS, FaultError, FaultHook, build_fault_hook, parse_line
from proxy.faults.rules import Rule
from proxy.hooks.chain import HookChain
from proxy.server import ConfigError
from tests.test_relay_playbook import Peer, out, parsed, wire  # shared relay playbook helpers

ROOT = Path(__file__).resolve().parents[1]
REQ = [(":method", "GET"), (":scheme", "http"), (":authority", "example.org"), (":path", "/api/items?x=1")]
RESP = [(":status", "200"), ("server", "origin")]


# ---------------------------------------------------------------- helpers (a relay with peers' encoders)



class ActionSink:
    """Keeps the hook actions of every frame record and every hook_action record."""

    needs_headers = False

    def __init__(self) -> None:
        self.actions = []
        self.hook_actions = []
        self.raws = []

    def connection_opened(self, *a):
        pass

    def preface(self, *a, **k):
        return 0

    def frame(self, conn_id, leg, direction, t, wire, headers=None, origin=None, actions=None, **k):
        for a in actions or ():
            self.actions.append((leg, direction, a["hook"], a["action"]))
        return 0

    def raw(self, conn_id, leg, direction, t, data, note, **k):
        self.raws.append((leg, bytes(data), note))
        return 0

    def violation(self, *a):
        pass

    def error(self, *a):
        pass

    def hook_action(self, conn_id, t, hook, action, detail):
        self.hook_actions.append((hook, action, detail))

    def connection_closed(self, *a):
        pass


class Conn:
    """A relay with a FaultHook between a client Peer and a server Peer, SETTINGS exchanged."""

    def __init__(self, rules=(), sink=None, conn_id=1, hook=None) -> None:
        self.faults = hook or FaultHook(rules)
        self.relay = Relay(conn_id, RelayOptions(), hooks=HookChain([self.faults]), sink=sink)
        self.client, self.server = Peer(), Peer()
        self.relay.receive(C2S, PREFACE + wire(fc.SettingsFrame(0)), 0.0)
        self.relay.receive(S2C, wire(fc.SettingsFrame(0), fc.SettingsFrame(0, flags=["ACK"])), 0.0)
        self.relay.receive(C2S, wire(fc.SettingsFrame(0, flags=["ACK"])), 0.0)
        out(self.relay, C2S), out(self.relay, S2C)
        self.commands: list = []     # taken from the relay, not yet asked for

    def send(self, d, *frames):
        self.relay.receive(d, wire(*frames), 0.0)

    def take(self, d):
        return parsed(out(self.relay, d))

    def request(self, sid, headers=REQ, end=True):
        self.send(C2S, self.client.headers(sid, headers, end))

    def respond(self, sid, headers=RESP, end=False):
        self.send(S2C, self.server.headers(sid, headers, end))

    def taken(self, kind):
        """The commands of type ``kind`` the relay gave since they were last asked for."""
        self.commands += self.relay.take_commands()
        found = [c for c in self.commands if isinstance(c, kind)]
        self.commands = [c for c in self.commands if not isinstance(c, kind)]
        return found

    def awaits(self):
        return self.taken(AwaitHook)


def types(frames):
    return [type(f).__name__.replace("Frame", "") for f in frames]


# ---------------------------------------------------------------- the one-line form

def test_line_parses_words_tables_lists_and_bare_flags():
    spec = parse_line("rst_stream code=REFUSED_STREAM path='/api/*' after=1 type=data,headers "
                      "request_header.user-agent=curl* raw probability=0.1 seed=7")
    assert spec == {"action": "rst_stream", "code": "REFUSED_STREAM", "path": "/api/*", "after": "1",
                    "type": "data,headers", "request_header": {"user-agent": "curl*"}, "raw": "true",
                    "probability": "0.1", "seed": "7"}
    r = Rule(spec)
    assert r.action == "rst_stream" and r.params["code"] == 7 and r.after == 1 and r.raw
    assert r.types == {0, 1} and r.request_header == {"user-agent": "curl*"} and r.seed == 7


def test_the_brief_example_line_is_accepted():
    r = FaultHook(["rst_stream code=REFUSED_STREAM path=/api/* after=1 type=data probability=0.1 seed=7"]).rules[0]
    assert (r.name, r.path, r.after, r.probability, r.seed) == ("rst_stream-1", "/api/*", 1, 0.1, 7)


@pytest.mark.parametrize("line, words", [
    ("rst_stream code=NOPE", ["code", "'NOPE'", "unknown error code"]),
    ("delay ms=soon", ["ms", "'soon'", "milliseconds"]),
    ("drop ms=10", ["ms", "'10'", "does not apply to action drop"]),
    ("drop typo=data", ["typo", "unknown key", "did you mean type"]),
    ("explode type=data", ["action", "'explode'", "unknown action"]),
    ("drop type=bogus", ["type", "'bogus'", "unknown frame type"]),
    ("drop probability=2", ["probability", "'2'", "between 0 and 1"]),
    ("drop direction=sideways", ["direction", "'sideways'"]),
    ("drop flags=WEIRD", ["flags", "'WEIRD'", "unknown flag"]),
    ("settings set.FOO=1", ["set", "FOO", "unknown setting"]),
    ("inject frame=ping opaque=00", ["opaque", "'00'", "8 bytes"]),
    ("inject type=data", ["frame", "missing"]),
    ("delay type=data", ["ms", "missing"]),
    ("throttle", ["rate", "missing"]),
    ("throttle rate=fast", ["rate", "'fast'"]),
    ("split parts=1", ["parts", "'1'", "2..1000"]),
    ("stall towards=both", ["towards", "'both'"]),
    ("drop debug='unterminated", ["cannot split"]),
    ("drop path.x=1", ["path.x", "not a table"]),
])
def test_errors_name_the_key_and_the_value(line, words):
    with pytest.raises(FaultError) as info:
        FaultHook([line])
    text = str(info.value)
    for w in words:
        assert w in text, (w, text)
    assert isinstance(info.value, ConfigError)


def test_toml_tables_and_lines_build_one_hook_with_sources_in_errors():
    hook = build_fault_hook([{"name": "late", "action": "delay", "ms": 2000, "type": "settings", "nth": 1}],
                            ["drop type=ping"])
    assert [r.name for r in hook.rules] == ["late", "drop-1"]
    assert hook.rules[0].params["ms"] == 2000.0 and hook.rules[0].nth == {1}
    with pytest.raises(FaultError, match=r"faults\[1\] \(two\): code = 'x'"):
        build_fault_hook([{"action": "drop"}, {"name": "two", "action": "rst_stream", "code": "x"}], [])
    with pytest.raises(FaultError, match=r"--fault 'drop nth=0': nth = '0'"):
        build_fault_hook([], ["drop nth=0"])
    with pytest.raises(FaultError, match="exists already"):
        build_fault_hook([{"name": "a", "action": "drop"}, {"name": "a", "action": "drop"}], [])


def test_every_profile_loads(tmp_path):
    profiles = sorted((ROOT / "config" / "faults").glob("*.toml"))
    names = {p.name for p in profiles}
    assert {"flaky-resets.toml", "slow-start.toml", "stall-download.toml"} <= names
    for p in profiles:
        cfg = load_config(str(p))
        assert cfg.faults, p
        hook = build_fault_hook(cfg.faults, [])
        assert len(hook.rules) == len(cfg.faults)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[faults]]\naction = "delay"\nms = "forever"\n')
    with pytest.raises(ConfigError, match=r"ms = 'forever'"):
        build_fault_hook(load_config(str(bad)).faults, [])


def test_docs_have_every_action_and_key():
    text = (ROOT / "docs" / "faults.md").read_text()
    table_rows = {m.group(1) for m in re.finditer(r"^\|\s*`([a-z_]+)`", text, re.M)}
    assert set(ACTIONS) <= table_rows, set(ACTIONS) - table_rows
    assert set(KEYS) <= table_rows, set(KEYS) - table_rows


def test_rules_list_as_json_with_seed_and_counters():
    hook = FaultHook(["drop type=ping name=p"])
    d = hook.rules[0].to_dict()
    assert d["name"] == "p" and d["action"] == "drop" and d["type"] == "ping"
    assert isinstance(d["seed"], int) and d["hits"] == 0 and d["matches"] == 0


# ---------------------------------------------------------------- how often

def fires(rule, n):
    return [i + 1 for i in range(n) if rule.fires()]


def test_after_first_every_limit():
    assert fires(Rule({"action": "drop", "after": 2}), 5) == [3, 4, 5]
    assert fires(Rule({"action": "drop", "first": 2}), 5) == [1, 2]
    assert fires(Rule({"action": "drop", "every": 3}), 10) == [3, 6, 9]
    assert fires(Rule({"action": "drop", "after": 1, "every": 2, "limit": 2}), 10) == [3, 5]


def test_probability_uses_a_seeded_generator_only_on_candidates():
    rule = Rule({"action": "drop", "probability": 0.3, "seed": 7, "after": 2})
    got = fires(rule, 50)
    rng = random.Random(7)
    expected = [i for i in range(3, 51) if rng.random() < 0.3]
    assert got == expected and 0 < len(got) < 48
    rule.reset_counters()
    assert fires(rule, 50) == expected           # same seed, same faults
    other = Rule({"action": "drop", "probability": 0.3, "seed": 8, "after": 2})
    assert fires(other, 50) != expected


# ---------------------------------------------------------------- matching, through the relay

def test_match_direction_type_flags_stream_nth_and_request_globs():
    c = Conn(["drop type=data direction=c2s path=/api/* method=GET authority=*.org nth=2 name=d",
              "drop type=ping flags=!ACK direction=s2c name=p"])
    c.request(1, end=False)
    c.request(3, REQ[:3] + [(":path", "/other")], end=False)
    c.take(C2S)
    c.send(C2S, fc.DataFrame(1, data=b"a"), fc.DataFrame(1, data=b"b"), fc.DataFrame(3, data=b"c"),
           fc.DataFrame(3, data=b"d"), fc.DataFrame(1, data=b"e"))
    assert [f.data for f in c.take(C2S) if isinstance(f, fc.DataFrame)] == [b"a", b"c", b"d", b"e"]
    c.send(S2C, fc.PingFrame(0, opaque_data=b"12345678"), fc.PingFrame(0, opaque_data=b"12345678", flags=["ACK"]))
    assert [("ACK" in f.flags) for f in c.take(S2C) if isinstance(f, fc.PingFrame)] == [True]
    c.send(C2S, fc.PingFrame(0, opaque_data=b"abcdefgh"))
    assert types(c.take(C2S)) == ["Ping"]
    assert c.faults.hits("d") == 1 and c.faults.matches("d") == 1 and c.faults.hits("p") == 1


def test_match_nth_stream_status_headers_conn_and_after_bytes():
    c = Conn(["drop type=data direction=s2c nth_stream=2 name=second",
              "drop type=data direction=s2c status=5* name=errors",
              "drop type=data direction=s2c response_header.server=orig* request_header.x-test=yes name=hdr",
              "drop type=data direction=s2c after_bytes=10 stream=7 name=bytes",
              "drop type=data conn=2 name=other-conn"])
    for sid in (1, 3, 5, 7):
        c.request(sid, REQ + ([("x-test", "yes")] if sid == 5 else []))
    c.respond(1)
    c.respond(3)
    c.respond(5)
    c.respond(7, [(":status", "503")])
    c.take(S2C)
    c.send(S2C, fc.DataFrame(1, data=b"1" * 5), fc.DataFrame(3, data=b"3" * 5), fc.DataFrame(5, data=b"5" * 5),
           fc.DataFrame(7, data=b"7" * 5))
    assert [f.stream_id for f in c.take(S2C) if isinstance(f, fc.DataFrame)] == [1]
    assert c.faults.hits("second") == 1 and c.faults.hits("hdr") == 1 and c.faults.hits("errors") == 1
    c.faults.remove("errors")
    c.send(S2C, fc.DataFrame(7, data=b"7" * 5), fc.DataFrame(7, data=b"7" * 5))
    got = [f.data for f in c.take(S2C) if isinstance(f, fc.DataFrame)]
    assert got == [b"7" * 5]          # the second one: 10 bytes went by on stream 7 before it
    assert c.faults.hits("bytes") == 1 and c.faults.matches("other-conn") == 0


def test_status_matches_the_response_block_not_trailers():
    c = Conn(["inject frame=ping type=headers direction=s2c status=200 name=s"])
    c.request(1)
    c.respond(1)
    assert types(c.take(S2C)) == ["Ping", "Headers"]
    c.send(S2C, c.server.headers(1, [("grpc-status", "0")], end=True))
    assert types(c.take(S2C)) == ["Headers"]
    assert c.faults.hits("s") == 1 and c.faults.matches("s") == 1


# ---------------------------------------------------------------- names in the frame log, rules at run time

def test_each_rule_is_its_own_hook_entry_and_named_in_the_frame_log():
    sink = ActionSink()
    c = Conn(["drop type=ping direction=c2s name=no-pings", "delay ms=5 type=settings direction=s2c name=slow"],
             sink=sink)
    table = c.relay.hook_table
    assert [e[0] for e in table[C2S][6]] == ["faults", "fault:no-pings"]
    assert 6 not in table[S2C]        # no rule wants server PINGs: they stay on the fast path (issue 16)
    assert [e[0] for e in table[S2C][4]] == ["faults", "fault:slow"]
    c.send(C2S, fc.PingFrame(0, opaque_data=b"12345678"))
    assert ("client", "recv", "fault:no-pings", "dropped") in sink.actions
    assert sink.hook_actions[-1][:2] == ("fault:no-pings", "drop")
    assert sink.hook_actions[-1][2]["frame"] == "PING"
    for cmd in c.awaits():
        cmd.awaitable.close()


def test_rules_added_changed_and_removed_at_run_time_apply_to_the_next_frame():
    c = Conn()
    ping = fc.PingFrame(0, opaque_data=b"12345678")
    c.send(C2S, ping)
    assert types(c.take(C2S)) == ["Ping"]
    c.faults.add("drop type=ping name=x")
    c.send(C2S, ping)
    assert c.take(C2S) == []
    c.faults.change("x", {"direction": "s2c"})
    c.send(C2S, ping)
    assert types(c.take(C2S)) == ["Ping"]
    assert c.faults.get("x").hits == 1            # counters carry over a change
    c.faults.change("x", {"direction": None})
    c.send(C2S, ping)
    assert c.take(C2S) == []
    c.faults.remove("x")
    c.send(C2S, ping)
    assert types(c.take(C2S)) == ["Ping"]
    assert 6 not in c.relay.hook_table[C2S]      # no rule left: PINGs are fast again


def test_a_rule_added_before_any_connection_reaches_a_chain_built_later():
    hook = FaultHook()
    chain = HookChain([hook])
    hook.add("drop type=ping name=late")
    relay = Relay(1, RelayOptions(), hooks=chain)
    relay.receive(C2S, PREFACE + wire(fc.SettingsFrame(0), fc.PingFrame(0, opaque_data=b"12345678")), 0.0)
    assert types(parsed(out(relay, C2S)[len(PREFACE):])) == ["Settings"]


# ---------------------------------------------------------------- actions, frame by frame

def test_delay_holds_the_frame_with_seeded_jitter():
    c = Conn(["delay ms=100 jitter=50 seed=3 type=ping name=d"])
    c.send(C2S, fc.PingFrame(0, opaque_data=b"12345678"), fc.PingFrame(0, opaque_data=b"abcdefgh"))
    cmds = c.awaits()
    assert len(cmds) == 1 and c.take(C2S) == []          # the second PING waits behind the first
    expected = 100 + random.Random(3).uniform(-50, 50)
    assert c.faults.injected[-1]["detail"] == f"held {expected:.0f} ms"
    asyncio.run(cmds[0].awaitable)
    c.relay.resume(C2S, None)
    # the second one is held too (every PING matches)
    asyncio.run(c.awaits()[0].awaitable)
    c.relay.resume(C2S, None)
    assert [f.opaque_data for f in c.take(C2S)] == [b"12345678", b"abcdefgh"]


def test_drop_credits_data_back_unless_raw():
    c = Conn(["drop type=data direction=s2c stream=1 name=d"])
    c.request(1)
    c.respond(1)
    c.take(S2C), c.take(C2S)
    c.send(S2C, fc.DataFrame(1, data=b"x" * 100))
    assert c.take(S2C) == []
    credit = c.take(C2S)
    assert [(f.stream_id, f.window_increment) for f in credit] == [(0, 100), (1, 100)]
    c.faults.change("d", {"raw": True})
    c.send(S2C, fc.DataFrame(1, data=b"x" * 100))
    assert c.take(S2C) == [] and c.take(C2S) == []


def test_duplicate_sends_copies_and_counts_them_for_flow_control():
    c = Conn(["duplicate copies=2 type=data direction=s2c"])
    c.request(1)
    c.respond(1)
    c.take(S2C)
    c.send(S2C, fc.DataFrame(1, data=b"abc"))
    assert [f.data for f in c.take(S2C)] == [b"abc"] * 3
    assert c.relay.sides[S2C].owed == 6          # the client's WINDOW_UPDATEs for the copies are absorbed


def test_corrupt_flips_chosen_bytes_and_lies_about_the_length_as_raw_bytes():
    sink = ActionSink()
    c = Conn(["corrupt offsets=0,-1 type=ping name=flip", "corrupt length_delta=3 count=0 type=rst_stream name=lie"],
             sink=sink)
    c.send(C2S, fc.PingFrame(0, opaque_data=b"12345678"))
    got = out(c.relay, C2S)
    assert got == wire(fc.PingFrame(0, opaque_data=bytes([ord("1") ^ 0xFF]) + b"234567" + bytes([ord("8") ^ 0xFF])))
    assert any("corrupted" in note for _, _, note in sink.raws)
    c.request(1)
    c.take(C2S)
    c.send(C2S, fc.RstStreamFrame(1, error_code=8))
    got = out(c.relay, C2S)
    assert got[:3] == (7).to_bytes(3, "big") and len(got) == 13     # claims 7 bytes, carries 4


def test_corrupt_data_keeps_a_valid_frame_and_exact_windows():
    c = Conn(["corrupt count=3 seed=5 type=data direction=s2c"])
    c.request(1)
    c.respond(1)
    c.take(S2C), c.take(C2S)
    before = c.relay.sides[S2C].window
    c.send(S2C, fc.DataFrame(1, data=b"\0" * 50))
    (f,) = c.take(S2C)
    rng = random.Random(5)
    flipped = {rng.randrange(50) for _ in range(3)}
    assert {i for i, b in enumerate(f.data) if b} == flipped
    assert c.relay.sides[S2C].window == before - 50 and c.take(C2S) == []


def test_split_data_and_headers_into_continuations():
    c = Conn(["split parts=3 type=data,headers direction=s2c"])
    c.request(1)
    c.respond(1, RESP + [("x-long", "v" * 40)])
    frames = c.take(S2C)
    assert types(frames) == ["Headers", "Continuation", "Continuation"]
    assert "END_HEADERS" not in frames[0].flags and "END_HEADERS" in frames[2].flags
    block = b"".join(f.data for f in frames)
    assert hpack.Decoder().decode(block, raw=False)[0] == (":status", "200")
    c.send(S2C, fc.DataFrame(1, data=b"abcdefgh", flags=["END_STREAM"]))
    frames = c.take(S2C)
    assert [f.data for f in frames] == [b"abc", b"def", b"gh"]
    assert ["END_STREAM" in f.flags for f in frames] == [False, False, True]


def test_rst_stream_towards_client_then_the_servers_frames_are_dropped_and_credited():
    c = Conn(["rst_stream code=REFUSED_STREAM towards=client type=headers direction=s2c"])
    c.request(1)
    c.take(C2S)
    c.respond(1)
    (rst,) = c.take(S2C)
    assert isinstance(rst, fc.RstStreamFrame) and rst.error_code == 7 and c.take(C2S) == []
    c.send(S2C, fc.DataFrame(1, data=b"x" * 30), fc.DataFrame(1, data=b"y" * 20, flags=["END_STREAM"]))
    assert c.take(S2C) == []
    assert [(f.stream_id, f.window_increment) for f in c.take(C2S)] == [(0, 30), (1, 30), (0, 20)]


def test_rst_stream_on_a_request_only_tells_the_client():
    c = Conn(["rst_stream code=REFUSED_STREAM type=headers direction=c2s path=/api/*"])
    c.request(1)
    assert c.take(C2S) == []                    # the server never hears of stream 1
    assert [(type(f).__name__, f.error_code) for f in c.take(S2C)] == [("RstStreamFrame", 7)]


def test_goaway_with_code_last_stream_and_debug():
    sink = ActionSink()
    c = Conn(["goaway code=ENHANCE_YOUR_CALM debug=bye type=headers direction=s2c name=g"], sink=sink)
    c.request(1)
    c.respond(1)
    g, h = c.take(S2C)
    assert (g.error_code, g.last_stream_id, g.additional_data) == (11, 1, b"bye") and isinstance(h, fc.HeadersFrame)
    assert ("client", "send", "fault:g", "injected") in sink.actions


def test_close_with_fin_or_reset():
    from proxy.core.commands import Close
    c = Conn(["close reset type=ping direction=c2s towards=server"])
    c.send(C2S, fc.PingFrame(0, opaque_data=b"12345678"))
    closes = c.taken(Close)
    assert [(x.side, x.abort) for x in closes] == [(1, True)] and c.take(C2S) == []


def test_stall_withholds_window_updates_then_releases_them_as_one():
    c = Conn(["stall towards=server type=data direction=s2c after_bytes=10 name=st"])
    c.request(1, end=False)
    c.respond(1)
    c.take(S2C), c.take(C2S)
    wake = []
    c.relay.wake = lambda: wake.append(1)
    c.send(S2C, fc.DataFrame(1, data=b"a" * 10))
    c.send(C2S, fc.WindowUpdateFrame(0, window_increment=10), fc.WindowUpdateFrame(1, window_increment=10))
    assert types(c.take(C2S)) == ["WindowUpdate", "WindowUpdate"]        # not stalled yet
    c.send(S2C, fc.DataFrame(1, data=b"b" * 10))
    for _ in range(3):
        c.send(C2S, fc.WindowUpdateFrame(0, window_increment=10), fc.WindowUpdateFrame(1, window_increment=10))
    c.send(C2S, fc.PingFrame(0, opaque_data=b"12345678"))
    assert types(c.take(C2S)) == ["Ping"]
    assert c.faults.hits("st") == 1
    c.faults.remove("st")                     # a stall for good ends when its rule goes
    assert sorted((f.stream_id, f.window_increment) for f in c.take(C2S)) == [(0, 30), (1, 30)]
    assert wake == [1]


def test_throttle_paces_data_at_the_rate():
    c = Conn(["throttle rate=1000 direction=s2c"])
    c.request(1)
    c.respond(1)
    c.take(S2C)
    c.send(S2C, fc.DataFrame(1, data=b"a" * 500))
    assert len(c.take(S2C)) == 1 and not c.awaits()      # the first goes at once
    c.send(S2C, fc.DataFrame(1, data=b"b" * 500))
    (cmd,) = c.awaits()
    assert c.take(S2C) == []
    assert 400 <= float(re.search(r"held (\d+) ms", c.faults.injected[-1]["detail"]).group(1)) <= 500
    cmd.awaitable.close()


def test_inject_ping_and_settings_and_swallow_their_acks():
    c = Conn(["inject frame=ping opaque=0102030405060708 type=headers direction=c2s towards=server name=pi",
              "inject frame=settings set.MAX_CONCURRENT_STREAMS=3 type=headers direction=c2s towards=server "
              "name=se"])
    c.request(1)
    frames = c.take(C2S)
    assert types(frames) == ["Ping", "Settings", "Headers"]
    assert frames[0].opaque_data == bytes(range(1, 9)) and frames[1].settings == {3: 3}
    c.send(S2C, fc.PingFrame(0, opaque_data=bytes(range(1, 9)), flags=["ACK"]),
           fc.SettingsFrame(0, flags=["ACK"]), fc.PingFrame(0, opaque_data=b"other123", flags=["ACK"]))
    assert [f.opaque_data for f in c.take(S2C)] == [b"other123"]


def test_inject_settings_ack_bookkeeping_with_the_peers_own_settings_in_flight():
    c = Conn(["inject frame=settings set.ENABLE_PUSH=0 type=settings flags=!ACK direction=s2c towards=client "
              "position=after"])
    c.send(S2C, fc.SettingsFrame(0, settings={3: 10}))
    frames = c.take(S2C)
    assert [f.settings for f in frames] == [{3: 10}, {2: 0}]
    c.send(C2S, fc.SettingsFrame(0, flags=["ACK"]), fc.SettingsFrame(0, flags=["ACK"]))
    assert types(c.take(C2S)) == ["Settings"]      # the server gets the ACK of its own SETTINGS only


def test_inject_unknown_type_raw_hex_and_after():
    c = Conn(["inject frame=0xfa payload=cafe frame_flags=0x5 stream_id=0 type=ping direction=c2s name=u",
              "inject hex=0000000601000000010000000000000000 type=ping direction=s2c name=h"])
    c.send(C2S, fc.PingFrame(0, opaque_data=b"12345678"))
    data = out(c.relay, C2S)
    assert data[:11] == bytes.fromhex("000002fa0500000000cafe")
    c.send(S2C, fc.PingFrame(0, opaque_data=b"12345678"))
    assert out(c.relay, S2C).startswith(bytes.fromhex("0000000601000000010000000000000000"))


def test_settings_change_values_in_flight():
    c = Conn(["settings set.INITIAL_WINDOW_SIZE=1000 remove=MAX_CONCURRENT_STREAMS direction=s2c"])
    c.send(S2C, fc.SettingsFrame(0, settings={3: 100, 5: 20000}), fc.SettingsFrame(0, flags=["ACK"]))
    s, ack = c.take(S2C)
    assert s.settings == {5: 20000, 4: 1000} and "ACK" in ack.flags


def test_a_dropped_response_block_leaves_the_clients_hpack_table_in_step():
    """Dropping a header block the server encoded with table insertions must not break later blocks."""
    c = Conn(["rst_stream code=REFUSED_STREAM towards=client type=headers direction=s2c stream=1"])
    client_decoder = hpack.Decoder()
    c.request(1)
    c.request(3)
    hdrs = RESP + [("x-custom", "value-that-gets-indexed")]
    c.respond(1, hdrs)                    # inserts x-custom into the server encoder's table: dropped
    c.respond(3, hdrs)                    # refers to that entry by index
    frames = c.take(S2C)
    # (The reset waited for stream 3's response, which was going to the client: Relay.reset_stream.)
    assert types(frames) == ["Headers", "RstStream"]
    assert client_decoder.decode(frames[0].data, raw=False) == hdrs
    c.respond(3, [("grpc-status", "0")], end=True)
    (trailers,) = c.take(S2C)
    assert client_decoder.decode(trailers.data, raw=False) == [("grpc-status", "0")]


def test_a_dropped_response_keeps_the_rest_of_that_stream_from_the_client():
    c = Conn(["drop type=headers direction=s2c stream=1"])
    c.request(1)
    c.request(3)
    c.take(C2S)
    c.respond(1)
    c.send(S2C, fc.DataFrame(1, data=b"x" * 10), fc.DataFrame(1, data=b"y" * 5, flags=["END_STREAM"]))
    assert c.take(S2C) == []                   # no DATA without HEADERS on the client's side
    assert [(f.stream_id, f.window_increment) for f in c.take(C2S)] == [(0, 10), (1, 10), (0, 5)]
    c.respond(3, end=True)
    assert types(c.take(S2C)) == ["Headers"]


def test_a_request_reset_before_the_server_saw_it_sends_none_of_its_body_there():
    c = Conn(["rst_stream code=REFUSED_STREAM type=headers direction=c2s"])
    c.request(1, end=False)
    assert c.take(C2S) == [] and types(c.take(S2C)) == ["RstStream"]
    c.send(C2S, fc.DataFrame(1, data=b"body", flags=["END_STREAM"]))     # in flight before the RST arrived
    assert c.take(C2S) == []
    assert [(f.stream_id, f.window_increment) for f in c.take(S2C)] == [(0, 4)]


def test_every_rule_written_in_the_docs_is_valid():
    import tomllib
    text = (ROOT / "docs" / "faults.md").read_text()
    lines = [rule for line in text.splitlines() if "error:" not in line
             for rule in re.findall(r"--fault '([^']+)'", line) if rule != "LINE"]
    assert len(lines) >= 6
    hook = build_fault_hook([], lines)
    assert len(hook.rules) == len(lines)
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    tables = [t for b in blocks for t in tomllib.loads(b).get("faults", [])]
    assert len(tables) >= 2
    build_fault_hook(tables, [])
    posted = re.findall(r"-X POST \$API/faults \\\n\s+-d '(\{.*?\})'", text)
    assert len(posted) == 2
    import json
    hook = FaultHook()
    for body in map(json.loads, posted):
        hook.add(body["line"] + (f" name={body['name']}" if "name" in body else "") if "line" in body else body)
    assert [r.name for r in hook.rules] == ["refuse", "late"]


def test_a_rule_on_type_and_direction_alone_acts_on_every_nth_and_counts_the_frames_it_lets_by():
    # (Screened without a FrameInfo per frame: only the rule's counters decide; the frames let by are
    # still counted, so that a later block on the same stream is known to be its trailers.)
    c = Conn(["rst_stream code=REFUSED_STREAM type=headers direction=c2s every=3"])
    sent = {}
    for sid in (1, 3, 5, 7, 9, 11):
        block = c.client.headers(sid, REQ, True)
        sent[sid] = wire(block)
        c.relay.receive(C2S, sent[sid], 0.0)
        got = out(c.relay, C2S)
        assert c.take(S2C) == []           # (a reset waits for other streams' frames: Relay.reset_stream)
        c.relay.tick(0.01)                 # ... a millisecond at most
        resets = c.take(S2C)
        if sid in (5, 11):
            assert got == b"" and [(f.stream_id, f.error_code) for f in resets] == [(sid, 7)]
        else:
            assert got == sent[sid] and resets == []

    c = Conn(["rst_stream code=REFUSED_STREAM type=headers direction=c2s after=1"])
    c.request(1, end=False)
    assert types(c.take(C2S)) == ["Headers"] and c.take(S2C) == []
    c.send(C2S, c.client.headers(1, [("x-trailer", "1")], True))       # the stream's second block: its trailers
    # The server saw the request: it is reset on both legs.
    assert [(f.stream_id, f.error_code) for f in c.take(C2S)] == [(1, 7)]
    assert [(f.stream_id, f.error_code) for f in c.take(S2C)] == [(1, 7)]


def test_a_request_block_sent_again_is_matched_on_what_it_decodes_to_now():
    # The relay remembers which hooks a request block's stream got (Side.opened_by); the same bytes
    # after the dynamic table changed, or after the rules did, are matched afresh.
    c = Conn(["rst_stream code=REFUSED_STREAM path=/never/*"])
    lit_authority = b"\x01\x01e"                           # :authority e, literal without indexing
    first = b"\x82\x86" + lit_authority + b"\x44\x02/a"    # :path /a, inserted at index 62
    again = b"\x82\x86" + lit_authority + b"\xbe"          # :path = index 62 (the table left as it was)
    never = b"\x82\x86" + lit_authority + b"\x44\x08/never/b"

    def send(sid, block):
        c.send(C2S, fc.HeadersFrame(sid, data=block, flags=["END_HEADERS", "END_STREAM"]))
        c.relay.tick(0.01)        # (resets wait up to a millisecond for other frames towards the client)
        return types(c.take(C2S)), [(f.stream_id, f.error_code) for f in c.take(S2C)]

    assert send(1, first) == (["Headers"], [])
    assert send(3, again) == (["Headers"], [])
    assert send(5, again) == (["Headers"], [])             # (as remembered)
    assert send(7, never) == ([], [(7, 7)])                # index 62 is /never/b from now on
    assert send(9, again) == ([], [(9, 7)])
    older = b"\x82\x86" + lit_authority + b"\xbf"          # :path = index 63, /a now
    assert send(11, older) == (["Headers"], [])
    assert send(13, older) == (["Headers"], [])            # (as remembered)
    c.faults.add("rst_stream code=CANCEL path=/a")          # rules changed: asked again
    assert send(15, older) == ([], [(15, 8)])


# ---------------------------------------------------------------- resets towards the client, held briefly

def test_a_reset_towards_a_client_with_other_streams_open_goes_with_their_next_frames():
    """A client that refills its streams as responses come in (h2load -m, browsers, gRPC) gets a reset
    together with the next responses, so that its next requests go out together (Relay.reset_stream)."""
    c = Conn(["rst_stream code=REFUSED_STREAM towards=client path=/refused"])
    c.request(1)
    c.request(3, REQ[:3] + [(":path", "/refused")])
    assert types(c.take(C2S)) == ["Headers"]          # (stream 3 never reached the server)
    assert c.take(S2C) == []                           # held: stream 1 is open
    assert c.taken(Wake) == [Wake(0.001)]              # ... until a millisecond later at most
    c.respond(1, end=True)
    got = c.take(S2C)
    assert types(got) == ["Headers", "RstStream"] and (got[1].stream_id, got[1].error_code) == (3, 7)
    assert c.taken(Wake) == []


def test_a_held_reset_goes_out_at_the_tick_its_wake_asked_for():
    c = Conn(["rst_stream code=CANCEL towards=client path=/refused"])
    c.request(1)
    c.request(3, REQ[:3] + [(":path", "/refused")])
    [wake] = c.taken(Wake)
    c.relay.tick(wake.at - 0.0005)
    assert c.take(S2C) == []
    c.relay.tick(wake.at)
    assert [(f.stream_id, f.error_code) for f in c.take(S2C)] == [(3, 8)]


def test_a_reset_with_no_other_stream_open_goes_at_once():
    c = Conn(["rst_stream code=REFUSED_STREAM towards=client path=/refused"])
    c.request(1, REQ[:3] + [(":path", "/refused")])
    assert [(f.stream_id, f.error_code) for f in c.take(S2C)] == [(1, 7)]
    assert c.taken(Wake) == []


def test_a_held_reset_goes_before_a_goaway_and_is_dropped_when_the_client_left():
    c = Conn(["rst_stream code=REFUSED_STREAM towards=client path=/refused"])
    c.request(1)
    c.request(3, REQ[:3] + [(":path", "/refused")])
    c.relay.shutdown()                                 # GOAWAY towards the client: the reset first
    assert types(c.take(S2C)) == ["RstStream", "GoAway"]

    c = Conn(["rst_stream code=REFUSED_STREAM towards=client path=/refused"])
    c.request(1)
    c.request(3, REQ[:3] + [(":path", "/refused")])
    c.relay.eof(C2S)
    c.relay.tick(1.0)
    assert c.take(S2C) == []


def test_requests_read_into_a_writable_buffer_are_matched_and_remembered_alike():
    # (Side.opened_by is looked up with a view of the read; a view of a bytearray does not hash.)
    c = Conn(["rst_stream code=REFUSED_STREAM towards=client path=/refused"])
    for sid in (1, 3, 5):
        path = "/refused" if sid == 5 else "/ok"
        c.relay.receive(C2S, bytearray(wire(c.client.headers(sid, REQ[:3] + [(":path", path)], True))), 0.0)
    assert [f.stream_id for f in c.take(C2S)] == [1, 3]
    c.relay.tick(0.01)
    assert [(f.stream_id, f.error_code) for f in c.take(S2C)] == [(5, 7)]
