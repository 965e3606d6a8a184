// node-postgres through a pooler following a cluster (databases.<name>.cluster) while the
// cluster's primary fails over: 4 clients, each with a connection of its own, commit
// transactions of a named prepared INSERT until the file STOP exists. A client whose
// transaction fails (the one under way when the primary died) counts the error, opens a new
// connection, as an application's pool would, and goes on. Every query has a time limit
// (query_timeout), so a client the pooler left without an answer is reported as stalled
// instead of hanging the test. An error the connection emits between queries (a FATAL the
// dying server sent while the client held it idle in a transaction) is counted too.
// Prints, as JSON: the ids whose COMMIT succeeded, the errors, the stalls, and per client the
// commits after its first error.
// Usage: node failover.js postgres://user@host:port/db STOP CLIENT_PREFIX
'use strict';
const fs = require('fs');
const { Client } = require('pg');

const [url, stop, prefix] = [process.argv[2], process.argv[3], process.argv[4]];
const kQueryTimeoutMs = 20000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function client(i, out) {
  let c = null;
  let erred = false;
  out.after[i] = 0;
  for (let k = 0; !fs.existsSync(stop); k++) {
    const id = `${prefix}${i}-${k}`;
    try {
      if (c === null) {
        c = new Client({ connectionString: url, query_timeout: kQueryTimeoutMs });
        c.on('error', (e) => out.errors.push(`${prefix}${i} (between queries): ${e.message}`));
        await c.connect();
      }
      await c.query('BEGIN');
      await c.query({ name: 'fo_ins', text: 'INSERT INTO failover_ids (id) VALUES ($1)', values: [id] });
      await c.query('COMMIT');
      out.acked.push(id);
      if (erred) out.after[i]++;
    } catch (e) {
      erred = true;
      const what = `${id}: ${e.code || ''} ${e.message}`;
      if (/timeout/i.test(e.message)) out.stalls.push(what); else out.errors.push(what);
      if (c !== null) c.end().catch(() => {});
      c = null;
      await sleep(20);
    }
    await sleep(5);
  }
  if (c !== null) await c.end().catch(() => {});
}

async function main() {
  const out = { acked: [], errors: [], stalls: [], after: {} };
  await Promise.all([0, 1, 2, 3].map((i) => client(i, out)));
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(`node-postgres during the failover: ${e.stack || e}`); process.exit(1); });
