#!/usr/bin/env python3
"""The idle-client benchmark's client (bench/pooler_idle.sh): holds PLAIN + TLS logged-in, idle
PostgreSQL client connections to HOST:PORT, opened by PROCESSES worker processes (each under the
machine's 20,000 descriptors a process), worker i binding source address 127.0.0.(2 + i), so that
the ephemeral ports of one source address (about 28,000 to one destination) do not run out.

Each connection logs in fully, as user USER to database DATABASE by SCRAM-SHA-256 (standard
library only: hashlib and hmac; the salted password is derived once per salt, so the client's
CPU per login is small), runs one query, SELECT 1 (an application's first transaction), then
idles. A TLS connection sends SSLRequest, reads 'S', then speaks TLS (no certificate checked)
through a memory BIO, which keeps the client light (asyncio's start_tls holds a 256 kB buffer a
connection).

In phases, so that the caller can measure the pooler between them:
  1. at start, the plain connections; then a line `plain OK FAILED SECONDS CPU IDLE` appended to
     STATUS: logins done, logins failed, the seconds they took, the CPU seconds the processes of
     --pids (the pooler) used meanwhile (utime + stime, all threads) and the machine's idle share
     (percent) meanwhile;
  2. on SIGUSR1, the TLS connections; then `tls OK FAILED SECONDS CPU IDLE`;
  3. on SIGTERM, a check that every connection is still open (no EOF, nothing received while
     idle): `open STILL HELD` (and `N of M still open when released` on stdout); then closes them.
Exit status 1 when a login failed, a worker died or a connection was lost while idle.

Usage: PGPASSWORD=PW idle_clients.py --port PORT --plain N --tls M --status FILE
                       [--host 127.0.0.1] [--user bench] [--database bench] [--processes K]
                       [--pids "PID ..."] [--concurrency 64]
"""
import argparse
import asyncio
import base64
import ctypes
import hashlib
import hmac
import os
import resource
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time

SSL_REQUEST = struct.pack("!II", 8, 80877103)
LOGIN_TIMEOUT = 60  # seconds for one connection to log in and run its query


def message(kind, body):
    return kind + struct.pack("!I", 4 + len(body)) + body


class Conn(asyncio.Protocol):
    """One client connection: PostgreSQL messages read off a buffer, optionally through TLS on
    memory BIOs."""

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.closed = False
        self.idle = False  # once logged in and its query answered: nothing more is expected
        self.unexpected = False  # bytes received (or EOF) while idle
        self.waiter = None
        self.tls = None  # ssl.SSLObject once TLS starts
        self.handshaken = False

    # asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.tls is None:
            self.buf += data
        else:
            self.incoming.write(data)
            try:
                if not self.handshaken:
                    self.tls.do_handshake()
                    self.handshaken = True
                while True:
                    chunk = self.tls.read(65536)
                    if not chunk:
                        self.closed = True
                        break
                    self.buf += chunk
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as error:
                self.closed = True
                self.tls_error = error
            self.flush_tls()
        if self.idle and (self.buf or self.closed):  # not a TLS record of its own, as a ticket
            self.unexpected = True
        self.wake()

    def eof_received(self):
        self.closed = True
        if self.idle:
            self.unexpected = True
        self.wake()
        return False

    def connection_lost(self, exc):
        self.closed = True
        if self.idle:
            self.unexpected = True
        self.wake()

    def wake(self):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self):
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter
        self.waiter = None

    # writing, in the clear or through TLS
    def send(self, data):
        if self.tls is None:
            self.transport.write(data)
        else:
            self.tls.write(data)
            self.flush_tls()

    def flush_tls(self):
        out = self.outgoing.read()
        if out and not self.transport.is_closing():
            self.transport.write(out)

    async def start_tls(self, context):
        self.transport.write(SSL_REQUEST)
        while not self.buf:
            if self.closed:
                raise ConnectionError("closed after SSLRequest")
            await self.wait()
        answer = bytes(self.buf[:1])
        del self.buf[:1]
        if answer != b"S":
            raise RuntimeError(f"SSLRequest answered {answer!r}, not 'S'")
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=False)
        try:
            self.tls.do_handshake()
            self.handshaken = True
        except ssl.SSLWantReadError:
            pass
        self.flush_tls()
        while not self.handshaken:
            if self.closed:
                raise ConnectionError(f"TLS handshake: {getattr(self, 'tls_error', 'closed')}")
            await self.wait()

    async def read_message(self):
        while True:
            if len(self.buf) >= 5:
                length = struct.unpack("!I", self.buf[1:5])[0]
                if len(self.buf) >= 1 + length:
                    kind, body = bytes(self.buf[:1]), bytes(self.buf[5:1 + length])
                    del self.buf[:1 + length]
                    return kind, body
            if self.closed:
                raise ConnectionError("closed by the server")
            await self.wait()


