"""test_inventory.py — `phiwatch inventory` over the audit trail of known live traffic: real nginx (HTTP and
HTTPS) answering curl with JWTs, Basic, an API key and no credentials; the agent follows only this nginx's
ports. The server-side groups must be exactly the endpoints called (ids folded into {id}), with their methods,
calls, auth schemes, TLS, resource types, principals, status classes, ports and last-seen times, and must agree
with the agent's own --events lines."""
import base64
import json
import subprocess
import time

import lib


def jwt(claims):
    enc = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2lnbmF0dXJl"


def curl(*args):
    p = subprocess.run([lib.CURL, "-sk", "-o", "/dev/null", *args], capture_output=True, timeout=30,
                       env=lib.clean_env())
    lib.check(p.returncode == 0, f"curl {args[-1]} failed: {p.stderr[-300:]!r}")


def inventory(audit, *extra):
    r = subprocess.run([str(lib.PHIWATCH), "inventory", *extra, str(audit)], capture_output=True, text=True,
                       timeout=60)
    lib.check("unknown command" not in r.stderr,
              f"{lib.PHIWATCH} has no `inventory` command (cmd_inventory not in main.c's table)")
    lib.check(r.returncode == 0, f"inventory {extra}: rc={r.returncode} {r.stderr.strip()[-400:]}")
    return r


def test_inventory_of_live_traffic(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL)
    ng = lib.Nginx(ctx).start()
    # only this test's nginx: the agent sees the whole host, and other tests may be serving FHIR too
    agent = lib.Agent(ctx, config={"capture": {"ports": [ng.port, ng.tls_port]}}).start()
    now = int(time.time())
    plain, tls = f"http://127.0.0.1:{ng.port}", f"https://127.0.0.1:{ng.tls_port}"
    alice = jwt({"sub": "alice", "iat": now, "exp": now + 600})
    bob = jwt({"sub": "bob", "iat": now, "exp": now + 600})
    curl("-H", f"Authorization: Bearer {alice}", f"{tls}/fhir/Patient/1001", f"{tls}/fhir/Patient/1002")
    curl("-H", f"Authorization: Bearer {bob}", f"{tls}/fhir/Patient/abc-9?_format=json")
    curl(f"{plain}/fhir/Patient/1003")                                   # anonymous, plaintext
    curl("-I", "-u", "carol:secret", f"{plain}/fhir/Patient/1001")       # HEAD with Basic
    curl("-H", "X-API-Key: k-123456", f"{plain}/api/orders/550e8400-e29b-41d4-a716-446655440000")  # 404
    res = agent.stop()
    ng.stop()
    audit = agent.state_dir / "audit"

    server = [e for e in res.events if lib.get(e, "phiwatch.role") == "server"]
    lib.check(len(server) == 6, f"{len(server)} server-side transactions in --events, want 6: "
              f"{[lib.get(e, 'url.path') for e in server][:20]}")
    r = inventory(audit, "--json")
    groups = [json.loads(l) for l in r.stdout.splitlines()]
    got = {(g["service"]["name"], g["endpoint"]): g for g in groups}
    lib.check(set(got) == {("nginx", "/fhir/Patient/{id}"), ("nginx", "/api/orders/{id}")},
              f"groups {sorted(got)}")
    last = lambda paths: max(e["@timestamp"] for e in server if lib.get(e, "url.path") in paths)
    fhir = got[("nginx", "/fhir/Patient/{id}")]
    want = {
        "role": "server", "service": {"name": "nginx", "executable": "/usr/sbin/nginx"},
        "endpoint": "/fhir/Patient/{id}", "methods": ["GET", "HEAD"], "calls": 5,
        "auth": ["bearer", "basic", "none"], "tls": "mixed", "phi_resource_types": ["Patient"],
        "principals": 3, "anonymous_calls": 1, "status": {"2xx": 5},
        "ports": sorted([ng.port, ng.tls_port]),
        "last_seen": last({"/fhir/Patient/1001", "/fhir/Patient/1002", "/fhir/Patient/abc-9",
                           "/fhir/Patient/1003"}),
    }
    for k, v in want.items():
        lib.check(fhir.get(k) == v, f"/fhir/Patient/{{id}} {k} = {fhir.get(k)!r}, want {v!r}")
    orders = got[("nginx", "/api/orders/{id}")]
    want = {"methods": ["GET"], "calls": 1, "auth": ["apikey"], "tls": "no", "phi_resource_types": [],
            "principals": 1, "anonymous_calls": 0, "status": {"4xx": 1}, "ports": [ng.port]}
    for k, v in want.items():
        lib.check(orders.get(k) == v, f"/api/orders/{{id}} {k} = {orders.get(k)!r}, want {v!r}")
    lib.check("6 server-side transactions" in r.stderr, f"summary line: {r.stderr.strip()}")

    # --role all adds curl's side: the same calls seen from the client
    r = inventory(audit, "--json", "--role", "all")
    groups = [json.loads(l) for l in r.stdout.splitlines()]
    clients = {(g["service"]["name"], g["endpoint"]): g["calls"] for g in groups if g["role"] == "client"}
    n_client = sum(1 for e in res.events if lib.get(e, "phiwatch.role") == "client")
    lib.check(sum(clients.values()) == n_client and all(k[0] == "curl" for k in clients),
              f"client groups {clients}, {n_client} client transactions in --events")
    lib.check(groups[0]["role"] == "server", "server groups come first")

    # the readable table: header says what is counted, one row per endpoint
    r = inventory(audit)
    out = r.stdout
    lib.check(out.startswith(f"phiwatch inventory: the API surface seen in {audit}\n"), out[:200])
    lib.check("Server-side transactions only" in out, out[:400])
    rows = [l for l in out.splitlines() if l.startswith("nginx ")]
    lib.check(len(rows) == 2, f"table rows: {rows}")
    fhir_row = next(l for l in rows if "/fhir/Patient/{id}" in l).split()
    lib.check(fhir_row[:6] == ["nginx", "/usr/sbin/nginx", "/fhir/Patient/{id}", "GET,HEAD", "5",
                               "bearer,basic,none"] and fhir_row[6:9] == ["mixed", "Patient", "3"],
              f"row {fhir_row}")
    ctx.info(f"inventory: {len(got)} server endpoints, {sum(clients.values())} client calls")
