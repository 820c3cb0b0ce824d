"""The status page ("the desk") as served bytes: one static HTML document
with its CSS and vanilla JavaScript inline (nothing fetched from anywhere: the
call center's network reaches nothing outside), and the index of the
inventory's clusters. The page polls desk.json every 0.5 s (the agent renders
it once per cycle, desk.py) and draws it with textContent only: every string
from ZooKeeper is data, never markup.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from failover.inventory import Cluster

POLL_MS = 500  # the page changes within POLL_MS of the agent's endpoint

CSS = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f5f7;color:#111}
header{padding:.6rem 1rem;background:#222;color:#eee;font-size:.9rem}
header b{color:#fff}
header a{color:#9cf}
main{padding:.6rem;max-width:1100px;margin:auto}
#link{font-size:.85rem;margin:.2rem 0 .6rem}
#link.down{color:#fff;background:#b00020;padding:.5rem;font-size:1.1rem;font-weight:700}
#headline{font-size:2.2rem;font-weight:800;line-height:1.1;margin:.3rem 0}
#headline.ok{color:#0a6b2b}
#headline.crit{color:#c00018}
#why{font-size:1.05rem;margin:0 0 .7rem}
body.stale #headline,body.stale .tile{opacity:.45}
ul.banner{list-style:none;padding:0;margin:0 0 .7rem}
ul.banner li{padding:.55rem .7rem;margin:.3rem 0;border-radius:4px;font-weight:600}
li.crit{background:#c00018;color:#fff}
li.warn{background:#ffcc00;color:#111}
li.fine{background:#dff3e4;color:#0a6b2b;font-weight:400}
#switchover{background:#dbeafe;border-left:6px solid #1d4ed8;padding:.5rem .7rem;margin:0 0 .7rem}
#switchover ol{margin:.3rem 0 0;padding-left:1.3rem;font-size:.9rem}
#tiles{display:flex;flex-wrap:wrap;gap:.6rem}
.tile{flex:1 1 300px;background:#fff;border:3px solid #bbb;border-radius:6px;padding:.6rem .8rem}
.tile.primary{border-color:#0a6b2b}
.tile.fenced{border-color:#c00018}
.tile h2{margin:0 0 .3rem;font-size:1.4rem}
.role{display:inline-block;padding:.05rem .45rem;border-radius:3px;font-size:1rem;color:#fff;background:#666}
.role.primary{background:#0a6b2b}.role.standby{background:#1d4ed8}.role.fenced{background:#c00018}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .7rem;margin:.3rem 0}
dt{color:#555}dd{margin:0}
.svcs{display:flex;flex-wrap:wrap;gap:.25rem;margin:.3rem 0}
.svc{font:13px monospace;padding:.1rem .35rem;border-radius:3px;background:#e5e7eb}
.svc.run{background:#c6f0d2}.svc.bad{background:#ffc9c9}
.say{font-style:italic;border-left:3px solid #bbb;padding-left:.5rem;margin:.4rem 0 0}
.wayout{background:#c00018;color:#fff;padding:.4rem;margin:.4rem 0 0;font-weight:700}
#capacity{margin:.7rem 0}
#timeline{list-style:none;padding:0;font-size:.9rem}
#timeline li{padding:.3rem 0;border-bottom:1px solid #ddd}
#timeline .when{color:#555;font-family:monospace;margin-right:.4rem}
@media (max-width:480px){#headline{font-size:1.8rem}}
"""

BODY = """
<header><b id="cluster">cluster</b> <span id="meta"></span> <a href="desks">all clusters</a></header>
<main>
<div id="link">connecting to the agent…</div>
<div id="headline" class="crit">waiting for the first answer…</div>
<p id="why"></p>
<ul id="attention" class="banner"></ul>
<section id="switchover" hidden></section>
<section id="tiles"></section>
<p id="capacity"></p>
<h3>Recent history (newest first)</h3>
<ol id="timeline"></ol>
<noscript>This page needs JavaScript (inline, served by the agent itself);
/cluster has the same data as JSON.</noscript>
</main>
"""