def error_text(body):
    fields = {f[:1]: f[1:].decode(errors="replace") for f in body.split(b"\0") if f}
    return f"{fields.get(b'S', 'ERROR')} {fields.get(b'C', '')} {fields.get(b'M', body)}"


class Scram:
    """SCRAM-SHA-256 (RFC 7677) as a PostgreSQL client, without channel binding; the salted
    password is derived once per (salt, iterations)."""

    cache = {}

    def __init__(self, password):
        self.password = password.encode()

    def first(self):
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = f"n=,r={self.nonce}"
        return ("n,," + self.client_first_bare).encode()

    def final(self, server_first):
        attrs = dict(part.split("=", 1) for part in server_first.decode().split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.nonce):
            raise RuntimeError("SCRAM: the server's nonce does not extend the client's")
        key = (self.password, salt, iterations)
        if key not in Scram.cache:
            Scram.cache[key] = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
        salted = Scram.cache[key]
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.client_first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def check(self, server_final):
        attrs = dict(part.split("=", 1) for part in server_final.decode().split(","))
        if "e" in attrs:
            raise RuntimeError(f"SCRAM: server error {attrs['e']}")
        if base64.b64decode(attrs["v"]) != self.server_signature:
            raise RuntimeError("SCRAM: wrong server signature")


async def until_ready(conn, scram=None):
    """Reads up to ReadyForQuery, answering the authentication requests on the way."""
    while True:
        kind, body = await conn.read_message()
        if kind == b"R":
            code = struct.unpack("!I", body[:4])[0]
            if code == 10:  # AuthenticationSASL: the mechanisms
                if b"SCRAM-SHA-256" not in body[4:].split(b"\0"):
                    raise RuntimeError(f"no SCRAM-SHA-256 among {body[4:]!r}")
                first = scram.first()
                conn.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) +
                                  first))
            elif code == 11:  # AuthenticationSASLContinue
                conn.send(message(b"p", scram.final(body[4:])))
            elif code == 12:  # AuthenticationSASLFinal
                scram.check(body[4:])
            elif code != 0:
                raise RuntimeError(f"the server asks for authentication {code}, not SCRAM")
        elif kind == b"E":
            raise RuntimeError(f"server error: {error_text(body)}")
        elif kind == b"Z":
            return


async def open_one(args, source, tls_context):
    loop = asyncio.get_running_loop()
    for attempt in range(5):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            # The port is chosen at connect(), unique for the destination only: a source
            # address serves every pooler port, whatever waits in TIME_WAIT toward another.
            sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
            sock.bind((source, 0))
            await loop.sock_connect(sock, (args.host, args.port))
            break
        except BaseException as error:  # (a timeout cancels it: the socket closed too)
            sock.close()
            if not isinstance(error, OSError) or attempt == 4:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    _, conn = await loop.create_connection(Conn, sock=sock)
    try:
        if tls_context is not None:
            await conn.start_tls(tls_context)
        params = (f"user\0{args.user}\0database\0{args.database}\0"
                  f"application_name\0idle\0\0").encode()
        conn.send(struct.pack("!II", 8 + len(params), 196608) + params)
        await until_ready(conn, Scram(args.password))
        conn.send(message(b"Q", b"SELECT 1\0"))
        await until_ready(conn)
    except BaseException:
        conn.transport.abort()
        raise
    conn.idle = True
    return conn


