"""rawclient.py — raw-socket HTTP/1.x client that sends exactly the bytes it is
told, the way it is told (one write, one write per byte, chunks, writev), and
counts every byte it wrote and read.

Not an HTTP client library: it never adds, fixes or reorders bytes. Run with
/usr/bin/python3 as its own process (its pid is the one the agent must report).

    rawclient.py --port P --plan FILE --out FILE [--host H]

plan: {"connections": [{"nodelay": true, "steps": [STEP, ...]}, ...]}, run one
after the other. Strings are sent as latin-1. Steps:
    {"op": "write", "data": S}                       one write()
    {"op": "bytewise", "data": S, "gap_ms": N}       one write() per byte
    {"op": "chunks", "chunks": [S, ...], "gap_ms": N} one write() per chunk
    {"op": "writev", "iov": [S, ...]}                one writev() (os.writev)
    {"op": "read", "n": K}                           read K complete responses
    {"op": "sleep", "s": X}
    {"op": "wait_file", "path": P, "timeout": X}     until P exists (bounded)
    {"op": "mark", "path": P}                        create P (tells the test where we are)
Output (--out): one JSON line per connection: conn, local_port, sent, writes,
responses [{status, bytes, line}], received, peer_closed.
Exit 0 when every step ran and every write moved all its bytes; 3 otherwise.
"""
import argparse
import json
import os
import socket
import sys
import time

IO_TIMEOUT = 20  # s per blocking socket operation


class Conn:
    def __init__(self, host, port, nodelay):
        self.s = socket.create_connection((host, port), timeout=IO_TIMEOUT)
        if nodelay:
            self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fd = self.s.fileno()
        self.sent = 0
        self.writes = 0
        self.received = 0
        self.buf = b""
        self.peer_closed = False
        self.responses = []

    def write(self, data):
        """One write() syscall that must move all of data."""
        n = os.write(self.fd, data)
        if n != len(data):
            raise RuntimeError(f"short write {n}/{len(data)}")
        self.sent += n
        self.writes += 1

    def writev(self, iov):
        n = os.writev(self.fd, iov)
        if n != sum(len(b) for b in iov):
            raise RuntimeError(f"short writev {n}/{sum(len(b) for b in iov)}")
        self.sent += n
        self.writes += 1

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            self.peer_closed = True
            return False
        self.received += len(chunk)
        self.buf += chunk
        return True

    def read_response(self):
        """One complete response; its exact wire bytes are consumed from buf."""
        for _ in range(100000):
            if b"\r\n\r\n" in self.buf:
                break
            if not self._fill():
                raise RuntimeError(f"peer closed inside a response head ({len(self.buf)} bytes)")
        else:
            raise RuntimeError("response head never ended")
        end = self.buf.index(b"\r\n\r\n") + 4
        head = self.buf[:end].decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        if status in (204, 304) or 100 <= status < 200:
            total = end
        elif "content-length" in fields:
            total = end + int(fields["content-length"])
            for _ in range(100000):
                if len(self.buf) >= total or not self._fill():
                    break
            if len(self.buf) < total:
                raise RuntimeError(f"body cut: {len(self.buf)}/{total}")
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            total = self._chunked_end(end)
        else:
            for _ in range(100000):  # delimited by close
                if not self._fill():
                    break
            total = len(self.buf)
        self.buf = self.buf[total:]
        self.responses.append({"status": status, "bytes": total, "line": lines[0]})

    def _chunked_end(self, pos):
        for _ in range(100000):
            nl = self.buf.find(b"\r\n", pos)
            if nl < 0:
                if not self._fill():
                    raise RuntimeError("peer closed inside chunk framing")
                continue
            size = int(self.buf[pos:nl].split(b";")[0], 16)
            if size == 0:
                for _ in range(100000):  # trailers end with an empty line
                    t = self.buf.find(b"\r\n\r\n", nl)
                    if t >= 0:
                        return t + 4
                    if not self._fill():
                        raise RuntimeError("peer closed inside trailers")
            need = nl + 2 + size + 2
            while len(self.buf) < need:
                if not self._fill():
                    raise RuntimeError("peer closed inside a chunk")
            pos = need
        raise RuntimeError("too many chunks")

    def close(self):
        self.s.close()


def enc(s):
    return s.encode("latin-1")


def run_conn(i, spec, a):
    c = Conn(a.host, a.port, spec.get("nodelay", True))
    try:
        for st in spec["steps"]:
            op = st["op"]
            gap = st.get("gap_ms", 0) / 1000.0
            if op == "write":
                c.write(enc(st["data"]))
            elif op == "bytewise":
                for b in enc(st["data"]):
                    c.write(bytes([b]))
                    if gap:
                        time.sleep(gap)
            elif op == "chunks":
                for ch in st["chunks"]:
                    c.write(enc(ch))
                    if gap:
                        time.sleep(gap)
            elif op == "writev":
                c.writev([enc(x) for x in st["iov"]])
            elif op == "read":
                for _ in range(st["n"]):
                    c.read_response()
            elif op == "sleep":
                time.sleep(st["s"])
            elif op == "wait_file":
                deadline = time.monotonic() + st.get("timeout", 30)
                while not os.path.exists(st["path"]):
                    if time.monotonic() >= deadline:
                        raise RuntimeError(f"{st['path']} did not appear")
                    time.sleep(0.02)
            elif op == "mark":
                with open(st["path"], "w") as f:
                    f.write(str(os.getpid()))
            else:
                raise RuntimeError(f"unknown op {op!r}")
        return {"conn": i, "local_port": c.s.getsockname()[1], "sent": c.sent,
                "writes": c.writes, "responses": c.responses, "received": c.received,
                "peer_closed": c.peer_closed, "leftover": len(c.buf)}
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.plan) as f:
        plan = json.load(f)
    out = []
    try:
        for i, spec in enumerate(plan["connections"]):
            out.append(run_conn(i, spec, a))
    except Exception as e:
        print(f"rawclient: connection {len(out)}: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    finally:
        with open(a.out, "w") as f:
            for r in out:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