JS = (
    """
"use strict";
const POLL_MS = __POLL_MS__;
const $ = (id) => document.getElementById(id);
let lastText = "", lastOk = Date.now(), peers = [], order = [];
// Beside the page, without any user:password@ the address may carry (fetch
// refuses those); the browser sends the credentials it signed in with.
const DATA = new URL("desk.json", location.origin + location.pathname).href;

// Every string from ZooKeeper goes in through textContent: data, never markup.
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function clock(ts) {
  if (!ts) return "?";
  const d = new Date(ts * 1000);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}
function fill(id, children) { $(id).replaceChildren(...children); }
"""
    + """
function deadline(ms) {  // AbortSignal.timeout where the browser has it (older phones do not)
  if (AbortSignal.timeout) return AbortSignal.timeout(ms);
  const c = new AbortController();
  setTimeout(() => c.abort(), ms);
  return c.signal;
}
async function poll() {
  try {
    // A hung agent (stopped, partitioned) never answers: give up after 2 polls' time.
    const r = await fetch(DATA, {cache: "no-store", credentials: "same-origin",
                                        signal: deadline(4 * POLL_MS)});
    if (!r.ok) throw new Error("HTTP " + r.status + (r.status === 401 ? ": reload the page to sign in" : ""));
    const text = await r.text();
    if (text !== lastText) { draw(JSON.parse(text)); lastText = text; }
    lastOk = Date.now();
    linkState("");
  } catch (e) {
    linkState(String((e && e.message) || e));
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// The agent answering this page may be the one that died: say so at once,
// and point at the other agents of the cluster.
function linkState(err) {
  const down = err !== "" && Date.now() - lastOk > 2 * POLL_MS;
  if (!down && err !== "") return;  // one failed poll is not an outage yet
  document.body.classList.toggle("stale", down);
  const box = $("link");
  box.className = down ? "down" : "";
  if (!down) { box.textContent = "live: this agent answers; updated " + new Date(lastOk).toLocaleTimeString(); return; }
  const s = Math.round((Date.now() - lastOk) / 1000);
  const kids = [el("span", "", "NO ANSWER from this agent for " + s + " s (" + err + "): what follows is OLD. ")];
  for (const p of peers) {
    const a = el("a", "", "open " + p.ipc + "'s agent");
    a.href = p.url; a.style.color = "#fff";
    kids.push(a, el("span", "", " "));
  }
  box.replaceChildren(...kids);
}

function draw(d) {
  const v = d.cluster, h = d.headline;
  peers = d.peers || [];
  document.title = h.text + " - " + v.cluster;
  $("cluster").textContent = "cluster " + v.cluster;
  $("meta").textContent = " epoch " + v.epoch + ", as " + v.reported_by + "'s agent sees it at "
    + clock(d.generated_at);
  const head = $("headline");
  head.textContent = h.text;
  head.className = h.level;
  $("why").textContent = (h.since ? "since " + clock(h.since) + ": " : "") + "why: " + h.why;
  drawAttention(d.attention);
  drawSwitchover(v.switchover);
  order = d.service_order || [];
  fill("tiles", Object.entries(v.ipcs).map(([n, i]) => tile(v, n, i)));
  drawCapacity(v.capacity, v.calls);
  fill("timeline", d.history.map(entry));
}

function drawAttention(items) {
  if (!items.length) { fill("attention", [el("li", "fine", "Nothing needs a human.")]); return; }
  fill("attention", items.map((a) => el("li", a.level, a.text)));
}

function drawSwitchover(r) {
  const box = $("switchover");
  box.hidden = !r;
  if (!r) return;
  const at = r.at ? " at " + clock(r.at) : "";
  const steps = el("ol");
  steps.replaceChildren(...(r.progress || []).map((p) => el("li", "", p)));
  box.replaceChildren(
    el("b", "", (r.kind || "switchover") + " to " + r.to + at + ": " + r.state),
    el("div", "", "requested by " + r.operator + " (" + (r.reason || "no reason given") + ")"),
    steps,
  );
  if (r.question && !r.answer) {  // a drain at its deadline: the operator decides
    box.append(el("div", "", "QUESTION: " + r.question + " (failover switchover --answer proceed|cancel)"));
  }
}
"""
    + """
function tile(v, name, i) {
  const t = el("article", "tile " + i.role);
  const head = el("h2", "", name + " ");
  head.append(el("span", "role " + i.role, i.role.toUpperCase()));
  t.append(head);
  const dl = el("dl");
  const row = (k, val) => dl.append(el("dt", "", k), el("dd", "", val));
  row("answers calls", (v.answering || []).includes(name) ? "YES" : "no");
  row("holds the role", i.leader ? "yes (epoch " + v.epoch + ")" : "no");
  if (i.role !== "primary") row("eligible", i.eligible ? "yes: can take over" : "NO: cannot take over");
  row("line", i.line + (i.board_down ? " (board down)" : ""));
  const lines = (v.capacity.lines || {})[name] || 0;
  row("capacity", "X + 2Y \\u2264 " + lines + " (" + lines + " IVR or " + Math.floor(lines / 2)
      + " agent calls; " + i.channels + " channels, " + i.fax_channels + " fax)");
  row("agent", i.agent + (i.agent === "stale" ? " (" + i.agent_age_s + " s)" : ""));
  t.append(dl);
  const svcs = el("div", "svcs");
  const names = Object.keys(i.services).sort((a, b) => order.indexOf(a) - order.indexOf(b));
  for (const s of names) {
    const st = i.services[s];
    const bad = st.probe === false;
    svcs.append(el("span", "svc " + (bad ? "bad" : st.state === "RUNNING" ? "run" : ""),
                   s + " " + st.state.toLowerCase() + (bad ? " (probe fails)" : "")));
  }
  t.append(svcs, el("p", "say", i.sentence || "(no report from its agent)"));
  if (i.way_out) t.append(el("p", "wayout", "ACTION NEEDED: " + i.way_out));
  return t;
}

function drawCapacity(c, calls) {
  const beside = c.ivr_with_10_agents === null ? "n/a" : c.ivr_with_10_agents;
  $("capacity").textContent = "Capacity now: " + c.max_ivr + " IVR callers, or " + c.max_agent
    + " agent calls, or " + beside + " IVR beside 10 agent calls; " + c.fax + " faxes." + callsText(calls);
}

// The primary's calls in progress (inventory `calls`), and a drain's busy-out.
function callsText(k) {
  if (!k) return "";
  const split = k.ivr === null ? "" : " (" + k.ivr + " in the IVR, " + k.agent + " with an agent)";
  return " Calls in progress on " + k.on + ": " + k.active + split + ", " + k.channels_free
    + " line channels free" + (k.busy_out ? "; BUSIED OUT: draining for a switchover" : "") + ".";
}

function entry(x) {
  const li = el("li");
  const moved = !x.to ? "" : x.from ? " " + x.from + " \\u2192 " + x.to : " to " + x.to;
  const epoch = x.epoch ? " (epoch " + x.epoch + ")" : "";
  const who = x.who ? " by " + x.who : "";
  li.append(el("span", "when", clock(x.when)), el("b", "", x.kind + moved + epoch + who),
            el("span", "", ": " + (x.why || x.reason || x.outcome || "")));
  return li;
}

poll();
setInterval(() => { if (Date.now() - lastOk > 4 * POLL_MS) linkState("no answer"); }, POLL_MS);
"""
).replace("__POLL_MS__", str(POLL_MS))


