"""selfcheck.py — validates the integration harness WITHOUT the agent: nginx in
its temp prefix (plain + TLS), curl -w byte counts, python TLS server/client
counts, the transaction checker, the runner's SKIP/CI/FAIL paths, and that
nothing is left running. Run by hand as root:

    /usr/bin/python3 tests/integration/selfcheck.py

Byte counts are checked three ways where possible: the client's count, the
server's count, and (plaintext) the TCP payload tshark saw on lo.
"""
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import lib  # noqa: E402

TSHARK = "/usr/bin/tshark"
results = []


def step(name):
    def deco(fn):
        def run(ctx):
            t0 = time.monotonic()
            try:
                fn(ctx)
                results.append(True)
                print(f"ok   {name} ({time.monotonic() - t0:.1f} s)", flush=True)
            except Exception as e:
                results.append(False)
                print(f"BAD  {name}: {type(e).__name__}: {e}", flush=True)
            finally:
                for err in lib.cleanup_all():
                    print(f"     cleanup: {err}")
        return run
    return deco


class Ctx:
    def __init__(self, tmp):
        self.tmp = Path(tmp)

    def info(self, msg):
        print(f"     {msg}")


class Tshark:
    """Capture lo for one TCP port; totals of TCP payload per direction."""

    def __init__(self, ctx, port):
        self.port = port
        self.file = ctx.tmp / f"cap-{port}.pcapng"
        err = ctx.tmp / f"tshark-{port}.stderr"
        self.err = err
        self.proc = lib.Proc([TSHARK, "-q", "-i", "lo", "-f", f"tcp port {port}", "-w", self.file],
                             stdout=subprocess.DEVNULL, stderr=open(err, "wb"))
        for _ in range(200):  # 20 s
            if "Capturing on" in err.read_text(errors="replace"):
                return
            lib.check(self.proc.popen.poll() is None, f"tshark died: {err.read_text()}")
            time.sleep(0.1)
        raise lib.Fail("tshark not capturing within 20 s")

    def totals(self):
        time.sleep(0.5)  # let the last segments reach the capture before SIGINT
        lib._stop_popen(self.proc.popen, signal.SIGINT, 20)
        r = subprocess.run([TSHARK, "-r", self.file, "-T", "fields", "-e", "tcp.srcport",
                            "-e", "tcp.len"], capture_output=True, timeout=60, env=lib.clean_env())
        to_server = from_server = 0
        for line in r.stdout.decode().splitlines():
            src, n = line.split("\t")
            if int(src) == self.port:
                from_server += int(n)
            else:
                to_server += int(n)
        return to_server, from_server


@step("cert + nginx plain/TLS in temp prefix, one worker, curl keep-alive")
def nginx_and_curl(ctx):
    ng = lib.Nginx(ctx).start()
    lib.check(lib.children_of(ng.master_pid) == [ng.worker_pid], "worker is not the master's child")
    lib.check(open(f"/proc/{ng.worker_pid}/comm").read().strip() == "nginx", "worker comm")
    lib.check(os.path.realpath(f"/proc/{ng.worker_pid}/exe") == os.path.realpath(lib.NGINX),
              "worker exe")
    paths = ["/fhir/Patient/123?_format=json", "/fhir/Patient/456", "/nothing/here?x=1"]
    cap = Tshark(ctx, ng.port) if os.path.exists(TSHARK) else None
    pid, plain = lib.run_curl(ctx, ng.port, paths, tls=False)
    lib.check([r["status"] for r in plain] == [200, 200, 404], f"statuses {plain}")
    ctx.info(f"plain curl pid {pid}: " + ", ".join(
        f"{r['request_bytes']}/{r['response_bytes']}" for r in plain))
    if cap:
        up, down = cap.totals()
        want = (sum(r["request_bytes"] for r in plain), sum(r["response_bytes"] for r in plain))
        lib.check((up, down) == want, f"tshark saw {up}/{down} payload bytes, curl -w says {want}")
        ctx.info(f"tshark payload {up}/{down} == curl -w totals")
    pid, tls = lib.run_curl(ctx, ng.tls_port, paths, tls=True)
    lib.check([r["status"] for r in tls] == [200, 200, 404], f"TLS statuses {tls}")
    lib.check([(r["request_bytes"], r["response_bytes"]) for r in tls] ==
              [(r["request_bytes"], r["response_bytes"]) for r in plain],
              "TLS plaintext byte counts differ from plain HTTP ones")
    r = subprocess.run([lib.CURL, "-q", "-s", "--noproxy", "*", "-k",
                        f"https://127.0.0.1:{ng.tls_port}/fhir/Patient/1"],
                       capture_output=True, timeout=20)
    lib.check(json.loads(r.stdout)["resourceType"] == "Patient", f"body {r.stdout!r}")
    master, worker = ng.master_pid, ng.worker_pid
    left = ng.stop()
    lib.check(not left and not lib.proc_alive(master) and not lib.proc_alive(worker),
              f"nginx left {left}")


