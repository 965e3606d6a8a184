#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for the tests: it stands between pgflow and a real OpenSearch
node (it is not a server of its own) and, on command, answers in the node's place or alters its
answers, so that the tests can make the node slow, overloaded or failing for a while.

    http_fault_proxy.py UPSTREAM_URL PORT_FILE [CERT_FILE KEY_FILE]

Listens on a free loopback port (written to PORT_FILE once listening), over TLS with the given
certificate when one is given, and forwards every request to UPSTREAM_URL. It counts the
requests that came gzipped (Content-Encoding: gzip; forwarded as they are) and keeps the last
Authorization header it saw, for the tests to check. Faults are set by the tests through the proxy's own path:

    POST /_fault?status=503&count=5       the next 5 requests answered 503 without forwarding
    POST /_fault?status=429&retry_after=1 ... 429 with a Retry-After header
    POST /_fault?items=3&count=2          the next 2 _bulk answers (forwarded, applied by the
                                          node) report their first 3 items as 429: the client
                                          must send those items again
    POST /_fault?status=0&count=-1        every request, until cleared, gets its connection
                                          closed without an answer (a node gone)
    POST /_fault?clear=1                  back to forwarding
    GET  /_fault                          what was injected so far, as JSON
"""

import gzip
import http.client
import http.server
import json
import socketserver
import sys
import threading
import urllib.parse

UPSTREAM = urllib.parse.urlparse(sys.argv[1])
LOCK = threading.Lock()
FAULT = {"status": None, "count": 0, "items": 0, "retry_after": 0}
STATS = {"injected": 0, "items_failed": 0, "forwarded": 0, "gzipped": 0, "authorization": None}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _answer(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _control(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        if self.command == "POST":
            with LOCK:
                if "clear" in query:
                    FAULT.update(status=None, count=0, items=0, retry_after=0)
                else:
                    FAULT["status"] = int(query["status"][0]) if "status" in query else None
                    FAULT["count"] = int(query.get("count", ["1"])[0])
                    FAULT["items"] = int(query.get("items", ["0"])[0])
                    FAULT["retry_after"] = int(query.get("retry_after", ["0"])[0])
        with LOCK:
            body = json.dumps({"fault": FAULT, "stats": STATS}).encode()
        self._answer(200, body)

    def _take_fault(self, bulk):
        with LOCK:
            if FAULT["count"] == 0:
                return None
            if FAULT["items"] and not bulk:
                return None
            fault = dict(FAULT)
            if FAULT["count"] > 0:
                FAULT["count"] -= 1
            STATS["injected"] += 1
            return fault

    def _handle(self):
        if self.path.startswith("/_fault"):
            self._body()
            return self._control()
        body = self._body()
        with LOCK:
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                STATS["gzipped"] += 1
            if self.headers.get("Authorization"):
                STATS["authorization"] = self.headers.get("Authorization")
        bulk = self.path.split("?")[0].endswith("/_bulk")
        fault = self._take_fault(bulk)
        if fault and not fault["items"]:
            if fault["status"] == 0:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            headers = [("Retry-After", str(fault["retry_after"]))] if fault["retry_after"] else []
            reason = json.dumps({"error": {"type": "injected", "reason": "injected by the test proxy"},
                                 "status": fault["status"]}).encode()
            return self._answer(fault["status"], reason, headers)
        conn = http.client.HTTPConnection(UPSTREAM.hostname, UPSTREAM.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        res = conn.getresponse()
        data = res.read()
        if res.getheader("Content-Encoding", "").lower() == "gzip":
            data = gzip.decompress(data)  # answered plain, so that faults can be written in
        with LOCK:
            STATS["forwarded"] += 1
        if fault and fault["items"] and res.status == 200:
            answer = json.loads(data)
            for item in answer.get("items", [])[: fault["items"]]:
                for action in item.values():
                    action["status"] = 429
                    action["error"] = {"type": "es_rejected_execution_exception",
                                       "reason": "injected by the test proxy"}
                    with LOCK:
                        STATS["items_failed"] += 1
            answer["errors"] = True
            data = json.dumps(answer).encode()
        self._answer(res.status, data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", 0), Handler)
if len(sys.argv) > 4:
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = context.wrap_socket(server.socket, server_side=True)
with open(sys.argv[2], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
