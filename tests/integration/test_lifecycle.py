"""test_lifecycle.py — the agent leaves nothing behind: 100 restarts under light
traffic, SIGTERM handled like SIGINT, and a bad configuration rejected (exit 2,
file + key + reason) before any BPF object exists.

BPF objects are followed by id: while an agent runs, /proc/PID/fdinfo names
every prog, map and link it holds; after it exits none of those ids may still
be listed by bpftool. Other agents may run on this host at the same time (other
test sessions), so whole-host counts are compared strictly only when no other
phiwatch process is alive around the snapshots.
"""
import json
import os
import re
import signal
import subprocess
import threading
import time

import lib

BPFTOOL = "/usr/sbin/bpftool"
STRACE = "/usr/bin/strace"
# 100 restarts, about 70 s (PHIWATCH_RESTARTS to change it).
RESTARTS = int(os.environ.get("PHIWATCH_RESTARTS", "100"))
KINDS = ("prog", "link", "map")


def bpf_ids():
    """{kind: set of ids} of every BPF prog, link and map on the host."""
    out = {}
    for kind in KINDS:
        r = subprocess.run([BPFTOOL, "-j", kind, "list"], capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL, env=lib.clean_env())
        lib.check(r.returncode == 0, f"bpftool {kind} list: exit {r.returncode} "
                  f"{r.stderr.decode(errors='replace')[-200:]}")
        out[kind] = {o["id"] for o in json.loads(r.stdout or b"[]")}
    return out


def counts(ids):
    return {k: len(v) for k, v in ids.items()}


def held_ids(pid):
    """{kind: ids} of the BPF objects process pid holds file descriptors on."""
    out = {k: set() for k in KINDS}
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        try:
            with open(f"{d}/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        for kind in KINDS:
            m = re.search(rf"^{kind}_id:\s*(\d+)$", text, re.M)
            # a link's fdinfo also names its prog: take the link only
            if m and not (kind == "prog" and "link_id:" in text):
                out[kind].add(int(m.group(1)))
                break
    return out


def other_agents(mine=()):
    """pids of phiwatch processes that are not ours."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) not in mine:
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == "phiwatch":
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def wait_released(held, timeout=10.0):
    """{kind: ids still listed} after waiting up to timeout for the kernel to free them."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.2) + 1):
        now = bpf_ids()
        left = {k: held[k] & now[k] for k in KINDS}
        if not any(left.values()) or time.monotonic() >= deadline:
            return left, now
        time.sleep(0.2)
    return left, now


def require():
    lib.require_agent()
    lib.require_tools(BPFTOOL, lib.NGINX, lib.CURL, lib.OPENSSL)


class CurlLoop:
    """Background curl requests, one per process, bounded in count and time."""

    def __init__(self, ctx, port, max_calls=400, seconds=90):
        self.port, self.max, self.seconds = port, max_calls, seconds
        self.ok = self.failed = 0
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self.run, daemon=True)

    def run(self):
        deadline = time.monotonic() + self.seconds
        for i in range(self.max):
            if self.stop_ev.is_set() or time.monotonic() >= deadline:
                return
            r = subprocess.run([lib.CURL, "-q", "-s", "-o", "/dev/null", "--noproxy", "*",
                                "--max-time", "5", f"http://127.0.0.1:{self.port}/fhir/Patient/{i}"],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
                               env=lib.clean_env())
            if r.returncode == 0:
                self.ok += 1
            else:
                self.failed += 1
            self.stop_ev.wait(0.05)

    def start(self):
        self.th.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.th.join(15)