@step("curl -w numbers == bytes a python server read/wrote (plain and TLS)")
def curl_vs_pyserver(ctx):
    paths = ["/fhir/Patient/1?a=b", "/fhir/Patient/2", "/other"]
    for tls in (False, True):
        srv = lib.PyServer(ctx, tls=tls, name=f"pys-{tls}").start()
        pid, got = lib.run_curl(ctx, srv.port, paths, tls=tls)
        served = srv.stop()
        a = [(r["path"], r["status"], r["request_bytes"], r["response_bytes"], r["local_port"])
             for r in got]
        b = [(s["path"], s["status"], s["request_bytes"], s["response_bytes"], s["client_port"])
             for s in served]
        lib.check(a == b, f"tls={tls}: curl {a} != server {b}")
        lib.check(not lib.proc_alive(srv.pid), "pyserver still alive")
        ctx.info(f"tls={tls}: {a}")


@step("python TLS client vs python TLS server: 5 calls, one connection, counts agree")
def py_tls(ctx):
    import test_python_tls as t
    cert, key = lib.make_cert(ctx.tmp)
    srv = lib.PyServer(ctx, tls=True, cert_key=(cert, key)).start()
    lib.check(open(f"/proc/{srv.pid}/comm").read().strip() == lib.comm_of(lib.PYTHON),
              "python comm differs from lib.comm_of")
    maps = open(f"/proc/{srv.pid}/maps").read()
    lib.check("libssl" in maps, "python server has no libssl mapped")
    pid, sent = lib.run_pyclient(ctx, srv.port, tls=True, plan=t.PLAN, cafile=cert)
    served = srv.stop()
    lib.check([s["status"] for s in sent] == t.STATUSES, f"statuses {sent}")
    a = [(s["method"], s["path"], s["status"], s["request_bytes"], s["response_bytes"],
          s["local_port"]) for s in sent]
    b = [(s["method"], s["path"], s["status"], s["request_bytes"], s["response_bytes"],
          s["client_port"]) for s in served]
    lib.check(a == b, f"client {a} != server {b}")
    lib.check(len({s["local_port"] for s in sent}) == 1, "more than one connection")
    ctx.info("req/resp: " + ", ".join(f"{x[0]} {x[3]}/{x[4]}" for x in a))


@step("python plain client: 20 x 50 calls to nginx, tshark totals agree")
def thousand(ctx):
    ng = lib.Nginx(ctx).start()
    cap = Tshark(ctx, ng.port) if os.path.exists(TSHARK) else None
    t0 = time.monotonic()
    pid, sent = lib.run_pyclient(ctx, ng.port, tls=False, generate="20x50:/fhir/Patient/{i}")
    dt = time.monotonic() - t0
    lib.check(len(sent) == 1000 and len({s["path"] for s in sent}) == 1000, "not 1000 paths")
    lib.check(len({s["local_port"] for s in sent}) == 20, "not 20 connections")
    lib.check(all(s["status"] == 200 for s in sent), "non-200")
    if cap:
        up, down = cap.totals()
        want = (sum(s["request_bytes"] for s in sent), sum(s["response_bytes"] for s in sent))
        lib.check((up, down) == want, f"tshark {up}/{down} != client {want}")
        ctx.info(f"tshark payload {up}/{down} == client totals")
    ctx.info(f"1000 calls in {dt:.2f} s")
    ng.stop()


