"""psycopg 3 through the routing proxy (a database with a replica): every query prepared on the
server (prepare_threshold=0), each read after the client's own write seeing it
(read-your-writes by LSN), a read-only transaction, and pipelined reads. Exits non-zero at the
first wrong answer. Usage: python routed.py postgres://user:password@host:port/db"""
import sys
import threading

import psycopg

url = sys.argv[1]
errors = []


def work(i):
    try:
        with psycopg.connect(url, prepare_threshold=0, autocommit=True) as conn:
            for k in range(50):
                conn.execute("INSERT INTO seen (client, n) VALUES (%s, %s)", (f"py{i}", k))
                got = conn.execute(
                    "SELECT count(*) FROM seen WHERE client = %s AND n = %s", (f"py{i}", k)
                ).fetchone()[0]
                assert got == 1, f"read its own write {k}: {got}"
            conn.execute("BEGIN READ ONLY")
            got = conn.execute("SELECT count(*) FROM seen WHERE client = %s", (f"py{i}",)).fetchone()[0]
            conn.execute("COMMIT")
            assert got == 50, f"read-only transaction: {got}"
            with conn.pipeline():
                cursors = [conn.execute("SELECT %s::int * 3", (k,)) for k in range(100)]
            got = [c.fetchone()[0] for c in cursors]
            assert got == [3 * k for k in range(100)], f"pipeline: {got[:5]}..."
    except Exception as e:  # reported below, with the thread's number
        errors.append(f"client {i}: {e!r}")


threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    print("FAILED", *errors, sep="\n", file=sys.stderr)
    sys.exit(1)
print("ok psycopg: 4 clients, 200 prepared writes each read back at once, read-only transactions, 400 pipelined reads")
