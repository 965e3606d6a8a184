// Cancels and schema changes through the pooler with postgres.js and node-postgres, beside the
// same workload connected directly (tests/drivers/cancels.py says what each part checks):
//   bystanders  postgres.js's query.cancel() on short queries while other clients run theirs
//               through a pool of 2: no other client's query may be cancelled;
//   ddl         node-postgres's named statements on every server connection, then ADD COLUMN,
//               DROP/CREATE of another shape and ALTER TYPE, and new connections: nothing they
//               prepare after a change may fail 0A000.
// Usage: node cancels.js DIRECT_URL POOL2_URL POOLED_URL. Exits non-zero when the pooler shows
// an error the direct run does not.
'use strict';
const { Client } = require('pg');
const postgres = require('postgres');

const [direct, pool2, pooled] = process.argv.slice(2);
const failures = [];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function bystanders(url) {
  const counts = { hit: 0, ran: 0, sent: 0, effective: 0 };
  const connect = () => postgres(url, { max: 1, prepare: true, onnotice: () => {} });
  const canceller = async (i) => {
    const sql = connect();
    // (Connected first: postgres.js leaves a query cancelled before its connection is ready
    // neither resolved nor rejected.)
    await sql`SELECT 1`;
    for (let k = 0; k < 120; k++) {
      const q = sql`SELECT pg_sleep(0.02)`;
      const timer = setTimeout(() => q.cancel(), 5 + ((i * 7919 + k * 104729) % 25));
      await q.then(() => {}, (e) => {
        if (e.code !== '57014') throw e;
        counts.effective++;
      });
      clearTimeout(timer);
      counts.sent++;
      // A cancel that reached the server after its query ended may cancel this client's next
      // query, as it may directly: that one is its own.
      await sql`SELECT 1`.then(() => {}, (e) => { if (e.code !== '57014') throw e; });
    }
    await sql.end();
  };
  const bystander = async () => {
    const sql = connect();
    for (let k = 0; k < 400; k++) {
      await sql`SELECT pg_sleep(0.002)`.then(() => {}, (e) => {
        if (e.code !== '57014') throw e;
        counts.hit++;
      });
      counts.ran++;
    }
    await sql.end();
  };
  await Promise.all([0, 1].map(canceller).concat([0, 1, 2, 3, 4, 5].map(bystander)));
  return counts;
}

const SHAPES = [
  ['ADD COLUMN', "ALTER TABLE nshape ADD COLUMN b text DEFAULT 'x'"],
  ['DROP/CREATE', 'DROP TABLE nshape', 'CREATE TABLE nshape (id int PRIMARY KEY, c text, d int)',
    "INSERT INTO nshape SELECT g, 'c' || g, g FROM generate_series(1, 50) g"],
  ['ALTER TYPE', 'ALTER TABLE nshape ALTER COLUMN d TYPE bigint'],
];

async function ddl(url) {
  const clients = 8;
  const runs = 60;
  const admin = new Client({ connectionString: direct });
  await admin.connect();
  await admin.query('DROP TABLE IF EXISTS nshape');
  await admin.query('CREATE TABLE nshape (id int PRIMARY KEY, a int)');
  await admin.query('INSERT INTO nshape SELECT g, g FROM generate_series(1, 50) g');
  const open = async () => Promise.all([...Array(clients)].map(async () => {
    const c = new Client({ connectionString: url });
    await c.connect();
    return c;
  }));
  const work = async (c, errs) => {
    for (let k = 0; k < runs; k++) {
      await c.query({ name: 'shape', text: 'SELECT * FROM nshape WHERE id = $1', values: [k % 50 + 1] })
        .then(() => {}, (e) => {
          if (e.code !== '0A000') throw e;
          errs.n++;
        });
    }
  };
  let old = await open();
  await Promise.all(old.map((c) => work(c, { n: 0 })));
  const result = [];
  for (const [name, ...statements] of SHAPES) {
    for (const s of statements) await admin.query(s);
    const fresh = await open();
    const newErrs = { n: 0 };
    const oldErrs = { n: 0 };
    await Promise.all(fresh.map((c) => work(c, newErrs)).concat(old.map((c) => work(c, oldErrs))));
    await Promise.all(old.map((c) => c.end()));
    old = fresh;
    result.push([name, newErrs.n, oldErrs.n, clients * runs]);
  }
  await Promise.all(old.map((c) => c.end()));
  await admin.end();
  return result;
}

(async () => {
  for (const [where, p2, pooledUrl] of [['direct', direct, direct], ['pooler', pool2, pooled]]) {
    const b = await bystanders(p2);
    console.log(`${where.padEnd(6)} postgres.js: ${b.hit} of ${b.ran} bystander queries cancelled; ` +
      `${b.effective} of ${b.sent} cancels cancelled their own query`);
    if (b.hit) failures.push(`${where}: ${b.hit} bystander queries cancelled`);
    if (!b.effective) failures.push(`${where}: no cancel took effect (the race was not run)`);
    for (const [name, newErrs, oldErrs, runs] of await ddl(pooledUrl)) {
      console.log(`${where.padEnd(6)} node-postgres ${name}: ${newErrs} of ${runs} statements ` +
        `prepared after it failed 0A000 (${oldErrs} of ${runs} of connections prepared before it)`);
      if (newErrs) failures.push(`${where} ${name}: ${newErrs} failed`);
    }
  }
  if (failures.length) {
    console.error(['FAILED', ...failures].join('\n'));
    process.exit(1);
  }
  console.log('ok cancels (postgres.js, node-postgres): no bystander cancelled, no statement ' +
    'prepared after a schema change failed');
})().catch((e) => {
  console.error('FAILED', e);
  process.exit(1);
});
