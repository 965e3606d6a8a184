// node-postgres and postgres.js through the pooler (transaction mode): named prepared
// statements, transactions, an error that rolls one back, and postgres.js's pipelining of
// prepared statements over a few connections. Exits non-zero at the first wrong answer.
// Usage: node clients.js postgres://user:password@host:port/db[?sslmode=require]
'use strict';
const { Client } = require('pg');
const postgres = require('postgres');

const url = process.argv[2];
// With sslmode=require node-postgres is given what libpq means by it (encrypted, not verified):
// its own reading of require is verify-full. postgres.js reads require as libpq does.
const pgUrl = url.replace('sslmode=require', 'sslmode=no-verify');

function check(what, got, want) {
  if (got !== want) throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

async function nodePostgres() {
  const clients = [];
  for (let i = 0; i < 6; i++) {
    const c = new Client({ connectionString: pgUrl });
    await c.connect();
    clients.push(c);
  }
  await Promise.all(clients.map(async (c, i) => {
    for (let k = 0; k < 100; k++) {
      const r = await c.query({ name: 'add', text: 'SELECT $1::int + $2::int AS sum', values: [i, k] });
      check('node-postgres add', r.rows[0].sum, i + k);
      await c.query('BEGIN');
      await c.query({ name: 'ins', text: 'INSERT INTO hits (client, n) VALUES ($1, $2)', values: [`pg${i}`, k] });
      await c.query('COMMIT');
    }
    // An error inside a transaction: the transaction is aborted, ROLLBACK brings it back.
    await c.query('BEGIN');
    await c.query({ name: 'ins', text: 'INSERT INTO hits (client, n) VALUES ($1, $2)', values: ['pgrb', i] });
    await c.query('SELECT 1/0').then(() => { throw new Error('1/0 succeeded'); }, () => {});
    await c.query('ROLLBACK');
  }));
  const stream = clients[0].connection.stream;
  const over = stream.getProtocol
    ? `over ${stream.getProtocol()}, ${stream.getCipher().name}` : 'in the clear';
  await Promise.all(clients.map((c) => c.end()));
  console.log('ok node-postgres: 6 clients, 600 named-statement queries, 600 transactions,', over);
}

async function postgresJs() {
  const sql = postgres(url, { max: 4, prepare: true, onnotice: () => {} });
  // 800 queries at once over 4 connections: postgres.js pipelines them.
  const rows = await Promise.all([...Array(800).keys()].map((k) => sql`SELECT ${k}::int * 2 AS d`));
  rows.forEach((r, k) => check('postgres.js pipelined', r[0].d, 2 * k));
  await sql.begin(async (tx) => {
    for (let k = 0; k < 50; k++) await tx`INSERT INTO hits (client, n) VALUES ('js', ${k})`;
  });
  await sql.begin(async (tx) => {
    await tx`INSERT INTO hits (client, n) VALUES ('jsrb', 1)`;
    await tx`SELECT 1/0`;
  }).then(() => { throw new Error('1/0 succeeded'); }, () => {});
  await sql.end();
  console.log('ok postgres.js: 800 pipelined prepared queries over 4 connections, 2 transactions');
}

(async () => {
  await nodePostgres();
  await postgresJs();
})().catch((e) => {
  console.error('FAILED', e);
  process.exit(1);
});
