#!/usr/bin/env python3
"""The failover benchmark's client (bench/failover.sh): commits one row at a time through DSN
until STOP_FILE exists, reconnecting after an error (after 20 ms), and writes a line per
attempt to LOG: `ok <time> <id> <server port>` or `err <time> <message>`.

Usage: failover_writer.py DSN LOG STOP_FILE FIRST_ID
"""
import os
import sys
import time

import psycopg2


def main():
    dsn, log_path, stop_file, first_id = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    conn = None
    next_id = first_id
    with open(log_path, "w", buffering=1) as log:
        while not os.path.exists(stop_file):
            try:
                if conn is None:
                    conn = psycopg2.connect(dsn, connect_timeout=3)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO failover_ids VALUES (%s) RETURNING "
                                "current_setting('port')", (next_id,))
                    port = cur.fetchone()[0]
                log.write(f"ok {time.time():.3f} {next_id} {port}\n")
            except Exception as error:  # noqa: BLE001 (every failure is counted the same)
                message = " ".join(str(error).split())[:160]
                log.write(f"err {time.time():.3f} {message}\n")
                try:
                    if conn is not None:
                        conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
                time.sleep(0.02)
            next_id += 1
    if conn is not None:
        conn.close()


if __name__ == "__main__":
    main()
