#!/usr/bin/python3
"""traffic.py — the demo's API clients: a few normal users and one scraper, against the demo's HTTPS FHIR API.

    traffic.py --port PORT --cafile CERT [--seconds 25] [--scraper-after 5]

Normal users (alice, bob, carol) hold short-lived JWTs and read their own few patients, about one call a second.
The scraper (client_id "scraper-bot", a 24-hour token) walks Patient ids one after another as fast as it can,
after a few seconds of normal traffic. Python's ssl module is OpenSSL: phiwatch sees these calls through its
SSL_read/SSL_write probes and nginx's. Standard library only; every call has a timeout; stops after --seconds.
"""
import argparse
import base64
import http.client
import json
import ssl
import sys
import threading
import time


def jwt(claims):
    enc = lambda o: base64.urlsafe_b64encode(json.dumps(o, separators=(",", ":")).encode()).rstrip(b"=").decode()
    # phiwatch does not verify signatures (it holds no keys): the principal is what the token claims
    return f"{enc({'alg': 'RS256', 'typ': 'JWT'})}.{enc(claims)}.ZGVtby1zaWduYXR1cmU"


class Client:
    """One keep-alive HTTPS connection; reconnects after an error."""

    def __init__(self, port, ctx, token):
        self.port, self.ctx, self.token = port, ctx, token
        self.conn = None
        self.calls, self.errors, self.status = 0, 0, {}

    def get(self, path):
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=5)
                self.conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}",
                                                        "Accept": "application/fhir+json"})
                r = self.conn.getresponse()
                r.read()
                self.calls += 1
                self.status[r.status] = self.status.get(r.status, 0) + 1
                return r.status
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    self.errors += 1
        return None

    def close(self):
        if self.conn is not None:
            self.conn.close()


def normal_user(name, patients, port, ctx, stop, results):
    now = int(time.time())
    c = Client(port, ctx, jwt({"sub": name, "iat": now, "exp": now + 900, "scope": "patient/*.read"}))
    i = 0
    while not stop.is_set():
        p = patients[i % len(patients)]
        c.get([f"/fhir/Patient/{p}", f"/fhir/Observation?patient={p}", "/fhir/metadata"][i % 3])
        i += 1
        stop.wait(0.8)
    c.close()
    results[name] = c


def scraper(port, ctx, stop, start_after, results):
    if stop.wait(start_after):
        return
    now = int(time.time())
    c = Client(port, ctx, jwt({"client_id": "scraper-bot", "iat": now, "exp": now + 86400}))
    pid = 1000
    while not stop.is_set():
        c.get(f"/fhir/Patient/{pid}")
        pid += 1
        stop.wait(0.04)  # about 25 calls a second
    c.close()
    results["scraper-bot"] = c


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--seconds", type=float, default=25)
    ap.add_argument("--scraper-after", type=float, default=5)
    a = ap.parse_args()
    if not 1 <= a.seconds <= 50:
        ap.error("--seconds must be in [1, 50]")
    ctx = ssl.create_default_context(cafile=a.cafile)
    stop, results = threading.Event(), {}
    users = {"alice": ["1001", "1002", "1003"], "bob": ["2001", "2002"], "carol": ["3001", "3002", "3003", "3004"]}
    threads = [threading.Thread(target=normal_user, args=(u, p, a.port, ctx, stop, results), daemon=True)
               for u, p in users.items()]
    threads.append(threading.Thread(target=scraper, args=(a.port, ctx, stop, a.scraper_after, results),
                                    daemon=True))
    for t in threads:
        t.start()
    print(f"traffic: alice, bob, carol read their own patients (~1 call/s each, 15-minute tokens); "
          f"scraper-bot starts enumerating /fhir/Patient/1000, 1001, ... after {a.scraper_after:g} s", flush=True)
    try:
        stop.wait(a.seconds)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    for name in [*users, "scraper-bot"]:
        c = results.get(name)
        if c:
            st = ", ".join(f"{k}: {v}" for k, v in sorted(c.status.items()))
            print(f"traffic: {name:<12} {c.calls:4d} calls ({st}){f', {c.errors} errors' if c.errors else ''}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
