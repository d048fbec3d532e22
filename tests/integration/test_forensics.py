"""test_forensics.py — forensic dumps from the real agent: an alert over nginx
HTTPS dumps the offender's history within a second; tshark reads the pcap and
shows exactly the requests sent; the manifest names nginx and the client's
connection; no Authorization value is anywhere in the archive. `phiwatch dump
--pid` and SIGUSR1 the same way."""
import base64
import json
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import lib

TSHARK = "/usr/bin/tshark"


def jwt(claims):
    enc = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2lnbmF0dXJl"


def dumps(agent):
    d = agent.state_dir / "forensics"
    return sorted(d.glob("*.tar.gz")) if d.exists() else []


def wait_dumps(agent, n, timeout=5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = dumps(agent)
        if len(got) >= n:
            return got
        time.sleep(0.05)
    return dumps(agent)


def extract(path, dest):
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path) as t:
        names = t.getnames()
        t.extractall(dest)
    return names


def tshark_requests(pcap):
    out = subprocess.run([TSHARK, "-r", str(pcap), "-Y", "http.request", "-T", "fields",
                          "-e", "http.request.method", "-e", "http.request.uri"],
                         capture_output=True, text=True, timeout=60)
    lib.check(out.returncode == 0, f"tshark failed: {out.stderr[-300:]}")
    return [tuple(l.split("\t")) for l in out.stdout.splitlines() if l.strip()]


def test_dump_on_alert(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL, TSHARK)
    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx, config={"alerts": {"syslog": False}}).start()
    now = int(time.time())
    token = jwt({"sub": "mallory", "iat": now, "exp": now + 600})
    paths = [f"/fhir/Patient/{2000 + i}" for i in range(55)]
    t0 = time.monotonic()
    p = subprocess.run([lib.CURL, "-sk", "-o", "/dev/null", "-w", "%{local_port}\\n", "-H",
                        f"Authorization: Bearer {token}", *[f"https://127.0.0.1:{ng.tls_port}{x}" for x in paths]],
                       capture_output=True, text=True, timeout=60, env=lib.clean_env())
    lib.check(p.returncode == 0, "curl failed")
    client_port = int(p.stdout.split()[0])
    got = wait_dumps(agent, 1)
    took = time.monotonic() - t0
    lib.check(got, "no dump after patient_enumeration")
    lib.check(took < 5, f"dump took {took:.1f} s")
    res = agent.stop()
    ng.stop()
    dump = got[0]
    lib.check((dump.stat().st_mode & 0o777) == 0o600, f"dump mode {oct(dump.stat().st_mode)}")
    names = extract(dump, Path(ctx.tmp) / "x")
    base = Path(ctx.tmp) / "x"
    root = [n for n in names if n.endswith("manifest.json")]
    lib.check(root, f"no manifest in {names}")
    prefix = root[0][: -len("manifest.json")]
    man = json.loads((base / root[0]).read_text())
    txns = [json.loads(l) for l in (base / f"{prefix}transactions.jsonl").read_text().splitlines()]
    reqs = tshark_requests(base / f"{prefix}capture.pcap")
    # the history up to the alert: the 51 calls that crossed the limit, in order
    server = [t for t in txns if lib.get(t, "phiwatch.role") == "server"]
    n = len(server)
    lib.check(n >= 51, f"{n} server calls in the dump, want >= 51")
    lib.check(reqs == [("GET", x) for x in paths[:n]], f"tshark shows {reqs[:3]}... ({len(reqs)}), want {n} GETs")
    blob = json.dumps(man)
    lib.check(str(ng.worker_pid) in blob and "nginx" in blob, "manifest does not name the nginx worker")
    lib.check(str(client_port) in blob, f"manifest does not name the client connection :{client_port}")
    for f in base.rglob("*"):
        if f.is_file():
            lib.check(token.encode() not in f.read_bytes() and b"c2lnbmF0dXJl" not in f.read_bytes(),
                      f"the bearer token is in {f.name}")
    # the dump's sha256 is in the audit chain
    q = subprocess.run([str(lib.PHIWATCH), "audit", "query", str(agent.state_dir / "audit"), "--records"],
                       capture_output=True, text=True, timeout=60)
    import hashlib
    digest = hashlib.sha256(dump.read_bytes()).hexdigest()
    lib.check(digest in q.stdout, "the dump's sha256 is not in the audit chain")
    ctx.info(f"{dump.name}: {n} calls, tshark shows {len(reqs)} requests, dumped {took:.2f} s after the traffic began")


def test_dump_on_request_and_signal(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL, TSHARK)
    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx, config={"alerts": {"syslog": False}}).start()
    paths = ["/fhir/Patient/1?x=1", "/fhir/Patient/2", "/missing"]
    lib.run_curl(ctx, ng.port, paths, False)
    d = subprocess.run([str(lib.PHIWATCH), "dump", "--pid", str(ng.worker_pid), "--socket", str(agent.control)],
                       capture_output=True, text=True, timeout=60)
    lib.check(d.returncode == 0, f"phiwatch dump failed rc={d.returncode}: {d.stdout} {d.stderr}")
    path = Path(d.stdout.split()[0])
    lib.check(path.exists(), f"dump path {path} missing")
    base = Path(ctx.tmp) / "req"
    names = extract(path, base)
    pcap = next(base / n for n in names if n.endswith("capture.pcap"))
    lib.check(tshark_requests(pcap) == [("GET", p) for p in paths], f"dump --pid: {tshark_requests(pcap)}")
    before = len(dumps(agent))
    agent.popen.send_signal(signal.SIGUSR1)
    got = wait_dumps(agent, before + 1)
    lib.check(len(got) == before + 1, "no dump after SIGUSR1")
    agent.stop()
    ng.stop()
    ctx.info(f"dump --pid: {path.name}; SIGUSR1: {got[-1].name}")
