"""test_audit_crash.py — the audit trail survives kill -9: 50 kills of a process appending under
load (tests/audit_driver.c) at random moments, some followed by a simulated power-loss tear of the
un-acknowledged tail (odd runs compress closed segments in the worker thread, as the agent does);
after each, the pre-restart verify names the torn tail, the restart chains a restart record with
exactly that many bytes, and at the end the whole trail verifies and holds every record that an
fdatasync acknowledged ("synced" lines) before its kill."""
import json
import os
import random
import re
import signal
import struct
import subprocess
import threading
import time

import lib

BUILD = lib.REPO / os.environ.get("BUILD", "build")
DRIVER = BUILD / "tests" / "audit_driver"
KILLS = 50
FAIL_RE = re.compile(r"^FAIL: segment (\d+) \(([^)]*)\), record (\d+) \(seq (\d+), offset (\d+), "
                     r"(\d+) bytes to the end\): (.*)$")


def require_driver():
    if not (DRIVER.is_file() and os.access(DRIVER, os.X_OK)):
        raise lib.Skip(f"{DRIVER} missing (build it: see tests/audit_driver.c)")


def cli(*args, timeout=120):
    """`phiwatch audit ...` as the driver links it; returns (rc, stdout, stderr)."""
    r = subprocess.run([str(DRIVER), "audit", *map(str, args)], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, env=lib.clean_env())
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def frames(path):
    """(offset, length, seq, type) of each whole frame of a .log, per the format in audit.h."""
    b = path.read_bytes()
    out, off = [], 0
    while off + 32 <= len(b) and b[off:off + 4] == b"PWA1":
        stored, seq = struct.unpack_from("<IQ", b, off + 4)
        n = 32 + stored + 32
        if off + n > len(b):
            break
        out.append((off, n, seq, b[off + 24]))
        off += n
    return out, len(b)


def last_log(d):
    logs = sorted(d.glob("seg-*.log"))
    return logs[-1] if logs else None


class Run:
    """One driver process; a thread keeps its last "synced" line."""

    def __init__(self, ctx, d, key, ek, run, rate):
        self.out = open(ctx.tmp / f"run{run}.stdout", "wb")
        self.err = open(ctx.tmp / f"run{run}.stderr", "wb")
        args = [DRIVER, "run", d, "--initial-key", key, "--enc-key", ek, "--fsync-ms", "20",
                "--segment-bytes", "262144", "--rate", rate, "--body", random.randint(50, 400),
                "--run", run] + (["--compress-thread"] if run % 2 else [])  # odd runs: the agent's worker
        self.proc = lib.Proc(args, stdout=subprocess.PIPE, stderr=self.err)
        self.opened = threading.Event()
        self.acked_seq = None
        self.acked_n = -1
        self.lines = 0
        self.t = threading.Thread(target=self.read, daemon=True)
        self.t.start()

    def read(self):
        for line in self.proc.popen.stdout:
            self.out.write(line)
            self.lines += 1
            s = line.decode(errors="replace").split()
            if s and s[0] == "opened":
                self.opened.set()
            elif len(s) == 6 and s[0] == "synced":
                self.acked_seq, self.acked_n = int(s[1]), int(s[5])

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.popen.wait(10)
        self.t.join(10)
        self.out.close()
        self.err.close()


