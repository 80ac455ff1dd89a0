// h2proxy web view: plain JavaScript, no build step, no libraries.
// Data comes from the JSON routes under /api/web/ and live deltas from /api/web/events
// (server-sent events read through fetch, so the token travels in the Authorization header).
"use strict";

const FRAME_TYPES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
  "WINDOW_UPDATE", "CONTINUATION", "ALTSVC", "violation", "hook_action"];
const SIDES = ["client", "proxy to client", "proxy to upstream", "server"];
const COLORS = {"client": "#2f6fd6", "proxy to client": "#8bb3f0", "proxy to upstream": "#e5a04a", "server": "#c0571b"};
const MAX_FRAMES = 2000;
// The frames table shows the latest FRAME_ROWS that pass the filters, and the lists are redrawn at most
// every RENDER_MS while deltas come in: the browser shares the machine with the proxy.
const FRAME_ROWS = 200;
const RENDER_MS = 1000;

const state = {
  token: null, mode: "live", conns: new Map(), frames: [], version: 0, cursor: 0, now: null,
  selConn: null, selStream: null, connDetail: null, streamDetail: null, streamInfo: new Map(),
  stallMs: 500, renderQueued: false, detailDue: false, faults: [],
};

// ------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  if (n < 10000) return String(n);
  if (n < 10e6) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1048576).toFixed(1) + " MiB";
}