def test_lifecycle_restarts(ctx):
    """20 agent runs in a row under light traffic: each exits 0 with its stats
    line, and every prog/link/map any of them held is gone afterwards."""
    require()
    ng = lib.Nginx(ctx).start()
    others0 = other_agents()
    before = bpf_ids()
    loop = CurlLoop(ctx, ng.port).start()
    held = {k: set() for k in KINDS}
    per_run, txns = [], 0
    t0 = time.monotonic()
    try:
        for i in range(RESTARTS):
            agent = lib.Agent(ctx, name=f"run{i}").start()
            time.sleep(0.15)  # some traffic while attached
            h = held_ids(agent.popen.pid)
            lib.check(h["prog"] and h["map"] and h["link"],
                      f"run {i}: agent {agent.popen.pid} holds {counts(h)} BPF objects")
            per_run.append(counts(h))
            for k in KINDS:
                held[k] |= h[k]
            res = agent.stop()  # exit 0 and the stats line are checked there
            txns += len(lib.on_port(res.events, ng.port))
    finally:
        loop.stop()
    elapsed = time.monotonic() - t0
    left, after = wait_released(held)
    others1 = other_agents()
    ng.stop()
    ctx.info(f"{RESTARTS} runs in {elapsed:.1f} s; each held {per_run[0]} (ids seen: "
             f"{counts(held)}); curl {loop.ok} ok / {loop.failed} failed, "
             f"{txns} transactions on :{ng.port}")
    ctx.info(f"host BPF objects before {counts(before)}, after {counts(after)}; "
             f"other agents alive: before {others0}, after {others1}")
    lib.check(loop.ok > 0 and txns > 0, "no traffic was seen during the restarts")
    lib.check(not any(left.values()),
              "BPF objects of exited agents still loaded: "
              + ", ".join(f"{k} ids {sorted(v)[:8]}" for k, v in left.items() if v))
    if not others0 and not others1:
        lib.check(counts(after) == counts(before),
                  f"host BPF object counts changed: before {counts(before)}, after {counts(after)}")


def stop_with(agent, sig, timeout=lib.STOP_TIMEOUT):
    """Like Agent.stop() but with any signal: exit 0, stats line, events parsed."""
    p = agent.popen
    lib.check(p.poll() is None, f"agent died during the test rc={p.returncode}: {agent.tail()}")
    p.send_signal(sig)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        raise lib.Fail(f"agent did not exit within {timeout} s of {sig.name}: {agent.tail()}")
    agent.reader.join(10)
    lib.check(rc == 0, f"agent exit status {rc} after {sig.name}: {agent.tail()}")
    lines = [l for l in agent.lines if l.strip()]
    lib.check(lines and lines[-1].startswith("phiwatch: stats "),
              f"last stderr line after {sig.name} is not the stats line: {agent.tail(3)}")
    stats = json.loads(lines[-1][len("phiwatch: stats "):])
    lib.check_stats(stats)
    events = lib.parse_jsonl(agent.events.read_bytes(), str(agent.events))
    lib.check(stats["transactions"] == len(events),
              f"stats.transactions={stats['transactions']} but {len(events)} lines written")
    return stats, events


def test_lifecycle_sigterm(ctx):
    """SIGTERM: drain, stats line, exit 0, transactions written, nothing left loaded."""
    require()
    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx).start()
    held = held_ids(agent.popen.pid)
    paths = ["/fhir/Patient/t1", "/fhir/Patient/t2?x=1"]
    t0 = lib.now_ns()
    curl_pid, expected = lib.run_curl(ctx, ng.port, paths, False)
    t1 = lib.now_ns()
    stats, events = stop_with(agent, signal.SIGTERM)
    worker = ng.worker_pid
    ng.stop()
    common = dict(port=ng.port, tls=False, t0_ns=t0, t1_ns=t1)
    lib.expect_txns(events, expected, role="server", pid=worker, name="nginx", exe=lib.NGINX,
                    **common)
    lib.expect_txns(events, expected, role="client", pid=curl_pid, name="curl", exe=lib.CURL,
                    **common)
    left, _ = wait_released(held)
    lib.check(not any(left.values()), f"after SIGTERM still loaded: {left}")
    ctx.info(f"SIGTERM: exit 0, stats line, {stats['transactions']} transactions, "
             f"{sum(map(len, held.values()))} BPF objects released")


BAD_CONFIGS = [
    # (name, file content, stderr pattern after "phiwatch: FILE: ")
    ("port0", json.dumps({"capture": {"ports": [0]}}),
     r'key "capture\.ports": ports are integers in \[1, 65535\]'),
    ("unknown_key", json.dumps({"capture": {"portz": [80]}}), r'key "capture\.portz": unknown key'),
    ("unknown_top", json.dumps({"bogus": True}), r'key "bogus": unknown key'),
    ("ringbuf0", json.dumps({"capture": {"ringbuf_mb": 0}}),
     r'key "capture\.ringbuf_mb": must be an integer in \[1, 1024\]'),
    ("invalid_json", '{"capture": {"ports": [80,]}', r"not valid JSON \(near byte \d+\)"),
]


