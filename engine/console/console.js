// pgflow's web console: draws what the admin endpoint's /api/state and /api/history say, for
// a pipeline (`pgflow run`) or a pooler (`pgflow pooler`), and sends the actions a logged-in
// user confirms to /api/action with the session's CSRF token. No framework, nothing fetched
// from elsewhere; every value is put in the page as text, never as markup.
"use strict";

const POLL_MS = 2000;
let session = { kind: "", title: "", login: false, user: null, csrf: null };
let lastState = null;
let history = [];
let previous = null; // the last state, to compute rates between two polls

// ---- small helpers ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function num(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

function seconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function badge(text, kind) { return h("span", { class: "badge " + (kind || "") }, text); }

function table(id, columns, rows, empty) {
  if (!rows.length) return h("p", { class: "muted", id }, empty || "none");
  const head = h("tr", {}, columns.map(c => h("th", { class: c.num ? "num" : "" }, c.title)));
  const body = rows.map(r => h("tr", { "data-key": r._key },
    columns.map(c => {
      const v = c.value(r);
      return h("td", { class: (c.num ? "num" : "") + (c.wide ? " reason" : ""), "data-col": c.key },
        v instanceof Node ? v : (v === null || v === undefined ? "–" : String(v)));
    })));
  return h("div", { class: "scroll" }, h("table", { id }, h("thead", {}, head), h("tbody", {}, body)));
}

const COLORS = ["#2f6fdb", "#c0352b", "#1d8a4f", "#b7791f", "#7b3fb5", "#118a9c", "#8a5a1d"];

// A line chart of `series` ([{name, points: [[t, v], ...]}]) over the samples' time span.
function chart(series, format, id) {
  const W = 600, H = 140, L = 2, B = 2;
  const points = series.flatMap(s => s.points);
  if (!series.some(s => s.points.length >= 2)) return h("p", { class: "muted", id }, "collecting samples…");
  const t0 = Math.min(...points.map(p => p[0])), t1 = Math.max(...points.map(p => p[0]));
  const vmax = Math.max(1e-9, ...points.map(p => p[1])) * 1.1;
  const x = t => L + (W - L - 4) * (t1 === t0 ? 1 : (t - t0) / (t1 - t0));
  const y = v => 4 + (H - B - 4) * (1 - v / vmax);
  const el = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
    role: "img", id },
    svg("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }),
    svg("line", { class: "axis", x1: L, y1: 4, x2: L, y2: H - B }),
    series.map((s, i) => svg("polyline", {
      fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 1.5,
      "vector-effect": "non-scaling-stroke",
      points: s.points.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "),
    })));
  // The scale as text beside the chart, which stretches to the card's width.
  const legend = h("div", { class: "legend" },
    series.map((s, i) => h("span", { class: "series" }, s.name)),
    h("em", { class: "muted" }, `top ${format(vmax / 1.1)} · ${new Date(t0 * 1000).toLocaleTimeString()}–${new Date(t1 * 1000).toLocaleTimeString()}`));
  [...legend.querySelectorAll(".series")].forEach((c, i) => { c.style.color = COLORS[i % COLORS.length]; });
  return h("div", {}, el, legend);
}

function notice(text, error) {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.className = error ? "error" : "";
  el.hidden = !text;
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": session.csrf || "" },
    body: JSON.stringify(body),
  };
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store", ...init });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
  if (!r.ok) throw new Error((data && data.error) || `${r.status} ${r.statusText}`);
  return data;
}

// Asks, then sends `action` ({action, ...}); shows what the server answered.
async function act(question, action) {
  if (!session.user) { notice("log in first: actions need the admin credentials", true); return; }
  if (!window.confirm(question)) return;
  try {
    const done = await api("/api/action", action);
    notice(done.message || "done");
    document.querySelectorAll("#app form").forEach((f) => f.reset());
  } catch (e) {
    notice(e.message, true);
  }
  refresh();
}

// ---- the login ----

