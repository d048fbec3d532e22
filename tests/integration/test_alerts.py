"""test_alerts.py — identity, patients and detection end to end: real curl traffic
through nginx HTTPS with JWTs, a real rsyslog (its own config and socket), and
the alerts JSONL. One user fetches 60 distinct patients (patient_enumeration),
another makes 150 calls in a minute (rate_limit_exceeded, and since nginx
answers them all 2xx, rate_limit_not_enforced). The syslog file must show
exactly those alerts and their suppression summaries, with no patient id."""
import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import lib

RSYSLOG = "/usr/sbin/rsyslogd"

RSYSLOG_CONF = """\
global(workDirectory="{tmp}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" CreatePath="on")
template(name="plain" type="string" string="%syslogfacility-text%.%syslogseverity-text% %syslogtag% %msg%\\n")
authpriv.* action(type="omfile" file="{out}" template="plain")
"""


def jwt(claims):
    enc = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'RS256', 'typ': 'JWT'})}.{enc(claims)}.c2lnbmF0dXJl"


class Rsyslog:
    def __init__(self, ctx):
        self.tmp = Path(ctx.tmp) / "rsyslog"
        self.tmp.mkdir()
        self.sock = self.tmp / "log.sock"
        self.out = self.tmp / "authpriv.log"
        conf = self.tmp / "rsyslog.conf"
        conf.write_text(RSYSLOG_CONF.format(tmp=self.tmp, sock=self.sock, out=self.out))
        self.p = lib.Proc([RSYSLOG, "-n", "-f", conf, "-i", self.tmp / "pid"],
                          stdout=subprocess.DEVNULL, stderr=open(self.tmp / "stderr", "wb"))
        for _ in range(200):  # readiness: the socket exists
            if self.sock.exists():
                return
            lib.check(self.p.popen.poll() is None, "rsyslogd exited: " + (self.tmp / "stderr").read_text())
            time.sleep(0.05)
        raise lib.Fail("rsyslogd did not create its socket")

    def lines(self):
        return self.out.read_text().splitlines() if self.out.exists() else []

    def wait_lines(self, n, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.lines()) < n:
            time.sleep(0.05)
        return self.lines()

    def stop(self):
        self.p.popen.send_signal(signal.SIGTERM)
        self.p.popen.wait(10)


def curl_many(ctx, port, token, paths):
    urls = [f"https://127.0.0.1:{port}{p}" for p in paths]
    p = subprocess.run([lib.CURL, "-sk", "-o", "/dev/null", "-H", f"Authorization: Bearer {token}", *urls],
                       capture_output=True, timeout=60, env=lib.clean_env())
    lib.check(p.returncode == 0, f"curl failed: {p.stderr[-300:]}")


def test_alerts_syslog_and_jsonl(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL, RSYSLOG)
    rs = Rsyslog(ctx)
    ng = lib.Nginx(ctx).start()
    alerts = Path(ctx.tmp) / "alerts.jsonl"
    now = int(time.time())
    alice = jwt({"sub": "alice", "iat": now, "exp": now + 1800, "scope": "patient/*.read"})
    bob = jwt({"client_id": "bob-app", "iat": now, "exp": now + 1800})
    agent = lib.Agent(ctx, config={"alerts": {"syslog_socket": str(rs.sock)}},
                      extra_args=["--alerts", str(alerts)]).start()
    curl_many(ctx, ng.tls_port, alice, [f"/fhir/Patient/{1000 + i}" for i in range(60)])
    curl_many(ctx, ng.tls_port, bob, [f"/fhir/Patient/7/Observation?code=8867-4&n={i}" for i in range(150)])
    res = agent.stop()
    ng.stop()

    # transactions carry who and which patient
    alice_txns = [t for t in lib.on_port(res.events, ng.tls_port, "server") if lib.get(t, "user.id") == "alice"]
    lib.check(len(alice_txns) == 60, f"{len(alice_txns)} server transactions for alice, want 60")
    ids = [lib.get(t, "phiwatch.resource.id") for t in alice_txns]
    lib.check(ids == [str(1000 + i) for i in range(60)], f"patient ids {ids[:5]}...")
    lib.check(all(lib.get(t, "phiwatch.auth") == "bearer" and lib.get(t, "phiwatch.resource.type") == "Patient"
                  for t in alice_txns), "alice's transactions: auth/resource.type wrong")
    bob_txns = [t for t in lib.on_port(res.events, ng.tls_port, "server") if lib.get(t, "user.id") == "bob-app"]
    lib.check(len(bob_txns) == 150, f"{len(bob_txns)} server transactions for bob-app, want 150")

    got = [json.loads(l) for l in alerts.read_text().splitlines()]
    key = lambda a: (lib.get(a, "rule.name"), lib.get(a, "user.id"), "summary" if "suppressed" in
                     lib.get(a, "phiwatch.evidence") else "alert")
    want = sorted([
        ("patient_enumeration", "alice", "alert"), ("patient_enumeration", "alice", "summary"),
        ("rate_limit_exceeded", "bob-app", "alert"), ("rate_limit_exceeded", "bob-app", "summary"),
        ("rate_limit_not_enforced", "bob-app", "alert"), ("rate_limit_not_enforced", "bob-app", "summary"),
    ])
    lib.check(sorted(map(key, got)) == want, f"alerts JSONL: {sorted(map(key, got))}, want {want}")
    enum = next(a for a in got if key(a) == ("patient_enumeration", "alice", "alert"))
    lib.check(lib.get(enum, "phiwatch.evidence")["distinct_patients"] == 51, f"enumeration evidence: {enum}")
    sup = {key(a)[0]: lib.get(a, "phiwatch.evidence")["suppressed"] for a in got if key(a)[2] == "summary"}
    lib.check(sup == {"patient_enumeration": 9, "rate_limit_exceeded": 49, "rate_limit_not_enforced": 40},
              f"suppressed counts {sup}")
    for a in got:
        lib.check(lib.get(a, "event.kind") == "alert" and lib.get(a, "process.pid") == ng.worker_pid,
                  f"alert shape/pid: {a}")

    lines = rs.wait_lines(len(want))
    rs.stop()
    lines = rs.lines()
    lib.check(len(lines) == len(want), f"{len(lines)} syslog lines, want {len(want)}: {lines}")
    for rule, user, kind in want:
        match = [l for l in lines if rule in l and user in l and (("suppressed" in l) == (kind == "summary"))]
        lib.check(len(match) == 1, f"syslog: {len(match)} lines for {rule}/{user}/{kind}: {lines}")
    lib.check(all(l.startswith("authpriv.") and " phiwatch[" in l for l in lines),
              f"facility/tag wrong: {lines}")
    leaked = [l for l in lines if any(str(1000 + i) in l for i in range(60)) or "Patient/" in l]
    lib.check(not leaked, f"patient ids in syslog: {leaked}")
    ctx.info(f"{len(lines)} syslog lines, e.g. {lines[0][:160]}")
