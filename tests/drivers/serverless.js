// Neon's serverless driver (@neondatabase/serverless, from npm) against `pgflow pooler`'s
// http listener, as its documentation uses it: one-shot queries over HTTP (the tagged-template
// `sql`, `transaction([...])`, fullResults), and Pool / Client over WebSocket (ws from npm),
// both logins (pipelined and not). Run by tests/drivers/serverless.sh with node's test runner;
// the environment gives the addresses: HTTP_PORT, ADMIN_PORT, POOLER_PID.
'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { readFileSync } = require('node:fs');
const { neon, neonConfig, Pool, Client } = require('@neondatabase/serverless');
const ws = require('ws');

const HTTP = process.env.HTTP_PORT;
const url = (user = 'app', password = 'app-secret', db = 'app') =>
  `postgres://${user}:${password}@127.0.0.1:${HTTP}/${db}`;

neonConfig.fetchEndpoint = `http://127.0.0.1:${HTTP}/sql`;
neonConfig.webSocketConstructor = ws;
neonConfig.wsProxy = () => `127.0.0.1:${HTTP}/v2`;
neonConfig.useSecureWebSocket = false;
neonConfig.pipelineTLS = false;

const sql = neon(url());

test('the tagged template, parameters of every common type', async () => {
  assert.deepEqual(await sql`SELECT ${41}::int + 1 AS answer`, [{ answer: 42 }]);
  const [row] = await sql`
    SELECT ${'9007199254740993'}::int8 AS big, ${'12345678901234567890.0123'}::numeric AS num,
           ${new Date('2026-11-28T06:00:00Z')}::timestamptz AS at,
           ${Buffer.from([0, 1, 254, 255])}::bytea AS bytes, ${[1, 2, 3]}::int[] AS ints,
           ${['a', 'b"c', null]}::text[] AS texts, ${{ a: 1, b: [true, null] }}::jsonb AS doc,
           ${true}::bool AS yes, ${null}::text AS nothing, ${'héllo ✓'} AS unicode`;
  assert.equal(row.big, '9007199254740993');  // int8 as text, as node-postgres gives it
  assert.equal(row.num, '12345678901234567890.0123');
  assert.equal(row.at.toISOString(), '2026-11-28T06:00:00.000Z');
  assert.deepEqual([...row.bytes], [0, 1, 254, 255]);
  assert.deepEqual(row.ints, [1, 2, 3]);
  assert.deepEqual(row.texts, ['a', 'b"c', null]);
  assert.deepEqual(row.doc, { a: 1, b: [true, null] });
  assert.equal(row.yes, true);
  assert.equal(row.nothing, null);
  assert.equal(row.unicode, 'héllo ✓');
});

test('full results and array mode', async () => {
  const full = neon(url(), { fullResults: true, arrayMode: true });
  const result = await full`SELECT 1 AS one, 'x'::text AS two`;
  assert.equal(result.command, 'SELECT');
  assert.equal(result.rowCount, 1);
  assert.deepEqual(result.rows, [[1, 'x']]);
  assert.deepEqual(result.fields.map((f) => [f.name, f.dataTypeID]), [['one', 23], ['two', 25]]);
  const insert = await full`INSERT INTO items (id, name) VALUES (1000, 'full'), (1001, 'full')`;
  assert.equal(insert.command, 'INSERT');
  assert.equal(insert.rowCount, 2);
  assert.deepEqual(insert.fields, []);
});

test('transactions commit together, and roll back together', async () => {
  const [a, b] = await sql.transaction([
    sql`INSERT INTO items (id, name) VALUES (1, 'one') RETURNING id`,
    sql`INSERT INTO items (id, name) VALUES (2, 'two') RETURNING id`,
  ], { isolationLevel: 'Serializable' });
  assert.deepEqual([a, b], [[{ id: 1 }], [{ id: 2 }]]);
  await assert.rejects(
    sql.transaction([
      sql`INSERT INTO items (id, name) VALUES (3, 'three')`,
      sql`INSERT INTO items (id, name) VALUES (1, 'again')`,  // a duplicate key
    ]),
    (e) => e.code === '23505' && /duplicate key/.test(e.message) && e.constraint === 'items_pkey');
  const rows = await sql`SELECT id FROM items WHERE id < 10 ORDER BY id`;
  assert.deepEqual(rows.map((r) => r.id), [1, 2]);
  await assert.rejects(
    sql.transaction([sql`INSERT INTO items (id, name) VALUES (4, 'ro')`], { readOnly: true }),
    (e) => e.code === '25006');
});

test('errors carry their SQLSTATE and fields', async () => {
  await assert.rejects(sql`SELECT 1/0`, (e) => e.code === '22012' && e.severity === 'ERROR');
  await assert.rejects(sql`SELEC 1`, (e) => e.code === '42601' && e.position === '1');
  await assert.rejects(sql`SELECT * FROM no_such_table`, (e) => e.code === '42P01');
  // COPY FROM STDIN has nothing to read over HTTP: refused, the login kept.
  await assert.rejects(sql`COPY items FROM STDIN`,
    (e) => /not available over HTTP/.test(e.message));
  // The login is kept and still works after errors.
  assert.deepEqual(await sql`SELECT 2 AS two`, [{ two: 2 }]);
});

test('logins refused as on the wire', async () => {
  await assert.rejects(neon(url('app', 'wrong'))`SELECT 1`, (e) => e.code === '28P01');
  await assert.rejects(neon(url('nobody', 'x'))`SELECT 1`, (e) => e.code === '28P01');
  await assert.rejects(neon(url('app', 'app-secret', 'nodb'))`SELECT 1`,
    (e) => e.code === '3D000');
});