function drawWho() {
  const who = document.getElementById("who");
  who.replaceChildren();
  if (session.user) {
    who.append(h("span", { id: "user" }, "signed in as " + session.user),
      h("button", { id: "logout", onclick: async () => {
        try { await api("/api/logout", {}); } catch (e) { notice(e.message, true); }
        session.user = null; session.csrf = null; drawWho(); refresh();
      } }, "log out"));
  } else if (session.login) {
    const form = h("form", { id: "login" },
      h("input", { name: "user", placeholder: "user", autocomplete: "username", required: true }),
      h("input", { name: "password", type: "password", placeholder: "password",
        autocomplete: "current-password", required: true }),
      h("button", { class: "primary", type: "submit" }, "log in"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const r = await api("/api/login", { user: form.user.value, password: form.password.value });
        session.user = r.user; session.csrf = r.csrf;
        notice("");
        drawWho(); refresh();
      } catch (e) {
        notice(e.message, true);
      }
    });
    who.append(form);
  } else {
    who.append(h("span", { class: "muted" }, "read-only: no admin users configured"));
  }
}

// ---- a pipeline (`pgflow run`) ----

function drawPipeline(state) {
  const s = state.status;
  const phaseKind = { streaming: "good", snapshot: "warn", failed: "bad", retrying: "bad" }[s.phase];
  const overview = h("section", {}, h("h2", {}, "Pipeline ", s.pipeline),
    h("dl", { class: "kv", id: "overview" },
      h("dt", {}, "phase"), h("dd", { "data-field": "phase" }, badge(s.phase, phaseKind),
        s.phase_reason ? " " + s.phase_reason : ""),
      h("dt", {}, "ready"), h("dd", { "data-field": "ready" },
        s.ready ? badge("ready", "good") : badge(s.not_ready_reason || "not ready", "bad")),
      h("dt", {}, "changes"), h("dd", { "data-field": "changes" }, num(s.changes)),
      h("dt", {}, "transactions"), h("dd", { "data-field": "transactions" }, num(s.transactions)),
      h("dt", {}, "confirmed"), h("dd", { "data-field": "confirmed" }, s.confirmed || "–"),
      h("dt", {}, "unconfirmed WAL"), h("dd", { "data-field": "unconfirmed_bytes" },
        bytes(s.unconfirmed_bytes)),
      h("dt", {}, "restarts"), h("dd", { "data-field": "restarts" }, num(s.restarts)),
      h("dt", {}, "running since"), h("dd", {}, s.started_at || "–")));

  const tables = (s.snapshot && s.snapshot.tables) || [];
  const before = previous && previous.status.snapshot ? previous.status.snapshot.tables : [];
  const elapsed = previous ? (state.at - previous.at) : 0;
  const snapshot = h("section", {}, h("h2", {}, "Snapshot",
    s.snapshot && s.snapshot.running ? " (copying)" : ""),
  table("snapshot", [
    { title: "table", key: "table", value: t => t.table },
    { title: "rows", key: "rows", num: true, value: t => num(t.rows) },
    { title: "done", key: "done", value: t => {
      const f = t.bytes_total > 0 ? Math.min(1, t.bytes_done / t.bytes_total) : (t.chunks_total > 0 ? t.chunks_done / t.chunks_total : 0);
      const bar = h("div", { class: "bar", title: (f * 100).toFixed(1) + "%" }, h("div"));
      bar.firstChild.style.width = (f * 100).toFixed(1) + "%";
      return h("span", {}, bar, (f * 100).toFixed(1) + "%");
    } },
    { title: "rate", key: "rate", num: true, value: t => {
      const b = before.find(x => x.table === t.table);
      if (!b || elapsed <= 0) return "–";
      return bytes((t.bytes_done - b.bytes_done) / elapsed) + "/s";
    } },
    { title: "ETA", key: "eta", num: true, value: t => {
      const b = before.find(x => x.table === t.table);
      if (t.bytes_total > 0 && t.bytes_done >= t.bytes_total) return "done";
      if (!b || elapsed <= 0 || t.bytes_done <= b.bytes_done) return "–";
      return seconds((t.bytes_total - t.bytes_done) / ((t.bytes_done - b.bytes_done) / elapsed));
    } },
  ], tables.map(t => ({ ...t, _key: t.table })), s.phase === "streaming" ? "copied: streaming now" : "no snapshot running"));

  const sinks = h("section", { class: "wide" }, h("h2", {}, "Sinks"),
    table("sinks", [
      { title: "sink", key: "name", value: k => k.name },
      { title: "type", key: "type", value: k => k.type },
      { title: "lag", key: "lag", num: true, value: k => seconds(k.lag_seconds) },
      { title: "queued", key: "queue", num: true, value: k => bytes(k.queue_bytes) },
      { title: "durable", key: "durable", value: k => k.durable || "–" },
      { title: "state", key: "state", value: k => k.failed ? badge("failed", "bad") : badge("ok", "good") },
    ], (s.sinks || []).map(k => ({ ...k, _key: k.name }))),
    h("h2", {}, "Lag over the last hour"),
    chart(Object.keys(history.length ? history[history.length - 1].sinks || {} : {}).map(name => ({
      name, points: history.filter(p => p.sinks && name in p.sinks).map(p => [p.t, p.sinks[name]]),
    })), seconds, "lag-chart"));

  const slot = s.slot;
  let slotBody = h("p", { class: "muted" }, "no slot read yet");
  if (slot) {
    const guard = slot.max_retained_wal || 0;
    const f = guard > 0 ? Math.min(1, slot.retained_wal_bytes / guard) : 0;
    const bar = h("div", { class: "bar" + (f > 0.8 ? " bad" : "") }, h("div"));
    bar.firstChild.style.width = (f * 100).toFixed(1) + "%";
    slotBody = h("dl", { class: "kv", id: "slot" },
      h("dt", {}, "slot"), h("dd", {}, slot.name, " ", slot.active ? badge("active", "good") : badge("inactive", "warn")),
      h("dt", {}, "retained WAL"), h("dd", { "data-field": "retained_wal_bytes" }, bytes(slot.retained_wal_bytes)),
      h("dt", {}, "guard"), h("dd", { "data-field": "max_retained_wal" },
        guard > 0 ? h("span", {}, bar, bytes(guard)) : "none (guard.max_retained_wal)"),
      h("dt", {}, "WAL status"), h("dd", {}, slot.wal_status || "–"),
      h("dt", {}, "safe WAL size"), h("dd", {}, slot.safe_wal_size === null ? "unlimited" : bytes(slot.safe_wal_size)));
  }
  const slotSection = h("section", {}, h("h2", {}, "Replication slot"), slotBody);

  const letters = h("section", { class: "wide" }, h("h2", {}, "Dead letters"));
  if (state.dead_letters === null) {
    letters.append(h("p", { class: "muted", id: "dead-letters" },
      state.dead_letter_error || "log in to see the events the sinks set aside"));
  } else {
    if (state.dead_letters_total > state.dead_letters.length) {
      letters.append(h("p", { class: "muted" }, `the newest ${state.dead_letters.length} of ${num(state.dead_letters_total)}: pgflow dlq list shows them all`));
    }
    letters.append(table("dead-letters", [
      { title: "id", key: "id", num: true, value: d => d.id },
      { title: "sink", key: "sink", value: d => d.sink },
      { title: "table", key: "table", value: d => d.table },
      { title: "op", key: "operation", value: d => d.operation },
      { title: "key", key: "key", value: d => d.key },
      { title: "code", key: "code", value: d => d.code },
      { title: "reason", key: "reason", wide: true, value: d => d.reason },
      { title: "recorded", key: "recorded_at", value: d => d.recorded_at },
      { title: "", key: "replay", value: d => h("button", { class: "replay", onclick: () =>
        act(`Send dead letter ${d.id} (${d.table} ${d.key}) to sink ${d.sink} again?`,
          { action: "replay", sink: d.sink, id: d.id }) }, "replay") },
    ], state.dead_letters.map(d => ({ ...d, _key: d.sink + ":" + d.id })), "none: every event was delivered"));
  }

  const errors = h("section", { class: "wide" }, h("h2", {}, "Last errors"),
    table("errors", [
      { title: "when", key: "at", value: e => e.at },
      { title: "error", key: "message", wide: true, value: e => e.message },
    ], (s.recent_errors || []).slice().reverse().map((e, i) => ({ ...e, _key: i })), "none"));
  return [overview, slotSection, snapshot, sinks, letters, errors];
}

