"""test_nginx.py — curl against a real nginx, plain and TLS, nginx started
before and after the agent: both sides of every call, exact values."""
import lib

# One keep-alive connection: query, no query, 404.
PATHS = ["/fhir/Patient/123?_format=json", "/fhir/Patient/456", "/nothing/here?x=1&y=two"]


def nginx_case(ctx, tls, nginx_first):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL, lib.OPENSSL)
    ng = lib.Nginx(ctx)
    agent = lib.Agent(ctx)
    if nginx_first:
        ng.start()
        agent.start()
    else:
        agent.start()
        ng.start()
    port = ng.tls_port if tls else ng.port

    t0 = lib.now_ns()
    curl_pid, expected = lib.run_curl(ctx, port, PATHS, tls)
    t1 = lib.now_ns()
    lib.check([e["status"] for e in expected] == [200, 200, 404],
              f"harness: nginx answered {[e['status'] for e in expected]}")

    res = agent.stop()
    worker = ng.worker_pid
    ng.stop()

    every = lib.on_port(res.events, port)
    ctx.info(f"{len(every)} transactions on :{port} ({len(res.events)} in file)")
    common = dict(port=port, tls=tls, t0_ns=t0, t1_ns=t1)
    lib.expect_txns(res.events, expected, role="server", pid=worker, name="nginx",
                    exe=lib.NGINX, **common)
    lib.expect_txns(res.events, expected, role="client", pid=curl_pid, name="curl",
                    exe=lib.CURL, **common)
    lib.check(len(every) == 2 * len(PATHS),
              f"{len(every)} transactions on :{port}, want {2 * len(PATHS)}: "
              + "; ".join(lib.summary(t) for t in every[:10]))
    lib.expect_unique_sequences(res.events)


def test_nginx_plain_before(ctx):
    nginx_case(ctx, tls=False, nginx_first=True)


def test_nginx_plain_after(ctx):
    nginx_case(ctx, tls=False, nginx_first=False)


def test_nginx_https_before(ctx):
    nginx_case(ctx, tls=True, nginx_first=True)


def test_nginx_https_after(ctx):
    nginx_case(ctx, tls=True, nginx_first=False)
