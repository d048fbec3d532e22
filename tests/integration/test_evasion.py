"""test_evasion.py — requests shaped to slip past a capture (1-byte writes,
folded headers over many packets, writev with many iovecs, pipelining, a URL
past the capture prefix, odd-case methods and header names, HTTP/1.0 without
Host, a keep-alive connection idle past the agent's timeout): each one must
still be exactly one transaction on nginx's side and on the raw client's side.

The client is rawclient.py: it sends exactly the bytes chosen here and counts
every byte it wrote and read, so byte counts are compared exactly.
"""
import json
import subprocess
import time

import lib

RAWCLIENT = lib.HERE / "rawclient.py"
CAPTURE_PREFIX = 4096  # bytes copied per call (PHIWATCH_CAPTURE_BYTES)


def req(method, target, headers=(("Host", "localhost"),), version="HTTP/1.1"):
    head = f"{method} {target} {version}\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    return head + "\r\n"


def run_rawclient(ctx, port, connections, name="rawclient", wait=True):
    """Starts rawclient.py; with wait, returns (pid, per-connection results)."""
    plan = ctx.tmp / f"{name}.plan.json"
    out = ctx.tmp / f"{name}.out.jsonl"
    plan.write_text(json.dumps({"connections": connections}))
    p = lib.Proc([lib.PYTHON, RAWCLIENT, "--port", port, "--plan", plan, "--out", out],
                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if not wait:
        return p, out
    return finish_rawclient(p, out)


def finish_rawclient(p, out, timeout=lib.CLIENT_TIMEOUT):
    try:
        o, _ = p.popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.cleanup()
        raise lib.Fail(f"rawclient did not finish within {timeout} s")
    lib.check(p.popen.returncode == 0,
              f"rawclient exit {p.popen.returncode}: {o.decode(errors='replace').strip()[-400:]}")
    return p.pid, lib.parse_jsonl(out.read_bytes(), str(out))


def expectations(conns_out, requests):
    """requests: per connection, a list of dicts {method (as reported), target,
    request_bytes[, version, truncated, query_prefix]}; joined with the
    responses the client read, in order."""
    exp = []
    for c, reqs in zip(conns_out, requests):
        lib.check(len(c["responses"]) == len(reqs),
                  f"harness: connection {c['conn']} read {len(c['responses'])} responses "
                  f"for {len(reqs)} requests")
        lib.check(c["sent"] == sum(r["request_bytes"] for r in reqs),
                  f"harness: connection {c['conn']} sent {c['sent']} bytes, planned "
                  f"{sum(r['request_bytes'] for r in reqs)}")
        lib.check(c["received"] == sum(r["bytes"] for r in c["responses"]) and not c["leftover"],
                  f"harness: connection {c['conn']} read {c['received']} bytes, responses "
                  f"account for {sum(r['bytes'] for r in c['responses'])}")
        for r, resp in zip(reqs, c["responses"]):
            e = dict(r)
            e.update(status=resp["status"], response_bytes=resp["bytes"],
                     local_port=c["local_port"])
            exp.append(e)
    return exp


def txn_diff(t, e, common):
    """Field differences between transaction t and expectation e ([] if none)."""
    path, query = lib.split_target(e["target"])
    want = {
        "event.kind": "event",
        "process.pid": common["pid"],
        "process.name": common["name"],
        "source.ip": "127.0.0.1",
        "source.port": e["local_port"],
        "destination.ip": "127.0.0.1",
        "destination.port": common["port"],
        "tls.established": False,
        "http.version": e.get("version", "1.1"),
        "http.request.method": e["method"],
        "http.request.bytes": e["request_bytes"],
        "http.response.status_code": e["status"],
        "http.response.bytes": e["response_bytes"],
        "url.path": path,
        "phiwatch.role": common["role"],
    }
    if "truncated" in e:
        want["phiwatch.truncated"] = e["truncated"]
    bad = []
    for k, v in want.items():
        got = lib.get(t, k)
        if got is lib._MISSING:
            bad.append(f"{k} missing (want {v!r})")
        elif got != v or type(got) is not type(v):
            bad.append(f"{k}={got!r} want {v!r}")
    q = lib.get(t, "url.query")
    if "query_prefix" in e:
        if not (isinstance(q, str) and len(q) > 0 and e["query_prefix"].startswith(q)):
            bad.append(f"url.query={'missing' if q is lib._MISSING else repr(q[:40]) + '...'} "
                       f"is not a non-empty prefix of the real query")
    elif query is None and q is not lib._MISSING:
        bad.append(f"url.query={q!r} want absent")
    elif query is not None and q != query:
        bad.append(f"url.query={'missing' if q is lib._MISSING else repr(q)} want {query!r}")
    ts = lib.get(t, "@timestamp")
    if not isinstance(ts, str) or not lib.TIMESTAMP_RE.match(ts):
        bad.append(f"@timestamp={ts!r} not RFC 3339 µs")
    elif not common["t0_ns"] - lib.SLACK_NS <= lib.to_epoch_ns(ts) <= common["t1_ns"] + lib.SLACK_NS:
        bad.append(f"@timestamp={ts} outside the test window")
    return bad


def check_side(ctx, events, exp, *, port, role, pid, name, t0, t1):
    """Exactly len(exp) transactions of `role` for `pid` on the port, in order, each exact."""
    got = [t for t in events if lib.get(t, "phiwatch.role") == role
           and lib.get(t, "process.pid") == pid]
    common = dict(pid=pid, name=name, role=role, port=port, t0_ns=t0, t1_ns=t1)
    lines = "; ".join(lib.summary(t) + f" trunc={lib.get(t, 'phiwatch.truncated')}"
                      for t in got[:12])
    lib.check(len(got) == len(exp),
              f"{role} ({name} {pid}): {len(got)} transactions, want {len(exp)}: {lines}")
    problems = []
    for i, (t, e) in enumerate(zip(got, exp)):
        problems += [f"#{i} {e['method']} {e['target'][:40]}: {b}" for b in txn_diff(t, e, common)]
    lib.check(not problems, f"{role}: " + "; ".join(problems[:10]))
    return got


def evasion_case(ctx, connections, requests, config=None, between=None):
    """Runs nginx + agent + rawclient; asserts both sides. `between(client_proc,
    nginx)` runs while the client is running (for the idle case) and returns the
    source ports of its own unrelated traffic. Returns (res, exp, txns by role)."""
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.OPENSSL)
    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx, config=config).start()
    t0 = lib.now_ns()
    unrelated = set()
    if between:
        p, out = run_rawclient(ctx, ng.port, connections, wait=False)
        unrelated = between(p, ng)
        pid, conns_out = finish_rawclient(p, out)
    else:
        pid, conns_out = run_rawclient(ctx, ng.port, connections)
    t1 = lib.now_ns()
    time.sleep(0.2)  # let the last close reach the agent before it drains
    res = agent.stop()
    worker = ng.worker_pid
    ng.stop()
    exp = expectations(conns_out, requests)
    ctx.info("client saw: " + ", ".join(f"{e['method']} {e['target'][:32]} -> {e['status']} "
                                        f"req={e['request_bytes']} resp={e['response_bytes']}"
                                        for e in exp[:10]))
    ports = {e["local_port"] for e in exp}
    ours = [t for t in res.events if lib.get(t, "destination.port") == ng.port
            or lib.get(t, "source.port") in ports]
    for t in ours:
        ctx.info(f"txn: {lib.summary(t)} ver={lib.get(t, 'http.version')} "
                 f"trunc={lib.get(t, 'phiwatch.truncated')}")
    h = res.stats["http"]
    ctx.info(f"stats: drops {res.stats['drops_total']} {dict((k, v) for k, v in res.stats['drops'].items() if v)}, "
             f"garbage_bytes {h['garbage_bytes']}, resyncs {h['resyncs']}, "
             f"uncaptured_bytes {h['uncaptured_bytes']}, unanswered {h['unanswered_requests']}, "
             f"orphans {h['orphan_responses']}")
    # nginx first: it is the side the brief treats as the reference
    errors = []
    got = {}
    events = [t for t in res.events if lib.get(t, "source.port") not in unrelated]
    for role, rpid, name in (("server", worker, "nginx"), ("client", pid, "python3")):
        try:
            got[role] = check_side(ctx, events, exp, port=ng.port, role=role, pid=rpid,
                                   name=name, t0=t0, t1=t1)
        except lib.Fail as e:
            errors.append(str(e))
    lib.check(not errors, " || ".join(errors))
    return res, exp, got


