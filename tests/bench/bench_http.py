"""bench_http.py — what phiwatch costs a real API, measured side by side in one run.

nginx (its own config on loopback, 1 worker, small JSON answers) under
`wrk -t1 -c16` keep-alive, plain HTTP and HTTPS, rounds interleaved:
  none      nothing attached
  phiwatch  the agent with its defaults: capture, transactions, identity, detection and the
            audit chain (--events /dev/null; wrk excluded by name, as a remote client would be)
  floor     the agent's hooks at the same places with programs that return at once
  bpftrace  count-only uprobes + uretprobes on SSL_read/SSL_write (the peer everyone has)
Prints req/s (median of rounds), the cost of each relative to none, p50/p99
latency, agent CPU per 1,000 requests, transactions seen and drops; a JSON
copy goes to build/bench/http.json. Not a test: it asserts nothing.

Env: BENCH_ROUNDS (5), BENCH_SECONDS (5), BENCH_CONFIGS (none,phiwatch,floor,bpftrace),
BENCH_PROTOS (http,https), BENCH_AGENT_JSON (config keys merged into the agent's, for experiments).
"""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("BUILD", ROOT / "build"))
PHIWATCH = BUILD / "phiwatch"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
CONFIGS = os.environ.get("BENCH_CONFIGS", "none,phiwatch,floor,bpftrace").split(",")

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    default_type application/json;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        location / {{ return 200 '{{"resourceType":"Patient","id":"123","active":true}}'; }}
    }}
}}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def cpu_ticks(pid):
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except (OSError, IndexError, ValueError):
        return 0


def libssl_path():
    out = subprocess.run(["ldd", shutil.which("nginx") or "/usr/sbin/nginx"], capture_output=True,
                         text=True).stdout
    m = re.search(r"libssl\.so\S*\s+=>\s+(\S+)", out)
    return m.group(1) if m else "/lib/x86_64-linux-gnu/libssl.so.3"


class Watcher:
    """One configuration's process, started before and stopped after a wrk run."""

    def __init__(self, name, tmp):
        self.name, self.tmp, self.p, self.stats = name, tmp, None, {}

    def start(self):
        if self.name == "none":
            return
        if self.name in ("phiwatch", "floor"):
            # The load generator is not the API: like a remote client in
            # production, wrk is left out (in the kernel, before any copy).
            # State (the audit trail) goes to the run's temp dir.
            cfg = self.tmp / "agent.json"
            conf = {"state_dir": str(self.tmp / "state"), "capture": {"exclude_comms": ["wrk"]},
                    "alerts": {"syslog": False}}
            conf.update(json.loads(os.environ.get("BENCH_AGENT_JSON", "{}")))
            cfg.write_text(json.dumps(conf))
            args = [str(PHIWATCH), "run", "--config", str(cfg), "--events", "/dev/null"] + \
                (["--floor"] if self.name == "floor" else [])
            self.p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
            for line in self.p.stderr:
                if line.startswith("phiwatch: ready"):
                    return
            raise SystemExit(f"phiwatch did not start ({self.name})")
        if self.name == "bpftrace":
            lib = libssl_path()
            prog = (f"uprobe:{lib}:SSL_read {{ @r = count(); }} uretprobe:{lib}:SSL_read {{ @rr = count(); }} "
                    f"uprobe:{lib}:SSL_write {{ @w = count(); }} uretprobe:{lib}:SSL_write {{ @wr = count(); }}")
            log = open(self.tmp / "bpftrace.log", "w")
            self.p = subprocess.Popen(["bpftrace", "-e", prog], stdout=log, stderr=subprocess.STDOUT)
            for _ in range(300):
                if "Attaching" in (self.tmp / "bpftrace.log").read_text():
                    time.sleep(0.3)
                    return
                time.sleep(0.1)
            raise SystemExit("bpftrace did not attach")

    def pid(self):
        return self.p.pid if self.p else None

    def stop(self):
        if not self.p:
            return
        self.p.send_signal(signal.SIGINT)
        if self.name in ("phiwatch", "floor"):
            rest = self.p.stderr.read()
            self.p.wait(60)
            for line in rest.splitlines():
                if line.startswith("phiwatch: stats "):
                    self.stats = json.loads(line[len("phiwatch: stats "):])
        else:
            self.p.wait(60)
        self.p = None