// ---- a pooler (`pgflow pooler`) ----

// Per database, the rates between the last two samples: transactions a second and the mean
// transaction time.
function poolerRates() {
  const out = {};
  if (history.length < 2) return out;
  const a = history[history.length - 2], b = history[history.length - 1];
  const dt = b.t - a.t;
  for (const [name, d] of Object.entries(b.dbs || {})) {
    const p = (a.dbs || {})[name];
    if (!p || dt <= 0) continue;
    const xacts = d.xact - p.xact;
    out[name] = { tps: xacts / dt, latency: xacts > 0 ? (d.xact_us - p.xact_us) / xacts / 1e6 : null };
  }
  return out;
}

function poolerSeries(value) {
  const names = new Set();
  history.forEach(p => Object.keys(p.dbs || {}).forEach(n => names.add(n)));
  return [...names].sort().map(name => {
    const points = [];
    for (let i = 1; i < history.length; i++) {
      const a = history[i - 1].dbs && history[i - 1].dbs[name], b = history[i].dbs && history[i].dbs[name];
      const dt = history[i].t - history[i - 1].t;
      if (!a || !b || dt <= 0) continue;
      const v = value(a, b, dt);
      if (v !== null) points.push([history[i].t, v]);
    }
    return { name, points };
  });
}