@step("transaction checker accepts the truth and rejects each single lie")
def checker(ctx):
    port, pid, worker = 4242, 1111, 2222
    exp = [{"method": "GET", "path": "/fhir/Patient/1?_format=json", "status": 200,
            "request_bytes": 100, "response_bytes": 250, "local_port": 50000},
           {"method": "GET", "path": "/x", "status": 404, "request_bytes": 80,
            "response_bytes": 190, "local_port": 50000}]
    t0 = lib.now_ns()
    t1 = t0 + 1_000_000_000
    seq = iter(range(1, 100))

    def txn(e, role, p, name, exe):
        path, query = lib.split_target(e["path"])
        t = {"@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 / 1e9 + 0.1))
             + ".123456Z",
             "event": {"kind": "event", "category": ["web"], "duration": 1234,
                       "sequence": next(seq)},
             "process": {"pid": p, "name": name, "executable": exe},
             "user": {"id": "-"},
             "source": {"ip": "127.0.0.1", "port": e["local_port"]},
             "destination": {"ip": "127.0.0.1", "port": port},
             "tls": {"established": False},
             "http": {"version": "1.1", "request": {"method": e["method"],
                                                    "bytes": e["request_bytes"]},
                      "response": {"status_code": e["status"], "bytes": e["response_bytes"]}},
             "url": {"path": path},
             "phiwatch": {"role": role, "auth": "none", "truncated": False}}
        if query is not None:
            t["url"]["query"] = query
        return t

    events = []
    for e in exp:
        events.append(txn(e, "server", worker, "nginx", lib.NGINX))
        events.append(txn(e, "client", pid, "curl", lib.CURL))
    raw = b"".join(json.dumps(t).encode() + b"\n" for t in events)
    events = lib.parse_jsonl(raw, "synthetic")
    kw = dict(port=port, tls=False, t0_ns=t0, t1_ns=t1)

    def verify(evs):
        lib.expect_txns(evs, exp, role="server", pid=worker, name="nginx", exe=lib.NGINX, **kw)
        lib.expect_txns(evs, exp, role="client", pid=pid, name="curl", exe=lib.CURL, **kw)
        lib.expect_unique_sequences(evs)

    verify(events)
    lies = [("http", "request", "bytes", 101), ("http", "response", "bytes", 249),
            ("http", "response", "status_code", 201), ("url", "path", "/fhir/Patient/2"),
            ("url", "query", "_format=xml"), ("tls", "established", 0),
            ("phiwatch", "truncated", None), ("process", "pid", 3333),
            ("source", "port", 50001), ("destination", "port", 4243),
            ("event", "duration", 0), ("http", "version", "1.0"),
            ("@timestamp", "2020-01-01T00:00:00.000000Z"), ("event", "category", "web"),
            ("process", "executable", "/usr/bin/wget"), ("event", "sequence", 1)]
    caught = 0
    for lie in lies:
        evs = copy.deepcopy(events)
        t = evs[0] if lie[0] != "event" or lie[1] != "sequence" else evs[2]
        cur = t
        for k in lie[:-2]:
            cur = cur[k]
        cur[lie[-2]] = lie[-1]
        try:
            verify(evs)
        except lib.Fail:
            caught += 1
        else:
            raise lib.Fail(f"checker accepted lie {lie}")
    evs = copy.deepcopy(events)
    evs[3]["url"]["query"] = "extra"   # /x has no query: url.query must be absent
    try:
        verify(evs)
        raise lib.Fail("checker accepted a query on a path without one")
    except lib.Fail as e:
        lib.check("url.query" in str(e), f"wrong complaint: {e}")
    for bad in ([events[2], events[1], events[0], events[3]], events[:3], events + events[:1]):
        try:
            verify(bad)
            raise lib.Fail("checker accepted reordered/missing/extra transactions")
        except lib.Fail as e:
            if "checker accepted" in str(e):
                raise
    ctx.info(f"{caught} single-field lies + query/order/count lies rejected")


