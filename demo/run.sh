#!/usr/bin/env bash
# run.sh — `make demo`: phiwatch watching a local HTTPS FHIR-like API (nginx) while three normal users and one
# scraper call it; the alerts are shown as they arrive, then the counters and the API inventory. Root, < 60 s.
# Everything lives in one temp dir (nginx config, certificate, agent state) and is removed on exit or Ctrl-C;
# the agent follows only the demo's port and does not write to the host's syslog.
set -u

BUILD=${BUILD:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BIN=$REPO/$BUILD/phiwatch
[ "${BUILD#/}" != "$BUILD" ] && BIN=$BUILD/phiwatch
PY=/usr/bin/python3
NGINX=/usr/sbin/nginx
SECONDS_OF_TRAFFIC=${DEMO_SECONDS:-25}

say() { printf '\033[1mphiwatch demo:\033[0m %s\n' "$*"; }
die() { printf 'phiwatch demo: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (BPF programs and uprobes): sudo make demo"
[ -x "$BIN" ] || die "$BIN missing: build it with make"
for t in "$NGINX" /usr/bin/openssl "$PY"; do
	[ -x "$t" ] || die "$t not installed (make deps installs it)"
done

TMP=$(mktemp -d /tmp/phiwatch-demo.XXXXXX) || die "mktemp failed"
chmod 700 "$TMP"
NGINX_PID="" AGENT_PID="" TAIL_PID="" TRAFFIC_PID=""

# Ends what this script started, by pid, newest first; the agent gets SIGINT so it drains and detaches.
cleanup() {
	trap - EXIT INT TERM
	[ -n "$TRAFFIC_PID" ] && kill "$TRAFFIC_PID" 2>/dev/null
	if [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null; then
		kill -INT "$AGENT_PID" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$AGENT_PID" 2>/dev/null
	fi
	[ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null
	if [ -n "$NGINX_PID" ]; then
		kill -TERM "$NGINX_PID" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$NGINX_PID" 2>/dev/null
	fi
	wait 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT TERM

# A free loopback port, chosen by the kernel.
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

/usr/bin/openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
	-keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=localhost \
	-addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1 || die "openssl could not make a certificate"

mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
user root;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        default_type application/fhir+json;
        location = /fhir/metadata {
            return 200 '{"resourceType":"CapabilityStatement","status":"active","fhirVersion":"4.0.1"}';
        }
        location ~ "^/fhir/Patient/([A-Za-z0-9.-]{1,64})\$" {
            if (\$http_authorization = "") { return 401 '{"resourceType":"OperationOutcome"}'; }
            return 200 '{"resourceType":"Patient","id":"\$1","active":true,"name":[{"family":"Demo"}]}';
        }
        location = /fhir/Observation {
            if (\$http_authorization = "") { return 401 '{"resourceType":"OperationOutcome"}'; }
            return 200 '{"resourceType":"Bundle","type":"searchset","total":2}';
        }
        location / {
            return 404 '{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}';
        }
    }
}
EOF
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >"$TMP/nginx/stderr" 2>&1 &
NGINX_PID=$!
for _ in $(seq 100); do
	"$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
	kill -0 "$NGINX_PID" 2>/dev/null || die "nginx did not start: $(tail -3 "$TMP/nginx/stderr" "$TMP/nginx/error.log" 2>/dev/null)"
	sleep 0.1
done
say "nginx serves a FHIR-like API on https://127.0.0.1:$PORT (self-signed certificate, token required)"

# The agent: this port only, state and alerts in the temp dir, no syslog (the demo leaves no trace on the host).
cat >"$TMP/phiwatch.json" <<EOF
{ "state_dir": "$TMP/state", "capture": { "ports": [$PORT] }, "alerts": { "syslog": false } }
EOF
chmod 600 "$TMP/phiwatch.json"
: >"$TMP/alerts.jsonl"
say "starting the agent: $BIN run --config $TMP/phiwatch.json --alerts alerts.jsonl"
"$BIN" run --config "$TMP/phiwatch.json" --events "$TMP/events.jsonl" --alerts "$TMP/alerts.jsonl" \
	</dev/null >"$TMP/agent.stdout" 2>"$TMP/agent.stderr" &
AGENT_PID=$!
for _ in $(seq 300); do
	grep -q '^phiwatch: ready' "$TMP/agent.stderr" && break
	kill -0 "$AGENT_PID" 2>/dev/null || die "the agent stopped: $(tail -5 "$TMP/agent.stderr")"
	sleep 0.1
done
grep -q '^phiwatch: ready' "$TMP/agent.stderr" || die "the agent was not ready within 30 s: $(tail -3 "$TMP/agent.stderr")"
grep '^phiwatch: ready' "$TMP/agent.stderr"

# Alerts as they arrive: one line each (rule, severity, principal, the agent's own sentence). One process that
# follows the file itself, so that one kill by its pid ends it.
"$PY" -u - "$TMP/alerts.jsonl" <<'EOF' &
import json, sys, time
with open(sys.argv[1]) as f:
    buf = ""
    while True:
        chunk = f.readline()
        if not chunk:
            time.sleep(0.1)
            continue
        buf += chunk
        if not buf.endswith("\n"):
            continue
        line, buf = buf, ""
        try:
            a = json.loads(line)
        except ValueError:
            continue
        summary = "suppressed" in a.get("phiwatch", {}).get("evidence", {})
        print("%s %s %-24s sev=%s user=%-12s %s" % ("\033[33msummary\033[0m" if summary else "\033[1;31mALERT\033[0m  ",
              a.get("@timestamp", "")[11:19],
              a.get("rule", {}).get("name", "?"), a.get("event", {}).get("severity", "?"),
              a.get("user", {}).get("id", "-"), a.get("message", "")), flush=True)
EOF
TAIL_PID=$!

say "traffic for $SECONDS_OF_TRAFFIC s (demo/traffic.py):"
"$PY" "$HERE/traffic.py" --port "$PORT" --cafile "$TMP/cert.pem" --seconds "$SECONDS_OF_TRAFFIC" &
TRAFFIC_PID=$!
wait "$TRAFFIC_PID"
TRAFFIC_PID=""
sleep 1

say "stopping the agent (SIGINT: it drains, closes the audit segment, prints its counters)"
kill -INT "$AGENT_PID"
for _ in $(seq 100); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
wait "$AGENT_PID" 2>/dev/null
AGENT_PID=""
sleep 0.3
kill "$TAIL_PID" 2>/dev/null
TAIL_PID=""
"$PY" - "$TMP/agent.stderr" "$TMP/alerts.jsonl" <<'EOF'
import collections, json, sys
stats = {}
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("phiwatch: stats "):
        stats = json.loads(line[len("phiwatch: stats "):])
rules, summaries = collections.Counter(), 0
for line in open(sys.argv[2]):
    try:
        a = json.loads(line)
        if "suppressed" in a.get("phiwatch", {}).get("evidence", {}):
            summaries += 1
        else:
            rules[a["rule"]["name"]] += 1
    except (ValueError, KeyError, AttributeError):
        pass
print("phiwatch demo: %s transactions, %s drops, %d alerts (%s) and %d suppression summaries" % (
      stats.get("transactions", "?"), stats.get("drops_total", "?"), sum(rules.values()),
      ", ".join(f"{k} {v}" for k, v in sorted(rules.items())) or "none", summaries))
a = stats.get("audit", {})
print("phiwatch demo: audit trail: %s records written, %s synced, %s lost" % (a.get("records_written", "?"),
      a.get("records_synced", "?"), a.get("records_lost", "?")))
EOF

"$BIN" audit verify "$TMP/state/audit" | sed 's/^/phiwatch audit verify: /'
dumps=$(ls "$TMP/state/forensics" 2>/dev/null | grep -c '\.tar\.gz')
[ "$dumps" -gt 0 ] && say "$dumps forensic dumps written on severe alerts (transactions + pcap of what led to them): $(ls "$TMP/state/forensics" | grep '\.tar\.gz' | head -2 | tr '\n' ' ')"
if "$BIN" inventory --help >/dev/null 2>&1; then
	say "the API surface seen (phiwatch inventory):"
	"$BIN" inventory "$TMP/state/audit" 2>/dev/null
fi
say "done; removing $TMP"
