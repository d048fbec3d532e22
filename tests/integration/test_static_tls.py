"""test_static_tls.py — a program with OpenSSL linked in statically (it maps no
libssl.so) started after the agent: phiwatch finds SSL_write in the executable
itself, hooks it, and sees the plaintext calls."""
import subprocess
from pathlib import Path

import lib

SRC = Path(__file__).with_name("static_tls_client.c")
PATHS = ["/fhir/Patient/41?_format=json", "/fhir/Patient/42", "/nope"]


def test_static_openssl_client(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, "/usr/bin/gcc")
    exe = Path(ctx.tmp) / "static_tls_client"
    build = subprocess.run(["gcc", "-O1", "-o", str(exe), str(SRC), "-Wl,-Bstatic", "-lssl", "-lcrypto",
                            "-Wl,-Bdynamic", "-ldl", "-lpthread"], capture_output=True, text=True)
    lib.check(build.returncode == 0, f"cannot build the static client: {build.stderr[-500:]}")
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
    lib.check("libssl" not in ldd, f"client still maps libssl.so: {ldd}")

    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx).start()
    t0 = lib.now_ns()
    client = lib.Proc([exe, ng.tls_port, *PATHS], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    lib.check(lib.read_line(client.popen, 20) == "connected", "static client did not connect")
    # Readiness: the agent says it hooked this executable (exec -> ELF check -> uprobes).
    for _ in range(200):
        if any("TLS: hooked" in l and "static_tls_client" in l for l in agent.lines):
            break
        lib.time.sleep(0.05)
    rest, _ = client.popen.communicate(b"go\n", timeout=20)
    out = rest.decode().splitlines()
    lib.check(client.popen.returncode == 0, f"static client failed rc={client.popen.returncode}")
    t1 = lib.now_ns()
    expected = []
    for path, line in zip(PATHS, out):
        status, req, resp, lport = map(int, line.split())
        expected.append({"method": "GET", "path": path, "status": status, "request_bytes": req,
                         "response_bytes": resp, "local_port": lport})
    res = agent.stop()
    ng.stop()
    hooked = [l for l in res.stderr if "TLS: hooked" in l and "static_tls_client" in l]
    lib.check(hooked, "agent did not log hooking the executable's own OpenSSL: " + " | ".join(res.stderr[-6:]))
    common = dict(port=ng.tls_port, tls=True, t0_ns=t0, t1_ns=t1)
    lib.expect_txns(res.events, expected, role="client", pid=client.pid, name="static_tls_clie", exe=str(exe),
                    **common)
    lib.expect_txns(res.events, expected, role="server", pid=ng.worker_pid, name="nginx", exe=lib.NGINX, **common)
    ctx.info(hooked[0][:200])