test('statement_timeout cancels a request', async () => {
  await assert.rejects(sql`SELECT pg_sleep(30)`, (e) => e.code === '57014');
  assert.deepEqual(await sql`SELECT 3 AS three`, [{ three: 3 }]);
});

function peakRss(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)[1]) * 1024;
}

test('a result of 100,000 rows is streamed, the pooler holding a bounded part', async () => {
  const before = peakRss(process.env.POOLER_PID);
  const rows = await sql`SELECT g AS n, repeat('x', 400) AS pad FROM generate_series(1, 100000) g`;
  assert.equal(rows.length, 100000);
  assert.equal(rows[99999].n, 100000);
  const grew = peakRss(process.env.POOLER_PID) - before;
  // The answer is about 43 MB of JSON; the pooler holds a few hundred kB of it at a time.
  assert.ok(grew < 16 * 1024 * 1024, `the pooler's peak RSS grew by ${grew} bytes`);
});

test('HTTP errors: path, method, size', async () => {
  const base = `http://127.0.0.1:${HTTP}`;
  assert.equal((await fetch(`${base}/nowhere`, { method: 'POST' })).status, 404);
  assert.equal((await fetch(`${base}/sql`)).status, 405);
  const big = JSON.stringify({ query: 'SELECT $1', params: ['x'.repeat(2 * 1024 * 1024)] });
  const tooBig = await fetch(`${base}/sql`, {
    method: 'POST', body: big, headers: { 'Neon-Connection-String': url() } });
  assert.equal(tooBig.status, 413);
  const noHeader = await fetch(`${base}/sql`, { method: 'POST', body: '{"query":"SELECT 1"}' });
  assert.equal(noHeader.status, 400);
  assert.match((await noHeader.json()).message, /Neon-Connection-String/);
});

for (const pipelineConnect of ['password', false]) {
  test(`Pool and Client over WebSocket (pipelineConnect ${pipelineConnect})`, async () => {
    neonConfig.pipelineConnect = pipelineConnect;
    const pool = new Pool({ connectionString: url(), max: 3 });
    const { rows } = await pool.query('SELECT $1::int * 2 AS doubled', [21]);
    assert.deepEqual(rows, [{ doubled: 42 }]);
    // Sessions: a transaction, a named prepared statement, an error inside a transaction.
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('INSERT INTO items (id, name) VALUES ($1, $2)', [100, 'ws']);
      for (let i = 0; i < 3; i++) {
        const r = await client.query({ name: 'by-id', text: 'SELECT name FROM items WHERE id = $1',
          values: [100] });
        assert.deepEqual(r.rows, [{ name: 'ws' }]);
      }
      await client.query('COMMIT');
      await client.query('BEGIN');
      await client.query('INSERT INTO items (id, name) VALUES (101, $1)', ['rolled back']);
      await assert.rejects(client.query('SELECT 1/0'), (e) => e.code === '22012');
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    const ids = await pool.query('SELECT id FROM items WHERE id BETWEEN 100 AND 199 ORDER BY id');
    assert.deepEqual(ids.rows, [{ id: 100 }]);
    await Promise.all(Array.from({ length: 10 }, (_, i) => pool.query('SELECT $1::int AS i', [i])));
    await pool.query('DELETE FROM items WHERE id BETWEEN 100 AND 199');
    await pool.end();

    // (A pipelined login does not wait for the answer: its first query gets the refusal.)
    const wrong = new Client({ connectionString: url('app', 'wrong') });
    wrong.on('error', () => {});
    await assert.rejects((async () => {
      await wrong.connect();
      await wrong.query('SELECT 1');
    })(), (e) => e.code === '28P01');
  });
}

test('several databases behind one endpoint', async () => {
  assert.deepEqual(await neon(url('app', 'app-secret', 'other'))`SELECT current_database() AS db`,
    [{ db: 'other' }]);
  assert.deepEqual(await sql`SELECT current_database() AS db`, [{ db: 'app' }]);
});

test('HTTPS and wss:// satisfy a pooler that takes TLS clients only', async () => {
  const port = process.env.TLS_HTTP_PORT;
  const secure = `postgres://app:app-secret@127.0.0.1:${port}/app`;
  const overHttps = neon(secure, { fetchEndpoint: `https://127.0.0.1:${port}/sql` });
  assert.deepEqual(await overHttps`SELECT ${5}::int AS five`, [{ five: 5 }]);
  const saved = { ...neonConfig };
  neonConfig.useSecureWebSocket = true;
  neonConfig.wsProxy = () => `127.0.0.1:${port}/v2`;
  neonConfig.pipelineConnect = 'password';
  try {
    const pool = new Pool({ connectionString: secure });
    assert.deepEqual((await pool.query('SELECT $1::text AS t', ['tls'])).rows, [{ t: 'tls' }]);
    await pool.end();
  } finally {
    neonConfig.useSecureWebSocket = saved.useSecureWebSocket;
    neonConfig.wsProxy = () => `127.0.0.1:${HTTP}/v2`;
  }
  // Plain HTTP to the HTTPS listener gets no answer.
  await assert.rejects(fetch(`http://127.0.0.1:${port}/sql`, { method: 'POST', body: '{}' }));
});

test('metrics count the requests by status', async () => {
  const text = await (await fetch(`http://127.0.0.1:${process.env.ADMIN_PORT}/metrics`)).text();
  assert.match(text, /pgflow_pooler_http_requests_total\{status="200"\} [1-9]/);
  assert.match(text, /pgflow_pooler_http_requests_total\{status="400"\} [1-9]/);
  assert.match(text, /pgflow_pooler_websocket_connections_total [1-9]/);
});
