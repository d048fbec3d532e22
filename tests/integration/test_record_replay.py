"""test_record_replay.py — `phiwatch replay` of a --record capture prints
exactly (byte for byte) the transactions the live agent wrote."""
import lib

PLAIN = ["/fhir/Patient/7?_format=json", "/fhir/Patient/8"]
TLS = ["/fhir/Patient/9", "/missing?q=1"]


def test_record_replay(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL, lib.OPENSSL)
    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx, record=True).start()

    t0 = lib.now_ns()
    plain_pid, plain = lib.run_curl(ctx, ng.port, PLAIN, tls=False)
    tls_pid, tls = lib.run_curl(ctx, ng.tls_port, TLS, tls=True)
    t1 = lib.now_ns()
    res = agent.stop()
    worker = ng.worker_pid
    ng.stop()

    lib.check(res.raw, "the live events file is empty")
    for port, is_tls, pid, expected in ((ng.port, False, plain_pid, plain),
                                        (ng.tls_port, True, tls_pid, tls)):
        common = dict(port=port, tls=is_tls, t0_ns=t0, t1_ns=t1)
        lib.expect_txns(res.events, expected, role="server", pid=worker, name="nginx",
                        exe=lib.NGINX, **common)
        lib.expect_txns(res.events, expected, role="client", pid=pid, name="curl",
                        exe=lib.CURL, **common)

    lib.check(agent.record.exists() and agent.record.stat().st_size > 0,
              f"--record file {agent.record} missing or empty")
    out = lib.replay(agent.record)
    ctx.info(f"live {len(res.raw)} bytes / {len(res.events)} transactions, "
             f"record {agent.record.stat().st_size} bytes, replay {len(out)} bytes")
    if out != res.raw:
        live, rep = res.raw.split(b"\n"), out.split(b"\n")
        first = next((i for i, (a, b) in enumerate(zip(live, rep)) if a != b),
                     min(len(live), len(rep)))
        (ctx.tmp / "replay.out").write_bytes(out)
        raise lib.Fail(f"replay differs from the live events file at line {first + 1} "
                       f"({len(live) - 1} live lines, {len(rep) - 1} replayed): "
                       f"live {live[first][:160] if first < len(live) else b'EOF'!r} "
                       f"replay {rep[first][:160] if first < len(rep) else b'EOF'!r}")


test_record_replay.timeout = 180