# ------------------------------------------------------------------- cases

def test_evasion_bytewise(ctx):
    """One write() per byte with TCP_NODELAY (1 ms apart, so nginx reads the
    request in many pieces): on a fresh connection, whose first call carries a
    single byte, and on one whose first request was an ordinary write."""
    r1 = req("GET", "/fhir/Patient/1?a=b", (("Host", "localhost"), ("User-Agent", "raw")))
    first = req("GET", "/fhir/Patient/first")
    r2 = req("GET", "/fhir/Patient/1?a=c", (("Host", "localhost"), ("User-Agent", "raw")))
    evasion_case(ctx, [
        {"nodelay": True, "steps": [{"op": "bytewise", "data": r1, "gap_ms": 1},
                                    {"op": "read", "n": 1}]},
        {"nodelay": True, "steps": [{"op": "write", "data": first}, {"op": "read", "n": 1},
                                    {"op": "bytewise", "data": r2, "gap_ms": 1},
                                    {"op": "read", "n": 1}]}],
        [[{"method": "GET", "target": "/fhir/Patient/1?a=b", "request_bytes": len(r1),
           "truncated": False}],
         [{"method": "GET", "target": "/fhir/Patient/first", "request_bytes": len(first),
           "truncated": False},
          {"method": "GET", "target": "/fhir/Patient/1?a=c", "request_bytes": len(r2),
           "truncated": False}]])


