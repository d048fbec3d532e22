"""test_flood.py — more events than the agent can take: 8 client processes
hammer nginx for 3 s with unique request-targets while the agent, with a 1 MiB
ring buffer, is paused 100 ms in every 250 ms (a consumer falling behind).
Every call a client completed is, on each side, an exact transaction or
explained by a drop counter; nothing is invented, duplicated, mis-paired or
given another connection's addresses.

What the counters allow (agent-wide, per reason): each lost data event
(ringbuf_data), shed payload (payload_shed), lost call (args_map_full,
read_fault) or unfollowed socket (socks_map_full) damages at most one of these
sequential calls on one side, so
    sum over both sides of (missing + status-0 + wrong) <= those drops.
On nginx's side the accounting is exact: every generated call is a
server transaction (status 0 when its response was lost), or a request whose
payload was shed at a message start (http.requests_shed.server), or a request
event the ring could not take (lost_data_events.server_requests):
    generated == server transactions + requests_shed.server + lost server requests
"""
import collections
import json
import os
import signal
import subprocess
import threading
import time

from pathlib import Path

import lib

FLOOD = lib.HERE / "flood_client.py"
PROCS = 8
SECONDS = 3.0
PULSE_S = 0.25                 # the agent is paused once per pulse
CONN_MAX_PER_PROC = 2500       # bounds the connection count (ephemeral ports)
KEEPALIVE_MAX_PER_PROC = 8000
# drop reasons that can cost a call (payload_shed: event kept, payload not)
CALL_LOSS = ("ringbuf_data", "payload_shed", "args_map_full", "socks_map_full", "read_fault",
             "bad_records")


