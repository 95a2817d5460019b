"""The live pool page of ``pgfleet demo --serve``: one self-contained HTML document.

No build step and nothing fetched but ``/api/pool`` (the shape is `pgfleet.demo._live.snapshot`'s):
the charts are inline SVG drawn by the small script at the end, which polls once a second
for the samples it does not have yet (``?since=``).
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pgfleet demo: live pool</title>
<link rel="icon" href="data:,">
<style>
:root{--in-use:#e07b12;--idle:#2e9d68;--connecting:#78a3d6;--waiting:#d43d3d;
--rate:#3467d0;--p50:#3467d0;--p99:#8b45c9;--grid:#e6e8ec;--muted:#5f6673;--ink:#1d2230;
--card:#fff;--line:#dde0e6;--down:#d43d3d;--fail:#c77700}
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f3f4f7;
color:var(--ink)}
header{display:flex;align-items:center;gap:1rem;flex-wrap:wrap;padding:.7rem 1.5rem;
background:#1f2a44;color:#fff}
header h1{font-size:1.15rem;margin:0;font-weight:600}
header h1 .pool{font-weight:400;opacity:.8}
header nav{margin-left:auto;font-size:.85rem}
header nav a{color:#cfe0ff;margin-left:.8rem}
.pill{display:inline-flex;align-items:center;gap:.35rem;padding:.15rem .6rem;border-radius:99px;
font-size:.8rem;font-weight:600;background:#2e9d68;color:#fff}
.pill.down{background:var(--down)} .pill.failing{background:var(--fail)}
.pill.unreachable{background:#6b7280}
#updated{font-size:.8rem;opacity:.75}
main{padding:1rem 1.5rem 2rem;max-width:1600px;margin:0 auto}
#banner{display:flex;gap:.8rem;align-items:flex-start;margin:0 0 1rem;padding:.8rem 1rem;
border-radius:8px;background:#fdecec;border:2px solid var(--down);color:#7d1414}
#banner[hidden]{display:none}
#banner.failing{background:#fff4e0;border-color:var(--fail);color:#6b4000}
#banner.unreachable{background:#eef0f3;border-color:#6b7280;color:#333}
#banner .icon{font-size:1.6rem;line-height:1}
#banner strong{display:block;font-size:1.05rem}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(108px,1fr));gap:.6rem;margin:0}
.tile{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.5rem .75rem}
.tile dt{font-size:.78rem;color:var(--muted);display:flex;align-items:center;gap:.35rem}
.tile dd{margin:0;font-size:1.45rem;font-weight:600;font-variant-numeric:tabular-nums;
white-space:nowrap}
.tile dd small{font-size:.8rem;font-weight:400;color:var(--muted)}
.tile dd small.le{font-size:1rem;margin-right:.12rem}
.sw{display:inline-block;width:.7rem;height:.7rem;border-radius:2px;flex:none}
.stale .tile dd,.stale svg{opacity:.4}
#capacity{margin:.7rem 0 1.1rem;background:var(--card);border:1px solid var(--line);
border-radius:8px;padding:.55rem .75rem}
#capacity h2{font-size:.85rem;margin:0 0 .35rem;color:var(--muted);font-weight:600}
#capbar{display:flex;height:18px;border-radius:4px;overflow:hidden;background:#eceef2}
#capbar div{height:100%;transition:width .3s}
.legend{display:flex;flex-wrap:wrap;gap:.3rem 1rem;list-style:none;padding:0;margin:.4rem 0 0;
font-size:.8rem;color:var(--muted)}
.legend li{display:flex;align-items:center;gap:.35rem}
.legend .glyph{font-size:.85rem;width:.9rem;text-align:center}
.legend .dash{width:1.1rem;height:0;border-top:2px dashed #6b7280}
.legend .band{width:1rem;height:.75rem;background:rgba(212,61,61,.16);border:1px solid
rgba(212,61,61,.5)}
.bar-head{display:flex;align-items:center;gap:1rem;margin:0 0 .5rem}
.bar-head h2{font-size:1.05rem;margin:0}
.bar-head .note{font-size:.8rem;color:var(--muted)}
.window{margin-left:auto;display:flex;gap:0;border:1px solid var(--line);border-radius:6px;
overflow:hidden}
.window button{border:0;background:#fff;padding:.25rem .7rem;font:inherit;font-size:.8rem;
cursor:pointer;color:var(--ink)}
.window button[aria-pressed=true]{background:#1f2a44;color:#fff}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:.8rem}
.wide{grid-column:1/-1}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:.6rem .8rem .7rem;margin:0;min-width:0;position:relative}
.card h3{font-size:.95rem;margin:0;display:inline}
.card .unit{font-size:.78rem;color:var(--muted);font-weight:400;margin-left:.3rem}
.card svg{display:block;width:100%;margin-top:.3rem;overflow:visible}
.chart{height:190px} .chart.tall{height:240px} #histogram{height:250px}
svg text{font-size:10.5px;fill:var(--muted);font-family:inherit}
svg .count{fill:var(--ink);font-weight:600}
svg .empty{font-size:12px}
.tip{position:absolute;pointer-events:none;background:rgba(31,42,68,.95);color:#fff;
font-size:.75rem;padding:.35rem .5rem;border-radius:5px;white-space:nowrap;z-index:2}
.tip[hidden]{display:none}
.events{display:flex;flex-direction:column}
.events-box{position:relative;flex:1;min-height:200px;margin-top:.3rem}
table{border-collapse:collapse;width:100%;max-width:980px;font-size:.85rem;margin-top:.3rem}
caption{text-align:left;font-size:.78rem;color:var(--muted);padding-bottom:.2rem}
th,td{text-align:left;padding:.28rem .4rem;border-bottom:1px solid #eef0f3;white-space:nowrap}
th{font-weight:600;color:var(--muted);font-size:.78rem}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
#hosts:not(.cluster) .cl{display:none}
tr.host.primary td:first-child{font-weight:600}
td.stale{color:var(--down);font-weight:600}
.dot{display:inline-block;width:.6rem;height:.6rem;border-radius:50%;margin-right:.3rem;
background:#9aa1ad}
.dot.up{background:var(--idle)} .dot.down{background:var(--down)}
#events{list-style:none;padding:0;margin:0;font-size:.82rem;position:absolute;inset:0;
overflow:auto}
#events li{padding:.2rem 0;border-bottom:1px solid #f0f1f4;display:flex;gap:.6rem}
#events time{color:var(--muted);font-variant-numeric:tabular-nums;flex:none}
#events .warning,#events .error{color:#a02020}
footer{font-size:.78rem;color:var(--muted);margin-top:1rem}
.sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);
white-space:nowrap}
@media (max-width:900px){.grid{grid-template-columns:1fr}}
</style></head><body>
<header>
<h1>pgfleet live pool <span class="pool" id="name"></span></h1>
<span class="pill" id="status" role="status">connecting&hellip;</span>
<span id="updated"></span>
<nav aria-label="Endpoints"><a href="/api/pool">/api/pool</a><a href="/metrics">/metrics</a>
<a href="/health">/health</a><a href="/people">/people</a></nav>
</header>
<main id="main">
<div id="banner" role="alert" aria-live="assertive" hidden><span class="icon"
aria-hidden="true">&#9888;</span><div><strong id="banner-title"></strong>
<span id="banner-text"></span></div></div>
<noscript><p>This page draws the pool with a small script: enable JavaScript, or read
<a href="/api/pool">/api/pool</a>.</p></noscript>

<section aria-labelledby="now-h">
<h2 id="now-h" class="sr-only">The pool now</h2>
<dl class="tiles">
<div class="tile"><dt>Checkouts / s<span class="sr-only"> (last 10 s)</span></dt>
<dd id="rate">&ndash;</dd></div>
<div class="tile"><dt>Wait p50</dt><dd id="p50">&ndash;</dd></div>
<div class="tile"><dt>Wait p99</dt><dd id="p99">&ndash;</dd></div>
<div class="tile"><dt><span class="sw" style="background:var(--in-use)"></span>In use</dt>
<dd id="in_use">&ndash;</dd></div>
<div class="tile"><dt><span class="sw" style="background:var(--idle)"></span>Idle</dt>
<dd id="idle">&ndash;</dd></div>
<div class="tile"><dt><span class="sw" style="background:var(--waiting)"></span>Waiting</dt>
<dd id="waiting">&ndash;</dd></div>
<div class="tile"><dt>Size</dt><dd><span id="size">&ndash;</span>
<small>of <span id="max_size">&ndash;</span></small></dd></div>
<div class="tile"><dt>Checkouts</dt><dd id="checkouts">&ndash;</dd></div>
<div class="tile"><dt>Timed out</dt><dd id="timeouts">&ndash;</dd></div>
<div class="tile"><dt>Failed fast</dt><dd id="failed">&ndash;</dd></div>
</dl>
<div id="capacity">
<h2 id="cap-h">Connections now (of the maximum)</h2>
<div id="capbar" role="img" aria-labelledby="cap-h" aria-describedby="cap-desc"></div>
<p id="cap-desc" class="sr-only"></p>
<ul class="legend" aria-label="Legend of the connections bar">
<li><span class="sw" style="background:var(--in-use)"></span>in use</li>
<li><span class="sw" style="background:var(--idle)"></span>idle</li>
<li><span class="sw" style="background:var(--connecting)"></span>connecting or checking</li>
<li><span class="sw" style="background:#eceef2;border:1px solid #ccd"></span>free slot</li>
<li><span class="sw" style="background:var(--waiting)"></span><span id="cap-waiting">no request
waiting</span></li>
</ul></div>
</section>

<section aria-labelledby="history-h">
<div class="bar-head"><h2 id="history-h">Last <span id="window-label">minute</span></h2>
<span class="note">one sample a second</span>
<div class="window" role="group" aria-label="Time window">
<button type="button" data-seconds="60" aria-pressed="true">1 min</button>
<button type="button" data-seconds="300" aria-pressed="false">5 min</button>
<button type="button" data-seconds="600" aria-pressed="false">10 min</button></div></div>
<div class="grid">
<figure class="card">
<figcaption><h3 id="throughput-h">Throughput</h3>
<span class="unit" id="throughput-unit">checkouts per second</span></figcaption>
<svg id="chart-throughput" class="chart" role="img"
aria-labelledby="throughput-h throughput-unit" aria-describedby="throughput-desc"></svg>
<p id="throughput-desc" class="sr-only"></p>
<ul class="legend" aria-label="Legend of the throughput chart">
<li><span class="sw" style="background:var(--rate)"></span>checkouts per second</li>
<li><span class="band"></span>database down</li></ul>
</figure>
<figure class="card">
<figcaption><h3 id="wait-h">Checkout wait</h3>
<span class="unit" id="wait-unit">ms, log scale; each second's bucket bound</span></figcaption>
<svg id="chart-wait" class="chart" role="img" aria-labelledby="wait-h wait-unit"
aria-describedby="wait-desc"></svg>
<p id="wait-desc" class="sr-only"></p>
<ul class="legend" aria-label="Legend of the wait chart">
<li><span class="sw" style="background:var(--p50)"></span>p50 (median)</li>
<li><span class="sw" style="background:var(--p99)"></span>p99</li>
<li><span class="band"></span>database down</li></ul>
</figure>
<figure class="card wide">
<figcaption><h3 id="size-h">Pool size</h3>
<span class="unit" id="size-unit">connections, stacked; requests waiting on top</span>
</figcaption>
<svg id="chart-size" class="chart tall" role="img" aria-labelledby="size-h size-unit"
aria-describedby="size-desc"></svg>
<p id="size-desc" class="sr-only"></p>
<ul class="legend" aria-label="Legend of the pool size chart">
<li><span class="sw" style="background:var(--in-use)"></span>in use</li>
<li><span class="sw" style="background:var(--idle)"></span>idle</li>
<li><span class="sw" style="background:var(--connecting)"></span>connecting or checking</li>
<li><span class="sw" style="background:var(--waiting)"></span>waiting requests</li>
<li><span class="dash"></span>max size</li>
<li><span class="glyph" style="color:var(--idle)">&#9650;</span>grew</li>
<li><span class="glyph" style="color:#6b7785">&#9660;</span>shrank</li>
<li><span class="glyph" style="color:var(--in-use)">&#8635;</span>reconnect (connection
lost)</li>
<li><span class="glyph" style="color:var(--waiting)">&#10005;</span>checkout timed out</li>
<li><span class="glyph" style="color:var(--p99)">&#8644;</span>failover (new primary)</li>
<li><span class="band"></span>database down</li></ul>
</figure>
<section class="card wide" aria-labelledby="hosts-h">
<h3 id="hosts-h">Servers</h3> <span class="unit">where the pool's connections go; one row per
host</span>
<p id="cluster-summary" class="unit" hidden></p>
<table id="hosts"><caption class="sr-only">Servers of the pool</caption>
<thead><tr><th scope="col">Host</th><th scope="col">Role</th><th scope="col">State</th>
<th scope="col" class="num">Connections open</th><th scope="col" class="num">In use by
requests</th><th scope="col">Server version</th><th scope="col" class="num cl">Idle</th>
<th scope="col" class="num cl">Timeline</th><th scope="col" class="num cl">Replay lag</th>
<th scope="col" class="num cl">Reads</th><th scope="col" class="num cl">Writes</th>
<th scope="col" class="cl">Fenced / stale</th></tr></thead><tbody></tbody></table>
</section>
<figure class="card">
<figcaption><h3 id="hist-h">Checkout wait histogram</h3>
<span class="unit" id="hist-unit">since the service started; count on a log scale</span>
</figcaption>
<svg id="histogram" role="img" aria-labelledby="hist-h hist-unit"
aria-describedby="hist-desc"></svg>
<p id="hist-desc" class="sr-only"></p>
<ul class="legend" aria-label="Legend of the histogram">
<li><span class="sw" style="background:var(--rate)"></span>checkouts that waited up to the
bound below the bar (number above it)</li></ul>
</figure>
<section class="card events" aria-labelledby="events-h">
<div><h3 id="events-h">Recent events</h3> <span class="unit">newest first</span></div>
<div class="events-box"><ul id="events"></ul></div>
</section>
</div>
</section>
<footer>Sampled once a second from <code>pool.stats()</code>. Wait percentiles are upper
bounds (the bound of the histogram bucket that holds them). With no traffic the service checks
its idle connections every 2 s, so that an outage shows here too; idle connections above the
floor close after 30 s.</footer>
</main>
<div class="tip" id="tip" hidden></div>
<script>
"use strict";
(function () {
const KEEP = 600;                 // seconds of samples kept by the page
let chosen = null;                // seconds drawn, once the user picks a window
let span = 60;                    // seconds drawn now
let samples = [], marks = [], last = null, lastT = 0, pollOk = null;
const $ = (id) => document.getElementById(id);
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
const esc = (s) => String(s).replace(/[&<>"]/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
const int = (n) => Number(n).toLocaleString("en-US");
function compact(n) {
  if (n < 1000) return String(n);
  const units = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [v, u] of units) if (n >= v) {
    const x = n / v; return (x < 10 ? x.toFixed(1).replace(/\\.0$/, "") : Math.round(x)) + u;
  }
  return String(n);
}
function ms(s) {
  if (s === null || s === undefined) return "\\u2013";
  const m = s * 1000;
  if (m >= 1000) return +(m / 1000).toPrecision(3) + " s";
  return +m.toPrecision(3) + " ms";
}
function rate(r) { return r >= 100 ? int(Math.round(r)) : r.toFixed(1); }
function clock(t) {
  return new Date(t * 1000).toLocaleTimeString("en-GB", {hour12: false});
}
function bound(id, s) {
  // An upper bound: a small "up to" sign before the number.
  const html = s === null ? "\\u2013" : '<small class="le">\\u2264</small>' + esc(ms(s));
  const el = $(id); if (el.innerHTML !== html) el.innerHTML = html;
}
function text(id, v) { const el = $(id); if (el.textContent !== String(v)) el.textContent = v; }

// -- geometry ----------------------------------------------------------------------
function frame(svg, pad) {
  const w = Math.max(svg.clientWidth, 200), h = Math.max(svg.clientHeight, 100);
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  return {w: w, h: h, l: pad.l, r: w - pad.r, t: pad.t, b: h - pad.b};
}
function timeAxis(f, t1) {
  const t0 = t1 - span, step = span <= 60 ? 10 : 60;
  const x = (t) => f.l + (f.r - f.l) * (t - t0) / span;
  let out = "";
  for (let k = 0; k <= span; k += step) {
    const xx = x(t1 - k);
    const label = k === 0 ? "now" : (step === 60 ? "\\u2212" + (k / 60) + " min"
                                                 : "\\u2212" + k + " s");
    out += '<line x1="' + xx + '" x2="' + xx + '" y1="' + f.t + '" y2="' + f.b +
      '" stroke="' + css("--grid") + '"/>';
    const anchor = k === 0 ? "end" : (k === span ? "start" : "middle");
    out += '<text x="' + xx + '" y="' + (f.b + 15) + '" text-anchor="' + anchor + '">' +
      label + "</text>";
  }
  return {x: x, t0: t0, svg: out};
}
function linearTicks(max) {
  const raw = max / 4, mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = 0; v <= max + 1e-9; v += step) ticks.push(+v.toPrecision(6));
  return ticks;
}
function yGrid(f, ticks, y, fmt) {
  let out = "";
  for (const v of ticks) {
    const yy = y(v);
    out += '<line x1="' + f.l + '" x2="' + f.r + '" y1="' + yy + '" y2="' + yy +
      '" stroke="' + css("--grid") + '"/>' +
      '<text x="' + (f.l - 6) + '" y="' + (yy + 3.5) + '" text-anchor="end">' + fmt(v) +
      "</text>";
  }
  return out;
}
function visible(t0) { return samples.filter((s) => s.t >= t0 - 1); }
function downBands(f, x, rows) {
  let out = "", start = null, prev = null;
  const flush = (end) => {
    const x0 = Math.max(f.l, x(start - 1)), x1 = Math.min(f.r, x(end));
    out += '<rect class="down-band" x="' + x0 + '" y="' + f.t + '" width="' +
      Math.max(x1 - x0, 2) + '" height="' + (f.b - f.t) +
      '" fill="rgba(212,61,61,.14)" stroke="rgba(212,61,61,.45)"><title>database down ' +
      clock(start) + "\\u2013" + clock(end) + "</title></rect>";
  };
  for (const s of rows) {
    if (s.state !== "up") { if (start === null) start = s.t; prev = s.t; }
    else if (start !== null) { flush(s.t); start = null; }
  }
  if (start !== null) flush(prev);
  return out;
}
function path(points) {
  // Points as [x, y] or null (a gap).
  let d = "", pen = false;
  for (const p of points) {
    if (p === null) { pen = false; continue; }
    d += (pen ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1);
    pen = true;
  }
  return d;
}
function waitingMessage(svg, f) {
  return '<text class="empty" x="' + ((f.l + f.r) / 2) + '" y="' + ((f.t + f.b) / 2) +
    '" text-anchor="middle">collecting samples\\u2026</text>';
}
function describe(id, words) { text(id, words); }

// -- charts ------------------------------------------------------------------------
const PAD = {l: 46, r: 12, t: 20, b: 22};
function drawThroughput(now) {
  const svg = $("chart-throughput"), f = frame(svg, PAD), ax = timeAxis(f, now);
  const rows = visible(ax.t0);
  const peak = Math.max(1, ...rows.map((s) => s.checkouts_per_s));
  const ticks = linearTicks(peak * 1.1), top = ticks[ticks.length - 1];
  const y = (v) => f.b - (f.b - f.t) * v / top;
  let out = downBands(f, ax.x, rows) + ax.svg + yGrid(f, ticks, y, compact);
  if (rows.length < 2) out += waitingMessage(svg, f);
  else {
    const pts = rows.map((s) => [ax.x(s.t), y(s.checkouts_per_s)]);
    const area = path(pts) + "L" + pts[pts.length - 1][0] + " " + f.b + "L" + pts[0][0] +
      " " + f.b + "Z";
    out += '<path class="area" d="' + area + '" fill="' + css("--rate") + '" opacity=".13"/>';
    out += '<path class="series" data-series="throughput" data-points="' + pts.length +
      '" d="' + path(pts) + '" fill="none" stroke="' + css("--rate") + '" stroke-width="2"/>';
  }
  svg.innerHTML = out;
  const cur = rows.length ? rows[rows.length - 1].checkouts_per_s : 0;
  describe("throughput-desc", "Checkouts per second over the last " + spanWords() +
    ": now " + rate(cur) + ", peak " + rate(peak === 1 && !rows.length ? 0 : peak) + ".");
}
function drawWait(now) {
  const svg = $("chart-wait"), f = frame(svg, PAD), ax = timeAxis(f, now);
  const rows = visible(ax.t0);
  const values = rows.flatMap((s) => [s.wait_p50, s.wait_p99]).filter((v) => v !== null);
  const lo = 1e-4, hiRaw = Math.max(1e-3, ...values);
  const hi = Math.pow(10, Math.ceil(Math.log10(hiRaw) + 1e-9));
  const y = (v) => f.b - (f.b - f.t) * (Math.log10(Math.max(v, lo)) - Math.log10(lo)) /
    (Math.log10(hi) - Math.log10(lo));
  const ticks = [];
  for (let v = lo; v <= hi * 1.0001; v *= 10) ticks.push(v);
  let out = downBands(f, ax.x, rows) + ax.svg + yGrid(f, ticks, y, (v) => ms(v).replace(" ", ""));
  if (rows.length < 2) out += waitingMessage(svg, f);
  // p99 first, so that the median stays visible where both are in the same bucket.
  for (const [key, color] of [["wait_p99", css("--p99")], ["wait_p50", css("--p50")]]) {
    const pts = rows.map((s) => s[key] === null ? null : [ax.x(s.t), y(s[key])]);
    const n = pts.filter((p) => p !== null).length;
    // A lone second between gaps would be invisible as a line: draw each point too.
    const dots = rows.length <= 120 ? pts.filter((p) => p !== null).map((p) =>
      '<circle cx="' + p[0].toFixed(1) + '" cy="' + p[1].toFixed(1) + '" r="1.8" fill="' +
      color + '"/>').join("") : "";
    out += '<path class="series" data-series="' + key + '" data-points="' + n + '" d="' +
      path(pts) + '" fill="none" stroke="' + color + '" stroke-width="' +
      (key === "wait_p99" ? 2 : 1.6) + '"/>' + dots;
  }
  svg.innerHTML = out;
  const latest = rows.filter((s) => s.wait_p99 !== null);
  const l = latest.length ? latest[latest.length - 1] : null;
  describe("wait-desc", l ? "Checkout wait over the last " + spanWords() + ": latest p50 " +
    ms(l.wait_p50) + ", p99 " + ms(l.wait_p99) + "; highest p99 " +
    ms(Math.max(...latest.map((s) => s.wait_p99))) + "." : "No checkout in the window.");
}
const MARK_GLYPH = {grow: ["\\u25b2", "--idle"], shrink: ["\\u25bc", null],
  reconnect: ["\\u21bb", "--in-use"], timeout: ["\\u2715", "--waiting"],
  failover: ["\\u21c4", "--p99"]};
function drawSize(now) {
  const svg = $("chart-size"), f = frame(svg, PAD), ax = timeAxis(f, now);
  const rows = visible(ax.t0);
  const top0 = Math.max(2, ...rows.map((s) => Math.max(s.max_size,
    s.in_use + s.idle + s.connecting + s.waiting)));
  const ticks = linearTicks(top0 * 1.08).map(Math.round).filter((v, i, a) => a.indexOf(v) === i);
  const top = Math.max(ticks[ticks.length - 1], top0);
  const y = (v) => f.b - (f.b - f.t) * v / top;
  let out = downBands(f, ax.x, rows) + ax.svg + yGrid(f, ticks, y, String);
  if (rows.length < 2) out += waitingMessage(svg, f);
  else {
    const layers = [["in_use", "--in-use"], ["idle", "--idle"], ["connecting", "--connecting"],
      ["waiting", "--waiting"]];
    const base = rows.map(() => 0);
    for (const [key, color] of layers) {
      const upper = rows.map((s, i) => base[i] + s[key]);
      // Steps: a count holds until the next sample.
      let d = "";
      rows.forEach((s, i) => {
        const x0 = ax.x(s.t - 1), x1 = ax.x(s.t);
        d += (i ? "L" : "M") + x0.toFixed(1) + " " + y(upper[i]).toFixed(1) +
          "L" + x1.toFixed(1) + " " + y(upper[i]).toFixed(1);
      });
      for (let i = rows.length - 1; i >= 0; i--) {
        d += "L" + ax.x(rows[i].t).toFixed(1) + " " + y(base[i]).toFixed(1) +
          "L" + ax.x(rows[i].t - 1).toFixed(1) + " " + y(base[i]).toFixed(1);
      }
      const shown = rows.some((s) => s[key] > 0);
      out += '<path class="layer" data-series="' + key + '" data-max="' +
        Math.max(...rows.map((s) => s[key])) + '" d="' + d + 'Z" fill="' + css(color) +
        '" opacity="' + (key === "waiting" ? 0.85 : 0.78) + '"' +
        (shown ? "" : ' visibility="hidden"') + "/>";
      upper.forEach((v, i) => { base[i] = v; });
    }
    const maxPts = rows.map((s) => [ax.x(s.t), y(s.max_size)]);
    out += '<path class="max-line" d="' + path(maxPts) +
      '" fill="none" stroke="#6b7280" stroke-dasharray="5 4" stroke-width="1.5"/>';
    out += '<text x="' + (f.l + 4) + '" y="' + (y(rows[rows.length - 1].max_size) - 4) +
      '">max ' + rows[rows.length - 1].max_size + "</text>";
  }
  // Marks: a glyph in the band above the plot, a faint line down through it.
  const byT = new Map();
  for (const m of marks) {
    if (m.t < ax.t0 || !MARK_GLYPH[m.kind]) continue;
    const list = byT.get(m.t) || []; list.push(m); byT.set(m.t, list);
  }
  for (const [t, list] of byT) {
    const xx = ax.x(t);
    out += '<line x1="' + xx + '" x2="' + xx + '" y1="' + f.t + '" y2="' + f.b +
      '" stroke="#9aa1ad" stroke-dasharray="2 3"/>';
    list.forEach((m, i) => {
      const [glyph, color] = MARK_GLYPH[m.kind];
      const mx = xx + (i - (list.length - 1) / 2) * 11;
      out += '<text class="mark" data-kind="' + m.kind + '" x="' + mx + '" y="' + (f.t - 6) +
        '" text-anchor="middle" style="font-size:12px;fill:' +
        (color ? css(color) : "#6b7785") + '">' + glyph + "<title>" +
        esc(clock(m.t) + " " + m.text) + "</title></text>";
    });
  }
  svg.innerHTML = out;
  const l = rows.length ? rows[rows.length - 1] : null;
  const shown = marks.filter((m) => m.t >= ax.t0);
  describe("size-desc", l ? "Pool size over the last " + spanWords() + ": now " +
    l.in_use + " in use, " + l.idle + " idle, " + l.connecting + " connecting, " +
    l.waiting + " waiting, of at most " + l.max_size + ". Events marked: " +
    (shown.length ? shown.map((m) => m.text).join("; ") : "none") + "." : "No samples yet.");
}
function bucketLabel(le) {
  if (le === null) return ">30s";
  if (le < 0.001) return +(le * 1e6).toPrecision(3) + "\\u00b5s";
  return le >= 1 ? le + "s" : +(le * 1000).toPrecision(3) + "ms";
}
function drawHistogram(wait) {
  const svg = $("histogram"), f = frame(svg, {l: 40, r: 8, t: 18, b: 34});
  const buckets = wait.buckets, top = Math.max(1, ...buckets.map((b) => b.count));
  const decades = Math.max(1, Math.ceil(Math.log10(top + 1) - 1e-9));
  const y = (c) => f.b - (f.b - f.t) * Math.log10(c + 1) / decades;
  const ticks = [];
  for (let k = 0; k <= decades; k++) ticks.push(Math.pow(10, k) - (k === 0 ? 1 : 0));
  let out = yGrid(f, ticks, y, (v) => compact(v));
  const slot = (f.r - f.l) / buckets.length, bw = Math.max(4, slot * 0.72);
  buckets.forEach((b, i) => {
    const x = f.l + i * slot + (slot - bw) / 2, cx = x + bw / 2;
    if (b.count > 0) {
      // At least 3 px: a bucket that holds anything is never invisible.
      const yy = Math.min(y(b.count), f.b - 3), hh = f.b - yy;
      out += '<rect class="bar" data-count="' + b.count + '" data-le="' + (b.le === null ?
        "inf" : b.le) + '" x="' + x.toFixed(1) + '" y="' + yy.toFixed(1) + '" width="' +
        bw.toFixed(1) + '" height="' + hh.toFixed(1) + '" rx="2" fill="' + css("--rate") +
        '"><title>' + esc(int(b.count) + " checkouts waited " + (b.le === null ?
        "over 30 s" : "up to " + bucketLabel(b.le))) + "</title></rect>";
      out += '<text class="count" x="' + cx.toFixed(1) + '" y="' + (yy - 4).toFixed(1) +
        '" text-anchor="middle">' + compact(b.count) + "</text>";
    }
    out += '<text x="' + cx.toFixed(1) + '" y="' + (f.b + 13) + '" text-anchor="middle"' +
      (i % 2 && slot < 44 ? ' dy="11"' : "") + ">" + bucketLabel(b.le) + "</text>";
  });
  out += '<line x1="' + f.l + '" x2="' + f.r + '" y1="' + f.b + '" y2="' + f.b +
    '" stroke="#9aa1ad"/>';
  if (!wait.count) {
    out += '<text class="empty" x="' + ((f.l + f.r) / 2) + '" y="' + ((f.t + f.b) / 2) +
      '" text-anchor="middle">no checkout yet</text>';
  }
  svg.innerHTML = out;
  const filled = buckets.filter((b) => b.count > 0);
  describe("hist-desc", wait.count ? int(wait.count) + " checkouts; " + filled.map((b) =>
    int(b.count) + " up to " + bucketLabel(b.le)).join(", ") + "." : "No checkout yet.");
}
function spanWords() { return span === 60 ? "minute" : (span / 60) + " minutes"; }

// -- the rest of the page ------------------------------------------------------------
function drawCapacity(p) {
  const max = Math.max(p.max_size, p.size, 1), bar = $("capbar");
  const parts = [["in_use", "--in-use"], ["idle", "--idle"], ["connecting", "--connecting"]];
  bar.innerHTML = parts.map(([k, c]) => '<div data-part="' + k + '" style="width:' +
    (100 * p[k] / max) + "%;background:" + css(c) + '"></div>').join("");
  text("cap-waiting", p.waiting ? p.waiting + " waiting for a connection" :
    "no request waiting");
  text("cap-desc", p.in_use + " in use, " + p.idle + " idle, " + p.connecting +
    " connecting, " + Math.max(0, p.max_size - p.size) + " free of " + p.max_size + "; " +
    p.waiting + " waiting.");
}
function lagText(lag) {
  if (lag === null || lag === undefined) return "\\u2013";
  return lag < 1 ? Math.round(lag * 1000) + " ms" : lag.toFixed(1) + " s";
}
function fencing(h) {
  const words = [];
  if (h.stale) words.push("stale");
  if (h.fenced) words.push(h.fenced + " fenced");
  if (h.demoted) words.push(h.demoted + " demoted");
  return words.join(", ") || "\\u2013";
}
function clusterCells(h) {
  const dash = (v) => (v === null || v === undefined ? "\\u2013" : String(v));
  return '<td class="num cl">' + h.idle + '</td><td class="num cl">' + dash(h.timeline) +
    '</td><td class="num cl">' + lagText(h.lag) + '</td><td class="num cl">' + int(h.reads) +
    '</td><td class="num cl">' + int(h.writes) + '</td><td class="cl' +
    (h.stale ? " stale" : "") + '">' + esc(fencing(h)) + "</td>";
}
function drawHosts(hosts, cluster) {
  const table = $("hosts"), body = table.tBodies[0], summary = $("cluster-summary");
  table.classList.toggle("cluster", !!cluster);
  summary.hidden = !cluster;
  if (cluster) {
    summary.textContent = "A cluster pool: " + (cluster.primary ? "primary " +
      cluster.primary : "no primary known") + "; newest timeline " +
      cluster.newest_timeline + "; " + cluster.failovers + " failover" +
      (cluster.failovers === 1 ? "" : "s") + "; " + cluster.fenced +
      " connection(s) fenced. Reads go to the standbys, writes to the primary.";
  }
  body.innerHTML = hosts.map((h) => '<tr class="host' + (h.primary ? " primary" : "") +
    '" data-state="' + esc(h.state) + '" data-role="' + esc(h.role || "") + '">' +
    "<td>" + esc(h.address) + "</td><td>" + esc(h.role || "\\u2013") + "</td>" +
    '<td><span class="dot ' + esc(h.state) + '"></span>' + esc(h.state) + "</td>" +
    '<td class="num">' + h.connections + '</td><td class="num">' + h.in_use + "</td>" +
    "<td>" + esc(h.server_version || "\\u2013") + "</td>" +
    (cluster ? clusterCells(h) : "") + "</tr>").join("") ||
    '<tr><td colspan="6">no server known yet</td></tr>';
}
function drawEvents(events, name) {
  // One pool on this page: its name before every message says nothing.
  const prefix = "pool '" + name + "': ";
  $("events").innerHTML = events.slice(0, 40).map((e) => '<li class="' + esc(e.level) +
    '"><time>' + clock(e.time) + "</time><span>" + esc(e.message.startsWith(prefix) ?
    e.message.slice(prefix.length) : e.message) + "</span></li>").join("") ||
    "<li>nothing yet</li>";
}
function drawHealth(p) {
  const h = p.health, banner = $("banner"), pill = $("status");
  if (h.state === "up") {
    banner.hidden = true;
    pill.className = "pill"; pill.textContent = "\\u25cf database up";
  } else {
    const down = h.state === "down";
    banner.className = down ? "" : "failing";
    text("banner-title", down ? "The database is down" : "Checkouts are failing");
    text("banner-text", (h.since ? "Since " + clock(h.since) + ": " : "") + h.reason + ".");
    banner.hidden = false;
    pill.className = "pill " + h.state;
    pill.textContent = down ? "\\u25cf database DOWN" : "\\u25cf checkouts failing";
  }
}
function pickSpan(now) {
  // Until the user picks one, the smallest window that holds the history.
  const covered = samples.length ? now - samples[0].t : 0;
  span = chosen || [60, 300, 600].find((w) => w >= covered) || 600;
  for (const o of document.querySelectorAll(".window button"))
    o.setAttribute("aria-pressed", String(Number(o.dataset.seconds) === span));
  text("window-label", spanWords());
}
function render() {
  if (!last) return;
  const p = last, now = p.time;
  pickSpan(now);
  text("name", "\\u201c" + p.name + "\\u201d");
  text("rate", rate(p.recent.checkouts_per_s));
  bound("p50", p.recent.wait_p50); bound("p99", p.recent.wait_p99);
  for (const k of ["in_use", "idle", "waiting", "size", "max_size"]) text(k, p[k]);
  text("checkouts", int(p.checkouts)); text("timeouts", int(p.timeouts));
  text("failed", int(Math.max(0, p.failures - p.timeouts)));
  text("updated", "updated " + clock(now));
  drawHealth(p); drawCapacity(p); drawHosts(p.hosts, p.cluster); drawEvents(p.events, p.name);
  drawThroughput(now); drawWait(now); drawSize(now); drawHistogram(p.wait_time);
}
function merge(p) {
  const h = p.history;
  if (h.samples.length && h.samples[0].t <= lastT) { samples = []; marks = []; }
  samples = samples.concat(h.samples); marks = marks.concat(h.marks);
  const cut = p.time - KEEP;
  samples = samples.filter((s) => s.t >= cut); marks = marks.filter((m) => m.t >= cut);
  if (samples.length) lastT = samples[samples.length - 1].t;
}
function unreachable() {
  const banner = $("banner"), pill = $("status");
  banner.className = "unreachable";
  text("banner-title", "The demo service does not answer");
  text("banner-text", last ? "The numbers below are from " + clock(last.time) + "." :
    "Is pgfleet demo --serve still running?");
  banner.hidden = false;
  pill.className = "pill unreachable"; pill.textContent = "\\u25cf service unreachable";
  $("main").classList.add("stale");
}
function poll() {
  fetch("/api/pool?since=" + lastT, {cache: "no-store"})
    .then((r) => { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
    .then((p) => {
      merge(p); last = p; pollOk = true; $("main").classList.remove("stale"); render();
    })
    .catch(() => { pollOk = false; unreachable(); })
    .finally(() => setTimeout(poll, 1000));
}
// Hover: the values of the nearest second, on any time chart.
function hover(svgId, describeSample) {
  const svg = $(svgId), tip = $("tip");
  svg.addEventListener("mousemove", (ev) => {
    if (!last || !samples.length) return;
    const box = svg.getBoundingClientRect(), f = {l: PAD.l, r: box.width - PAD.r};
    const t = last.time - span + span * (ev.clientX - box.left - f.l) / (f.r - f.l);
    let best = null;
    for (const s of samples) if (!best || Math.abs(s.t - t) < Math.abs(best.t - t)) best = s;
    if (!best || Math.abs(best.t - t) > 2) { tip.hidden = true; return; }
    tip.textContent = clock(best.t) + "  " + describeSample(best);
    tip.hidden = false;
    const room = document.body.clientWidth - tip.offsetWidth - 8;
    tip.style.left = Math.min(ev.pageX + 12, room) + "px";
    tip.style.top = (ev.pageY + 14) + "px";
  });
  svg.addEventListener("mouseleave", () => { tip.hidden = true; });
}
hover("chart-throughput", (s) => rate(s.checkouts_per_s) + " checkouts/s");
hover("chart-wait", (s) => "p50 " + ms(s.wait_p50) + ", p99 " + ms(s.wait_p99));
hover("chart-size", (s) => s.in_use + " in use, " + s.idle + " idle, " + s.connecting +
  " connecting, " + s.waiting + " waiting (max " + s.max_size + ")");
for (const b of document.querySelectorAll(".window button")) {
  b.addEventListener("click", () => { chosen = Number(b.dataset.seconds); render(); });
}
window.addEventListener("resize", render);
// For tests and the curious: draw the histogram from any buckets.
window.pgfleetLive = {drawHistogram: drawHistogram};
poll();
})();
</script></body></html>
"""
