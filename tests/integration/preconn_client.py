"""preconn_client.py — a keep-alive connection opened BEFORE the agent starts.

Connects (plain or TLS), makes one request, prints "connected <local_port>",
waits for a line on stdin, then makes the requests named on the command line
on the same socket and prints one JSON line per request: method, path,
status, request_bytes, response_bytes, local_port. Raw sockets, so the byte
counts are exactly what crossed the connection.
"""
import json
import socket
import ssl
import sys


def read_response(f):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        c = f.read(1)
        if not c:
            raise SystemExit("connection closed mid-head")
        head += c
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for l in lines[1:]:
        if l.lower().startswith("content-length:"):
            length = int(l.split(":", 1)[1])
    body = f.read(length)
    return status, len(head) + len(body)


def main():
    port, tls = int(sys.argv[1]), sys.argv[2] == "tls"
    paths = sys.argv[3:]
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s)
    f = s.makefile("rb")
    local_port = s.getsockname()[1]

    def request(path):
        req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: preconn\r\n\r\n".encode()
        s.sendall(req)
        status, n = read_response(f)
        return {"method": "GET", "path": path, "status": status, "request_bytes": len(req),
                "response_bytes": n, "local_port": local_port}

    request("/fhir/Patient/before-agent")
    print(f"connected {local_port}", flush=True)
    sys.stdin.readline()
    for p in paths:
        print(json.dumps(request(p)), flush=True)
    s.close()


main()
