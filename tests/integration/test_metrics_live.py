"""test_metrics_live.py — the Prometheus endpoint of a live agent: real nginx (HTTP and HTTPS) and curl with JWTs
and Basic; /metrics is scraped while the agent runs, its exposition validated (a strict parser here, and promtool
when installed), and its values must match the transactions and alerts the test produced: the agent's --events
lines, alerts file and final stats line."""
import base64
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import lib

PROMTOOL = "/usr/bin/promtool"
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
VALUE = re.compile(r"^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)$")


def jwt(claims):
    enc = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2lnbmF0dXJl"


def parse_exposition(text):
    """Strict text format 0.0.4: {series: value}. Every sample after its family's TYPE, families contiguous,
    counters end in _total and are >= 0, names and labels valid, escapes valid, no duplicate series."""
    lib.check(text.endswith("\n"), "exposition does not end with a newline")
    types, helps, samples, closed, current = {}, set(), {}, set(), None
    for no, line in enumerate(text.split("\n")[:-1], 1):
        lib.check(line != "", f"line {no}: empty line")
        m = re.match(r"^# (HELP|TYPE) (\S+) (.*)$", line)
        if m:
            kind, name, rest = m.groups()
            lib.check(NAME.fullmatch(name), f"line {no}: bad name {name}")
            if name != current:
                lib.check(name not in closed, f"line {no}: family {name} not contiguous")
                if current:
                    closed.add(current)
                current = name
            if kind == "TYPE":
                lib.check(name not in types, f"line {no}: second TYPE for {name}")
                lib.check(rest in ("counter", "gauge", "histogram", "summary", "untyped"), f"line {no}: type {rest}")
                lib.check(not any(s.split("{")[0] == name for s in samples), f"line {no}: TYPE after samples")
                types[name] = rest
            else:
                lib.check(name not in helps, f"line {no}: second HELP for {name}")
                lib.check(not re.search(r"\\[^\\n]", rest.replace("\\\\", "")), f"line {no}: bad escape in HELP")
                helps.add(name)
            continue
        if line.startswith("#"):
            continue
        m = re.match(r"^([^{ ]+)(\{(.*)\})? (\S+)( -?\d+)?$", line)
        lib.check(m, f"line {no}: not a sample: {line[:120]}")
        name, _, labels, value, _ = m.groups()
        lib.check(NAME.fullmatch(name), f"line {no}: bad name {name}")
        lib.check(types.get(name) and name == current, f"line {no}: {name} without its TYPE just before")
        lib.check(VALUE.match(value), f"line {no}: bad value {value}")
        pairs = []
        if labels:
            rest = labels
            while rest:
                lm = LABEL.match(rest)
                lib.check(lm and not lm.group(1).startswith("__"), f"line {no}: bad labels {labels}")
                pairs.append((lm.group(1), lm.group(2)))
                rest = rest[lm.end():]
                lib.check(rest == "" or rest.startswith(","), f"line {no}: bad labels {labels}")
                rest = rest[1:]
            lib.check(len({k for k, _ in pairs}) == len(pairs), f"line {no}: a label twice")
        if types[name] == "counter":
            lib.check(name.endswith("_total"), f"line {no}: counter {name} not _total")
            lib.check(value != "NaN" and float(value) >= 0, f"line {no}: counter {name} = {value}")
        series = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs)) + "}" if pairs else "")
        lib.check(series not in samples, f"line {no}: duplicate series {series}")
        samples[series] = float(value)
    lib.check(all(n in helps for n in types), "a family without HELP")
    return samples


