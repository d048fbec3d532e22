"""test_thousand_keepalive.py — 1,000 calls over 20 keep-alive connections to
nginx: every call is reported exactly once, or the drop counters say why not."""
import collections

import lib

CONNS, PER_CONN = 20, 50
TEMPLATE = "/fhir/Patient/{i}"


def test_thousand_keepalive(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.PYTHON, lib.OPENSSL)
    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx).start()

    t0 = lib.now_ns()
    client_pid, sent = lib.run_pyclient(ctx, ng.port, tls=False,
                                        generate=f"{CONNS}x{PER_CONN}:{TEMPLATE}", timeout=120)
    t1 = lib.now_ns()
    res = agent.stop()
    worker = ng.worker_pid
    ng.stop()

    total = CONNS * PER_CONN
    lib.check(len(sent) == total and all(s["status"] == 200 for s in sent)
              and len({s["local_port"] for s in sent}) == CONNS,
              f"harness: client made {len(sent)} calls on "
              f"{len({s['local_port'] for s in sent})} connections")
    by_path = {s["path"]: s for s in sent}
    lib.check(len(by_path) == total, "harness: paths are not unique")

    server = lib.on_port(res.events, ng.port, "server")
    client = lib.on_port(res.events, ng.port, "client")
    drops = res.stats["drops_total"]
    paths = collections.Counter(lib.get(t, "url.path") for t in server)
    dup = {p: n for p, n in paths.items() if n > 1}
    unknown = [p for p in paths if p not in by_path]
    missing = total - len(paths)
    ctx.info(f"server-side {len(server)}/{total} ({len(paths)} distinct), "
             f"client-side {len(client)}/{total}, missing {missing}, "
             f"drops_total {drops} {res.stats['drops']}, events {res.stats['events']}, "
             f"{(t1 - t0) / 1e9:.2f} s of traffic")

    lib.check(not dup, f"duplicated server-side paths: {dict(list(dup.items())[:5])}")
    lib.check(not unknown, f"server-side paths never requested: {unknown[:5]}")
    lib.check(missing <= drops,
              f"{missing} calls missing on the server side but drops_total={drops}")

    # Every transaction that is there is exact.
    common = dict(pid=worker, name="nginx", exe=lib.NGINX, role="server", tls=False,
                  port=ng.port, t0_ns=t0, t1_ns=t1)
    problems = []
    for t in server:
        for b in lib.txn_problems(t, by_path[lib.get(t, "url.path")], common):
            problems.append(f"{lib.get(t, 'url.path')}: {b}")
    lib.check(not problems, f"{len(problems)} wrong fields: " + "; ".join(problems[:8]))

    # Per connection, the server-side order is the order the client sent.
    order = collections.defaultdict(list)
    for t in server:
        order[lib.get(t, "source.port")].append(lib.get(t, "url.path"))
    sent_order = collections.defaultdict(list)
    for s in sent:
        sent_order[s["local_port"]].append(s["path"])
    for port, got in order.items():
        want = [p for p in sent_order[port] if p in set(got)]
        lib.check(got == want, f"connection :{port}: server-side order differs from sent order")

    client_missing = total - len({lib.get(t, "url.path") for t in client})
    lib.check(all(lib.get(t, "process.pid") == client_pid for t in client),
              "client-side transactions with a pid other than the python client's")
    lib.check(missing + client_missing <= drops or client_missing == 0,
              f"{client_missing} calls missing on the client side, {missing} on the server "
              f"side, drops_total={drops}")
    lib.expect_unique_sequences(res.events)


test_thousand_keepalive.timeout = 300
