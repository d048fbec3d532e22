"""test_filters.py — configured port and process filters act in the kernel,
before any copy: filtered calls never become transactions."""
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