def wrk(url):
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{SECONDS}s", "--latency", url], capture_output=True,
                         text=True, timeout=SECONDS + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    reqs = int(re.search(r"(\d+) requests in", out).group(1))

    def lat(pct):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        if not m:
            return None
        v = float(m.group(1))
        return v * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
    return {"rps": rps, "requests": reqs, "p50_us": lat(50), "p99_us": lat(99)}


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench_http: needs root (BPF)")
    configs = [c for c in CONFIGS if c != "bpftrace" or shutil.which("bpftrace")]
    tmp = Path(tempfile.mkdtemp(prefix="phiwatch-bench-"))
    os.chmod(tmp, 0o700)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", tmp / "key.pem", "-out", tmp / "cert.pem"], check=True, capture_output=True)
    port, tls_port = free_port(), free_port()
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port, tls_port=tls_port))
    ng = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not (wait_port(port) and wait_port(tls_port)):
        raise SystemExit("nginx did not start")
    urls = {"http": f"http://127.0.0.1:{port}/fhir/Patient/123",
            "https": f"https://127.0.0.1:{tls_port}/fhir/Patient/123"}
    protos = os.environ.get("BENCH_PROTOS", "http,https").split(",")
    urls = {p: u for p, u in urls.items() if p in protos}
    results = {proto: {c: [] for c in configs} for proto in urls}
    try:
        for proto, url in urls.items():
            wrk(url)  # warm-up
        for r in range(ROUNDS):
            for proto, url in urls.items():
                for c in configs:
                    w = Watcher(c, tmp)
                    w.start()
                    t0 = cpu_ticks(w.pid()) if w.pid() else 0
                    res = wrk(url)
                    res["agent_cpu_ticks"] = (cpu_ticks(w.pid()) - t0) if w.pid() else 0
                    w.stop()
                    res["transactions"] = w.stats.get("transactions")
                    res["drops_total"] = w.stats.get("drops_total")
                    results[proto][c].append(res)
                    print(f"round {r + 1}/{ROUNDS} {proto:8} {c:9} {res['rps']:>10,.0f} req/s"
                          + (f"  txns {res['transactions']:,} drops {res['drops_total']}"
                             if res["transactions"] is not None else ""), flush=True)
    finally:
        ng.send_signal(signal.SIGTERM)
        ng.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    hz = os.sysconf("SC_CLK_TCK")
    summary = {}
    print(f"\nnginx 1 worker, wrk -t1 -c16 keep-alive, {SECONDS}s x {ROUNDS} interleaved rounds, medians")
    print(f"{'':9}{'watched by':10}{'req/s':>10}{'cost':>8}{'p50 µs':>9}{'p99 µs':>9}"
          f"{'agent CPU ms/1k req':>21}{'calls seen':>12}{'drops':>7}")
    for proto in urls:
        base = statistics.median(x["rps"] for x in results[proto]["none"]) if "none" in configs else None
        summary[proto] = {}
        for c in configs:
            runs = results[proto][c]
            rps = statistics.median(x["rps"] for x in runs)
            cost = (1 - rps / base) if base else None
            p50 = statistics.median(x["p50_us"] for x in runs if x["p50_us"] is not None)
            p99 = statistics.median(x["p99_us"] for x in runs if x["p99_us"] is not None)
            cpu = statistics.median(x["agent_cpu_ticks"] * 1000 / hz / (x["requests"] / 1000) for x in runs)
            seen = None
            if runs[0]["transactions"] is not None and c == "phiwatch":
                # nginx's side of each call (wrk itself is excluded)
                seen = statistics.median(x["transactions"] / x["requests"] for x in runs)
            drops = max((x["drops_total"] or 0) for x in runs)
            summary[proto][c] = {"rps": rps, "cost": cost, "p50_us": p50, "p99_us": p99,
                                 "agent_cpu_ms_per_1k": cpu, "calls_seen": seen, "drops_max": drops, "runs": runs}
            print(f"{proto:9}{c:10}{rps:>10,.0f}{(f'{cost * 100:.1f} %' if cost is not None else '-'):>8}"
                  f"{p50:>9.0f}{p99:>9.0f}{cpu:>21.2f}{(f'{seen * 100:.1f} %' if seen is not None else '-'):>12}"
                  f"{drops if c in ('phiwatch', 'floor') else '-':>7}")
        if "floor" in configs and "phiwatch" in configs and base:
            fc, pc = summary[proto]["floor"]["cost"], summary[proto]["phiwatch"]["cost"]
            if fc and fc > 0:
                print(f"{proto:9}phiwatch cost / floor cost = {pc / fc:.2f}")
    out = BUILD / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "http.json").write_text(json.dumps({"rounds": ROUNDS, "seconds": SECONDS, "results": summary}, indent=1))
    print(f"JSON: {out / 'http.json'}")


if __name__ == "__main__":
    main()