// A database added to the pooler's file (and served at once: the pooler reloads it).
function addDatabaseForm() {
  const form = h("form", { class: "row", id: "add-database" },
    h("input", { name: "name", placeholder: "database", required: true, size: 10 }),
    h("input", { name: "url", placeholder: "postgres://host:5432/db", required: true, size: 28 }),
    h("select", { name: "pool_mode" }, ["transaction", "session", "statement"].map(m => h("option", { value: m }, m))),
    h("input", { name: "pool_size", type: "number", min: 1, max: 10000, placeholder: "pool size", size: 6 }),
    h("button", { type: "submit" }, "add a database"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const request = { action: "add_database", name: form.name.value.trim(), url: form.url.value.trim(),
      pool_mode: form.pool_mode.value };
    if (form.pool_size.value) request.pool_size = Number(form.pool_size.value);
    act(`Add database ${request.name} to the pooler's file?`, request);
  });
  return form;
}

function drawPooler(state) {
  const rates = poolerRates();
  const byDb = {};
  for (const p of state.pools) {
    const d = byDb[p.database] || (byDb[p.database] = { clients: 0, waiting: 0, sv_active: 0, sv_idle: 0, maxwait: 0 });
    d.clients += p.cl_active + p.cl_waiting; d.waiting += p.cl_waiting;
    d.sv_active += p.sv_active; d.sv_idle += p.sv_idle; d.maxwait = Math.max(d.maxwait, p.maxwait);
  }
  const dbs = state.databases.map(d => ({ ...d, _key: d.name, ...(byDb[d.name] || {}),
    tps: rates[d.name] ? rates[d.name].tps : 0, latency: rates[d.name] ? rates[d.name].latency : null }));
  dbs.sort((a, b) => b.tps - a.tps || a.name.localeCompare(b.name));
  const databases = h("section", { class: "wide" }, h("h2", {}, "Databases, busiest first"),
    table("databases", [
      { title: "database", key: "name", value: d => d.name },
      { title: "xact/s", key: "tps", num: true, value: d => d.tps.toFixed(1) },
      { title: "xact time", key: "latency", num: true, value: d => seconds(d.latency) },
      { title: "clients", key: "clients", num: true, value: d => num(d.clients || 0) },
      { title: "waiting", key: "waiting", num: true, value: d => num(d.waiting || 0) },
      { title: "servers active", key: "sv_active", num: true, value: d => num(d.sv_active || 0) },
      { title: "idle", key: "sv_idle", num: true, value: d => num(d.sv_idle || 0) },
      { title: "pool", key: "pool", value: d => `${d.pool_mode} × ${d.pool_size}` },
      { title: "server", key: "server", value: d => `${d.host}:${d.port}/${d.dbname}` },
      { title: "state", key: "paused", value: d => d.paused ? badge("paused", "warn") : badge("running", "good") },
      { title: "", key: "remove", value: d => h("button", { class: "remove danger", onclick: () => act(`Remove database ${d.name} from the file? It takes no new clients; those connected stay until they leave.`, { action: "remove_database", database: d.name }) }, "remove") },
      { title: "", key: "actions", value: d => d.paused
        ? h("button", { class: "resume", onclick: () => act(`RESUME ${d.name}?`, { action: "resume", database: d.name }) }, "resume")
        : h("button", { class: "pause danger", onclick: () => act(`PAUSE ${d.name}? Its new transactions will wait.`, { action: "pause", database: d.name }) }, "pause") },
    ], dbs),
    h("div", { class: "row" }, h("button", { id: "reload", onclick: () => act("RELOAD the configuration file?", { action: "reload" }) }, "reload the file")),
    addDatabaseForm());

  const charts = h("section", { class: "wide" },
    h("h2", {}, "Transactions a second"),
    chart(poolerSeries((a, b, dt) => (b.xact - a.xact) / dt), v => v.toFixed(0), "tps-chart"),
    h("h2", {}, "Mean transaction time"),
    chart(poolerSeries((a, b) => b.xact > a.xact ? (b.xact_us - a.xact_us) / (b.xact - a.xact) / 1e6 : null), seconds, "latency-chart"));

  const pools = h("section", { class: "wide" }, h("h2", {}, "Pools"),
    table("pools", [
      { title: "database", key: "database", value: p => p.database },
      { title: "user", key: "user", value: p => p.user },
      { title: "cl_active", key: "cl_active", num: true, value: p => p.cl_active },
      { title: "cl_waiting", key: "cl_waiting", num: true, value: p => p.cl_waiting },
      { title: "sv_active", key: "sv_active", num: true, value: p => p.sv_active },
      { title: "sv_idle", key: "sv_idle", num: true, value: p => p.sv_idle },
      { title: "sv_login", key: "sv_login", num: true, value: p => p.sv_login },
      { title: "maxwait", key: "maxwait", num: true, value: p => seconds(p.maxwait) },
      { title: "mode", key: "pool_mode", value: p => p.pool_mode },
    ], state.pools.map(p => ({ ...p, _key: p.database + "/" + p.user }))));

  const banForm = h("form", { class: "row", id: "ban" },
    h("select", { name: "kind" }, ["user", "address", "database"].map(k => h("option", { value: k }, k))),
    h("input", { name: "who", placeholder: "name or address", required: true }),
    h("button", { class: "danger", type: "submit" }, "ban"));
  banForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const kind = banForm.kind.value, who = banForm.who.value.trim();
    act(`Ban ${kind} ${who}? Their clients are closed and new logins refused.`, { action: "ban", [kind]: who });
  });
  const bans = [...state.bans.users.map(u => ({ kind: "user", who: u })), ...state.bans.addresses.map(a => ({ kind: "address", who: a })),
    ...(state.bans.databases || []).map(d => ({ kind: "database", who: d }))];
  const banSection = h("section", {}, h("h2", {}, "Bans"),
    table("bans", [
      { title: "kind", key: "kind", value: b => b.kind },
      { title: "who", key: "who", value: b => b.who },
      { title: "", key: "unban", value: b => h("button", { class: "unban", onclick: () =>
        act(`Unban ${b.kind} ${b.who}?`, { action: "unban", [b.kind]: b.who }) }, "unban") },
    ], bans.map(b => ({ ...b, _key: b.kind + ":" + b.who })), "no one is banned"), banForm);

  const out = [databases, charts, pools, banSection];
  if (state.clusters && state.clusters.length) {
    out.push(h("section", { class: "wide" }, h("h2", {}, "Clusters followed"), table("clusters", [
      { title: "database", key: "database", value: c => c.database },
      { title: "cluster", key: "cluster", value: c => c.cluster },
      { title: "leader", key: "leader", value: c => c.leader || badge(c.why_none || "none", "bad") },
      { title: "replicas", key: "replicas", value: c => c.replicas.join(", ") || "–" },
      { title: "since", key: "since", value: c => c.since },
    ], state.clusters.map(c => ({ ...c, _key: c.database })))));
  }
  if (state.replicas.length) {
    out.push(h("section", {}, h("h2", {}, "Replicas"), table("replicas", [
      { title: "database", key: "database", value: r => r.database },
      { title: "node", key: "address", value: r => r.address },
      { title: "role", key: "role", value: r => r.role },
      { title: "state", key: "state", value: r => r.state },
      { title: "lag", key: "lag", num: true, value: r => `${bytes(r.lag_bytes)}, ${seconds(r.lag_seconds)}` },
      { title: "reads", key: "reads", num: true, value: r => num(r.reads) },
    ], state.replicas.map((r, i) => ({ ...r, _key: i })))));
  }
  if (state.caches.length) {
    out.push(h("section", {}, h("h2", {}, "Query cache"), table("caches", [
      { title: "database", key: "database", value: c => c.database },
      { title: "hit rate", key: "hit_rate", num: true, value: c => c.hits + c.misses > 0 ? (100 * c.hits / (c.hits + c.misses)).toFixed(1) + "%" : "–" },
      { title: "entries", key: "entries", num: true, value: c => num(c.entries) },
      { title: "memory", key: "bytes", num: true, value: c => bytes(c.bytes) },
      { title: "invalidations", key: "invalidations", num: true, value: c => num(c.invalidations) },
    ], state.caches.map(c => ({ ...c, _key: c.database })))));
  }
  return out;
}

