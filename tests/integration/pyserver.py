"""pyserver.py — HTTP/1.1 keep-alive test server (TLS by default, --plain for
cleartext) that logs, per request, the exact plaintext bytes it read and wrote.

Run with /usr/bin/python3 as its own process. Prints "PORT <n>" on stdout once
listening (the readiness signal) and serves until SIGTERM/SIGINT. Routes:
  GET  /fhir/Patient/<id>   200 {"resourceType":"Patient","id":"<id>"}
  POST /fhir/Observation    201 {"resourceType":"Observation","id":"obs-1","received":<len>}
  anything else             404 {"error":"not found"}
Log (--log): one JSON line per request: method, path, status, request_bytes,
response_bytes, client_port. Python >= 3.10 ssl uses SSL_read_ex/SSL_write_ex.
"""
import argparse
import json
import signal
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CountingReader:
    """Wraps the handler's rfile; counts bytes actually consumed by the parser."""

    def __init__(self, f):
        self.f = f
        self.n = 0

    def readline(self, size=-1):
        b = self.f.readline(size)
        self.n += len(b)
        return b

    def read(self, size=-1):
        b = self.f.read(size)
        self.n += len(b)
        return b

    def __getattr__(self, name):
        return getattr(self.f, name)


class CountingWriter:
    """Wraps the handler's wfile (unbuffered: each write is one sendall)."""

    def __init__(self, f):
        self.f = f
        self.n = 0

    def write(self, b):
        r = self.f.write(b)
        self.n += memoryview(b).nbytes
        return r

    def __getattr__(self, name):
        return getattr(self.f, name)


LOG_LOCK = threading.Lock()
LOG = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pyserver/1"
    sys_version = ""

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(30)
            self.request.do_handshake()   # in this thread, not in accept()
        super().setup()
        self.rfile = CountingReader(self.rfile)
        self.wfile = CountingWriter(self.wfile)

    def handle_one_request(self):
        r0, w0 = self.rfile.n, self.wfile.n
        self._status = None
        super().handle_one_request()
        if self._status is None:
            return
        rec = {"method": self.command, "path": self.path, "status": self._status,
               "request_bytes": self.rfile.n - r0, "response_bytes": self.wfile.n - w0,
               "client_port": self.client_address[1]}
        with LOG_LOCK:
            LOG.write(json.dumps(rec) + "\n")
            LOG.flush()

    def send_response(self, code, message=None):
        self._status = code
        super().send_response(code, message)

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path.startswith("/fhir/Patient/") and len(path) > len("/fhir/Patient/"):
            self.reply(200, {"resourceType": "Patient", "id": path.rsplit("/", 1)[1]})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path.split("?", 1)[0] == "/fhir/Observation":
            self.reply(201, {"resourceType": "Observation", "id": "obs-1", "received": len(body)})
        else:
            self.reply(404, {"error": "not found"})


def main():
    global LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    LOG = open(a.log, "a")
    httpd = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    httpd.daemon_threads = True
    if not a.plain:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True,
                                       do_handshake_on_connect=False)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"PORT {httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        LOG.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
