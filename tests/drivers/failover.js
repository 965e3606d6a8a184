// node-postgres through a pooler following a cluster (databases.<name>.cluster) while the
// cluster's primary fails over: 4 clients, each on a pg.Pool of its own, commit transactions
// of a named prepared INSERT, as an application would, until the file STOP exists. A transaction
// that fails (the one under way when the primary died) is counted and the client goes on;
// the pool replaces a broken connection by itself. Prints, as JSON: the ids whose COMMIT
// succeeded, the errors, and the commits after the first error.
// Usage: node failover.js postgres://user@host:port/db STOP CLIENT_PREFIX
'use strict';
const fs = require('fs');
const { Pool } = require('pg');

const [url, stop, prefix] = [process.argv[2], process.argv[3], process.argv[4]];

async function client(i, out) {
  const pool = new Pool({ connectionString: url, max: 1 });
  pool.on('error', () => {});  // (an idle connection the failover broke: replaced on next use)
  for (let k = 0; !fs.existsSync(stop); k++) {
    const id = `${prefix}${i}-${k}`;
    let c;
    try {
      c = await pool.connect();
      await c.query('BEGIN');
      await c.query({ name: 'fo_ins', text: 'INSERT INTO failover_ids (id) VALUES ($1)', values: [id] });
      await c.query('COMMIT');
      c.release();
      out.acked.push(id);
      if (out.errors.length > 0) out.after++;
    } catch (e) {
      if (c) c.release(true);  // (destroyed: not given back to the pool)
      out.errors.push(`${id}: ${e.message}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await pool.end();
}

async function main() {
  const out = { acked: [], errors: [], after: 0 };
  await Promise.all([0, 1, 2, 3].map((i) => client(i, out)));
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(`node-postgres during the failover: ${e.stack || e}`); process.exit(1); });
