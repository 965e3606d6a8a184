"""Clients that connect, run one transaction and leave, over and over (pgbench -C's load),
through psycopg: one line per attempt in --out, "ok START END" or "fail START END reason".
Run by tests/fleet/fleet.sh inside its network namespace."""
import argparse
import threading
import time

import psycopg


def worker(dsn, until, lines, lock):
    while time.time() < until:
        start = time.time()
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                with conn.transaction():
                    conn.execute("INSERT INTO hits (at) VALUES (now())")
            line = f"ok {start:.3f} {time.time():.3f}"
        except Exception as e:  # every failure is the test's to judge
            reason = " ".join(str(e).split())[:200]
            line = f"fail {start:.3f} {time.time():.3f} {reason}"
        with lock:
            lines.append(line)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    until = time.time() + args.seconds
    lines, lock = [], threading.Lock()
    threads = [threading.Thread(target=worker, args=(args.dsn, until, lines, lock))
               for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(args.out, "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
