"""run.py — runs phiwatch's integration tests: root, BPF, real processes.

    /usr/bin/python3 tests/integration/run.py [-v] [-k SUBSTR]... [--list]

Discovers tests/integration/test_*.py and runs every function named test_* (in
file, then source order), each in its own child process and process group with
a timeout (the function's `timeout` attribute, default 120 s). Prints one line
per test, `PASS name` / `FAIL name: reason` / `SKIP name: reason`, and ends with
exactly one line `N passed, N failed, N skipped`. With CI=true every skip is
printed and counted as a FAIL. Exit status 0 only if nothing failed.
A failing test's temp dir (agent events/stderr, nginx logs) is kept and named.
"""
import argparse
import importlib.util
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import lib  # noqa: E402

PYTHON = "/usr/bin/python3"
DEFAULT_TIMEOUT = 120
TERM_GRACE = 45  # s between SIGTERM (child cleans up, agent drains) and SIGKILL


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def discover():
    tests = []
    for path in sorted(HERE.glob("test_*.py")):
        mod = load(path)
        fns = [f for n, f in vars(mod).items()
               if n.startswith("test_") and inspect.isfunction(f) and f.__module__ == mod.__name__]
        for f in sorted(fns, key=lambda f: f.__code__.co_firstlineno):
            tests.append((path, f.__name__, getattr(f, "timeout", DEFAULT_TIMEOUT)))
    return tests


# ------------------------------------------------------------------ child side

class Context:
    """What a test function gets: its temp dir and a way to report numbers."""

    def __init__(self, name, tmp):
        self.name = name
        self.tmp = Path(tmp)
        self.infos = []

    def info(self, msg):
        print(f"info: {msg}", flush=True)
        self.infos.append(msg)


def child(path, name, tmp, result_file):
    def on_term(signum, frame):
        raise lib.Fail("timed out (runner sent SIGTERM)")

    signal.signal(signal.SIGTERM, on_term)
    ctx = Context(name, tmp)
    status, reason = "FAIL", "no result"
    try:
        fn = getattr(load(Path(path)), name)
        fn(ctx)
        status, reason = "PASS", ""
    except lib.Skip as e:
        status, reason = "SKIP", str(e)
    except lib.Fail as e:
        status, reason = "FAIL", str(e) or "assertion failed"
        traceback.print_exc()
    except AssertionError as e:
        status, reason = "FAIL", str(e) or "assertion failed"
        traceback.print_exc()
    except BaseException as e:
        status, reason = "FAIL", f"{type(e).__name__}: {e}"
        traceback.print_exc()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        errs = lib.cleanup_all()
        if errs:
            print("cleanup: " + "; ".join(errs), flush=True)
        with open(result_file, "w") as f:
            json.dump({"status": status, "reason": reason, "infos": ctx.infos}, f)
    return 0


# ----------------------------------------------------------------- parent side

def kill_group(pgid, sig):
    """Signal each live member of process group pgid, by pid.

    Scanning instead of killpg(): after the leader is reaped its number stays
    reserved only while members remain, so this can never hit a stranger.
    """
    for _ in range(3):
        members = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(d))
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.2)


def run_one(path, name, timeout):
    tmp = tempfile.mkdtemp(prefix=f"phiwatch-it-{name}-")
    result_file = os.path.join(tmp, "result.json")
    log_path = os.path.join(tmp, "test.log")
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        p = subprocess.Popen([PYTHON, __file__, "--child", str(path), name, tmp, result_file],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env=lib.clean_env(), cwd=str(lib.REPO), start_new_session=True)
        timed_out = False
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(TERM_GRACE)
            except subprocess.TimeoutExpired:
                pass
        except KeyboardInterrupt:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(TERM_GRACE)
            finally:
                kill_group(p.pid, signal.SIGKILL)
            raise
        # Anything the test left in its process group (its own session) dies now.
        kill_group(p.pid, signal.SIGKILL)
        if p.poll() is None:
            p.wait(10)
    elapsed = time.monotonic() - t0
    try:
        with open(result_file) as f:
            res = json.load(f)
    except (OSError, ValueError):
        res = {"status": "FAIL", "reason": f"test process exit {p.returncode}, no result",
               "infos": []}
    if timed_out:
        res["status"], res["reason"] = "FAIL", f"timeout after {timeout} s ({res['reason']})"
    log_text = Path(log_path).read_text(errors="replace")
    return res, elapsed, tmp, log_text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-k", action="append", default=[], help="run tests whose name contains this")
    ap.add_argument("-v", action="store_true", help="show every test's log")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(*a.child)

    ci = os.environ.get("CI", "").lower() == "true"
    tests = [t for t in discover() if not a.k or any(k in t[1] for k in a.k)]
    if a.list:
        for path, name, timeout in tests:
            print(f"{name}  ({path.name}, timeout {timeout} s)")
        return 0
    passed = failed = skipped = 0
    try:
        for path, name, timeout in tests:
            res, elapsed, tmp, log_text = run_one(path, name, timeout)
            status, reason = res["status"], res["reason"]
            if status == "SKIP" and ci:
                status, reason = "FAIL", f"skipped under CI=true: {reason}"
            if status == "PASS":
                passed += 1
                print(f"PASS {name} ({elapsed:.1f} s)")
            elif status == "SKIP":
                skipped += 1
                print(f"SKIP {name}: {reason}")
            else:
                failed += 1
                print(f"FAIL {name}: {reason}")
            for line in res.get("infos", []):
                print(f"    {line}")
            if status == "FAIL" and res["status"] != "SKIP" or a.v:
                lines = log_text.splitlines()
                show = lines if a.v else lines[-40:]
                for line in show:
                    print(f"    | {line}")
            if status == "FAIL" and res["status"] != "SKIP":
                print(f"    kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        failed += 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
