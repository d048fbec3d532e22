"""test_reload.py — SIGHUP reloads the configuration: a bad file is rejected with
its reason and the running settings kept; a good one takes effect at once."""
import base64
import json
import signal
import subprocess
import time
from pathlib import Path

import lib


def wait_line(agent, needle, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(needle in l for l in agent.lines):
            return True
        time.sleep(0.05)
    return False


def test_sighup_reload(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL)
    ng = lib.Nginx(ctx).start()
    alerts = Path(ctx.tmp) / "alerts.jsonl"
    agent = lib.Agent(ctx, config={"detect": {"rate": {"limit": 100}}, "alerts": {"syslog": False}},
                      extra_args=["--alerts", str(alerts)]).start()
    cfg = json.loads(agent.config.read_text())

    bad = dict(cfg, detect={"rate": {"limit": 0}})
    agent.config.write_text(json.dumps(bad))
    agent.popen.send_signal(signal.SIGHUP)
    lib.check(wait_line(agent, "reload rejected"), f"no rejection logged: {agent.tail()}")
    lib.check(any('detect.rate.limit' in l for l in agent.lines if "reload rejected" in l),
              "the rejection does not name the key")
    lib.check(agent.popen.poll() is None, "agent died on a bad reload")

    good = dict(cfg, detect={"rate": {"limit": 5}})
    agent.config.write_text(json.dumps(good))
    agent.popen.send_signal(signal.SIGHUP)
    lib.check(wait_line(agent, "configuration reloaded"), f"no reload logged: {agent.tail()}")

    enc = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    now = int(time.time())
    tok = f"{enc({'alg': 'RS256'})}.{enc({'sub': 'dora', 'iat': now, 'exp': now + 600})}.c2ln"
    urls = [f"http://127.0.0.1:{ng.port}/fhir/Patient/5?i={i}" for i in range(8)]
    subprocess.run([lib.CURL, "-s", "-o", "/dev/null", "-H", f"Authorization: Bearer {tok}", *urls],
                   check=True, timeout=30, env=lib.clean_env())
    agent.stop()
    ng.stop()
    got = [json.loads(l) for l in alerts.read_text().splitlines()]
    rate = [a for a in got if lib.get(a, "rule.name") == "rate_limit_exceeded" and lib.get(a, "user.id") == "dora"
            and "suppressed" not in lib.get(a, "phiwatch.evidence")]
    lib.check(len(rate) == 1 and lib.get(rate[0], "phiwatch.evidence")["threshold"] == 5,
              f"rate alerts after reload: {got}")
    ctx.info("bad config rejected and kept running; new rate limit 5 in force after SIGHUP")