async def open_many(args, count, source, tls_context, held):
    """Opens `count` connections, `concurrency` at once; once max(50, 1%) have failed, the rest
    are not tried (counted as failed: a pooler out of descriptors may leave each waiting for
    LOGIN_TIMEOUT)."""
    sem = asyncio.Semaphore(args.concurrency)
    failures = []
    give_up = max(50, count // 100)

    async def one():
        async with sem:
            if len(failures) >= give_up:
                failures.append("not tried")
                return
            try:
                held.append(await asyncio.wait_for(open_one(args, source, tls_context),
                                                   LOGIN_TIMEOUT))
            except asyncio.TimeoutError:
                failures.append(f"no login after {LOGIN_TIMEOUT} s")
            except Exception as error:  # noqa: BLE001 (every failure counted, the first told)
                failures.append(f"{type(error).__name__}: {error}")

    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    first = failures[0] if failures else ""
    if "not tried" in failures:
        first = f"(gave up after {give_up} failures) {first}"
    return len(failures), time.monotonic() - start, first


async def worker(args):
    """Opens its share on each command read from stdin (`plain N`, `tls N`), answering
    `done FAILED SECONDS FIRST-ERROR`; `check` answers `open STILL HELD`; EOF closes all."""
    need = args.plain + args.tls + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls_context.check_hostname = False
    tls_context.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    held = []
    while True:
        line = (await commands.readline()).decode().split()
        if not line:  # EOF: the coordinator is gone, or done
            break
        if line[0] in ("plain", "tls"):
            failed, seconds, first = await open_many(
                args, int(line[1]), args.source, tls_context if line[0] == "tls" else None, held)
            first = " ".join(first.split())[:300]
            print(f"done {failed} {seconds:.3f} {first}", flush=True)
        elif line[0] == "check":
            still = sum(1 for c in held if not c.closed and not c.unexpected)
            print(f"open {still} {len(held)}", flush=True)
    for c in held:
        c.transport.abort()


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_ticks():
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[3] + values[4], sum(values)


def worker_setup():
    """In a worker before it runs: the coordinator's signals unblocked, and SIGKILL when the
    coordinator dies (prctl PR_SET_PDEATHSIG), so that no worker outlives it."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGTERM})
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def coordinator(args):
    # Blocked from the start, so that a signal sent early is not lost; taken by sigwait (SIGKILL
    # stops the coordinator at once, and its workers with it).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    pids = [int(p) for p in args.pids.split()]
    k = args.processes
    share = lambda total, i: total // k + (1 if i < total % k else 0)  # noqa: E731
    workers = []
    for i in range(k):
        workers.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", "--source", f"127.0.0.{2 + i}",
             "--host", args.host, "--port", str(args.port), "--user", args.user,
             "--database", args.database,
             "--plain", str(share(args.plain, i)), "--tls", str(share(args.tls, i)),
             "--concurrency", str(args.concurrency)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            preexec_fn=worker_setup))
    ok = True

    def ask(command_of, expect):
        nonlocal ok
        for i, w in enumerate(workers):
            w.stdin.write(command_of(i) + "\n")
            w.stdin.flush()
        answers = []
        for w in workers:
            line = w.stdout.readline().split(maxsplit=3)
            if not line or line[0] != expect:
                ok = False
                print(f"a worker (pid {w.pid}) died or answered {line!r}", flush=True)
                sys.exit(1)
            answers.append(line)
        return answers

    total = 0
    stopped = False
    for phase, count in (("plain", args.plain), ("tls", args.tls)):
        if phase == "tls" and signal.sigwait({signal.SIGUSR1, signal.SIGTERM}) != signal.SIGUSR1:
            stopped = True  # SIGTERM before the TLS phase: to the check
            break
        cpu0, (idle0, all0) = cpu_seconds(pids), machine_ticks()
        start = time.monotonic()
        answers = ask(lambda i: f"{phase} {share(count, i)}", "done")
        seconds = time.monotonic() - start
        cpu1, (idle1, all1) = cpu_seconds(pids), machine_ticks()
        failed = sum(int(a[1]) for a in answers)
        firsts = [a[3] for a in answers if len(a) > 3]
        if failed:
            ok = False
            print(f"{phase}: {failed} of {count} logins failed; first: {firsts[0]}", flush=True)
        total += count - failed
        print(f"{phase}: {count - failed} clients logged in in {seconds:.1f}s", flush=True)
        with open(args.status, "a") as f:
            f.write(f"{phase} {count - failed} {failed} {seconds:.3f} {cpu1 - cpu0:.2f} "
                    f"{(idle1 - idle0) * 100 / max(all1 - all0, 1):.0f}\n")
    if not stopped:
        signal.sigwait({signal.SIGTERM})
    answers = ask(lambda i: "check", "open")
    still = sum(int(a[1]) for a in answers)
    print(f"{still} of {total} still open when released", flush=True)
    with open(args.status, "a") as f:
        f.write(f"open {still} {total}\n")
    for w in workers:
        w.stdin.close()
    for w in workers:
        w.wait()
    if still != total or not ok:
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="bench")
    parser.add_argument("--database", default="bench")
    parser.add_argument("--plain", type=int, default=0)
    parser.add_argument("--tls", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64, help="logins at once a process")
    parser.add_argument("--status", help="the file the phases' lines are appended to")
    parser.add_argument("--pids", default="", help="the pooler's processes, for their CPU")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", default="127.0.0.2", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.password = os.environ.get("PGPASSWORD", "")
    if args.worker:
        asyncio.run(worker(args))
    else:
        if not args.status:
            parser.error("--status is required")
        coordinator(args)


if __name__ == "__main__":
    main()
