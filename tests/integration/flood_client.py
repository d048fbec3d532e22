"""flood_client.py — one load process for test_flood.py: tiny GETs as fast as
it can for a bounded time and count, each request-target unique, counting
exactly which request/response pairs completed and their byte counts.

Not a benchmark tool: it never retries; a call that fails is recorded as failed.

    flood_client.py --port P --tag T --seconds S --max N --mode conn|keepalive
                    [--per-conn K] --out FILE

conn: one new connection per call (connect, one write, read the response,
close). keepalive: K calls per connection, alternating a 200 target
(/fhir/Patient/T-i) and a 404 target (/nothing/T-i) so that a response paired
with the wrong request is visible. Output: one JSON line per completed call
{path, status, request_bytes, response_bytes, local_port}, then a last line
{"summary": {completed, failed, connections, elapsed}}.
"""
import argparse
import json
import socket
import sys
import time


def read_response(s, buf):
    """(status, wire bytes, rest of buf) of one response with Content-Length."""
    for _ in range(10000):
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a head")
        buf += chunk
    else:
        raise ConnectionError("head too long")
    end += 4
    head = buf[:end].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    length = 0
    for line in head[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    total = end + length
    for _ in range(10000):
        if len(buf) >= total:
            break
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        buf += chunk
    return status, total, buf[total:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--max", type=int, required=True)
    ap.add_argument("--mode", choices=("conn", "keepalive"), required=True)
    ap.add_argument("--per-conn", type=int, default=50)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    done, failed, conns = [], 0, 0
    t0 = time.monotonic()
    deadline = t0 + a.seconds
    i = 0
    while i < a.max and time.monotonic() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        except OSError:
            failed += 1
            i += 1
            continue
        conns += 1
        lport = s.getsockname()[1]
        buf = b""
        n = 1 if a.mode == "conn" else a.per_conn
        try:
            for _ in range(n):
                if i >= a.max or time.monotonic() >= deadline:
                    break
                if a.mode == "keepalive" and i % 2:
                    path = f"/nothing/{a.tag}-{i}"
                else:
                    path = f"/fhir/Patient/{a.tag}-{i}"
                i += 1
                req = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
                s.sendall(req)
                status, nbytes, buf = read_response(s, buf)
                done.append({"path": path, "status": status, "request_bytes": len(req),
                             "response_bytes": nbytes, "local_port": lport})
        except OSError:
            failed += 1
        finally:
            s.close()
    with open(a.out, "w") as f:
        for d in done:
            f.write(json.dumps(d) + "\n")
        f.write(json.dumps({"summary": {"completed": len(done), "failed": failed,
                                        "connections": conns,
                                        "elapsed": time.monotonic() - t0}}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