def test_evasion_folded_header(ctx):
    """An obs-fold header continued over ten lines, each line its own write
    (5 ms apart). nginx rejects obs-fold with 400 as soon as it reads the first
    continuation line, before the rest of the request has arrived: the
    transaction still counts every request byte, all of which were captured."""
    lines = ["GET /fhir/Patient/2 HTTP/1.1\r\n", "Host: localhost\r\n", "X-Folded: part-one\r\n"]
    lines += [f" part-{i}\r\n" if i % 2 else f"\tpart-{i}\r\n" for i in range(2, 12)]
    lines += ["Accept: */*\r\n", "\r\n"]
    r = "".join(lines)
    res, exp, _ = evasion_case(ctx, [{"nodelay": True, "steps": [
        {"op": "chunks", "chunks": lines, "gap_ms": 5}, {"op": "read", "n": 1}]}],
        [[{"method": "GET", "target": "/fhir/Patient/2", "request_bytes": len(r),
           "truncated": False}]])
    ctx.info(f"nginx answered {exp[0]['status']} to a folded header")


def iov_split(data, n):
    """data cut into n iovecs of 1..3 bytes (sizes cycling 1, 2, 3; the rest in the last)."""
    sizes = [1 + i % 3 for i in range(n)]
    extra = len(data) - sum(sizes)
    assert extra >= 0, "request too short for the iovec plan"
    sizes[-1] += extra
    out, pos = [], 0
    for sz in sizes:
        out.append(data[pos:pos + sz])
        pos += sz
    return out


def padded_req(target, size):
    """A GET of exactly `size` bytes (an X-Pad header fills the difference)."""
    base = req("GET", target, (("Host", "localhost"), ("X-Pad", "")))
    return req("GET", target, (("Host", "localhost"), ("X-Pad", "p" * (size - len(base)))))


