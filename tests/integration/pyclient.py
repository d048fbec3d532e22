"""pyclient.py — http.client keep-alive client (plain or TLS) that records the
exact plaintext bytes of every request it sent and every response it read.

Run with /usr/bin/python3 as its own process (its pid is the one the agent must
report). Each planned connection runs in its own thread over ONE socket; the
run fails (exit 3) if a connection is not kept alive. Output (--out): one JSON
line per request in plan order: conn, i, method, path, status, request_bytes,
response_bytes, local_port.
  --plan FILE        {"connections": [[{"method","path"[,"body","headers"]}, ...], ...]}
  --generate CxN:T   C connections x N GETs of T.format(i=global index)
"""
import argparse
import http.client
import io
import json
import socket
import ssl
import sys
import threading


class CountingSocket:
    """Proxy for a (TLS) socket counting plaintext bytes through it.

    http.client only uses sendall() and makefile('rb'); makefile builds the
    reader on this proxy so every recv_into (SSL_read_ex under TLS) is counted.
    """

    def __init__(self, sock):
        self._sock = sock
        self.sent = 0
        self.received = 0

    def sendall(self, data, *args):
        self._sock.sendall(data, *args)
        self.sent += memoryview(data).nbytes

    def send(self, data, *args):
        n = self._sock.send(data, *args)
        self.sent += n
        return n

    def recv_into(self, *args, **kw):
        n = self._sock.recv_into(*args, **kw)
        self.received += n or 0
        return n

    def recv(self, *args, **kw):
        b = self._sock.recv(*args, **kw)
        self.received += len(b)
        return b

    def makefile(self, mode="r", buffering=None, **kw):
        if mode not in ("r", "rb"):
            raise ValueError(f"CountingSocket.makefile: mode {mode!r} unsupported")
        raw = socket.SocketIO(self, "rb")
        return io.BufferedReader(raw, buffering if buffering and buffering > 0
                                 else io.DEFAULT_BUFFER_SIZE)

    def _decref_socketios(self):
        pass

    def __getattr__(self, name):
        return getattr(self._sock, name)


class CountingHTTPConnection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        self.sock = CountingSocket(self.sock)


class CountingHTTPSConnection(http.client.HTTPSConnection):
    def connect(self):
        super().connect()
        self.sock = CountingSocket(self.sock)


def run_connection(c, reqs, a, ctx, out, errors):
    if a.tls:
        conn = CountingHTTPSConnection(a.host, a.port, timeout=20, context=ctx)
    else:
        conn = CountingHTTPConnection(a.host, a.port, timeout=20)
    try:
        conn.connect()
        sock = conn.sock
        lport = sock.getsockname()[1]
        for i, r in enumerate(reqs):
            body = r.get("body")
            body = body.encode() if isinstance(body, str) else body
            s0, r0 = sock.sent, sock.received
            conn.request(r["method"], r["path"], body=body, headers=r.get("headers", {}))
            resp = conn.getresponse()
            data = resp.read()
            if conn.sock is not sock:
                raise RuntimeError(f"conn {c} request {i}: connection was not kept alive")
            cl = resp.getheader("Content-Length")
            if cl is None or int(cl) != len(data):
                raise RuntimeError(f"conn {c} request {i}: body {len(data)} != Content-Length {cl}")
            out[c][i] = {"conn": c, "i": i, "method": r["method"], "path": r["path"],
                         "status": resp.status, "request_bytes": sock.sent - s0,
                         "response_bytes": sock.received - r0, "local_port": lport}
    except Exception as e:
        errors.append(f"conn {c}: {type(e).__name__}: {e}")
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--cafile")
    ap.add_argument("--plan")
    ap.add_argument("--generate")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.plan:
        with open(a.plan) as f:
            plan = json.load(f)
        plan = plan["connections"] if isinstance(plan, dict) else plan
    elif a.generate:
        shape, template = a.generate.split(":", 1)
        nconn, per = (int(x) for x in shape.split("x"))
        plan = [[{"method": "GET", "path": template.format(i=c * per + k)} for k in range(per)]
                for c in range(nconn)]
    else:
        ap.error("--plan or --generate")
    ctx = None
    if a.tls:
        if a.cafile:
            ctx = ssl.create_default_context(cafile=a.cafile)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    out = [[None] * len(reqs) for reqs in plan]
    errors = []
    threads = [threading.Thread(target=run_connection, args=(c, reqs, a, ctx, out, errors),
                                daemon=True) for c, reqs in enumerate(plan)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if any(t.is_alive() for t in threads):
        errors.append("a connection thread did not finish within 60 s")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 3
    with open(a.out, "w") as f:
        for conn in out:
            for rec in conn:
                f.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
