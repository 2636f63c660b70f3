#!/usr/bin/env python3
"""Independent check of sp-hub's push notifications.

Usage: check_notify.py BASE_URL   (a server started with
       --allow-loopback-subscriptions; SP_HUB_TOKEN an admin token)

Runs a webhook receiver with Python's standard library, the way the README
("Verifying a notification") tells a VCS organisation to: it checks each
delivery's X-SP-Hub-Signature (HMAC-SHA256 of the body with the secret)
with `hmac`, and validates every notification Bundle, and the Subscription
as the hub stores it, with the FHIR R4 (4.0.1) models of `fhir.resources`.
Shares no code with the server.

Prints one line per check and a final `python notify check: N passed,
M failed` line; exits 1 if any check failed.
"""

import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import fhir.resources
import requests
from fhir.resources.bundle import Bundle
from fhir.resources.subscription import Subscription
from pydantic import ValidationError

SECRET = "checked-by-python-" + os.urandom(12).hex()
SECRET_URL = "https://sp-hub.example/fhir/StructureDefinition/sp-subscription-secret"
FHIR_JSON = "application/fhir+json"
TIMEOUT = 30

if fhir.resources.__fhir_version__ != "4.0.1":
    sys.exit(f"check_notify.py needs the FHIR R4 models, got {fhir.resources.__fhir_version__}")

received = []  # (signature ok, delivery id, body as JSON)
lock = threading.Lock()


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers.get("X-SP-Hub-Signature", ""))
        with lock:
            received.append((ok, self.headers.get("X-SP-Hub-Delivery"), json.loads(body)))
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}")
        else:
            self.failed += 1
            print(f"FAIL {name} {detail}")


def valid(model, data):
    try:
        model.parse_obj(data)
        return True, ""
    except ValidationError as e:
        return False, str(e)[:500]


def wait_for(predicate, seconds=TIMEOUT):
    end = time.time() + seconds
    while time.time() < end:
        with lock:
            if predicate(list(received)):
                return True
        time.sleep(0.1)
    return False


def kind(bundle):
    params = bundle["entry"][0]["resource"]["parameter"]
    return next(p["valueCode"] for p in params if p["name"] == "type")


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: check_notify.py BASE_URL")
    base = argv[1].rstrip("/")
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {os.environ['SP_HUB_TOKEN']}"
    s.headers["Content-Type"] = FHIR_JSON
    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    c = Checks()

    sub = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "independent check",
        "criteria": "Task?status=requested",
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": FHIR_JSON},
        "extension": [{"url": SECRET_URL, "valueString": SECRET}],
    }
    r = s.post(f"{base}/Subscription", data=json.dumps(sub), timeout=TIMEOUT)
    c.check("Subscription created (201)", r.status_code == 201, r.text[:300])
    created = r.json()
    c.check("the secret is not in the stored Subscription", SECRET not in r.text)
    ok, detail = valid(Subscription, created)
    c.check("the stored Subscription is valid R4", ok, detail)

    c.check("handshake received", wait_for(lambda rs: any(kind(b) == "handshake" for _, _, b in rs)))
    status = None
    for _ in range(100):
        status = s.get(f"{base}/Subscription/{created['id']}", timeout=TIMEOUT).json()["status"]
        if status == "active":
            break
        time.sleep(0.1)
    c.check("the Subscription became active", status == "active", status)

    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    r = s.post(f"{base}/Task", data=json.dumps(task), timeout=TIMEOUT)
    task_id = r.json().get("id")
    c.check(
        "event notification received",
        wait_for(lambda rs: any(kind(b) == "event-notification" for _, _, b in rs)),
    )
    with lock:
        got = list(received)
    for ok, delivery, bundle in got:
        what = kind(bundle)
        c.check(f"{what}: signature verifies with the secret", ok)
        c.check(f"{what}: has a delivery id", bool(delivery))
        ok, detail = valid(Bundle, bundle)
        c.check(f"{what}: the notification Bundle is valid R4", ok, detail)
        c.check(f"{what}: Bundle.type is history", bundle.get("type") == "history")
    events = [b for _, _, b in got if kind(b) == "event-notification"]
    if events:
        full = events[0]["entry"][1]["resource"]
        c.check("the event carries the Task itself", full.get("id") == task_id, json.dumps(full)[:200])

    print(f"python notify check: {c.passed} passed, {c.failed} failed")
    hook.shutdown()
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
