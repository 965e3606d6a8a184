// node-postgres and postgres.js through the routing proxy (a database with a replica): named
// prepared statements that write and read, each read after the client's own write seeing it
// (read-your-writes by LSN), and a client that only reads. Exits non-zero at the first wrong
// answer. Usage: node routed.js postgres://user:password@host:port/db
'use strict';
const {Client} = require('pg');
const postgres = require('postgres');

const url = process.argv[2];

function check(what, got, want) {
  if (got !== want)
    throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

async function nodePostgres() {
  const clients = [];
  for (let i = 0; i < 4; i++) {
    const c = new Client({connectionString: url});
    await c.connect();
    clients.push(c);
  }
  await Promise.all(clients.map(async (c, i) => {
    for (let k = 0; k < 50; k++) {
      await c.query({
        name: 'ins',
        text: 'INSERT INTO seen (client, n) VALUES ($1, $2)',
        values: [`pg${i}`, k]
      });
      const r = await c.query({
        name: 'count',
        text: 'SELECT count(*)::int AS c FROM seen WHERE client = $1 AND n = $2',
        values: [`pg${i}`, k]
      });
      check('node-postgres reads its own write', r.rows[0].c, 1);
    }
  }));
  await Promise.all(clients.map((c) => c.end()));
  // A client that only reads: its prepared reads go to the replica.
  const reader = new Client({connectionString: url});
  await reader.connect();
  for (let k = 0; k < 100; k++) {
    const r = await reader.query(
        {name: 'total', text: 'SELECT count(*)::int AS c FROM seen WHERE n >= $1', values: [0]});
    if (r.rows[0].c < 200) throw new Error(`node-postgres reader: ${r.rows[0].c} rows`);
  }
  await reader.end();
  console.log('ok node-postgres: 4 clients, 200 writes each read back at once, 100 prepared reads');
}

async function postgresJs() {
  const sql = postgres(url, {max: 4, prepare: true, onnotice: () => {}});
  for (let k = 0; k < 50; k++) {
    await sql`INSERT INTO seen (client, n) VALUES ('js', ${k})`;
    const [r] = await sql`SELECT count(*)::int AS c FROM seen WHERE client = 'js' AND n = ${k}`;
    check('postgres.js reads its own write', r.c, 1);
  }
  // Pipelined reads over its connections.
  const rows = await Promise.all([...Array(200).keys()].map((k) => sql`SELECT ${k}::int * 2 AS d`));
  rows.forEach((r, k) => check('postgres.js pipelined read', r[0].d, 2 * k));
  await sql.end();
  console.log('ok postgres.js: 50 writes each read back at once, 200 pipelined prepared reads');
}

(async () => {
  await nodePostgres();
  await postgresJs();
})().catch((e) => {
  console.error('FAILED', e);
  process.exit(1);
});
