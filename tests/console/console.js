// The web console in headless Chromium (Debian's, driven by playwright-core): the pipeline's
// page against `pgflow run` and the pooler's against `pgflow pooler`, both started by
// tests/console/console.sh, which passes their addresses in the environment. CommonJS: node
// resolves playwright-core and pg through NODE_PATH.
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { chromium } = require("playwright-core");
const pg = require("pg");

const PIPELINE = `http://${process.env.PIPELINE_ADMIN}`;
const POOLER = `http://${process.env.POOLER_ADMIN}`;
const POOLER_PORT = Number(process.env.POOLER_PORT);
const PGPORT = Number(process.env.PGPORT);
const SHOTS = process.env.SHOTS;

let browser;

before(async () => {
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true });
});
after(async () => { await browser.close(); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, check, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last && (last.message || JSON.stringify(last))})`);
}

async function sql(database, text, user = "postgres", port = PGPORT, password) {
  const client = new pg.Client({ host: "127.0.0.1", port, database, user, password });
  await client.connect();
  try { return (await client.query(text)).rows; } finally { await client.end(); }
}

async function newPage(width = 1280, height = 900) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  page.on("dialog", (dialog) => dialog.accept());  // every action asks first
  page.on("pageerror", (e) => { throw e; });
  return page;
}

async function login(page, user, password) {
  await page.fill("#login input[name=user]", user);
  await page.fill("#login input[name=password]", password);
  await page.click("#login button[type=submit]");
}

const cell = (page, table, key, col) =>
  page.textContent(`#${table} tr[data-key="${key}"] td[data-col="${col}"]`);

test("the console's files are built in, small, and fenced by a CSP", async () => {
  let total = 0;
  for (const file of ["/", "/console.js", "/console.css"]) {
    const r = await fetch(PIPELINE + file);
    assert.equal(r.status, 200, file);
    assert.match(r.headers.get("content-security-policy"), /script-src 'self'/);
    assert.equal(r.headers.get("x-content-type-options"), "nosniff");
    total += (await r.arrayBuffer()).byteLength;
  }
  assert.ok(total < 200 * 1024, `the console weighs ${total} bytes, over its 200 kB budget`);
});

test("the pipeline's page shows what /status says, and a dead letter replayed", async () => {
  const page = await newPage();
  await page.goto(PIPELINE + "/");
  await until("streaming", async () => (await page.textContent("[data-field=phase]")).includes("streaming"));
  // A row the target refuses (CHECK adult), set aside as a dead letter.
  await sql("shop", "INSERT INTO people VALUES (9001, 'minus@example.com', -1)");
  await sql("shop", "UPDATE people SET age = age + 1 WHERE id <= 10");
  await until("the changes confirmed", async () => {
    const s = await (await fetch(PIPELINE + "/status")).json();
    return s.changes >= 11 && s.unconfirmed_bytes === 0 && s.sinks.every((k) => k.queue_bytes === 0);
  });
  // Idle now: the page's numbers are /status's. (Positions still move while idle, as the
  // server's keepalives advance them, so the sinks' are compared in the same wait.)
  await until("the page to match /status", async () => {
    const s = await (await fetch(PIPELINE + "/status")).json();
    const shown = {
      changes: (await page.textContent("[data-field=changes]")).replace(/,/g, ""),
      transactions: (await page.textContent("[data-field=transactions]")).replace(/,/g, ""),
      confirmed: await page.textContent("[data-field=confirmed]"),
    };
    for (const sink of s.sinks) {
      if ((await cell(page, "sinks", sink.name, "durable")) !== sink.durable) return false;
    }
    return shown.changes === String(s.changes) && shown.transactions === String(s.transactions) &&
      shown.confirmed === s.confirmed;
  });
  const status = await (await fetch(PIPELINE + "/status")).json();
  for (const sink of status.sinks) {
    assert.equal(await cell(page, "sinks", sink.name, "type"), sink.type);
  }
  assert.equal(await page.locator("#sinks tbody tr").count(), status.sinks.length);
  if (status.slot) {
    assert.ok(await page.textContent("[data-field=retained_wal_bytes]"));
  }
  // Dead letters need a login; a wrong password is refused on the page.
  assert.match(await page.textContent("#dead-letters"), /log in/);
  await login(page, "ops", "wrong");
  await until("the refusal", async () => (await page.textContent("#notice")).includes("wrong user name or password"));
  await login(page, "ops", "ops-secret");
  await until("the dead letter", async () => (await page.locator('#dead-letters tr[data-key^="replica:"]').count()) === 1);
  const row = page.locator('#dead-letters tr[data-key^="replica:"]');
  assert.match(await row.locator("td[data-col=reason]").textContent(), /adult/);
  assert.equal(await row.locator("td[data-col=key]").textContent(), "(id)=(9001)");
  await until("the lag chart", async () => (await page.locator("#lag-chart polyline").count()) === 2, 30000);
  await page.screenshot({ path: path.join(SHOTS, "pipeline.png"), fullPage: true });
  // The target fixed, the replay delivers it and the record goes.
  await sql("replica", "ALTER TABLE people DROP CONSTRAINT adult");
  await row.locator("button.replay").click();
  await until("the replay's answer", async () => (await page.textContent("#notice")).includes("replayed"));
  await until("the record gone", async () => (await page.textContent("#dead-letters")).includes("none"));
  const replayed = await sql("replica", "SELECT age FROM people WHERE id = 9001");
  assert.deepEqual(replayed, [{ age: -1 }]);
  await page.context().close();
});