@step("run.py: SKIP without agent binary, FAIL under CI=true, FAIL with a silent agent")
def runner(ctx):
    env = lib.clean_env()
    run = [lib.PYTHON, str(HERE / "run.py")]
    env["PHIWATCH_BIN"] = str(ctx.tmp / "does-not-exist")
    r = subprocess.run(run, env=env, capture_output=True, timeout=120)
    out = r.stdout.decode()
    n = len(out.strip().splitlines()) - 1
    lib.check(r.returncode == 0 and out.strip().splitlines()[-1] == f"0 passed, 0 failed, {n} skipped"
              and n == 7, f"no-binary run: rc={r.returncode} {out}")
    env["CI"] = "true"
    r = subprocess.run(run, env=env, capture_output=True, timeout=120)
    out = r.stdout.decode()
    lib.check(r.returncode == 1 and out.strip().splitlines()[-1] == f"0 passed, {n} failed, 0 skipped"
              and "skipped under CI=true" in out, f"CI run: rc={r.returncode} {out}")
    ctx.info(f"{n} tests SKIP without the binary; all FAIL under CI=true")

    # A stand-in agent that attaches nothing: the test must FAIL with a clear
    # reason, the agent must be stopped by SIGINT, and nothing may be left.
    fake = ctx.tmp / "fake-phiwatch"
    fake.write_text(f"""#!{lib.PYTHON}
import json, signal, sys, time
args = sys.argv[1:]
events = args[args.index('--events') + 1]
stop = []
signal.signal(signal.SIGINT, lambda *a: stop.append(1))
print('phiwatch: ready (fake)', file=sys.stderr, flush=True)
for _ in range(3000):
    if stop: break
    time.sleep(0.01)
open(events, 'w').close()
print('phiwatch: stats ' + json.dumps({{"events": 0, "transactions": 0, "drops_total": 0,
      "drops": {{}}}}), file=sys.stderr, flush=True)
""")
    fake.chmod(0o755)
    env = lib.clean_env()
    env["PHIWATCH_BIN"] = str(fake)
    r = subprocess.run(run + ["-k", "nginx_https_after"], env=env, capture_output=True,
                       timeout=200)
    out = r.stdout.decode()
    lines = out.strip().splitlines()
    lib.check(r.returncode == 1 and lines[0].startswith("FAIL test_nginx_https_after: server txns")
              and "0 transactions, want 3" in lines[0]
              and lines[-1] == "0 passed, 1 failed, 0 skipped", f"fake-agent run: {out}")
    kept = [l.split("kept ", 1)[1] for l in lines if l.strip().startswith("kept ")]
    lib.check(kept and (Path(kept[0]) / "agent.stderr").exists(), "failing test dir not kept")
    lib.check("phiwatch: stats" in (Path(kept[0]) / "agent.stderr").read_text(),
              "fake agent was not stopped with SIGINT")
    import shutil
    shutil.rmtree(kept[0], ignore_errors=True)
    ctx.info(f"fake agent: {lines[0][:110]}...")


def leftovers(marker):
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd and lib.proc_alive(int(d)):
                found.append(f"{d}: {cmd[:100]}")
    return found


def main():
    if os.geteuid() != 0:
        print("selfcheck: run as root")
        return 2
    with tempfile.TemporaryDirectory(prefix="phiwatch-selfcheck-") as tmp:
        ctx = Ctx(tmp)
        for fn in (nginx_and_curl, curl_vs_pyserver, py_tls, thousand, checker, runner):
            fn(ctx)
        left = leftovers(tmp) + leftovers("phiwatch-it-") + leftovers(str(HERE))
        results.append(not left)
        print(("ok   no process left behind" if not left else f"BAD  left running: {left}"))
    print(f"selfcheck: {results.count(True)} ok, {results.count(False)} bad")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