def run_flood(ctx, port, mode, max_per_proc, per_conn=50):
    procs = []
    for k in range(PROCS):
        out = ctx.tmp / f"flood{k}.jsonl"
        p = lib.Proc([lib.PYTHON, FLOOD, "--port", port, "--tag", f"{mode[0]}{k}",
                      "--seconds", SECONDS, "--max", max_per_proc, "--mode", mode,
                      "--per-conn", per_conn, "--out", out],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append((p, out))
    calls, failed, conns = [], 0, 0
    for p, out in procs:
        try:
            _, err = p.popen.communicate(timeout=SECONDS + 60)
        except subprocess.TimeoutExpired:
            p.cleanup()
            raise lib.Fail(f"flood client {p.pid} did not finish")
        lib.check(p.popen.returncode == 0,
                  f"flood client exit {p.popen.returncode}: {err.decode(errors='replace')[-300:]}")
        rows = lib.parse_jsonl(out.read_bytes(), str(out))
        lib.check(rows and "summary" in rows[-1], f"{out.name}: no summary line")
        s = rows[-1]["summary"]
        failed += s["failed"]
        conns += s["connections"]
        for r in rows[:-1]:
            r["pid"] = p.pid
            calls.append(r)
    return calls, failed, conns


def classify(events, calls, port, role, worker):
    """Per generated call, its `role` transaction is: exact; status0 (reported
    unanswered); noaddr (right values, addresses unknown: announcement lost);
    stale (right values, another connection's addresses); wrong (status, bytes or
    pid differ); missing. Also returns the paths reported more than once."""
    by_path = {c["path"]: c for c in calls}
    mine = collections.defaultdict(list)
    for t in events:
        if lib.get(t, "phiwatch.role") == role:
            p = lib.get(t, "url.path")
            if p in by_path:
                mine[p].append(t)
    out = collections.Counter()
    examples = collections.defaultdict(list)
    for c in calls:
        ts = mine.get(c["path"], [])
        if not ts:
            out["missing"] += 1
            continue
        t = ts[0]
        pid = worker if role == "server" else c["pid"]
        status = lib.get(t, "http.response.status_code")
        right = (status == c["status"] and lib.get(t, "process.pid") == pid
                 and lib.get(t, "http.request.bytes") == c["request_bytes"]
                 and lib.get(t, "http.response.bytes") == c["response_bytes"]
                 and lib.get(t, "http.request.method") == "GET"
                 and lib.get(t, "tls.established") is False)
        addrs = (lib.get(t, "destination.port"), lib.get(t, "source.port"))
        if status == 0:
            kind = "status0"
        elif not right:
            kind = "wrong"
        elif addrs == (port, c["local_port"]):
            kind = "exact"
        elif addrs == (0, 0):
            kind = "noaddr"
        else:
            kind = "stale"
        out[kind] += 1
        if kind != "exact" and len(examples[kind]) < 3:
            examples[kind].append(f"{c['path']} (real {c['status']} resp={c['response_bytes']}): "
                                  + lib.summary(t))
    dup = {p: len(ts) for p, ts in mine.items() if len(ts) > 1}
    return out, dup, examples


def flood_case(ctx, mode, pause_s, max_per_proc):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.OPENSSL)
    ng = lib.Nginx(ctx).start()
    alerts = Path(ctx.tmp) / "alerts.jsonl"
    agent = lib.Agent(ctx, config={"capture": {"ringbuf_mb": 1}, "alerts": {"syslog": False}},
                      extra_args=["--alerts", str(alerts)]).start()
    t0 = time.monotonic()
    # A consumer that falls behind: the agent (our own child, by pid) is
    # stopped for pause_s out of every PULSE_S while the clients run, so the
    # 1 MiB ring overflows in many separate bursts (losses start and end
    # mid-connection, where pairing mistakes would show).
    state = {"stopped": False, "pulses": 0, "first_pause_ns": None}
    done = threading.Event()

    def pulse():
        for _ in range(int((SECONDS + 30) / PULSE_S)):
            if done.wait(PULSE_S - pause_s):
                return
            if state["first_pause_ns"] is None:
                state["first_pause_ns"] = time.time_ns()
            os.kill(agent.popen.pid, signal.SIGSTOP)
            state["stopped"] = True
            time.sleep(pause_s)
            os.kill(agent.popen.pid, signal.SIGCONT)
            state["stopped"] = False
            state["pulses"] += 1

    th = threading.Thread(target=pulse, daemon=True)
    if pause_s:
        th.start()
    try:
        calls, failed, conns = run_flood(ctx, ng.port, mode, max_per_proc)
    finally:
        done.set()
        if pause_s:
            th.join(pause_s + 5)
        if state["stopped"]:
            os.kill(agent.popen.pid, signal.SIGCONT)
    elapsed = time.monotonic() - t0
    time.sleep(0.3)
    res = agent.stop()
    worker = ng.worker_pid
    ng.stop()

    st = res.stats
    drops = st["drops"]
    if pause_s and st["drops_total"]:
        # the loss is an alert within about a second, and a gap in the audit chain
        loss = [json.loads(l) for l in alerts.read_text().splitlines()
                if json.loads(l)["rule"]["name"] == "capture_loss"]
        lib.check(loss, "drops counted but no capture_loss alert")
        first = min(lib.to_epoch_ns(a["@timestamp"]) for a in loss)
        delay = (first - state["first_pause_ns"]) / 1e9
        lib.check(delay <= 2.0, f"capture_loss alert {delay:.2f} s after the first overload began")
        gaps = subprocess.run([str(lib.PHIWATCH), "audit", "query", str(agent.state_dir / "audit"), "--gaps"],
                              capture_output=True, text=True, timeout=60).stdout
        lib.check("capture_drop" in gaps, "no capture_drop gap record in the audit chain")
        ctx.info(f"capture_loss alert {delay:.2f} s after the first pause; {len(loss)} alert line(s); "
                 f"gap records in the audit chain")
    h = st["http"]
    gen = len(calls)
    lib.check(len({c["path"] for c in calls}) == gen, "harness: request-targets not unique")
    lib.check(gen > 1000, f"harness: only {gen} calls completed in {elapsed:.1f} s")
    ctx.info(f"{mode}: {PROCS} clients, {elapsed:.1f} s, agent paused {state['pulses']}x "
             f"{pause_s * 1000:.0f} ms: generated {gen} calls on {conns} "
             f"connections ({failed} failed), events {st['events']}, transactions {st['transactions']}")
    ctx.info(f"drops {st['drops_total']}: " + json.dumps({k: v for k, v in drops.items() if v}))
    ctx.info("http: " + json.dumps(h) + " conns: " + json.dumps(st["conns"]))

    damaged = 0
    problems = []
    for role in ("server", "client"):
        kinds, dup, ex = classify(res.events, calls, ng.port, role, worker)
        ctx.info(f"{role}: " + ", ".join(f"{k} {kinds[k]}" for k in
                                         ("exact", "status0", "noaddr", "stale", "wrong",
                                          "missing")))
        for k, lines in ex.items():
            for line in lines:
                ctx.info(f"  {role} {k}: {line}")
        if dup:
            problems.append(f"{role}: {len(dup)} calls reported more than once, e.g. "
                            f"{list(dup.items())[:3]}")
        lib.check(sum(kinds.values()) == gen, "internal: classification lost calls")
        damaged += kinds["missing"] + kinds["status0"] + kinds["wrong"]
        if kinds["noaddr"] and not drops["ringbuf_meta"]:
            problems.append(f"{role}: {kinds['noaddr']} calls without addresses but no "
                            f"connection announcement was lost")
        if kinds["stale"]:
            problems.append(f"{role}: {kinds['stale']} transactions carry another connection's "
                            f"addresses (close and announcement lost: fd reuse)")
        if kinds["wrong"]:
            problems.append(f"{role}: {kinds['wrong']} transactions with the wrong status or "
                            f"bytes (a lost event mis-paired requests and responses)")
    loss = sum(drops.get(k, 0) for k in CALL_LOSS)
    ctx.info(f"accounting: missing+status0+wrong over both sides = {damaged} <= "
             f"call-losing drops {loss} ({' + '.join(f'{k} {drops.get(k, 0)}' for k in CALL_LOSS)})")
    if damaged > loss:
        problems.append(f"{damaged} calls missing or damaged over both sides but only {loss} "
                        f"call-losing drops counted")
    # With the per-socket loss counters (informational, not a bound): a lost
    # event seen as a sequence gap, or a shed payload at a message boundary, is
    # in requests_lost/responses_lost; a lost event with no later event on its
    # socket and direction (a connection's tail, or all of it) is only in
    # ringbuf_data - lost_events; a run of shed payloads is counted once (the
    # parser is resynchronising after the first), so no exact identity holds.
    if "requests_lost" in h:
        tail = drops["ringbuf_data"] - h["lost_events"]
        ctx.info(f"per-socket counters: requests_lost {h['requests_lost']}, responses_lost "
                 f"{h['responses_lost']}, lost_events {h['lost_events']} (of ringbuf_data "
                 f"{drops['ringbuf_data']}: {tail} never seen as a gap), orphan_responses "
                 f"{h['orphan_responses']}, unanswered_requests {h['unanswered_requests']}")
        if tail < 0:
            problems.append(f"lost_events {h['lost_events']} > ringbuf_data {drops['ringbuf_data']}")
    # Exact identity on the serving side (each call is one request read by nginx).
    server_txns = len(lib.on_port(res.events, ng.port, "server"))
    shed = h["requests_shed"]["server"]
    lost = st["lost_data_events"]["server_requests"]
    ctx.info(f"exact accounting (server): generated {gen} == transactions {server_txns} + shed {shed} "
             f"+ lost {lost} = {server_txns + shed + lost}")
    if gen != server_txns + shed + lost:
        problems.append(f"server accounting: generated {gen} != transactions {server_txns} + requests shed "
                        f"{shed} + request events lost {lost}")
    lib.check(st["drops_total"] > 0, "no drops: the flood did not overrun the ring buffer")
    lib.check(not problems, " | ".join(problems))
    lib.expect_unique_sequences(res.events)


def test_flood_connections(ctx):
    """One call per connection: the accounting inequality must hold."""
    flood_case(ctx, "conn", pause_s=0.1, max_per_proc=CONN_MAX_PER_PROC)


def test_flood_keepalive(ctx):
    """50 calls per keep-alive connection, alternating 200 and 404 targets: a
    lost event must not shift responses onto the wrong requests."""
    flood_case(ctx, "keepalive", pause_s=0.1, max_per_proc=KEEPALIVE_MAX_PER_PROC)


test_flood_connections.timeout = 90
test_flood_keepalive.timeout = 90
