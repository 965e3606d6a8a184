// node-postgres through the pooler while `pgflow cutover` moves its database: clients keep
// running named prepared statements in transactions, and none may fail. Runs for the given
// seconds, then prints how many transactions committed. Exits non-zero at the first error.
// Usage: node cutover.js postgres://user:password@host:port/db SECONDS
'use strict';
const { Client } = require('pg');

const [url, seconds] = [process.argv[2], Number(process.argv[3])];

async function main() {
  const clients = [];
  for (let i = 0; i < 4; i++) {
    const c = new Client({ connectionString: url });
    await c.connect();
    clients.push(c);
  }
  const until = Date.now() + seconds * 1000;
  let committed = 0;
  await Promise.all(clients.map(async (c, i) => {
    for (let k = 0; Date.now() < until; k++) {
      await c.query('BEGIN');
      const r = await c.query({
        name: 'cut_ins', text: 'INSERT INTO cut_orders (client, n) VALUES ($1, $2) RETURNING n',
        values: [`node${i}`, k],
      });
      if (r.rows[0].n !== k) throw new Error(`inserted ${k}, got ${r.rows[0].n} back`);
      await c.query({ name: 'cut_count', text: 'SELECT count(*)::int AS c FROM cut_orders WHERE client = $1', values: [`node${i}`] });
      await c.query('COMMIT');
      committed++;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }));
  await Promise.all(clients.map((c) => c.end()));
  console.log(committed);
}

main().catch((e) => { console.error(`node-postgres during the cutover: ${e.stack || e}`); process.exit(1); });
