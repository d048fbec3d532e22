"""test_filters.py — configured port and process filters act in the kernel,
before any copy: filtered calls never become transactions."""
import shutil
import subprocess
from pathlib import Path

import lib

PATHS = ["/fhir/Patient/1", "/fhir/Patient/2"]


def test_port_filter(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL)
    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx, config={"capture": {"ports": [ng.port]}}).start()
    lib.run_curl(ctx, ng.port, PATHS, False)
    lib.run_curl(ctx, ng.tls_port, PATHS, True)
    res = agent.stop()
    ng.stop()
    plain = lib.on_port(res.events, ng.port)
    tls = lib.on_port(res.events, ng.tls_port)
    lib.check(len(plain) == 2 * len(PATHS), f"{len(plain)} transactions on the followed port, want {2 * len(PATHS)}")
    lib.check(not tls, f"{len(tls)} transactions on a port the config excludes")
    others = [t for t in res.events if lib.get(t, "destination.port") != ng.port]
    lib.check(not others, f"{len(others)} transactions on other ports: "
              + "; ".join(lib.summary(t) for t in others[:5]))
    ctx.info(f"port {ng.port}: {len(plain)} transactions; port {ng.tls_port}: 0")


def test_process_filter(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL)
    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx, config={"capture": {"exclude_comms": ["curl"]}}).start()
    lib.run_curl(ctx, ng.port, PATHS, False)
    lib.run_curl(ctx, ng.tls_port, PATHS, True)
    res = agent.stop()
    ng.stop()
    for port in (ng.port, ng.tls_port):
        got = lib.on_port(res.events, port)
        roles = sorted(lib.get(t, "phiwatch.role") for t in got)
        lib.check(roles == ["server"] * len(PATHS),
                  f":{port}: roles {roles}, want only nginx's side (curl is excluded)")
    ctx.info("curl excluded in the kernel; nginx's side of every call kept")


CLIENT = """
import http.client, ssl, sys
ctx = ssl._create_unverified_context()
print("ready " + ssl.OPENSSL_VERSION, flush=True)
sys.stdin.readline()
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx)
c.request("GET", sys.argv[2])
r = c.getresponse()
r.read()
print(r.status, flush=True)
"""


def test_excluded_process_libssl_not_probed(ctx):
    """An excluded process's own copy of libssl is never probed (its SSL calls cost it nothing); a watched
    process's own copy is hooked. Both run before the agent: the initial scan has looked at both by 'ready'."""
    lib.require_agent()
    lib.require_tools(lib.NGINX, "/usr/bin/python3")
    tmp = Path(ctx.tmp)
    script = tmp / "client.py"
    script.write_text(CLIENT)
    ng = lib.Nginx(ctx).start()
    procs = {}
    for name in ("pwexcluded", "pwwatched"):
        libdir = tmp / f"{name}-lib"
        libdir.mkdir()
        for so in ("libssl.so.3", "libcrypto.so.3"):
            shutil.copy(f"/lib/x86_64-linux-gnu/{so}", libdir / so)
        exe = tmp / name
        exe.symlink_to("/usr/bin/python3")
        env = dict(lib.clean_env(), LD_LIBRARY_PATH=str(libdir))
        p = lib.Proc([exe, script, ng.tls_port, f"/fhir/Patient/{name}"], env=env, stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE)
        lib.check(lib.read_line(p.popen, 20).startswith("ready"), f"{name} did not start")
        maps = Path(f"/proc/{p.pid}/maps").read_text()
        lib.check(str(libdir / "libssl.so.3") in maps, f"{name} does not map its own libssl copy")
        procs[name] = (p, libdir)
    agent = lib.Agent(ctx, config={"capture": {"exclude_comms": ["pwexcluded"]}}).start()
    for name, (p, _) in procs.items():
        out, _ = p.popen.communicate(b"go\n", timeout=20)
        lib.check(out.decode().split() == ["200"], f"{name}: {out!r}")
    res = agent.stop()
    ng.stop()
    hooked = [l for l in res.stderr if "TLS: hooked" in l]
    for name, (p, libdir) in procs.items():
        mine = [l for l in hooked if str(libdir) in l]
        if name == "pwexcluded":
            lib.check(not mine, f"the excluded process's libssl was probed: {mine}")
        else:
            lib.check(len(mine) == 1, f"the watched process's own libssl: {len(mine)} hooked lines, want 1")
        client = [t for t in lib.on_port(res.events, ng.tls_port, role="client") if lib.get(t, "process.pid") == p.pid]
        server = [t for t in lib.on_port(res.events, ng.tls_port, role="server")
                  if lib.get(t, "url.path") == f"/fhir/Patient/{name}"]
        lib.check(len(server) == 1 and lib.get(server[0], "http.response.status_code") == 200,
                  f"{name}: nginx's side {len(server)} transactions, want 1 with 200")
        want = 0 if name == "pwexcluded" else 1
        lib.check(len(client) == want, f"{name}: {len(client)} client transactions, want {want}")
        if want:
            lib.check(lib.get(client[0], "tls.established") is True, f"{name}: not seen through TLS")
    ctx.info("excluded process's own libssl left alone; the watched one's hooked and seen")