// ---- polling ----

// Puts `children` in `app` in place of what was there, keeping what is being typed in its
// forms (and where): the page redraws every 2 s.
function redraw(app, children) {
  const saved = {};
  let focused = null;
  app.querySelectorAll("form[id] [name]").forEach((el) => {
    const key = el.form.id + "/" + el.name;
    saved[key] = el.value;
    if (el === document.activeElement) focused = key;
  });
  app.replaceChildren(...children);
  app.querySelectorAll("form[id] [name]").forEach((el) => {
    const key = el.form.id + "/" + el.name;
    if (key in saved) el.value = saved[key];
    if (key === focused) el.focus();
  });
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  const app = document.getElementById("app");
  try {
    const [state, samples] = await Promise.all([api("/api/state"), api("/api/history")]);
    state.at = Date.now() / 1000;
    history = samples;
    redraw(app, session.kind === "pooler" ? drawPooler(state) : drawPipeline(state));
    app.dataset.updated = String(state.at);
    previous = state;
    lastState = state;
  } catch (e) {
    if (session.kind === "pooler" && !session.user) {
      app.replaceChildren(h("section", {}, h("h2", {}, "Log in"),
        h("p", {}, "The pooler's console shows its pools to its admin users (admin.users).")));
    } else {
      notice(e.message, true);
    }
  }
  // A hidden tab asks nothing: the console costs nothing while no one looks.
  if (!document.hidden) timer = setTimeout(refresh, POLL_MS);
}
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });

(async () => {
  try {
    session = await api("/api/session");
  } catch (e) {
    notice(e.message, true);
    return;
  }
  document.getElementById("title").textContent = "pgflow · " + session.title;
  document.title = "pgflow · " + session.title;
  drawWho();
  refresh();
})();
