"""test_audit_diskfull.py — the audit trail on a full disk (a small tmpfs, root): appends go on under the
configured action (continue: accepted and counted lost; stop: refused), the segment is never left with a
partial record, writing resumes when space returns with a records_lost gap that names exactly the
records lost, and `audit verify` passes on what was written ("continue" runs with the agent's compression
worker, whose streams fail on the full disk and fall back to compressing the .log)."""
import json
import os
import subprocess
import threading
import time

import lib

BUILD = lib.REPO / os.environ.get("BUILD", "build")
DRIVER = BUILD / "tests" / "audit_driver"
HEADROOM = 256 * 1024


class Mount:
    def __init__(self, path, size):
        self.path = path
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            raise lib.Skip(f"cannot mount a tmpfs: {r.stderr.decode(errors='replace').strip()}")
        self.mounted = True
        lib.register(self)

    def cleanup(self):
        if self.mounted:
            subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30)
            self.mounted = False


class Driver:
    def __init__(self, ctx, d, key, mode):
        self.err = open(ctx.tmp / f"driver-{mode}.stderr", "wb")
        args = [DRIVER, "run", d, "--initial-key", key, "--fsync-ms", "50", "--segment-bytes", "131072",
                "--rate", "4000", "--body", "300"]
        if mode == "stop":
            args.append("--stop-on-full")
        else:
            args.append("--compress-thread")  # as the agent: segments compressed while written, fallback on ENOSPC
        self.proc = lib.Proc(args, stdout=subprocess.PIPE, stderr=self.err)
        self.stats = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self.read, daemon=True)
        self.t.start()

    def read(self):
        for line in self.proc.popen.stdout:
            s = line.decode(errors="replace")
            if s.startswith("stats "):
                with self.lock:
                    self.stats.append(json.loads(s[6:]))

    def wait_for(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.stats and cond(self.stats[-1]):
                    return self.stats[-1]
            lib.check(self.proc.popen.poll() is None, f"driver exited {self.proc.popen.returncode} while "
                                                      f"waiting for {what}")
            time.sleep(0.1)
        raise lib.Fail(f"timed out waiting for {what}; last stats {self.stats[-1:]}")

    def stop(self):
        self.proc.popen.terminate()
        self.proc.popen.wait(60)
        self.t.join(10)
        self.err.close()
        close = [s for s in self.stats if s["when"] == "close"]
        exit_ = [s for s in self.stats if s["when"] == "exit"]
        lib.check(self.proc.popen.returncode == 0 and close and exit_,
                  f"driver exit {self.proc.popen.returncode}, stats {self.stats[-2:]}")
        return close[-1], exit_[-1]


def cli(*args):
    r = subprocess.run([str(DRIVER), "audit", *map(str, args)], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=120, env=lib.clean_env())
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def fill(mnt, leave):
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_audit_disk_full(ctx):
    if not (DRIVER.is_file() and os.access(DRIVER, os.X_OK)):
        raise lib.Skip(f"{DRIVER} missing (build it: see tests/audit_driver.c)")
    if os.geteuid() != 0:
        raise lib.Skip("needs root to mount a tmpfs")
    mnt = ctx.tmp / "mnt"
    mnt.mkdir()
    m = Mount(mnt, "4m")
    key = ctx.tmp / "initial.key"
    for mode in ("continue", "stop"):
        d = mnt / f"audit-{mode}"
        filler = fill(mnt, HEADROOM)
        drv = Driver(ctx, d, key if mode == "continue" else ctx.tmp / "initial2.key", mode)
        full = drv.wait_for(lambda s: s["write_error"] != 0, 60, "the disk to fill")
        time.sleep(1.5)  # losses accumulate while the disk stays full
        drv.wait_for(lambda s: s["lost"] > full["lost"], 10, "records lost while full")
        filler.unlink()
        drv.wait_for(lambda s: s["write_error"] == 0, 15, "writing to resume after space came back")
        time.sleep(0.3)
        close, exit_ = drv.stop()
        lost, refused = close["lost"], exit_["refused"]
        lib.check(lost > 0, f"{mode}: no records counted lost on a full disk")
        if mode == "continue":
            lib.check(refused == 0, f"continue: {refused} appends refused")
        else:
            lib.check(0 < refused <= lost, f"stop: {refused} appends refused, {lost} lost")

        rc, out, err = cli("verify", "--key", key if mode == "continue" else ctx.tmp / "initial2.key", d)
        lib.check(rc == 0, f"{mode}: verify after the disk filled: rc {rc}: {out} {err}")
        rc, out, err = cli("query", d, "--gaps")
        lib.check(rc == 0, f"{mode}: query --gaps rc {rc}: {err}")
        gaps = [json.loads(l)["data"] for l in out.splitlines() if json.loads(l)["type"] == "gap"]
        chained = sum(g["detail"]["records"] for g in gaps if g["kind"] == "records_lost")
        lib.check(chained == lost, f"{mode}: records_lost gaps name {chained} records, the agent counted {lost}")
        errors = {g["detail"]["error"] for g in gaps if g["kind"] == "records_lost"}
        ctx.info(f"{mode}: {lost} records lost ({refused} refused) while full, in {len(gaps)} records_lost "
                 f"gap(s) ({', '.join(sorted(errors))}); {out.count(chr(10))} gap records; verify OK: "
                 f"{cli('verify', '--key', key if mode == 'continue' else ctx.tmp / 'initial2.key', d)[1].splitlines()[0]}")
        subprocess.run(["rm", "-rf", str(d)], timeout=60)
    m.cleanup()


test_audit_disk_full.timeout = 240