function fmtTime(ts, base) {
  if (ts === null || ts === undefined) return "";
  if (base) return ((ts - base) * 1000).toFixed(1) + " ms";
  const d = new Date(ts * 1000);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function hexdump(b64) {
  if (!b64) return "";
  const bin = atob(b64);
  const lines = [];
  for (let off = 0; off < bin.length; off += 16) {
    const chunk = bin.slice(off, off + 16);
    let hex = "", text = "";
    for (let i = 0; i < 16; i++) {
      if (i < chunk.length) {
        const c = chunk.charCodeAt(i);
        hex += c.toString(16).padStart(2, "0") + " ";
        text += c >= 0x20 && c < 0x7f ? chunk[i] : ".";
      } else hex += "   ";
      if (i === 7) hex += " ";
    }
    lines.push(off.toString(16).padStart(8, "0") + "  " + hex + " |" + text + "|");
  }
  return lines.join("\n");
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = Object.assign({"Authorization": "Bearer " + state.token}, opts.headers || {});
  if (opts.json !== undefined) {
    opts.body = JSON.stringify(opts.json);
    opts.headers["Content-Type"] = "application/json";
    delete opts.json;
  }
  const resp = await fetch(path, opts);
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (resp.status === 401) askToken();
  if (!resp.ok) {
    const err = new Error((body && body.error) || ("HTTP " + resp.status));
    err.status = resp.status;
    throw err;
  }
  return body;
}

// ------------------------------------------------------------------ filters

function filters() {
  const v = (id) => document.getElementById(id).value.trim();
  return {
    conn: v("f-conn") === "" ? null : Number(v("f-conn")),
    stream: v("f-stream") === "" ? null : Number(v("f-stream")),
    type: v("f-type"), path: v("f-path"), status: v("f-status"),
    violations: document.getElementById("f-violations").checked,
  };
}

function globMatch(pattern, text) {
  if (!pattern) return true;
  if (text === null || text === undefined) return false;
  if (!pattern.includes("*") && !pattern.includes("?")) return String(text).includes(pattern);
  const re = new RegExp("^" + pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$");
  return re.test(String(text));
}

function statusMatch(pattern, status) {
  if (!pattern) return true;
  if (status === null || status === undefined) return false;
  return pattern.split(",").map((p) => p.trim()).filter(Boolean).some((p) => {
    const re = new RegExp("^" + p.replace(/x/gi, "\\d") + "$");
    return re.test(String(status));
  });
}

function streamKey(conn, sid) { return conn + "/" + sid; }

function learnStream(rec) {
  // Path and status of streams, from the header lists of the frames seen live.
  if (!rec.headers || !rec.stream) return;
  const key = streamKey(rec.conn, rec.stream);
  const info = state.streamInfo.get(key) || {};
  for (const [name, value] of rec.headers) {
    if (name === ":path" && info.path === undefined) info.path = value;
    if (name === ":status" && !String(value).startsWith("1")) info.status = value;
  }
  state.streamInfo.set(key, info);
  if (state.streamInfo.size > 20000) state.streamInfo.delete(state.streamInfo.keys().next().value);
}

function frameVisible(rec, f) {
  if (f.conn !== null && rec.conn !== f.conn) return false;
  if (f.violations && rec.record !== "violation") return false;
  const type = rec.record === "frame" ? rec.type : rec.record;
  if (f.type && type !== f.type) return false;
  const sid = rec.record === "hook_action" ? (rec.detail || {}).stream : rec.stream;
  if (f.stream !== null && sid !== f.stream) return false;
  if (f.path || f.status) {
    const info = state.streamInfo.get(streamKey(rec.conn, sid)) || {};
    if (f.path && !globMatch(f.path, info.path)) return false;
    if (f.status && !statusMatch(f.status, info.status)) return false;
  }
  return true;
}

function connVisible(c, f) {
  if (f.conn !== null && c.id !== f.conn) return false;
  if (f.violations && !c.violations) return false;
  return true;
}

function streamVisible(s, f) {
  if (f.stream !== null && s.id !== f.stream) return false;
  if (!globMatch(f.path, s.path)) return false;
  if (!statusMatch(f.status, s.status)) return false;
  return true;
}

// ------------------------------------------------------------------ rendering: lists

function frameWhat(rec) {
  if (rec.record === "violation") return `violation (RFC 9113 §${rec.section}) ${rec.code}: ${rec.message}`;
  if (rec.record === "hook_action") {
    const d = rec.detail || {};
    return `${rec.hook}: ${rec.action} on ${d.frame || ""} ${d.direction || ""} ${d.detail || ""}`;
  }
  const f = rec.fields || {};
  const parts = [];
  if (rec.headers) parts.push(rec.headers.filter(([n]) => n.startsWith(":")).map(([n, v]) => `${n} ${v}`).join(" "));
  if (f.settings) parts.push(f.settings.map(([k, v]) => `${String(k).replace("SETTINGS_", "")}=${v}`).join(" "));
  if (f.increment !== undefined) parts.push(`+${f.increment}`);
  if (f.error) parts.push(f.error);
  if (f.last_stream_id !== undefined) parts.push(`last_stream_id=${f.last_stream_id}`);
  if (f.weight !== undefined) parts.push(`dep=${f.depends_on} w=${f.weight}${f.exclusive ? " excl" : ""}`);
  if (f.parse_error) parts.push(f.parse_error);
  const acts = (rec.actions || []).filter((a) => !(a && a.action === "passed"));
  if (acts.length) parts.push("hooks: " + acts.map((a) => typeof a === "string" ? a : JSON.stringify(a)).join(", "));
  return parts.join("  ");
}

function frameRow(rec, base, onclick) {
  const type = rec.record === "frame" ? rec.type : rec.record;
  const sid = rec.record === "hook_action" ? (rec.detail || {}).stream : rec.stream;
  const cls = ["frame", rec.record === "violation" ? "violation" : "", rec.record === "hook_action" ? "hook" : ""].join(" ");
  return el("tr", {class: cls, dataset: {conn: rec.conn, stream: sid === undefined ? "" : sid, type}, onclick},
    el("td", {class: "num"}, rec.seq || ""), el("td", {}, fmtTime(rec.ts, base)), el("td", {class: "num"}, rec.conn),
    el("td", {}, rec.leg || ""), el("td", {}, rec.dir || ""), el("td", {}, type), el("td", {class: "num"}, sid === undefined ? "" : sid),
    el("td", {}, (rec.flag_names || []).join("|")), el("td", {class: "num"}, rec.length === undefined ? "" : rec.length),
    el("td", {class: "what"}, frameWhat(rec)));
}

function frameDetail(rec) {
  const box = el("td", {colspan: 10, class: "detail"});
  if (rec.headers) {
    box.append(el("h3", {}, "headers"), el("table", {class: "kv headers"},
      rec.headers.map(([n, v]) => el("tr", {}, el("td", {}, n), el("td", {}, v)))));
  }
  if (rec.fields && Object.keys(rec.fields).length) box.append(el("h3", {}, "fields"), el("pre", {}, JSON.stringify(rec.fields)));
  if (rec.actions) box.append(el("h3", {}, "hook actions"), el("pre", {}, JSON.stringify(rec.actions, null, 1)));
  if (rec.detail) box.append(el("h3", {}, "detail"), el("pre", {}, JSON.stringify(rec.detail)));
  if (rec.wire) box.append(el("h3", {}, "bytes" + (rec.wire_truncated ? " (first 258)" : "")), el("div", {class: "hex"}, hexdump(rec.wire)));
  return el("tr", {class: "frame-detail"}, box);
}

function toggleDetail(row, rec) {
  const next = row.nextSibling;
  if (next && next.classList && next.classList.contains("frame-detail")) { next.remove(); return; }
  row.after(frameDetail(rec));
}

function renderConns() {
  const f = filters();
  const body = document.querySelector("#conns tbody");
  const rows = [];
  let shown = 0;
  for (const c of [...state.conns.values()].reverse()) {
    if (!connVisible(c, f)) continue;
    shown++;
    const alpn = c.client_alpn || (c.client_tls ? "?" : "h2c");
    rows.push(el("tr", {class: `conn ${c.state} ${state.selConn === c.id ? "selected" : ""}`, dataset: {conn: c.id},
      onclick: () => selectConn(c.id)},
      el("td", {class: "num"}, c.id), el("td", {}, c.client || ""), el("td", {}, c.upstream || ""), el("td", {}, alpn),
      el("td", {}, c.state === "closed" ? `closed: ${c.closed}` : "open"), el("td", {class: "num"}, c.frames),
      el("td", {class: "num"}, fmtBytes(c.bytes)), el("td", {class: "num"}, c.streams),
      el("td", {title: "violations / fault hits / stalls"},
        (c.violations ? `${c.violations}V ` : "") + (c.faults ? `${c.faults}F ` : "") + (c.stalls ? `${c.stalls}S` : ""))));
  }
  body.replaceChildren(...rows);
  document.getElementById("conn-count").textContent = `${shown} of ${state.conns.size}`;
}

function renderFrames() {
  const f = filters();
  const body = document.querySelector("#frames tbody");
  const rows = [];
  const list = state.frames.filter((r) => frameVisible(r, f)).slice(-FRAME_ROWS);
  for (const rec of list) {
    const row = frameRow(rec, null, () => toggleDetail(row, rec));
    rows.push(row);
  }
  body.replaceChildren(...rows);
  document.getElementById("frame-count").textContent = `${list.length} shown, ${state.frames.length} kept`;
  if (document.getElementById("follow").checked) {
    const scroller = body.closest(".scroll");
    scroller.scrollTop = scroller.scrollHeight;
  }
}

// ------------------------------------------------------------------ rendering: charts

function chart(series, opts) {
  // series: {side: [[t, window], ...]}; opts: {t0, t1, now, stalls, errors, id}.
  // One band per sender, each with its own scale: a 16 MiB connection window would flatten a 64 KiB one.
  const sides = SIDES.filter((s) => (series[s] || []).length || (opts.stalls || []).some((x) => x.side === s));
  const W = opts.width || 560, L = 66, R = 8, T = 4, B = 16, band = 52, gap = 8;
  const H = T + B + Math.max(1, sides.length) * (band + gap);
  const svg = svgEl("svg", {id: opts.id, class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`});
  let t0 = opts.t0, t1 = opts.t1;
  for (const side of sides) for (const [t] of series[side] || []) {
    if (t0 === null || t0 === undefined || t < t0) t0 = t;
    if (t1 === null || t1 === undefined || t > t1) t1 = t;
  }
  for (const st of opts.stalls || []) {
    if (t0 === null || t0 === undefined || st.start < t0) t0 = st.start;
    const e = st.end || opts.now;
    if (e && (t1 === null || t1 === undefined || e > t1)) t1 = e;
  }
  if (!sides.length || t0 === null || t0 === undefined) {
    svg.setAttribute("height", 30);
    svg.append(svgEl("text", {x: 10, y: 20}, "no flow-control data yet"));
    return svg;
  }
  if (!(t1 > t0)) t1 = t0 + 0.001;
  const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
  sides.forEach((side, i) => {
    const top = T + i * (band + gap), pts = series[side] || [];
    let lo = 0, hi = 1;
    for (const [, v] of pts) { if (v < lo) lo = v; if (v > hi) hi = v; }
    const y = (v) => top + (hi - v) / (hi - lo) * band;
    const g = svgEl("g", {class: "band", "data-side": side});
    g.append(svgEl("line", {class: "axis", x1: L, y1: top, x2: L, y2: top + band}));
    g.append(svgEl("line", {class: "zero", x1: L, y1: y(0), x2: W - R, y2: y(0)}));
    g.append(svgEl("text", {x: 2, y: top + 9, fill: COLORS[side]}, side));
    g.append(svgEl("text", {x: 2, y: top + 21}, fmtBytes(hi)));
    g.append(svgEl("text", {x: 2, y: y(0) + 3}, lo < 0 ? "0 / " + fmtBytes(lo) : "0"));
    for (const st of (opts.stalls || []).filter((s) => s.side === side)) {
      const end = st.end || opts.now || t1;
      const rect = svgEl("rect", {class: "stall", x: x(st.start), y: top, width: Math.max(2, x(end) - x(st.start)),
        height: band, "data-side": st.side, "data-stream": st.stream});
      rect.append(svgEl("title", {}, `stall: the ${st.side} held stream ${st.stream} at a zero ${st.scope} window for ` +
        `${st.duration_ms.toFixed(0)} ms` + (st.ended_by ? ` (ended by ${st.ended_by})` : " (still stalled)")));
      g.append(rect);
    }
    if (pts.length) {
      let d = "", started = false;
      for (const [t, v] of pts) {
        d += started ? `H${x(t).toFixed(1)}V${y(v).toFixed(1)}` : `M${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        started = true;
      }
      d += `H${x(t1).toFixed(1)}`;
      g.append(svgEl("path", {d, fill: "none", stroke: COLORS[side], "stroke-width": 1.5, "data-side": side}));
    }
    svg.append(g);
  });
  for (const e of opts.errors || []) {
    if (e.t === null || e.t === undefined) continue;
    const line = svgEl("line", {class: "flow-error", x1: x(e.t), x2: x(e.t), y1: T, y2: H - B});
    line.append(svgEl("title", {}, `${e.what} (${e.side})`));
    svg.append(line);
  }
  svg.append(svgEl("text", {x: L, y: H - 3}, "0 ms"));
  svg.append(svgEl("text", {x: W - R - 70, y: H - 3}, ((t1 - t0) * 1000).toFixed(0) + " ms"));
  return svg;
}

function legend() {
  return el("div", {class: "legend"}, SIDES.map((s) => el("span", {}, el("i", {style: `background:${COLORS[s]}`}), s)),
    el("span", {}, el("i", {style: "background:rgba(220,40,40,.4)"}), `stall (zero window ≥ ${state.stallMs} ms)`));
}

function timeline(streams, t0, t1) {
  const list = streams.filter((s) => s.ended !== "idle (PRIORITY only)").slice(-120);
  const W = 560, rowH = 6, H = Math.max(30, list.length * rowH + 22), L = 40;
  const svg = svgEl("svg", {id: "timeline", width: W, height: H});
  if (!list.length) return svg;
  let a = t0, b = t1;
  for (const s of list) { if (a === null || s.start < a) a = s.start; if (b === null || s.end > b) b = s.end; }
  if (b <= a) b = a + 0.001;
  const x = (t) => L + (t - a) / (b - a) * (W - L - 6);
  list.forEach((s, i) => {
    const color = s.ended === "END_STREAM" ? "#3a9a52" : (s.ended ? "#c43b3b" : "#3b6fc4");
    const r = svgEl("rect", {x: x(s.start), y: 4 + i * rowH, width: Math.max(2, x(s.end) - x(s.start)), height: rowH - 1,
      fill: color, "data-stream": s.id});
    r.append(svgEl("title", {}, `stream ${s.id} ${s.method || ""} ${s.path || ""} → ${s.status || "?"}: ${s.duration_ms} ms, ${s.ended || "open"}`));
    r.addEventListener("click", () => selectStream(s.id));
    svg.append(r);
  });
  svg.append(svgEl("text", {x: 0, y: H - 4}, "0"));
  svg.append(svgEl("text", {x: W - 70, y: H - 4}, ((b - a) * 1000).toFixed(0) + " ms"));
  return svg;
}

// ------------------------------------------------------------------ rendering: details

function fingerprintTable(fps) {
  return el("table", {class: "kv fingerprints"}, SIDES.map((side) => {
    const fp = fps[side] || {};
    return el("tr", {}, el("td", {}, side), el("td", {class: "fp", id: "fp-" + side.replace(/ /g, "-")}, fp.text || "(none yet)"));
  }));
}

function stallTable(stalls, id) {
  if (!stalls.length) return el("p", {id, class: "no-stalls"}, "no stalls");
  return el("table", {id, class: "stalls"}, el("tr", {}, ["side", "stream", "scope", "held", "ended by"].map((h) => el("th", {}, h))),
    stalls.map((s) => el("tr", {class: "stall-row"}, el("td", {}, s.side), el("td", {class: "num"}, s.stream), el("td", {}, s.scope),
      el("td", {class: "num"}, s.duration_ms.toFixed(0) + " ms"), el("td", {}, s.ended_by || "still stalled"))));
}

function renderConnDetail() {
  const box = document.getElementById("conn-detail");
  const d = state.connDetail;
  if (!d) { box.className = "empty"; box.replaceChildren("Select a connection."); return; }
  const c = d.summary, info = d.info || {}, f = filters();
  box.className = "";
  const ctls = info.client_tls, utls = info.upstream_tls;
  const streams = d.streams.filter((s) => streamVisible(s, f));
  box.replaceChildren(...[
    el("h2", {}, `Connection ${c.id} `, el("small", {}, c.state === "closed" ? `closed: ${c.closed}` : "open")),
    el("table", {class: "kv"},
      el("tr", {}, el("td", {}, "client"), el("td", {}, `${info.client_addr || "?"} → ${info.listen_addr || "?"}`)),
      el("tr", {}, el("td", {}, "upstream"), el("td", {}, info.upstream_addr || "?")),
      el("tr", {}, el("td", {}, "client TLS"), el("td", {}, ctls ? `${ctls.version || ""} ALPN ${ctls.alpn || "-"} SNI ${ctls.sni || "-"}` : "none (h2c)")),
      el("tr", {}, el("td", {}, "upstream TLS"), el("td", {}, utls ? `${utls.version || ""} ALPN ${utls.alpn || "-"}` : "none (h2c)")),
      el("tr", {}, el("td", {}, "frames / bytes"), el("td", {}, Object.entries(d.counts).map(([k, v]) => `${k}: ${v.frames} / ${fmtBytes(v.bytes)}`).join(", "))),
      c.sampled ? el("tr", {class: "sampled"}, el("td", {}, "sampled"), el("td", {id: "sampled"},
        `busy: from ${fmtTime(c.sampled)} frames over the web view's budget were only counted ` +
        `(${c.skipped_frames}, ${fmtBytes(c.skipped_bytes)}); windows and headers are not followed after that` +
        (c.detached ? `; from ${fmtTime(c.detached)} the connection is not followed at all (the proxy runs it at full speed)` : ""))) : null,
      d.goaways.length ? el("tr", {}, el("td", {}, "GOAWAY"), el("td", {}, d.goaways.map((g) => `from the ${g.side}: ${g.code} last=${g.last_stream_id}`).join("; "))) : null),
    el("h3", {}, "HTTP/2 fingerprints (Akamai: SETTINGS|WINDOW_UPDATE|PRIORITY|pseudo-headers)"),
    fingerprintTable(d.fingerprints),
    el("h3", {}, "Connection send windows"), legend(),
    chart(d.windows, {id: "conn-chart", t0: c.start, t1: c.end || state.now, now: state.now, stalls: d.stalls, errors: d.flow_errors}),
    stallTable(d.stalls, "conn-stalls"),
    d.violations.length ? el("div", {}, el("h3", {}, "Violations"), el("table", {id: "violations"}, d.violations.map((v) =>
      el("tr", {class: "violation"}, el("td", {}, v.side), el("td", {}, `RFC 9113 §${v.section}`), el("td", {}, v.code), el("td", {}, v.message))))) : null,
    el("h3", {}, `Streams (${streams.length} of ${d.streams.length})`),
    timeline(streams, c.start, c.end || state.now),
    el("table", {id: "streams"}, el("thead", {}, el("tr", {}, ["id", "method", "path", "status", "req", "resp", "duration", "ended", "faults"].map((h) => el("th", {}, h)))),
      el("tbody", {}, streams.slice().reverse().map((s) => el("tr", {class: `stream ${state.selStream === s.id ? "selected" : ""}`, dataset: {stream: s.id},
        onclick: () => selectStream(s.id)},
        el("td", {class: "num"}, s.id), el("td", {}, s.method || ""), el("td", {}, s.path || ""), el("td", {}, s.status || ""),
        el("td", {class: "num"}, fmtBytes(s.req_bytes)), el("td", {class: "num"}, fmtBytes(s.resp_bytes)),
        el("td", {class: "num"}, s.duration_ms === null ? "" : s.duration_ms.toFixed(1) + " ms"), el("td", {}, s.ended || "open"),
        el("td", {class: "num"}, s.faults || "")))))].filter(Boolean));
}

function renderStreamDetail() {
  const box = document.getElementById("stream-detail");
  const d = state.streamDetail;
  if (!d) { box.className = "empty"; box.replaceChildren("Select a stream."); return; }
  const s = d.stream, f = filters();
  box.className = "";
  const body = el("tbody", {});
  const base = s.start;
  for (const rec of d.frames) {
    const type = rec.record === "frame" ? rec.type : rec.record;
    if (f.type && type !== f.type) continue;
    const row = frameRow(rec, base, () => toggleDetail(row, rec));
    body.append(row);
  }
  box.replaceChildren(
    el("h2", {}, `Stream ${s.id} on connection ${d.conn}`),
    el("table", {class: "kv"}, el("tr", {}, el("td", {}, "request"), el("td", {}, `${s.method || "?"} ${s.authority || ""}${s.path || ""}`)),
      el("tr", {}, el("td", {}, "status"), el("td", {}, `${s.status || "?"}${s.grpc_status !== null ? " grpc-status " + s.grpc_status : ""}`)),
      el("tr", {}, el("td", {}, "sizes"), el("td", {}, `request ${fmtBytes(s.req_bytes)}, response ${fmtBytes(s.resp_bytes)}`)),
      el("tr", {}, el("td", {}, "duration"), el("td", {}, s.duration_ms === null ? "" : s.duration_ms.toFixed(1) + " ms")),
      el("tr", {}, el("td", {}, "ended"), el("td", {id: "stream-ended"}, s.ended || "open")),
      s.grpc_messages ? el("tr", {}, el("td", {}, "gRPC messages"), el("td", {id: "grpc-messages"},
        Object.entries(s.grpc_messages).map(([side, g]) => el("div", {class: "grpc"},
          `${side}: ${g.count} message${g.count === 1 ? "" : "s"}${g.lost ? " (then not readable)" : ""}`,
          g.messages.map((m) => el("div", {class: "fp"}, `${m.length} bytes${m.compressed ? " compressed" : ""}: ${m.preview}${m.length > 32 ? "…" : ""}`)))))) : null),
    el("h3", {}, "Stream send windows"), legend(),
    chart(d.windows, {id: "stream-chart", t0: s.start, t1: s.ended ? s.end : state.now, now: state.now, stalls: d.stalls, errors: d.flow_errors}),
    stallTable(d.stalls, "stream-stalls"),
    el("h3", {}, `Frames (${d.frames.length}, both legs, both directions; click for headers and bytes)`),
    el("table", {id: "stream-frames"}, el("thead", {}, el("tr", {}, ["seq", "t", "conn", "leg", "dir", "type", "stream", "flags", "len", "what"].map((h) => el("th", {}, h)))), body));
}

// ------------------------------------------------------------------ selection and loading

async function selectConn(id) {
  state.selConn = id;
  state.selStream = null;
  state.streamDetail = null;
  renderConns();
  renderStreamDetail();
  await loadConn();
}

async function selectStream(sid) {
  state.selStream = sid;
  await loadStream();
  renderConnDetail();
}

async function loadConn() {
  if (state.selConn === null) return;
  try {
    state.connDetail = await api(`/api/web/conn/${state.selConn}`);
  } catch (e) {
    state.connDetail = null;
  }
  renderConnDetail();
}

async function loadStream() {
  if (state.selConn === null || state.selStream === null) return;
  try {
    state.streamDetail = await api(`/api/web/conn/${state.selConn}/stream/${state.selStream}`);
  } catch (e) {
    state.streamDetail = null;
  }
  renderStreamDetail();
}

function scheduleRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  setTimeout(() => {
    state.renderQueued = false;
    renderConns();
    renderFrames();
  }, RENDER_MS);
}

