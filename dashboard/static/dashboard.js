// The dashboard: reads /dashboard/events (server-sent events) with the
// operator's token in an Authorization header, through fetch: EventSource
// cannot send one, and a token in a URL ends up in logs. No framework, no
// build step; every value is set as text, never as HTML.
"use strict";

const STATUSES = ["pending", "paid", "completed", "rejected", "refunded", "failed"];
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("shop-token") || "";
let latest = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function headers() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function state(what, text) {
  const line = $("state");
  line.dataset.state = what;
  line.textContent = text;
}

function figure(label, value, cls = "") {
  return el("span", { class: cls }, `${label} `, el("b", {}, value), " ");
}

function renderFlow(flow) {
  const rows = flow.map((s) => el("div", { class: "stream-row", "data-stream": s.name },
    el("div", { class: "writer" }, s.writer),
    el("div", { class: "arrow", "aria-hidden": "true" }, "→"),
    el("div", { class: "stream" + (s.dead_letters ? " has-dead" : "") },
      el("div", { class: "name" }, s.name),
      el("div", { class: "figures" },
        figure("rate", `${s.rate_per_s}/s`, "rate"), figure("kept", s.length, "length"),
        figure("dead", s.dead_letters, "dead"))),
    el("div", { class: "arrow", "aria-hidden": "true" }, "→"),
    el("div", { class: "groups" }, ...s.groups.map((g) =>
      el("div", { class: "group" + (g.lag + g.pending > 100 ? " behind" : ""),
                  "data-group": g.name },
        el("div", { class: "name" }, g.name),
        el("div", { class: "figures" }, figure("lag", g.lag, "lag"),
           figure("pending", g.pending, "pending"))))),
  ));
  $("flow").replaceChildren(...rows);
}

function renderStatuses(statuses) {
  $("totals").replaceChildren(...STATUSES.map((s) => el("span", { "data-status": s },
    el("span", { class: "swatch", style: `background: var(--${s})` }), `${s} `,
    el("b", { class: "count" }, statuses.totals[s] ?? 0))));
  const chart = $("chart");
  const buckets = statuses.series[STATUSES[0]].length;
  const heights = Array.from({ length: buckets },
    (_, b) => STATUSES.reduce((sum, s) => sum + statuses.series[s][b], 0));
  const top = Math.max(1, ...heights);
  const width = 300 / buckets;
  const bars = [];
  for (let b = 0; b < buckets; b++) {
    let y = 100;
    for (const s of STATUSES) {
      const h = (statuses.series[s][b] / top) * 96;
      if (h <= 0) continue;
      y -= h;
      const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      bar.setAttribute("x", b * width + 0.5);
      bar.setAttribute("y", y);
      bar.setAttribute("width", width - 1);
      bar.setAttribute("height", h);
      bar.setAttribute("style", `fill: var(--${s})`);
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = `${statuses.series[s][b]} ${s}`;
      bar.append(title);
      bars.push(bar);
    }
  }
  chart.replaceChildren(...bars);
}

function badge(status) {
  return el("span", { class: `badge ${status}` }, status);
}

function renderRecent(recent, total) {
  $("orders-total").textContent = `(${total} in all)`;
  $("recent").replaceChildren(...recent.map((o) => el("tr", { "data-order": o.id },
    el("td", {}, el("button", { class: "link", type: "button", onclick: () => openTimeline(o.id) },
      o.id)),
    el("td", {}, o.customer_id), el("td", {}, badge(o.status)),
    el("td", { class: "num" }, (o.total_cents / 100).toFixed(2)),
    el("td", { class: "wide" }, o.created_at.replace("T", " ").replace("Z", "")))));
}

function renderDead(dead, total) {
  $("dead-total").textContent = `(${total} kept)`;
  $("dead").replaceChildren(...(dead.length ? dead.map((d) => el("tr", { "data-ref": d.ref },
    el("td", { class: "wide" }, d.ref), el("td", {}, d.order_id || "-"),
    el("td", {}, d.group || "-"), el("td", {}, d.reason),
    el("td", {}, el("button", { type: "button", onclick: () => replay(d.ref) }, "replay"))))
    : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "none: every message was handled"))]));
}

function renderEndpoints(endpoints) {
  $("endpoints").replaceChildren(...(endpoints.length ? endpoints.map((e) =>
    el("tr", { "data-endpoint": `${e.gateway}/${e.endpoint}` },
      el("td", {}, e.gateway), el("td", {}, e.endpoint), el("td", {}, badge(e.state)),
      el("td", { class: "num" }, e.sent), el("td", { class: "num" }, e.answered),
      el("td", { class: "wide" }, e.last_error || "")))
    : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no gateway running"))]));
}

function render(snapshot) {
  latest = snapshot;
  $("partitions").textContent = `(${snapshot.partitions} partition${
    snapshot.partitions === 1 ? "" : "s"})`;
  renderFlow(snapshot.flow);
  renderStatuses(snapshot.statuses);
  renderRecent(snapshot.recent, snapshot.orders_total);
  renderDead(snapshot.dead_letters, snapshot.dead_total);
  renderEndpoints(snapshot.endpoints);
  state("live", `live · ${snapshot.at.replace("T", " ").replace("Z", " UTC")}`);
}

async function openTimeline(orderId) {
  $("timeline").hidden = false;
  $("timeline-id").textContent = orderId;
  $("timeline-events").replaceChildren();
  const answer = await fetch(`/orders/${encodeURIComponent(orderId)}`, { headers: headers() });
  const body = await answer.json();
  if (!answer.ok) {
    $("timeline-status").textContent = body.detail || `error ${answer.status}`;
    return;
  }
  $("timeline-status").replaceChildren(badge(body.status), " ", body.reason || "");
  $("timeline-events").replaceChildren(...body.history.map((h) => el("li", { "data-type": h.type },
    el("span", { class: "at" }, h.at.replace("T", " ").replace("Z", "")), " ",
    el("b", {}, h.type), " ", el("code", {}, `${h.stream} ${h.entry_id}`))));
}

async function replay(ref) {
  const answer = await fetch("/ops/dead-letters/replay", {
    method: "POST", headers: { ...headers(), "Content-Type": "application/json" },
    body: JSON.stringify({ refs: [ref] }),
  });
  const body = await answer.json();
  $("replayed").textContent = answer.ok ? `${ref}: ${body.results[ref]}`
    : `replay refused: ${body.detail || answer.status}`;
}

function askForToken(problem) {
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-problem").textContent = problem || "";
  state("down", "needs an operator token");
}

async function watch() {
  for (;;) {
    let answer;
    try {
      answer = await fetch("/dashboard/events", { headers: headers(), cache: "no-store" });
    } catch (error) {
      state("down", `API unreachable (${error.message}); trying again`);
      await new Promise((r) => setTimeout(r, 2000));
      continue;
    }
    if (answer.status === 401 || answer.status === 403) {
      const body = await answer.json().catch(() => ({}));
      askForToken(body.detail || `refused (${answer.status})`);
      return;
    }
    $("login").hidden = true;
    $("board").hidden = false;
    const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const kind = /^event: (.*)$/m.exec(frame)?.[1] || "message";
          const data = frame.split("\n").filter((l) => l.startsWith("data: "))
            .map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          if (kind === "snapshot") render(JSON.parse(data));
          else if (kind === "problem") state("down", JSON.parse(data).problem);
        }
      }
    } catch (error) {
      state("down", `disconnected (${error.message}); reconnecting`);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("shop-token", token);
  watch();
});
$("timeline-close").addEventListener("click", () => { $("timeline").hidden = true; });
watch();
