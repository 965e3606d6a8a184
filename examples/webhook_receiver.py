#!/usr/bin/env python3
"""A receiver for pgflow's webhook sink: checks each request's Standard Webhooks signature, once
with the `standardwebhooks` library (pip install standardwebhooks) and once in a few lines of
plain code, skips a webhook-id it has handled already, and prints the events.

    WEBHOOK_SECRET=whsec_... python3 examples/webhook_receiver.py 8000
"""
import base64
import hashlib
import hmac
import http.server
import json
import os
import sys
import time

from standardwebhooks import Webhook, WebhookVerificationError

SECRET = os.environ["WEBHOOK_SECRET"]
handled = set()  # webhook-ids done with (a real service keeps them a few days, e.g. in Redis)


def verify(secret, headers, body):
    """The same check as the library's, in plain code."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > 300:
        return False  # too old or too new: a replayed request
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(s[3:], expected)
               for s in headers["webhook-signature"].split() if s.startswith("v1,"))


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            Webhook(SECRET).verify(body, headers)  # raises unless one signature matches
        except WebhookVerificationError as error:
            return self.answer(400, f"not verified: {error}")
        if not verify(SECRET, headers, body):
            return self.answer(400, "not verified by the plain check")
        if headers["webhook-id"] not in handled:  # a retry or a replay: already done
            handled.add(headers["webhook-id"])
            events = json.loads(body)
            for event in events if isinstance(events, list) else [events]:
                row = event["data"].get("after") or event["data"].get("before")
                print(self.path, event["type"], json.dumps(row), flush=True)
        self.answer(200, "")

    def answer(self, status, text):
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