function addFrames(frames) {
  for (const rec of frames) {
    learnStream(rec);
    state.frames.push(rec);
  }
  if (state.frames.length > MAX_FRAMES) state.frames.splice(0, state.frames.length - MAX_FRAMES);
}

function applySnapshot(snap) {
  state.mode = snap.mode;
  state.version = snap.version;
  state.cursor = snap.cursor;
  state.now = snap.now;
  state.stallMs = snap.stall_threshold_ms;
  state.conns = new Map(snap.conns.map((c) => [c.id, c]));
  state.frames = [];
  addFrames(snap.frames);
  const badge = document.getElementById("live");
  badge.textContent = snap.mode === "live" ? "live" : "recorded log";
  badge.className = "badge " + snap.mode;
  document.getElementById("title").textContent = snap.title || "";
  scheduleRender();
}

function applyDelta(delta) {
  state.version = delta.version;
  state.cursor = delta.cursor;
  state.now = delta.now;
  for (const c of delta.conns) state.conns.set(c.id, c);
  addFrames(delta.frames);
  scheduleRender();
  if (state.selConn !== null && delta.conns.some((c) => c.id === state.selConn)) state.detailDue = true;
}

async function refreshDetails() {
  // At most once a second: the open connection and stream, when they changed.
  if (state.detailDue) {
    state.detailDue = false;
    await loadConn();
    if (state.selStream !== null) await loadStream();
  }
  setTimeout(refreshDetails, 1000);
}

