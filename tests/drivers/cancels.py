"""Cancels and schema changes through the pooler, with psycopg 3 and asyncpg, beside the same
workload connected directly to PostgreSQL (the reference: what an application may see).

  bystanders  Clients cancel their own short queries (psycopg's cancel(), asyncpg's timeout=)
              while others run theirs through a pool of 2: a cancel that reaches PostgreSQL
              late must never cancel another client's query. Directly, no bystander can be
              cancelled; through the pooler, none may be either.
  queued      Through a pool of 1 held by a long query, a client's query waits for a server
              connection and is cancelled: it must fail with 57014 at once, not when the
              server connection frees, and the query holding the pool must not be cancelled.
  ddl         Clients prepare a statement on every server connection; then the table changes
              shape (ADD COLUMN, DROP and CREATE another, ALTER TYPE), and new connections
              run the same statement: what they parse after the change must never fail
              "cached plan must not change result type" (0A000), as directly it cannot.

Usage: python cancels.py DIRECT_URL POOLED_URL_POOL2 POOLED_URL_POOL1 POOLED_URL
(DIRECT_URL reaches PostgreSQL itself; the others reach the pooler's databases of 2, 1 and
more server connections, all onto the same PostgreSQL database). Exits non-zero when the
pooler shows an error the direct run does not.
"""
import asyncio
import random
import sys
import threading
import time

import asyncpg
import psycopg
from psycopg import errors

DIRECT, POOL2, POOL1, POOLED = sys.argv[1:5]
failures = []