def test_evasion_writev(ctx):
    """os.writev with 64 iovecs of 1-3 bytes: (a) on a connection already
    carrying HTTP, (b) as the very first call on a new connection (first iovec
    1 byte: the socket is classified from it), (c) a 64-iovec POST moving 6 KiB,
    past the 4 KiB capture prefix. The kernel side copies up to its iovec bound
    and prefix and reports the rest as uncaptured: every transaction exists with
    exact byte counts, and says truncated exactly when bytes were not captured."""
    warm = req("GET", "/fhir/Patient/warm")
    ra = padded_req("/fhir/Patient/4?x=2", 128)
    rb = padded_req("/fhir/Patient/3?x=1", 128)
    iova, iovb = iov_split(ra, 64), iov_split(rb, 64)
    body = "".join(chr(ord("A") + i % 26) for i in range(6000))
    head = req("POST", "/fhir/Patient/5?x=3", (("Host", "localhost"), ("Content-Type", "text/plain"),
                                               ("Content-Length", str(len(body)))))
    iovc = iov_split(head[:80], 40)
    iovc[-1] += head[80:]
    iovc += [body[i * 250:(i + 1) * 250] for i in range(24)]
    lib.check(all(len(v) == 64 for v in (iova, iovb, iovc)) and "".join(iova) == ra
              and "".join(iovb) == rb and "".join(iovc) == head + body
              and max(map(len, iova + iovb)) <= 3 and len(iovb[0]) == 1, "harness: iovec plan")
    res, exp, got = evasion_case(ctx, [
        {"nodelay": True, "steps": [{"op": "write", "data": warm}, {"op": "read", "n": 1},
                                    {"op": "writev", "iov": iova}, {"op": "read", "n": 1}]},
        {"nodelay": True, "steps": [{"op": "writev", "iov": iovb}, {"op": "read", "n": 1}]},
        {"nodelay": True, "steps": [{"op": "writev", "iov": iovc}, {"op": "read", "n": 1}]}],
        [[{"method": "GET", "target": "/fhir/Patient/warm", "request_bytes": len(warm),
           "truncated": False},
          {"method": "GET", "target": "/fhir/Patient/4?x=2", "request_bytes": len(ra)}],
         [{"method": "GET", "target": "/fhir/Patient/3?x=1", "request_bytes": len(rb)}],
         [{"method": "POST", "target": "/fhir/Patient/5?x=3",
           "request_bytes": len(head) + len(body)}]])
    # nginx reads each request with plain read()s under 4 KiB: nothing uncaptured.
    bad = [lib.summary(t) for t in got["server"] if lib.get(t, "phiwatch.truncated") is not False]
    lib.check(not bad, f"server side truncated without a capture gap: {bad}")
    # (a), (b): 128 bytes in 64 iovecs; uncaptured only if the iovec bound is below 64
    iov_cut = res.stats["drops"].get("iov_limit", 0) > 0
    small = [got["client"][1], got["client"][2]]
    ctx.info(f"64-iovec writev of 128 bytes: iov_limit drops "
             f"{res.stats['drops'].get('iov_limit', 0)}, client-side truncated "
             f"{[lib.get(t, 'phiwatch.truncated') for t in small]}; 6 KiB writev: truncated "
             f"{lib.get(got['client'][3], 'phiwatch.truncated')}, uncaptured_bytes "
             f"{res.stats['http']['uncaptured_bytes']}")
    for t in small:
        lib.check(lib.get(t, "phiwatch.truncated") is iov_cut,
                  f"client side: truncated={lib.get(t, 'phiwatch.truncated')} but iov_limit drops "
                  f"say bytes were {'' if iov_cut else 'not '}left uncaptured: {lib.summary(t)}")
    t = got["client"][3]
    lib.check(lib.get(t, "phiwatch.truncated") is True,
              f"client side: a {len(head) + len(body)}-byte writev past the 4 KiB prefix "
              f"not marked truncated: {lib.summary(t)}")


def test_evasion_pipelined(ctx):
    """Ten requests in one write(): ten transactions, in order, each exact."""
    targets = [f"/fhir/Patient/p{i}" if i % 3 else f"/nothing/p{i}?k={i}" for i in range(10)]
    rs = [req("GET", t) for t in targets]
    evasion_case(ctx, [{"nodelay": True, "steps": [
        {"op": "write", "data": "".join(rs)}, {"op": "read", "n": 10}]}],
        [[{"method": "GET", "target": t, "request_bytes": len(r), "truncated": False}
          for t, r in zip(targets, rs)]])


def test_evasion_long_url(ctx):
    """A 6 KiB request-target in one write: past the 4 KiB capture prefix. The
    transaction exists, byte counts are exact, truncated is set, the path is kept
    and the query is a prefix of the real one."""
    query = "q=" + "".join(chr(ord("a") + i % 26) for i in range(6 * 1024))
    target = "/fhir/Patient/long?" + query
    r = req("GET", target)
    lib.check(len(r) > CAPTURE_PREFIX + 1024, "harness: request not past the prefix")
    evasion_case(ctx, [{"nodelay": True, "steps": [
        {"op": "write", "data": r}, {"op": "read", "n": 1}]}],
        [[{"method": "GET", "target": "/fhir/Patient/long", "query_prefix": query,
           "request_bytes": len(r), "truncated": True}]])