async function followEvents() {
  const badge = document.getElementById("live");
  for (;;) {
    try {
      const resp = await fetch(`/api/web/events?version=${state.version}&cursor=${state.cursor}`,
        {headers: {"Authorization": "Bearer " + state.token}});
      if (resp.status === 401) { askToken(); return; }
      if (!resp.ok || !resp.body) throw new Error("HTTP " + resp.status);
      if (state.mode === "live") { badge.textContent = "live"; badge.className = "badge live"; }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) event = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (event === "delta" && data) applyDelta(JSON.parse(data));
        }
      }
    } catch (e) {
      // fall through to the retry below
    }
    badge.textContent = state.mode === "live" ? "disconnected: retrying" : "recorded log";
    if (state.mode === "live") badge.className = "badge down";
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// ------------------------------------------------------------------ fault rules

function ruleText(rule) {
  const skip = new Set(["name", "action", "enabled", "matches", "hits", "source"]);
  return rule.action + " " + Object.entries(rule).filter(([k]) => !skip.has(k)).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(",") : v}`).join(" ");
}

function faultError(text) {
  // The panel may have been replaced by the "no fault rules" note meanwhile.
  const box = document.getElementById("fault-error");
  if (box) box.textContent = text;
}

function noFaults(text) {
  state.noFaults = true;
  document.getElementById("faults-panel").replaceChildren(el("p", {class: "empty", id: "no-faults"}, text));
}

async function loadFaults() {
  if (state.mode !== "live") {
    noFaults("A recorded log: no proxy, no fault rules.");
    return;
  }
  try {
    const [list, counters] = await Promise.all([api("/faults"), api("/counters")]);
    state.faults = list.faults;
    const rules = counters.rules || {};
    const tbody = document.querySelector("#faults tbody");
    if (!tbody) return;
    tbody.replaceChildren(...list.faults.map((r) => {
      const c = rules[r.name] || {};
      return el("tr", {class: "fault", dataset: {name: r.name}},
        el("td", {}, el("input", {type: "checkbox", class: "fault-enabled", checked: r.enabled !== false,
          onchange: (ev) => changeFault(r.name, {enabled: ev.target.checked})})),
        el("td", {}, r.name), el("td", {class: "fp"}, ruleText(r)),
        el("td", {class: "num fault-matches"}, c.matches === undefined ? "" : c.matches),
        el("td", {class: "num fault-hits"}, c.hits === undefined ? "" : c.hits),
        el("td", {}, el("button", {type: "button", class: "fault-remove", onclick: () => removeFault(r.name)}, "remove")));
    }));
    faultError("");
  } catch (e) {
    if (e.status === 503) noFaults(e.message);
    else faultError(String(e.message || e));
  }
}

async function changeFault(name, changes) {
  try { await api(`/faults/${encodeURIComponent(name)}`, {method: "PATCH", json: changes}); }
  catch (e) { faultError(String(e.message || e)); }
  await loadFaults();
}

async function removeFault(name) {
  try { await api(`/faults/${encodeURIComponent(name)}`, {method: "DELETE"}); }
  catch (e) { faultError(String(e.message || e)); }
  await loadFaults();
}

async function addFault(ev) {
  ev.preventDefault();
  const line = document.getElementById("fault-line").value.trim();
  const name = document.getElementById("fault-name").value.trim();
  if (!line) return;
  const body = {line};
  if (name) body.name = name;
  try {
    await api("/faults", {method: "POST", json: body});
    document.getElementById("fault-line").value = "";
    document.getElementById("fault-name").value = "";
    await loadFaults();
    faultError("");
  } catch (e) {
    faultError(String(e.message || e));
  }
}

function pollFaults() {
  loadFaults();
  if (state.mode === "live" && !state.noFaults) setTimeout(pollFaults, 2000);
}

// ------------------------------------------------------------------ start

function askToken() {
  document.getElementById("token-box").hidden = false;
}

async function start() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("h2proxy-token", hash.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  state.token = sessionStorage.getItem("h2proxy-token");
  document.getElementById("token-save").addEventListener("click", () => {
    sessionStorage.setItem("h2proxy-token", document.getElementById("token-input").value.trim());
    location.reload();
  });
  const typeSel = document.getElementById("f-type");
  for (const t of FRAME_TYPES) typeSel.append(el("option", {value: t}, t));
  for (const id of ["f-conn", "f-stream", "f-type", "f-path", "f-status", "f-violations"]) {
    document.getElementById(id).addEventListener("input", () => { renderConns(); renderFrames(); renderConnDetail(); renderStreamDetail(); });
  }
  document.getElementById("f-clear").addEventListener("click", () => {
    document.getElementById("filters").reset();
    renderConns(); renderFrames(); renderConnDetail(); renderStreamDetail();
  });
  document.getElementById("fault-form").addEventListener("submit", addFault);
  if (!state.token) { askToken(); return; }
  try {
    applySnapshot(await api("/api/web/snapshot"));
  } catch (e) {
    document.getElementById("live").textContent = "error: " + (e.message || e);
    return;
  }
  pollFaults();
  refreshDetails();
  followEvents();
}

start();