def test_audit_crash_kill9(ctx):
    require_driver()
    rnd = random.Random(int(os.environ.get("AUDIT_CRASH_SEED", time.time_ns() % 100000)))
    random.seed(rnd.random())
    d = ctx.tmp / "audit"
    key, ek = ctx.tmp / "initial.key", ctx.tmp / "enc.key"
    ek.write_text(os.urandom(32).hex() + "\n")
    ek.chmod(0o600)

    acked = {}          # run -> last driver n acknowledged by fdatasync before the kill
    expect_torn = []    # per kill: bytes the next start must cut (0: none)
    simulated = natural = 0
    for run in range(1, KILLS + 1):
        r = Run(ctx, d, key, ek, run, rate=rnd.choice([5000, 20000, 50000]))
        lib.check(r.opened.wait(30), f"run {run}: driver did not open the trail: "
                  f"{(ctx.tmp / f'run{run}.stderr').read_text(errors='replace')[-300:]}")
        time.sleep(rnd.uniform(0.02, 0.5))
        r.kill9()
        lib.check(r.proc.popen.returncode == -signal.SIGKILL,
                  f"run {run}: driver exited {r.proc.popen.returncode} before the kill")
        acked[run] = r.acked_n

        # power loss may also damage what was never acknowledged: tear the open segment's tail
        # (zeros, or a cut inside the last transaction when it came after the last "synced" seq)
        tear = run % 3
        torn_here = False
        log = last_log(d)
        if tear and log is not None:
            fr, size = frames(log)
            if tear == 1 and fr and fr[-1][3] == 5 and r.acked_seq is not None and fr[-1][2] > r.acked_seq \
                    and size == fr[-1][0] + fr[-1][1]:
                off, n = fr[-1][0], fr[-1][1]
                os.truncate(log, off + rnd.randint(1, n - 1))
                simulated += 1
                torn_here = True
            elif tear == 2:
                with open(log, "ab") as f:
                    f.write(bytes(rnd.randint(1, 300)))
                simulated += 1
                torn_here = True

        # before the restart, verify names the torn tail (if any) in the last segment
        rc, out, err = cli("verify", "--key", key, "--enc-key", ek, d)
        if rc == 0:
            expect_torn.append(0)
        else:
            m = FAIL_RE.match(out.strip().splitlines()[0] if out.strip() else "")
            lib.check(rc == 1 and m, f"run {run}: verify before restart: rc {rc}: {out} {err}")
            lib.check(m.group(2).endswith(".log") and log is not None and m.group(2) == log.name,
                      f"run {run}: failure outside the open segment ({log}): {out}")
            expect_torn.append(int(m.group(6)))
            if not torn_here:
                natural += 1

    # a clean last run: restart after the 50th kill, a few records, SIGTERM-free exit
    rc = subprocess.run([str(DRIVER), "run", str(d), "--initial-key", str(key), "--enc-key", str(ek),
                         "--count", "100", "--run", str(KILLS + 1)], capture_output=True, timeout=120,
                        env=lib.clean_env())
    lib.check(rc.returncode == 0, f"final run exit {rc.returncode}: {rc.stderr.decode()[-300:]}")

    rc, out, err = cli("verify", "--key", key, "--enc-key", ek, d)
    lib.check(rc == 0 and out.startswith("OK:"), f"final verify rc {rc}: {out} {err}")
    ctx.info(out.splitlines()[0])

    rc, out, err = cli("query", d, "--enc-key", ek, "--records", timeout=300)
    lib.check(rc == 0, f"query --records rc {rc}: {err}")
    have = set()
    restarts = []
    seqs = []
    for line in out.splitlines():
        rec = json.loads(line)
        seqs.append(rec["seq"])
        if rec["type"] == "txn":
            drv = rec["data"]["driver"]
            have.add((drv["run"], drv["n"]))
        elif rec["type"] == "restart":
            restarts.append(rec["data"])
    lib.check(seqs == list(range(len(seqs))), "records do not form one contiguous sequence")

    missing = [(run, n) for run, last in acked.items() for n in range(last + 1) if (run, n) not in have]
    lib.check(not missing, f"{len(missing)} acknowledged records missing, first {missing[:5]}")
    lib.check(len(restarts) == KILLS, f"{len(restarts)} restart records for {KILLS} kills")
    got = [x["torn_bytes"] for x in restarts]
    bad = [(i + 1, want, g) for i, (want, g) in enumerate(zip(expect_torn, got)) if want != g]
    lib.check(not bad, f"restart records' torn_bytes differ from the torn tails verify reported "
                       f"(kill, want, got): {bad[:5]}")
    torn_files = sorted(p.name for p in d.glob("seg-*.torn-*"))
    lib.check(len(torn_files) == sum(1 for x in expect_torn if x),
              f"{len(torn_files)} .torn files for {sum(1 for x in expect_torn if x)} torn tails")
    ctx.info(f"{KILLS} kills: {sum(1 for x in expect_torn if x)} torn tails reported and cut "
             f"({simulated} simulated power-loss tears, {natural} from the kill itself); "
             f"{sum(v + 1 for v in acked.values())} acknowledged records all present, "
             f"{len(have)} transactions in {len(seqs)} records")


test_audit_crash_kill9.timeout = 600
