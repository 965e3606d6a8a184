"""psycopg 3 through the pooler (transaction mode): every query prepared on the server
(prepare_threshold=0), transactions, pipeline mode. Exits non-zero at the first wrong answer.
Usage: python clients.py postgres://user:password@host:port/db[?sslmode=require]"""
import sys
import threading

import psycopg

url = sys.argv[1]
errors = []
over = ["in the clear"]


def work(i):
    try:
        with psycopg.connect(url, prepare_threshold=0, autocommit=True) as conn:
            if conn.pgconn.ssl_in_use:  # (psycopg does not expose libpq's PQsslAttribute)
                over[0] = "over TLS"
            for k in range(100):
                got = conn.execute("SELECT %s::int + %s::int", (i, k)).fetchone()[0]
                assert got == i + k, f"add {i}+{k}: {got}"
            with conn.transaction():
                for k in range(50):
                    conn.execute("INSERT INTO hits (client, n) VALUES (%s, %s)", (f"py{i}", k))
            with conn.pipeline():
                cursors = [conn.execute("SELECT %s::int * 3", (k,)) for k in range(100)]
            got = [c.fetchone()[0] for c in cursors]
            assert got == [3 * k for k in range(100)], f"pipeline: {got[:5]}..."
            try:
                with conn.transaction():
                    conn.execute("INSERT INTO hits (client, n) VALUES ('pyrb', %s)", (i,))
                    conn.execute("SELECT 1/0")
            except psycopg.errors.DivisionByZero:
                pass
    except Exception as e:  # reported below, with the thread's number
        errors.append(f"client {i}: {e!r}")


threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    print("FAILED", *errors, sep="\n", file=sys.stderr)
    sys.exit(1)
print("ok psycopg: 6 clients, 600 prepared queries, 6 transactions, 600 pipelined queries,",
      over[0])
