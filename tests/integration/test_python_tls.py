"""test_python_tls.py — python3 TLS server and http.client TLS client (OpenSSL
SSL_read_ex/SSL_write_ex): 5 calls on one keep-alive connection, both sides."""
import json

import lib

OBSERVATION = json.dumps({"resourceType": "Observation", "status": "final",
                          "subject": {"reference": "Patient/42"},
                          "valueQuantity": {"value": 72, "unit": "beats/min"}})

PLAN = [[
    {"method": "GET", "path": "/fhir/Patient/42?_format=json"},
    {"method": "GET", "path": "/fhir/Patient/43"},
    {"method": "POST", "path": "/fhir/Observation",
     "headers": {"Content-Type": "application/fhir+json"}, "body": OBSERVATION},
    {"method": "GET", "path": "/fhir/Encounter/9?patient=42"},
    {"method": "GET", "path": "/fhir/Patient/44?_elements=name,birthDate"},
]]
STATUSES = [200, 200, 201, 404, 200]


def test_python_tls(ctx):
    lib.require_agent()
    lib.require_tools(lib.PYTHON, lib.OPENSSL)
    cert, key = lib.make_cert(ctx.tmp)
    agent = lib.Agent(ctx).start()
    srv = lib.PyServer(ctx, tls=True, cert_key=(cert, key)).start()

    t0 = lib.now_ns()
    client_pid, expected = lib.run_pyclient(ctx, srv.port, tls=True, plan=PLAN, cafile=cert)
    t1 = lib.now_ns()

    res = agent.stop()
    served = srv.stop()

    # The harness itself must agree with itself before we judge the agent.
    lib.check([e["status"] for e in expected] == STATUSES,
              f"harness: statuses {[e['status'] for e in expected]}")
    lib.check([(s["method"], s["path"], s["status"], s["request_bytes"], s["response_bytes"],
                s["client_port"]) for s in served] ==
              [(e["method"], e["path"], e["status"], e["request_bytes"], e["response_bytes"],
                e["local_port"]) for e in expected],
              f"harness: client and server byte counts disagree: {expected} vs {served}")
    ctx.info("bytes req/resp: " + ", ".join(f"{e['request_bytes']}/{e['response_bytes']}"
                                            for e in expected))

    common = dict(port=srv.port, tls=True, t0_ns=t0, t1_ns=t1)
    name = lib.comm_of(lib.PYTHON)
    lib.expect_txns(res.events, expected, role="server", pid=srv.pid, name=name,
                    exe=lib.PYTHON, **common)
    lib.expect_txns(res.events, expected, role="client", pid=client_pid, name=name,
                    exe=lib.PYTHON, **common)
    every = lib.on_port(res.events, srv.port)
    lib.check(len(every) == 2 * len(expected),
              f"{len(every)} transactions on :{srv.port}, want {2 * len(expected)}")
    lib.expect_unique_sequences(res.events)
