"""test_preexisting.py — a keep-alive connection opened before the agent started
is still followed (the socket is found in the task's file table), plain and TLS."""
import json
import subprocess
from pathlib import Path

import lib

PATHS = ["/fhir/Patient/7?_format=json", "/fhir/Patient/8", "/missing"]
CLIENT = str(Path(__file__).with_name("preconn_client.py"))


def preexisting_case(ctx, tls):
    lib.require_agent()
    lib.require_tools(lib.NGINX)
    ng = lib.Nginx(ctx).start()
    port = ng.tls_port if tls else ng.port
    client = lib.Proc([lib.PYTHON, CLIENT, str(port), "tls" if tls else "plain", *PATHS],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = lib.read_line(client.popen, 20)
    lib.check(line.startswith("connected "), f"client did not connect: {line!r}")

    agent = lib.Agent(ctx).start()
    t0 = lib.now_ns()
    rest, _ = client.popen.communicate(b"go\n", timeout=20)
    expected = [json.loads(l) for l in rest.decode().splitlines()]
    lib.check(client.popen.returncode == 0 and len(expected) == len(PATHS), "client failed")
    t1 = lib.now_ns()
    res = agent.stop()
    ng.stop()

    common = dict(port=port, tls=tls, t0_ns=t0, t1_ns=t1)
    lib.expect_txns(res.events, expected, role="server", pid=ng.worker_pid, name="nginx",
                    exe=lib.NGINX, **common)
    lib.expect_txns(res.events, expected, role="client", pid=client.popen.pid, name="python3",
                    exe=lib.PYTHON, **common)
    ctx.info(f"{len(expected)} calls on a connection older than the agent, both sides")


def test_preexisting_plain(ctx):
    preexisting_case(ctx, tls=False)


def test_preexisting_tls(ctx):
    preexisting_case(ctx, tls=True)