def run_threads(target, count, *args):
    threads = [threading.Thread(target=target, args=(i, *args)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --- bystanders, psycopg ---------------------------------------------------------------------

def psycopg_bystanders(url, cancellers=2, cancels=150, bystanders=6, queries=400):
    """(bystander queries cancelled, bystander queries run, cancels sent, cancels effective)"""
    counts = {"hit": 0, "ran": 0, "sent": 0, "effective": 0}
    lock = threading.Lock()
    rng = random.Random(42)
    delays = [rng.uniform(0.005, 0.03) for _ in range(cancellers * cancels)]

    def canceller(i):
        with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
            for k in range(cancels):
                timer = threading.Timer(delays[i * cancels + k], conn.cancel)
                timer.start()
                try:
                    conn.execute("SELECT pg_sleep(0.02)")
                except errors.QueryCanceled:
                    with lock:
                        counts["effective"] += 1
                timer.join()
                with lock:
                    counts["sent"] += 1
                # A cancel that reached the server after its query ended may cancel this
                # client's next query, as it may directly: that one is its own.
                try:
                    conn.execute("SELECT 1")
                except errors.QueryCanceled:
                    pass

    def bystander(i):
        with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
            for _ in range(queries):
                try:
                    conn.execute("SELECT pg_sleep(0.002)")
                except errors.QueryCanceled:
                    with lock:
                        counts["hit"] += 1
                with lock:
                    counts["ran"] += 1

    threads = [threading.Thread(target=canceller, args=(i,)) for i in range(cancellers)]
    threads += [threading.Thread(target=bystander, args=(i,)) for i in range(bystanders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts


# --- bystanders, asyncpg (its timeout= sends the cancel) ---------------------------------------

async def asyncpg_bystanders_async(url, timeouters=2, timeouts=100, bystanders=6, queries=300):
    counts = {"hit": 0, "ran": 0, "sent": 0, "effective": 0}
    rng = random.Random(7)

    async def timeouter(i):
        conn = await asyncpg.connect(url)
        try:
            for _ in range(timeouts):
                try:
                    await conn.fetchval("SELECT pg_sleep(0.03)", timeout=rng.uniform(0.01, 0.04))
                except asyncio.TimeoutError:
                    counts["effective"] += 1
                counts["sent"] += 1
                try:
                    await conn.fetchval("SELECT 1")
                except asyncpg.exceptions.QueryCanceledError:
                    pass  # (its own late cancel, as directly)
        finally:
            await conn.close()

    async def bystander(i):
        conn = await asyncpg.connect(url)
        try:
            for _ in range(queries):
                try:
                    await conn.fetchval("SELECT pg_sleep(0.002)")
                except asyncpg.exceptions.QueryCanceledError:
                    counts["hit"] += 1
                counts["ran"] += 1
        finally:
            await conn.close()

    await asyncio.gather(*[timeouter(i) for i in range(timeouters)],
                         *[bystander(i) for i in range(bystanders)])
    return counts


def asyncpg_bystanders(url):
    return asyncio.run(asyncpg_bystanders_async(url))


# --- a queued query cancelled ----------------------------------------------------------------

def queued_cancel(url):
    """(seconds from cancel() to the 57014, whether the holder was cancelled, next query ok)"""
    holder_result = {}

    def holder():
        with psycopg.connect(url, autocommit=True) as conn:
            try:
                conn.execute("SELECT pg_sleep(2.5)")
                holder_result["cancelled"] = False
            except errors.QueryCanceled:
                holder_result["cancelled"] = True

    t = threading.Thread(target=holder)
    t.start()
    time.sleep(0.3)
    with psycopg.connect(url, autocommit=True) as conn:
        answered = {}

        def cancel_later():
            time.sleep(0.3)
            answered["sent"] = time.monotonic()
            conn.cancel()

        canceller = threading.Thread(target=cancel_later)
        canceller.start()
        try:
            conn.execute("SELECT pg_sleep(0.5)")
            latency = None  # not cancelled at all
        except errors.QueryCanceled:
            latency = time.monotonic() - answered["sent"]
        canceller.join()
        next_ok = conn.execute("SELECT 41 + 1").fetchone()[0] == 42
    t.join()
    return latency, holder_result.get("cancelled"), next_ok


# --- schema changes between prepared statements ----------------------------------------------

SHAPES = [
    ("ADD COLUMN", "ALTER TABLE shape ADD COLUMN b text DEFAULT 'x'"),
    ("DROP/CREATE", "DROP TABLE shape; CREATE TABLE shape (id int PRIMARY KEY, c text, d int); "
                    "INSERT INTO shape SELECT g, 'c' || g, g FROM generate_series(1, 50) g"),
    ("ALTER TYPE", "ALTER TABLE shape ALTER COLUMN d TYPE bigint"),
]


def ddl(url, clients=8, runs=60):
    """{change: (errors of connections opened after it, of those opened before, runs)}"""
    with psycopg.connect(DIRECT, autocommit=True) as admin:
        admin.execute("DROP TABLE IF EXISTS shape")
        admin.execute("CREATE TABLE shape (id int PRIMARY KEY, a int)")
        admin.execute("INSERT INTO shape SELECT g, g FROM generate_series(1, 50) g")
    query = "SELECT * FROM shape WHERE id = %s"

    def work(conns, errs, i):
        conn = conns[i]
        for k in range(runs):
            try:
                conn.execute(query, (k % 50 + 1,)).fetchall()
            except errors.FeatureNotSupported:  # 0A000 cached plan must not change result type
                errs[i] += 1
            except psycopg.Error as e:
                failures.append(f"ddl: {e!r}")

    def connect_all():
        return [psycopg.connect(url, autocommit=True, prepare_threshold=0) for _ in range(clients)]

    old = connect_all()
    errs = [0] * clients
    run_threads(lambda i: work(old, errs, i), clients)  # prepared on every server connection
    result = {}
    with psycopg.connect(DIRECT, autocommit=True) as admin:
        for name, sql in SHAPES:
            for statement in sql.split("; "):
                admin.execute(statement)
            new = connect_all()
            new_errs, old_errs = [0] * clients, [0] * clients
            # Old and new clients at once: the old ones' copies stay on the server connections.
            threads = [threading.Thread(target=work, args=(new, new_errs, i)) for i in range(clients)]
            threads += [threading.Thread(target=work, args=(old, old_errs, i)) for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for c in old:
                c.close()
            old = new
            result[name] = (sum(new_errs), sum(old_errs), clients * runs)
    for c in old:
        c.close()
    return result


def ddl_pinned(url, pooled):
    """Whether a statement parsed after ADD COLUMN runs on a server connection whose copy was
    prepared before it. Through a pool of 2: both connections prepare the statement, the
    table changes, a new client parses it on one connection (X), another client holds X in a
    transaction, and the new client runs it again, so on the other connection."""
    with psycopg.connect(DIRECT, autocommit=True) as admin:
        admin.execute("DROP TABLE IF EXISTS pinned")
        admin.execute("CREATE TABLE pinned (id int PRIMARY KEY, a int)")
        admin.execute("INSERT INTO pinned VALUES (1, 1)")
    query = "SELECT *, pg_backend_pid() FROM pinned WHERE id = %s"
    old = [psycopg.connect(url, autocommit=True, prepare_threshold=0) for _ in range(6)]
    run_threads(lambda i: [old[i].execute(query, (1,)).fetchall() for _ in range(50)], len(old))
    with psycopg.connect(DIRECT, autocommit=True) as admin:
        admin.execute("ALTER TABLE pinned ADD COLUMN b text DEFAULT 'x'")
    holders = []
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as new:
        try:
            pid = new.execute(query, (1,)).fetchone()[-1]
            while pooled and len(holders) < 3:
                h = psycopg.connect(url, autocommit=True)
                holders.append(h)
                h.execute("BEGIN")
                if h.execute("SELECT pg_backend_pid()").fetchone()[0] == pid:
                    break
            for h in holders[:-1]:
                h.execute("COMMIT")  # (holding the other connection: given back)
            row = new.execute(query, (1,)).fetchone()
            ok = row[2] == "x"
        except errors.FeatureNotSupported as e:
            print(f"ddl, one statement on two connections: {e}", file=sys.stderr)
            ok = False
    for c in old + holders:
        c.close()
    return ok


def main():
    report = {}
    for where, urls in (("direct", (DIRECT, DIRECT, DIRECT)), ("pooler", (POOL2, POOL1, POOLED))):
        pool2, pool1, pooled = urls
        r = {}
        r["psycopg"] = psycopg_bystanders(pool2)
        r["asyncpg"] = asyncpg_bystanders(pool2)
        r["queued"] = queued_cancel(pool1)
        r["ddl"] = ddl(pooled)
        r["pinned"] = ddl_pinned(pool2, where == "pooler")
        report[where] = r
        for driver in ("psycopg", "asyncpg"):
            c = r[driver]
            print(f"{where:6} {driver}: {c['hit']} of {c['ran']} bystander queries cancelled; "
                  f"{c['effective']} of {c['sent']} cancels cancelled their own query")
        latency, holder_cancelled, next_ok = r["queued"]
        print(f"{where:6} queued cancel: answered after "
              f"{'never' if latency is None else f'{latency * 1000:.0f} ms'}, "
              f"holder cancelled: {holder_cancelled}, next query ok: {next_ok}")
        for name, (new_errs, old_errs, runs) in r["ddl"].items():
            print(f"{where:6} {name}: {new_errs} of {runs} statements parsed after it failed 0A000 "
                  f"({old_errs} of {runs} of connections prepared before it)")
        print(f"{where:6} a statement parsed after ADD COLUMN, run where it was prepared before: "
              f"{'ok' if r['pinned'] else 'FAILED'}")

    for driver in ("psycopg", "asyncpg"):
        for where in ("direct", "pooler"):
            c = report[where][driver]
            if c["hit"]:
                failures.append(f"{where} {driver}: {c['hit']} bystander queries were cancelled")
            if c["effective"] == 0:
                failures.append(f"{where} {driver}: no cancel took effect (the race was not run)")
    for where in ("direct", "pooler"):
        latency, holder_cancelled, next_ok = report[where]["queued"]
        # (Directly the query runs and is cancelled at once; through the pooler it waits behind
        # a 2.5 s query: an answer within a second can only come from the wait being ended.)
        if latency is None or latency > 1.0:
            failures.append(f"{where} queued cancel: answered after {latency} s")
        if holder_cancelled is not False:
            failures.append(f"{where} queued cancel: the query holding the pool was cancelled")
        if not next_ok:
            failures.append(f"{where} queued cancel: the next query failed")
        if not report[where]["pinned"]:
            failures.append(f"{where}: a statement parsed after ADD COLUMN failed where it was "
                            "prepared before it")
        for name, (new_errs, _, _) in report[where]["ddl"].items():
            if new_errs:
                failures.append(f"{where} {name}: {new_errs} statements parsed after it failed")
    if failures:
        print("FAILED", *failures, sep="\n", file=sys.stderr)
        sys.exit(1)
    print("ok cancels (psycopg, asyncpg): no bystander cancelled, a queued query cancelled at "
          "once, no statement parsed after a schema change failed")


main()