def scrape(port, path="/metrics", method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def test_metrics_match_live_traffic(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL)
    ng = lib.Nginx(ctx).start()
    mport = lib.free_ports(1)[0]
    alerts = Path(ctx.tmp) / "alerts.jsonl"
    agent = lib.Agent(ctx, config={"capture": {"ports": [ng.port, ng.tls_port]},
                                   "metrics": {"enabled": True, "listen": f"127.0.0.1:{mport}"},
                                   "alerts": {"syslog": False},
                                   "detect": {"enumeration": {"max_patients": 5}}},
                      extra_args=["--alerts", str(alerts)]).start()
    lib.check(any(f"127.0.0.1:{mport}/metrics" in l for l in agent.lines), f"no metrics line: {agent.tail()}")
    st, hdr, first = scrape(mport)
    lib.check(st == 200 and hdr.get("Content-Type", "").startswith("text/plain; version=0.0.4"),
              f"GET /metrics: {st} {hdr}")
    parse_exposition(first)

    now = int(time.time())
    bob = jwt({"sub": "bob", "iat": now, "exp": now + 600})
    urls = [f"https://127.0.0.1:{ng.tls_port}/fhir/Patient/{i}" for i in range(1, 9)]
    r = subprocess.run([lib.CURL, "-sk", "-o", "/dev/null", "-H", f"Authorization: Bearer {bob}", *urls],
                       capture_output=True, timeout=30, env=lib.clean_env())
    lib.check(r.returncode == 0, "curl failed")
    r = subprocess.run([lib.CURL, "-s", "-o", "/dev/null", "-u", "carol:pw",
                        f"http://127.0.0.1:{ng.port}/fhir/Patient/1"], capture_output=True, timeout=30,
                       env=lib.clean_env())
    lib.check(r.returncode == 0, "curl failed")

    # scrape until the counters stop moving (the agent reads the ring every poll_ms)
    last, stable, deadline = None, 0, time.monotonic() + 15
    while time.monotonic() < deadline and stable < 3:
        st, hdr, text = scrape(mport)
        lib.check(st == 200, f"scrape {st}")
        m = parse_exposition(text)
        key = (m["phiwatch_transactions_total"], m["phiwatch_events_total"])
        stable = stable + 1 if key == last and key[0] > 0 else 0
        last = key
        time.sleep(0.3)
    lib.check(stable >= 3, f"counters never settled: {last}")
    if shutil.which("promtool") or Path(PROMTOOL).exists():
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        lib.check(p.returncode == 0, f"promtool check metrics: {p.stdout}{p.stderr}")
    st404, _, _ = scrape(mport, "/")
    sthead, _, body = scrape(mport, method="HEAD")
    lib.check(st404 == 404 and sthead == 200 and body == "", f"/: {st404}, HEAD: {sthead} {body[:50]!r}")

    res = agent.stop()
    ng.stop()
    got_alerts = [json.loads(l) for l in alerts.read_text().splitlines()]
    real = [a for a in got_alerts if "suppressed" not in a.get("phiwatch", {}).get("evidence", {})]
    by_rule = {}
    for a in real:
        by_rule[a["rule"]["name"]] = by_rule.get(a["rule"]["name"], 0) + 1
    lib.check(by_rule.get("patient_enumeration") == 1 and by_rule.get("basic_auth") == 1,
              f"the test meant to raise patient_enumeration and basic_auth once each: {by_rule}")
    lib.check(m["phiwatch_transactions_total"] == len(res.events) == res.stats["transactions"],
              f"transactions: metrics {m['phiwatch_transactions_total']}, --events {len(res.events)}, "
              f"stats {res.stats['transactions']}")
    lib.check(m["phiwatch_up"] == 1, "phiwatch_up")
    drops = sum(v for k, v in m.items() if k.startswith("phiwatch_drops_total{"))
    lib.check(drops == res.stats["drops_total"], f"drops: metrics {drops}, stats {res.stats['drops_total']}")
    for rule in ("rate_limit_exceeded", "patient_enumeration", "bulk_export", "auth_failures", "rate_anomaly",
                 "basic_auth", "plaintext_phi", "long_lived_token", "sensitive_data_exposed",
                 "rate_limit_not_enforced", "capture_loss", "tls_not_instrumented"):
        v = m.get(f'phiwatch_alerts_total{{rule="{rule}"}}')
        lib.check(v == by_rule.get(rule, 0), f"alerts_total{{rule={rule}}} = {v}, alerts file has "
                  f"{by_rule.get(rule, 0)}")
    server_calls = sum(1 for e in res.events if lib.get(e, "phiwatch.role") == "server")
    lib.check(server_calls == 9, f"{server_calls} server-side calls, want 9")
    aw = m.get("phiwatch_audit_records_written_total", -1)
    lib.check(aw >= len(res.events) and m.get("phiwatch_audit_records_lost_total") == 0,
              f"audit written {aw} for {len(res.events)} transactions")
    lib.check(m["phiwatch_processes_attached"] >= 1, "no process attached")
    lib.check(m["phiwatch_captured_bytes_total"] > 0 and m["phiwatch_events_total"] > 0, "nothing captured")
    mem = [k for k in m if k.startswith("phiwatch_table_memory_bytes{")]
    lib.check(len(mem) >= 4, f"table memory series: {mem}")
    ctx.info(f"{len(m)} series; transactions {int(m['phiwatch_transactions_total'])}; alerts {by_rule}")