def test_lifecycle_bad_config(ctx):
    """Each bad config: exit 2, one line `phiwatch: FILE: key "...": reason` (or
    the JSON position), no events file, no bpf() syscall at all (strace), and
    host BPF object counts unchanged."""
    lib.require_agent()
    lib.require_tools(BPFTOOL)
    use_strace = os.access(STRACE, os.X_OK)
    others0 = other_agents()
    before = bpf_ids()
    bad = []
    for name, text, pattern in BAD_CONFIGS:
        cfg = ctx.tmp / f"{name}.json"
        cfg.write_text(text)
        events = ctx.tmp / f"{name}.events.jsonl"
        trace = ctx.tmp / f"{name}.strace"
        args = [str(lib.PHIWATCH), "run", "--config", str(cfg), "--events", str(events)]
        if use_strace:
            args = [STRACE, "-f", "-qq", "-e", "trace=bpf,perf_event_open", "-o", str(trace)] + args
        r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                           env=lib.clean_env(), cwd=str(ctx.tmp))
        err = r.stderr.decode(errors="replace").strip().splitlines()
        want = re.compile(rf"^phiwatch: {re.escape(str(cfg))}: {pattern}$")
        ctx.info(f"{name}: exit {r.returncode}: {' | '.join(err)[:160]}")
        if r.returncode != 2:
            bad.append(f"{name}: exit {r.returncode}, want 2")
        if len(err) != 1 or not want.match(err[0]):
            bad.append(f"{name}: stderr {err!r} does not match {want.pattern!r}")
        if events.exists():
            bad.append(f"{name}: the events file was created")
        if use_strace:
            calls = [l for l in trace.read_text(errors="replace").splitlines()
                     if "bpf(" in l or "perf_event_open(" in l]
            if calls:
                bad.append(f"{name}: {len(calls)} bpf/perf_event_open calls, e.g. {calls[0][:120]}")
    after = bpf_ids()
    others1 = other_agents()
    ctx.info(f"host BPF objects before {counts(before)}, after {counts(after)}; strace "
             f"{'used' if use_strace else 'not installed'}; other agents {others0} / {others1}")
    if not others0 and not others1 and counts(after) != counts(before):
        bad.append(f"host BPF object counts changed: {counts(before)} -> {counts(after)}")
    lib.check(not bad, "; ".join(bad))


test_lifecycle_restarts.timeout = max(120, RESTARTS * 4)


def test_lifecycle_unsafe_paths(ctx):
    """A config file or state directory that others can write is refused:
    exit 2, one line naming the path and why, nothing attached."""
    lib.require_agent()
    before = bpf_ids()
    open_dir = ctx.tmp / "world-writable"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    cases = []
    cfg1 = open_dir / "phiwatch.json"
    cfg1.write_text("{}")
    cases.append(("config in a world-writable directory", cfg1, str(open_dir)))
    cfg2 = ctx.tmp / "state-open.json"
    cfg2.write_text(json.dumps({"state_dir": str(open_dir / "state")}))
    cases.append(("state directory under a world-writable one", cfg2, str(open_dir)))
    cfg3 = ctx.tmp / "group-writable.json"
    cfg3.write_text("{}")
    os.chmod(cfg3, 0o664)
    cases.append(("group-writable config", cfg3, str(cfg3)))
    bad = []
    for name, cfg, culprit in cases:
        r = subprocess.run([str(lib.PHIWATCH), "run", "--config", str(cfg), "--events", "/dev/null"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                           env=lib.clean_env())
        err = r.stderr.strip().splitlines()
        ctx.info(f"{name}: exit {r.returncode}: {err[:1]}")
        if r.returncode != 2 or len(err) != 1 or culprit not in err[0] or "writable" not in err[0]:
            bad.append(f"{name}: exit {r.returncode}, stderr {err}")
    lib.check(counts(bpf_ids()) == counts(before) or other_agents(), "BPF objects changed")
    lib.check(not bad, "; ".join(bad))