test("the pooler's page matches SHOW POOLS, and PAUSE then RESUME holds a client", async () => {
  const app = new pg.Client({ host: "127.0.0.1", port: POOLER_PORT, database: "shop", user: "app", password: "app-secret" });
  await app.connect();
  await app.query("SELECT 1");
  const page = await newPage();
  await page.goto(POOLER + "/");
  await until("the login form", async () => page.isVisible("#login"));
  await login(page, "admin", "admin-secret");
  await until("the pools", async () => (await page.locator('#pools tr[data-key="shop/app"]').count()) === 1);
  const console = new pg.Client({ host: "127.0.0.1", port: POOLER_PORT, database: "pgflow", user: "admin", password: "admin-secret" });
  await console.connect();
  await until("the page to match SHOW POOLS", async () => {
    const pools = (await console.query("SHOW POOLS")).rows.filter((p) => p.database === "shop" && p.user === "app");
    const p = pools[0];
    return p && (await cell(page, "pools", "shop/app", "cl_active")) === String(p.cl_active) &&
      (await cell(page, "pools", "shop/app", "cl_waiting")) === String(p.cl_waiting) &&
      (await cell(page, "pools", "shop/app", "sv_active")) === String(p.sv_active) &&
      (await cell(page, "pools", "shop/app", "sv_idle")) === String(p.sv_idle);
  });
  const databases = (await console.query("SHOW DATABASES")).rows.map((d) => d.name).filter((n) => n !== "pgflow");
  for (const name of databases) assert.equal(await page.locator(`#databases tr[data-key="${name}"]`).count(), 1, name);

  // PAUSE: the client's next query waits; RESUME: it completes.
  await page.locator('#databases tr[data-key="shop"] button.pause').click();
  await until("paused", async () => (await cell(page, "databases", "shop", "paused")) === "paused");
  let done = false;
  const waiting = app.query("SELECT 42 AS answer").then((r) => { done = true; return r; });
  await sleep(1000);
  assert.equal(done, false, "a query went through a paused database");
  await until("a waiting client shown", async () => (await cell(page, "databases", "shop", "waiting")) === "1");
  await page.locator('#databases tr[data-key="shop"] button.resume').click();
  const answer = await waiting;
  assert.equal(answer.rows[0].answer, 42);
  await until("running", async () => (await cell(page, "databases", "shop", "paused")) === "running");
  // Transactions counted by the sampler (every 5 s) show up as a rate chart.
  for (let i = 0; i < 50; i++) await app.query("SELECT 1");
  await until("the charts", async () => (await page.locator("#tps-chart polyline").count()) >= 1, 30000);
  await page.screenshot({ path: path.join(SHOTS, "pooler.png"), fullPage: true });

  // BAN USER app: its client is closed and its logins refused; UNBAN lets it back.
  app.on("error", () => {});
  await page.selectOption("#ban select[name=kind]", "user");
  await page.fill("#ban input[name=who]", "app");
  await page.click("#ban button[type=submit]");
  await until("the ban listed", async () => (await page.locator('#bans tr[data-key="user:app"]').count()) === 1);
  await assert.rejects(
    sql("shop", "SELECT 1", "app", POOLER_PORT, "app-secret"),
    (e) => e.code === "28000" && /banned/.test(e.message));
  assert.deepEqual((await console.query("SHOW BANS")).rows, [{ kind: "user", who: "app" }]);
  await page.locator('#bans tr[data-key="user:app"] button.unban').click();
  await until("the ban gone", async () => (await page.textContent("#bans")).includes("no one is banned"));
  assert.deepEqual(await sql("shop", "SELECT 1 AS one", "app", POOLER_PORT, "app-secret"), [{ one: 1 }]);

  // RELOAD from the page.
  await page.click("#reload");
  await until("the reload's answer", async () => (await page.textContent("#notice")).includes("RELOAD: done"));
  // An address banned and unbanned (one no client here has).
  await page.selectOption("#ban select[name=kind]", "address");
  await page.fill("#ban input[name=who]", "10.9.9.9");
  await page.click("#ban button[type=submit]");
  await until("the address listed", async () => (await page.locator('#bans tr[data-key="address:10.9.9.9"]').count()) === 1);
  assert.deepEqual((await console.query("SHOW BANS")).rows, [{ kind: "address", who: "10.9.9.9" }]);
  await page.locator('#bans tr[data-key="address:10.9.9.9"] button.unban').click();
  await until("the address unbanned", async () => (await page.textContent("#bans")).includes("no one is banned"));

  // A database added from the page is in the file and serves at once; removed, it is gone
  // from both.
  const file = () => fs.readFileSync(process.env.POOLER_FILE, "utf8");
  await page.fill("#add-database input[name=name]", "tenant_2");
  await page.fill("#add-database input[name=url]", `postgres://127.0.0.1:${PGPORT}/shop`);
  await page.selectOption("#add-database select[name=pool_mode]", "session");
  await page.fill("#add-database input[name=pool_size]", "1");
  await page.click("#add-database button[type=submit]");
  await until("the new database", async () => (await page.locator('#databases tr[data-key="tenant_2"]').count()) === 1);
  assert.match(file(), /\n  tenant_2: \{url: "postgres:\/\/127\.0\.0\.1:\d+\/shop", pool_mode: session, pool_size: 1\}\n/);
  assert.match(file(), /# the tenants' databases/);  // the file's comments stay
  assert.deepEqual(await sql("tenant_2", "SELECT count(*)::int AS n FROM people WHERE id <= 3", "app", POOLER_PORT, "app-secret"), [{ n: 3 }]);
  await page.locator('#databases tr[data-key="tenant_2"] button.remove').click();
  await until("the database gone", async () => (await page.locator('#databases tr[data-key="tenant_2"]').count()) === 0);
  assert.doesNotMatch(file(), /tenant_2/);
  await assert.rejects(sql("tenant_2", "SELECT 1", "app", POOLER_PORT, "app-secret"), (e) => e.code === "3D000");
  // One the file would not load with is refused, and the file left alone.
  const before = file();
  await page.fill("#add-database input[name=name]", "shop");
  await page.fill("#add-database input[name=url]", "postgres://127.0.0.1/x");
  await page.click("#add-database button[type=submit]");
  await until("the refusal", async () => (await page.textContent("#notice")).includes("already in the file"));
  assert.equal(file(), before);
  await console.end();
  await page.context().close();
});

test("on a phone's width the pages fit", async () => {
  const page = await newPage(390, 844);
  await page.goto(POOLER + "/");
  await login(page, "admin", "admin-secret");
  await until("the databases", async () => (await page.locator("#databases").count()) === 1);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
  await page.screenshot({ path: path.join(SHOTS, "pooler-phone.png"), fullPage: true });
  await page.goto(PIPELINE + "/");
  await until("the overview", async () => (await page.locator("#overview").count()) === 1);
  const overflow2 = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow2 <= 0, `the pipeline's page is ${overflow2}px wider than the phone`);
  await page.context().close();
});