def page() -> bytes:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>failover desk</title><style>{CSS}</style></head>"
        f"<body>{BODY}<script>{JS}</script></body></html>\n"
    ).encode()


def links(clusters: Sequence[Cluster], own: str) -> list[dict[str, Any]]:
    """Every cluster of the inventory with its agents' page URLs (as each
    agent advertises its endpoint); agents with HTTP off are left out."""
    return [
        {
            "cluster": c.name,
            "own": c.name == own,
            "desks": [{"ipc": i.name, "url": i.http.url() + "/desk"} for i in c.ipcs if i.http.enabled],
        }
        for c in clusters
    ]


def index(desks: list[dict[str, Any]]) -> bytes:
    """/desks: one line per cluster, a link per agent (any surviving one shows it)."""
    rows = []
    for d in desks:
        agents = (
            " ".join(f'<a href="{html.escape(a["url"])}">{html.escape(a["ipc"])}</a>' for a in d["desks"])
            or "no agent serves HTTP"
        )
        mark = " (this agent's cluster)" if d["own"] else ""
        rows.append(f"<li><b>{html.escape(d['cluster'])}</b>{mark}: {agents}</li>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        "<title>failover desks</title><style>body{font:18px system-ui,sans-serif;margin:1rem}li{margin:.5rem 0}"
        "</style></head><body><h1>Clusters</h1><p>Each cluster's page is served by both of its agents: "
        f'open either.</p><ul id="clusters">{"".join(rows)}</ul></body></html>\n'
    ).encode()