def test_evasion_odd_syntax(ctx):
    """`get` and `gEt` (nginx's real answer, the method reported upper-case),
    header names in odd case (hOsT, cOnTeNt-LeNgTh with a body), and HTTP/1.0
    without Host (http.version "1.0"), each on its own connection."""
    r1 = req("get", "/fhir/Patient/5")
    r2 = req("gEt", "/fhir/Patient/6?m=1")
    body = '{"a":1}'
    r3 = req("POST", "/fhir/Patient/7?h=1", (("hOsT", "localhost"), ("uSeR-aGeNt", "raw"),
                                              ("cOnTeNt-LeNgTh", str(len(body))),
                                              ("CONTENT-TYPE", "application/json"))) + body
    r4 = req("GET", "/fhir/Patient/8", (("HOST", "localhost"), ("connection", "KEEP-ALIVE")))
    r5 = req("GET", "/fhir/Patient/9?v=10", headers=(), version="HTTP/1.0")
    one = lambda r: {"nodelay": True, "steps": [{"op": "write", "data": r}, {"op": "read", "n": 1}]}
    res, exp, _ = evasion_case(ctx, [
        one(r1), one(r2),
        {"nodelay": True, "steps": [{"op": "write", "data": r3}, {"op": "read", "n": 1},
                                    {"op": "write", "data": r4}, {"op": "read", "n": 1}]},
        one(r5)],
        [[{"method": "GET", "target": "/fhir/Patient/5", "request_bytes": len(r1),
           "truncated": False}],
         [{"method": "GET", "target": "/fhir/Patient/6?m=1", "request_bytes": len(r2),
           "truncated": False}],
         [{"method": "POST", "target": "/fhir/Patient/7?h=1", "request_bytes": len(r3),
           "truncated": False},
          {"method": "GET", "target": "/fhir/Patient/8", "request_bytes": len(r4),
           "truncated": False}],
         [{"method": "GET", "target": "/fhir/Patient/9?v=10", "request_bytes": len(r5),
           "version": "1.0", "truncated": False}]])
    ctx.info(f"nginx answered {[e['status'] for e in exp[:2]]} to get/gEt")


def test_evasion_idle_keepalive(ctx):
    """idle_timeout_s=1: one request, 2.5 s of silence on that connection while
    unrelated traffic advances the agent's clock (its idle sweep runs), then a
    second request on the same connection: it must still be a transaction."""
    r1 = req("GET", "/fhir/Patient/10?idle=before")
    r2 = req("GET", "/fhir/Patient/11?idle=after")
    idle_mark = ctx.tmp / "idle.mark"
    go = ctx.tmp / "idle.go"

    def between(p, ng):
        deadline = time.monotonic() + 15
        while not idle_mark.exists():
            lib.check(time.monotonic() < deadline and p.popen.poll() is None,
                      "rawclient never reached its idle point")
            time.sleep(0.02)
        time.sleep(2.5)
        # unrelated traffic: a curl on its own connection, 2.5 s after our last byte
        _, curl = lib.run_curl(ctx, ng.port, ["/nothing/unrelated"], False)
        time.sleep(0.3)
        go.write_text("go")
        return {curl[0]["local_port"]}

    lib.require_tools(lib.CURL)
    res, exp, got = evasion_case(
        ctx, [{"nodelay": True, "steps": [
            {"op": "write", "data": r1}, {"op": "read", "n": 1},
            {"op": "mark", "path": str(idle_mark)},
            {"op": "wait_file", "path": str(go), "timeout": 20},
            {"op": "write", "data": r2}, {"op": "read", "n": 1}]}],
        [[{"method": "GET", "target": "/fhir/Patient/10?idle=before",
           "request_bytes": len(r1), "truncated": False},
          {"method": "GET", "target": "/fhir/Patient/11?idle=after",
           "request_bytes": len(r2), "truncated": False}]],
        config={"connections": {"idle_timeout_s": 1}}, between=between)
    ctx.info(f"conns: {res.stats['conns']}")
    lib.check(res.stats["conns"]["evicted_idle"] >= 1,
              f"the idle sweep never expired a connection: {res.stats['conns']}")