// Logs in with node's fetch: the cookie and CSRF token of a session.
async function session(base, user, password) {
  const r = await fetch(base + "/api/login", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user, password }),
  });
  assert.equal(r.status, 200);
  const cookie = r.headers.get("set-cookie");
  assert.match(cookie, /HttpOnly/);
  assert.match(cookie, /SameSite=Strict/);
  return { cookie: cookie.split(";")[0], csrf: (await r.json()).csrf };
}

test("an action without credentials, with a forged token or from another site is refused", async () => {
  const pause = JSON.stringify({ action: "pause", database: "shop" });
  const post = (headers, body = pause) => fetch(POOLER + "/api/action", { method: "POST", headers, body });
  const json = { "Content-Type": "application/json" };
  assert.equal((await post(json)).status, 401);
  const s = await session(POOLER, "admin", "admin-secret");
  assert.equal((await post({ ...json, Cookie: s.cookie })).status, 403);  // no token
  assert.equal((await post({ ...json, Cookie: s.cookie, "X-CSRF-Token": "0".repeat(64) })).status, 403);
  const other = await post({ ...json, Cookie: s.cookie, "X-CSRF-Token": s.csrf, Origin: "http://evil.example" });
  assert.equal(other.status, 403);
  assert.match((await other.json()).error, /another origin/);
  assert.equal((await post({ ...json, Cookie: s.cookie, "X-CSRF-Token": s.csrf, "Sec-Fetch-Site": "cross-site" })).status, 403);
  // An HTML form's POST (no JSON) never acts.
  assert.equal((await post({ "Content-Type": "application/x-www-form-urlencoded", Cookie: s.cookie }, "action=pause")).status, 415);
  // None of them paused anything.
  const dbs = await sql("pgflow", "SHOW DATABASES", "admin", POOLER_PORT, "admin-secret");
  assert.equal(dbs.find((d) => d.name === "shop").paused, "0");
  // The pipeline's replay likewise; and a user not in admin.users cannot log in to the pooler's.
  const replay = await fetch(PIPELINE + "/api/action", { method: "POST", headers: json, body: JSON.stringify({ action: "replay", sink: "replica", id: 1 }) });
  assert.equal(replay.status, 401);
  const notAdmin = await fetch(POOLER + "/api/login", { method: "POST", headers: json, body: JSON.stringify({ user: "app", password: "app-secret" }) });
  assert.equal(notAdmin.status, 401);
  // A page of another origin in the browser cannot act with the user's session either: the
  // cookie is SameSite=Strict and the endpoint grants no CORS.
  const page = await newPage();
  await page.goto(POOLER + "/");
  await login(page, "admin", "admin-secret");
  await until("logged in", async () => (await page.locator("#user").count()) === 1);
  const evil = POOLER.replace("127.0.0.1", "localhost");
  await page.goto(evil + "/healthz");
  const outcome = await page.evaluate(async (target) => {
    try {
      const r = await fetch(target + "/api/action", { method: "POST", credentials: "include", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ action: "pause", database: "shop" }) });
      return `status ${r.status}`;
    } catch (e) {
      return "blocked";
    }
  }, POOLER);
  assert.equal(outcome, "blocked");
  const after = await sql("pgflow", "SHOW DATABASES", "admin", POOLER_PORT, "admin-secret");
  assert.equal(after.find((d) => d.name === "shop").paused, "0");
  await page.context().close();
});

test("failed logins are limited per address", async () => {
  const json = { "Content-Type": "application/json" };
  const statuses = [];
  for (let i = 0; i < 7; i++) {
    const r = await fetch(PIPELINE + "/api/login", { method: "POST", headers: json, body: JSON.stringify({ user: "ops", password: "guess" + i }) });
    statuses.push(r.status);
  }
  assert.ok(statuses.slice(0, 3).every((s) => s === 401), statuses.join(","));
  assert.equal(statuses[statuses.length - 1], 429);
});
