"""Stale reads of a query cache, in the style of a linearizability checker (bench/proxy.sh).

Writers increment counters (UPDATE ... RETURNING v), one through the pooler under test and one
directly on the primary; readers read the counters through the pooler under test. A read sent
after a write was acknowledged must see at least that write's value: a read returning less is
stale. Prints "reads <n> writes <n> stale <n>". Every query goes by the simple protocol (psycopg's
ClientCursor), the one both caches answer.

  cache_race.py SECONDS READ_URL WRITE_URL [WRITE_URL...]
"""

import random
import sys
import threading
import time

import psycopg

KEYS = 4


def main():
    seconds = float(sys.argv[1])
    read_url = sys.argv[2]
    write_urls = sys.argv[3:]
    acknowledged = [0] * KEYS
    lock = threading.Lock()
    stop = threading.Event()
    counts = {"reads": 0, "writes": 0, "stale": 0}
    errors = []

    def writer(url, seed):
        rng = random.Random(seed)
        try:
            with psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
                while not stop.is_set():
                    key = rng.randrange(KEYS)
                    value = conn.execute(
                        f"UPDATE cache_race SET v = v + 1 WHERE id = {key + 1} RETURNING v"
                    ).fetchone()[0]
                    with lock:
                        acknowledged[key] = max(acknowledged[key], value)
                        counts["writes"] += 1
                    time.sleep(rng.random() * 0.02)  # (room for the cache to answer)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"writer: {e}")

    def reader(seed):
        rng = random.Random(seed)
        try:
            with psycopg.connect(
                read_url, autocommit=True, cursor_factory=psycopg.ClientCursor
            ) as conn:
                while not stop.is_set():
                    key = rng.randrange(KEYS)
                    with lock:
                        must = acknowledged[key]
                    value = conn.execute(
                        f"SELECT v FROM cache_race WHERE id = {key + 1}"
                    ).fetchone()[0]
                    with lock:
                        counts["reads"] += 1
                        if value < must:
                            counts["stale"] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"reader: {e}")

    threads = [threading.Thread(target=writer, args=(url, i)) for i, url in enumerate(write_urls)]
    threads += [threading.Thread(target=reader, args=(100 + i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    if errors:
        print("\n".join(errors[:5]), file=sys.stderr)
        sys.exit(1)
    print(f"reads {counts['reads']} writes {counts['writes']} stale {counts['stale']}")


if __name__ == "__main__":
    main()
