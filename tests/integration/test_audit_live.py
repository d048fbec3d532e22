"""test_audit_live.py — the real agent's audit trail: every transaction chained,
start and stop recorded, `audit verify` passes with the initial key and
`audit query` answers "who accessed patient X" exactly."""
import base64
import json
import subprocess
import time
from pathlib import Path

import lib


def jwt(claims):
    enc = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2lnbmF0dXJl"


def test_audit_trail_of_live_traffic(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL)
    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx).start()
    now = int(time.time())
    for user, pids in (("alice", [1001, 1002, 1003]), ("carol", [1003, 1004])):
        tok = jwt({"sub": user, "iat": now, "exp": now + 600})
        urls = [f"https://127.0.0.1:{ng.tls_port}/fhir/Patient/{p}" for p in pids]
        p = subprocess.run([lib.CURL, "-sk", "-o", "/dev/null", "-H", f"Authorization: Bearer {tok}", *urls],
                           capture_output=True, timeout=30, env=lib.clean_env())
        lib.check(p.returncode == 0, "curl failed")
    res = agent.stop()
    ng.stop()
    audit = agent.state_dir / "audit"
    key = agent.state_dir / "audit-initial.key"
    lib.check(key.exists() and (key.stat().st_mode & 0o777) == 0o600, f"initial key missing or not 0600: {key}")
    lib.check((audit.stat().st_mode & 0o777) == 0o700, "audit dir not 0700")
    st = res.stats.get("audit", {})
    lib.check(st.get("records_lost") == 0 and st.get("unsynced_at_stop") == 0, f"audit stats {st}")

    v = subprocess.run([str(lib.PHIWATCH), "audit", "verify", "--key", str(key), str(audit)],
                       capture_output=True, text=True, timeout=60)
    lib.check(v.returncode == 0 and v.stdout.startswith("OK"), f"verify: rc={v.returncode} {v.stdout} {v.stderr}")

    q = subprocess.run([str(lib.PHIWATCH), "audit", "query", str(audit), "--patient", "1003"],
                       capture_output=True, text=True, timeout=60)
    lib.check(q.returncode == 0, f"query failed: {q.stderr}")
    rows = [json.loads(l) for l in q.stdout.splitlines()]
    got = sorted((lib.get(r, "user.id"), lib.get(r, "phiwatch.role")) for r in rows)
    want = sorted([("alice", "server"), ("alice", "client"), ("carol", "server"), ("carol", "client")])
    lib.check(got == want, f"who accessed patient 1003: {got}, want {want}")
    # every transaction of the run is in the trail
    allq = subprocess.run([str(lib.PHIWATCH), "audit", "query", str(audit), "--all"],
                          capture_output=True, text=True, timeout=60)
    n_trail = len(allq.stdout.splitlines())
    lib.check(n_trail == len(res.events), f"{n_trail} transactions in the trail, {len(res.events)} in --events")
    gaps = subprocess.run([str(lib.PHIWATCH), "audit", "query", str(audit), "--gaps"],
                          capture_output=True, text=True, timeout=60).stdout
    lib.check('"start"' in gaps.lower() or "START" in gaps, f"no start record: {gaps[:300]}")
    ctx.info(f"verify: {v.stdout.strip()[:120]}; patient 1003: {got}")


def test_audit_live_rotation_compressed(ctx):
    """1 MiB segments under real traffic: the agent seals them, its compression worker has compressed each while it
    was written into .log.gz (status shows the work done), the trail verifies, and it holds every transaction."""
    lib.require_agent()
    lib.require_tools(lib.NGINX)
    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx, config={"audit": {"segment_max_mb": 1}, "alerts": {"syslog": False}}).start()
    out = Path(ctx.tmp) / "flood.jsonl"
    p = subprocess.run([lib.PYTHON, str(lib.HERE / "flood_client.py"), "--port", str(ng.port), "--tag", "rot",
                        "--seconds", "60", "--max", "6000", "--mode", "keepalive", "--per-conn", "1000",
                        "--out", str(out)], capture_output=True, text=True, timeout=120, env=lib.clean_env())
    lib.check(p.returncode == 0, f"flood client: {p.stderr[-300:]}")
    summary = json.loads(out.read_text().splitlines()[-1])["summary"]
    lib.check(summary["completed"] == 6000, f"client: {summary}")
    # the worker runs beside the agent's loop: ask until every sealed segment is compressed
    st = {}
    for _ in range(400):
        r = subprocess.run([str(lib.PHIWATCH), "status", "--json", "--socket", str(agent.control)],
                           capture_output=True, text=True, timeout=30)
        lib.check(r.returncode == 0, f"status failed: {r.stderr}")
        st = json.loads(r.stdout)["audit"]
        if st["segments_closed"] >= 3 and st["compress_pending"] == 0:
            break
        time.sleep(0.05)
    lib.check(st["segments_closed"] >= 3 and st["compress_pending"] == 0
              and st["segments_compressed"] == st["segments_closed"], f"audit status {st}")
    # plaintext records: every segment was compressed while it was written, none read back
    lib.check(st["segments_streamed"] == st["segments_compressed"], f"audit status {st}")
    res = agent.stop()
    ng.stop()
    audit = agent.state_dir / "audit"
    gz = sorted(f.name for f in audit.glob("seg-*.log.gz"))
    lib.check(len(gz) == st["segments_compressed"], f"{len(gz)} .log.gz files, status said {st}")
    key = agent.state_dir / "audit-initial.key"
    v = subprocess.run([str(lib.PHIWATCH), "audit", "verify", "--key", str(key), str(audit)],
                       capture_output=True, text=True, timeout=120)
    lib.check(v.returncode == 0 and v.stdout.startswith("OK"), f"verify: rc={v.returncode} {v.stdout} {v.stderr}")
    allq = subprocess.run([str(lib.PHIWATCH), "audit", "query", str(audit), "--all"],
                          capture_output=True, text=True, timeout=120)
    n_trail = len(allq.stdout.splitlines())
    mine = len(lib.on_port(res.events, ng.port))
    lib.check(mine == 2 * 6000, f"{mine} transactions on nginx's port, want {2 * 6000}")
    lib.check(n_trail == len(res.events), f"{n_trail} transactions in the trail, {len(res.events)} in --events")
    ctx.info(f"{st['segments_closed']} segments sealed, {len(gz)} compressed while written; {v.stdout.strip()[:100]}")
