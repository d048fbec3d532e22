"""lib.py — helpers for phiwatch integration tests: the agent, nginx, python
TLS servers/clients and curl as real processes, plus exact transaction checks.

Not a test framework: run.py discovers and runs tests; this module only starts
and stops things and compares what the agent wrote with what really happened.
Every wait here is bounded in time and count, and every process started here
is registered so cleanup_all() can end it (by its own pid) on any failure.
"""
import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# PHIWATCH_BIN overrides the binary (used by selfcheck.py to exercise the
# runner with a stand-in agent); the default is the contract: build/phiwatch.
PHIWATCH = Path(os.environ.get("PHIWATCH_BIN") or REPO / "build" / "phiwatch")
PYTHON = "/usr/bin/python3"
NGINX = "/usr/sbin/nginx"
CURL = "/usr/bin/curl"
OPENSSL = "/usr/bin/openssl"
BTF = "/sys/kernel/btf/vmlinux"

READY_TIMEOUT = 30      # s: agent "phiwatch: ready" on stderr
STOP_TIMEOUT = 30       # s: agent exit after SIGINT
CLIENT_TIMEOUT = 60     # s: one curl / python client run
SLACK_NS = 2_000_000_000  # @timestamp may be off by this much (clock conversion)

TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Skip(Exception):
    """The environment cannot run this test (run.py turns it into FAIL under CI=true)."""


class Fail(AssertionError):
    """The test ran and something is wrong; the message is the one-line reason."""


def check(cond, msg):
    if not cond:
        raise Fail(msg)


# ---------------------------------------------------------------- environment

def require_agent():
    """Skip unless this host can run the agent: root, BTF, build/phiwatch."""
    if os.geteuid() != 0:
        raise Skip("not root")
    if not os.path.exists(BTF):
        raise Skip(f"no {BTF}")
    if not (PHIWATCH.is_file() and os.access(PHIWATCH, os.X_OK)):
        raise Skip(f"{PHIWATCH} missing (build it with make)")


def require_tools(*paths):
    for p in paths:
        if not (os.path.isfile(p) and os.access(p, os.X_OK)):
            raise Skip(f"{p} not installed")


def clean_env():
    """Environment for every child: no proxies, no stray python settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy")
           and k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "SSLKEYLOGFILE",
                         "CURL_HOME", "SSL_CERT_FILE")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["LC_ALL"] = "C"
    return env


def free_ports(n=1):
    """n distinct loopback TCP ports that were free a moment ago."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def wait_port(port, timeout=10.0, host="127.0.0.1"):
    """True once host:port accepts a TCP connection (no bytes are sent)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return False


def make_cert(tmp):
    """Self-signed cert/key for CN=localhost, SAN 127.0.0.1; returns (cert, key)."""
    require_tools(OPENSSL)
    cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    r = subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30, env=clean_env())
    if r.returncode != 0:
        raise Fail(f"openssl req failed: {r.stderr.decode(errors='replace').strip()[-300:]}")
    return cert, key


def proc_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rindex(")") + 2:].split()[0] not in ("Z", "X")


def children_of(ppid):
    """pids whose parent is ppid (scan /proc: CONFIG_PROC_CHILDREN may be off)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        if int(fields[1]) == ppid and fields[0] not in ("Z", "X"):
            out.append(int(d))
    return sorted(out)


def wait_gone(pids, timeout=10.0):
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        left = [p for p in pids if proc_alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)
    return [p for p in pids if proc_alive(p)]


def comm_of(binary):
    """The comm (process.name) a process started from `binary` gets."""
    return os.path.basename(binary)[:15]


# ------------------------------------------------------------ process registry

_live = []


def register(obj):
    """obj.cleanup() will be called by cleanup_all(); it must be idempotent."""
    _live.append(obj)
    return obj


def cleanup_all():
    """End everything this test started, newest first; never raises."""
    errors = []
    while _live:
        obj = _live.pop()
        try:
            obj.cleanup()
        except Exception as e:  # keep cleaning the rest
            errors.append(f"{type(obj).__name__}: {e}")
    return errors


def _stop_popen(p, sig=signal.SIGTERM, timeout=10.0):
    """Signal a Popen by its pid, wait, SIGKILL if it does not exit."""
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
    except ProcessLookupError:
        pass


class Proc:
    """A plain registered child process (servers, helpers)."""

    def __init__(self, args, **kw):
        kw.setdefault("env", clean_env())
        kw.setdefault("stdin", subprocess.DEVNULL)
        self.args = [str(a) for a in args]
        self.popen = subprocess.Popen(self.args, **kw)
        self.pid = self.popen.pid
        register(self)

    def cleanup(self):
        _stop_popen(self.popen)


# ---------------------------------------------------------------------- agent

class AgentResult:
    def __init__(self, events, raw, stats, stderr):
        self.events = events    # list of dicts, file order
        self.raw = raw          # bytes of the --events file
        self.stats = stats      # dict from "phiwatch: stats {...}"
        self.stderr = stderr    # list of stderr lines


class Agent:
    """build/phiwatch run --events FILE [--record FILE], foreground, as root."""

    def __init__(self, ctx, record=False, name="agent", config=None, extra_args=()):
        self.tmp = Path(ctx.tmp)
        # Each agent keeps its state (audit trail, host secret) in the
        # test's own directory, never the host's /var/lib/phiwatch.
        self.state_dir = self.tmp / f"{name}.state"
        config = dict(config or {})
        config.setdefault("state_dir", str(self.state_dir))
        config.setdefault("control", {"socket": str(self.tmp / f"{name}.control.sock")})
        self.control = Path(config["control"]["socket"])
        self.config = self.tmp / f"{name}.config.json"
        self.config.write_text(json.dumps(config))
        self.extra_args = list(extra_args)
        self.events = self.tmp / f"{name}.events.jsonl"
        self.record = self.tmp / f"{name}.record" if record else None
        self.stderr_log = self.tmp / f"{name}.stderr"
        self.stdout_log = self.tmp / f"{name}.stdout"
        self.lines = []
        self.ready = threading.Event()
        self.popen = None
        self.reader = None
        self.result = None

    def start(self, timeout=READY_TIMEOUT):
        args = [str(PHIWATCH), "run", "--events", str(self.events)] + self.extra_args
        if self.config:
            args += ["--config", str(self.config)]
        if self.record:
            args += ["--record", str(self.record)]
        with open(self.stdout_log, "wb") as out:
            self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.PIPE, env=clean_env(),
                                          cwd=str(self.tmp))
        register(self)
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()
        t0 = time.monotonic()
        deadline = t0 + timeout
        for _ in range(int(timeout / 0.1) + 2):
            if self.ready.wait(0.1):
                print(f"agent ready in {time.monotonic() - t0:.2f} s (pid {self.popen.pid})",
                      flush=True)
                return self
            if self.popen.poll() is not None:
                self.reader.join(2)
                raise Fail(f"agent exited rc={self.popen.returncode} before ready: "
                           f"{self.tail()}")
            if time.monotonic() >= deadline:
                break
        raise Fail(f"agent not ready within {timeout} s: {self.tail()}")

    def _read_stderr(self):
        with open(self.stderr_log, "w") as log:
            for raw in iter(self.popen.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.lines.append(line)
                log.write(line + "\n")
                log.flush()
                if line.startswith("phiwatch: ready"):
                    self.ready.set()

    def tail(self, n=8):
        return " | ".join(self.lines[-n:]) or "(no stderr)"

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGINT, wait for exit 0, parse the stats line and the events file."""
        p = self.popen
        if p.poll() is not None:
            raise Fail(f"agent died during the test rc={p.returncode}: {self.tail()}")
        p.send_signal(signal.SIGINT)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
            raise Fail(f"agent did not exit within {timeout} s of SIGINT: {self.tail()}")
        self.reader.join(10)
        check(rc == 0, f"agent exit status {rc} after SIGINT: {self.tail()}")
        lines = [l for l in self.lines if l.strip()]
        check(lines and lines[-1].startswith("phiwatch: stats "),
              f"last stderr line is not 'phiwatch: stats {{...}}': {self.tail(3)}")
        try:
            stats = json.loads(lines[-1][len("phiwatch: stats "):])
        except ValueError as e:
            raise Fail(f"stats line is not JSON ({e}): {lines[-1][:300]}")
        check_stats(stats)
        check(self.events.exists(), f"agent wrote no events file {self.events}")
        raw = self.events.read_bytes()
        events = parse_jsonl(raw, str(self.events))
        check(stats["transactions"] == len(events),
              f"stats.transactions={stats['transactions']} but {self.events.name} "
              f"has {len(events)} lines")
        print(f"agent stats: {json.dumps(stats, sort_keys=True)}", flush=True)
        self.result = AgentResult(events, raw, stats, list(self.lines))
        return self.result

    def cleanup(self):
        _stop_popen(self.popen, signal.SIGINT, timeout=STOP_TIMEOUT)


def check_stats(stats):
    check(isinstance(stats, dict), "stats is not an object")
    for k in ("events", "transactions", "drops_total"):
        check(_is_int(stats.get(k)) and stats[k] >= 0, f"stats.{k} missing or not a count: {stats}")
    drops = stats.get("drops")
    check(isinstance(drops, dict) and all(isinstance(k, str) and _is_int(v) and v >= 0
                                          for k, v in drops.items()),
          f"stats.drops is not {{reason: count}}: {drops}")
    check(sum(drops.values()) == stats["drops_total"],
          f"stats.drops_total={stats['drops_total']} != sum(stats.drops)={sum(drops.values())}")


def parse_jsonl(raw, name):
    events = []
    if raw and not raw.endswith(b"\n"):
        raise Fail(f"{name}: last line not terminated by a newline")
    for no, line in enumerate(raw.split(b"\n")[:-1] if raw else [], 1):
        try:
            obj = json.loads(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise Fail(f"{name}:{no}: not a JSON line ({e}): {line[:200]!r}")
        check(isinstance(obj, dict), f"{name}:{no}: not a JSON object")
        events.append(obj)
    return events


def replay(record, timeout=60):
    """build/phiwatch replay FILE -> stdout bytes (exit status must be 0)."""
    r = subprocess.run([str(PHIWATCH), "replay", str(record)], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, env=clean_env())
    check(r.returncode == 0, f"phiwatch replay exit {r.returncode}: "
          f"{r.stderr.decode(errors='replace').strip()[-300:]}")
    return r.stdout


# ---------------------------------------------------------------------- nginx

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location /fhir/Patient/ {{
            default_type application/json;
            return 200 '{{"resourceType":"Patient","id":"example","active":true}}';
        }}
        location / {{
            default_type application/json;
            return 404 '{{"error":"not found"}}';
        }}
    }}
}}
"""


class Nginx:
    """nginx with its own config in a temp prefix: plain `port`, TLS `tls_port`."""

    def __init__(self, ctx, cert_key=None):
        require_tools(NGINX)
        self.tmp = Path(ctx.tmp) / "nginx"
        self.tmp.mkdir(exist_ok=True)
        self.cert, self.key = cert_key or make_cert(ctx.tmp)
        self.port, self.tls_port = free_ports(2)
        self.conf = self.tmp / "nginx.conf"
        self.popen = None
        self.master_pid = None
        self.worker_pid = None

    def start(self, timeout=10.0):
        self.conf.write_text(NGINX_CONF.format(tmp=self.tmp, port=self.port,
                                               tls_port=self.tls_port,
                                               cert=self.cert, key=self.key))
        log = open(self.tmp / "stderr", "wb")
        self.popen = subprocess.Popen(
            [NGINX, "-p", str(self.tmp), "-c", str(self.conf), "-e", str(self.tmp / "error.log")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=clean_env())
        log.close()
        self.master_pid = self.popen.pid
        register(self)
        ok = wait_port(self.port, timeout) and wait_port(self.tls_port, timeout)
        if not ok or self.popen.poll() is not None:
            raise Fail(f"nginx not listening on {self.port}/{self.tls_port}: {self.errors()}")
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):
            kids = children_of(self.master_pid)
            if len(kids) == 1:
                self.worker_pid = kids[0]
                break
            if time.monotonic() >= deadline:
                raise Fail(f"nginx master {self.master_pid} has workers {kids}, want one")
            time.sleep(0.05)
        print(f"nginx master {self.master_pid} worker {self.worker_pid} "
              f"plain :{self.port} tls :{self.tls_port}", flush=True)
        return self

    def errors(self):
        out = []
        for f in ("stderr", "error.log"):
            p = self.tmp / f
            if p.exists():
                out += [l for l in p.read_text(errors="replace").splitlines()
                        if "[emerg]" in l or "[alert]" in l or "[crit]" in l or f == "stderr"]
        return " | ".join(out[-5:]) or "(nothing logged)"

    def stop(self, timeout=10.0):
        """Fast shutdown (SIGTERM to the master), then make sure the worker is gone."""
        _stop_popen(self.popen, signal.SIGTERM, timeout)
        left = wait_gone([p for p in (self.master_pid, self.worker_pid) if p], 5)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return wait_gone(left, 5)

    cleanup = stop


# --------------------------------------------------------- python server/client

class PyServer:
    """pyserver.py: ThreadingHTTPServer (TLS unless plain), logs every request's
    exact plaintext byte counts to a JSONL file."""

    def __init__(self, ctx, tls=True, cert_key=None, name="pyserver"):
        self.tmp = Path(ctx.tmp)
        self.tls = tls
        self.log = self.tmp / f"{name}.log.jsonl"
        self.name = name
        self.cert, self.key = (cert_key or make_cert(ctx.tmp)) if tls else (None, None)
        self.proc = None
        self.port = None
        self.pid = None

    def start(self, timeout=15.0):
        args = [PYTHON, HERE / "pyserver.py", "--log", self.log]
        args += ["--cert", self.cert, "--key", self.key] if self.tls else ["--plain"]
        err = open(self.tmp / f"{self.name}.stderr", "wb")
        self.proc = Proc(args, stdout=subprocess.PIPE, stderr=err)
        err.close()
        self.pid = self.proc.pid
        line = read_line(self.proc.popen, timeout)
        if not line.startswith("PORT "):
            raise Fail(f"pyserver did not print its port: {line!r} "
                       f"{(self.tmp / (self.name + '.stderr')).read_text(errors='replace')[-300:]}")
        self.port = int(line.split()[1])
        print(f"pyserver pid {self.pid} {'tls' if self.tls else 'plain'} :{self.port}", flush=True)
        return self

    def stop(self):
        self.proc.cleanup()
        check(self.proc.popen.returncode == 0,
              f"pyserver exit {self.proc.popen.returncode}: "
              f"{(self.tmp / (self.name + '.stderr')).read_text(errors='replace')[-300:]}")
        return parse_jsonl(self.log.read_bytes() if self.log.exists() else b"", str(self.log))


def read_line(popen, timeout):
    """First line of popen.stdout within timeout ('' on EOF/timeout)."""
    fd = popen.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    for _ in range(10000):
        left = deadline - time.monotonic()
        if left <= 0 or b"\n" in buf:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0].decode(errors="replace")


def run_pyclient(ctx, port, tls, plan=None, generate=None, cafile=None, name="pyclient",
                 timeout=CLIENT_TIMEOUT):
    """Run pyclient.py as its own process; returns (pid, results).

    plan: list of connections, each a list of {"method","path"[,"body","headers"]};
    generate: "CxN:/template/{i}". results: one dict per request, in plan order,
    with the exact plaintext request_bytes/response_bytes the client wrote/read.
    """
    tmp = Path(ctx.tmp)
    out = tmp / f"{name}.out.jsonl"
    args = [PYTHON, HERE / "pyclient.py", "--port", port, "--out", out]
    if tls:
        args += ["--tls"] + (["--cafile", cafile] if cafile else [])
    if plan is not None:
        pf = tmp / f"{name}.plan.json"
        pf.write_text(json.dumps(plan))
        args += ["--plan", pf]
    if generate:
        args += ["--generate", generate]
    p = Proc(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        o, _ = p.popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.cleanup()
        raise Fail(f"pyclient did not finish within {timeout} s")
    check(p.popen.returncode == 0,
          f"pyclient exit {p.popen.returncode}: {o.decode(errors='replace').strip()[-400:]}")
    return p.pid, parse_jsonl(out.read_bytes(), str(out))


CURL_W = "%{size_request} %{size_header} %{size_download} %{http_code} %{local_port} %{num_connects}\\n"


def run_curl(ctx, port, paths, tls, timeout=CLIENT_TIMEOUT):
    """One curl process fetching all paths on one keep-alive connection.

    Returns (pid, results) with, per URL, the request bytes curl sent and the
    response bytes it read (head + body), status and local port. Fails if curl
    did not reuse its single connection.
    """
    require_tools(CURL)
    scheme = "https" if tls else "http"
    args = [CURL, "-q", "-s", "--http1.1", "--noproxy", "*", "--max-time", str(timeout - 5),
            "-w", CURL_W.replace("\\n", "\n")]
    if tls:
        args.append("-k")
    for path in paths:
        args += ["-o", "/dev/null", f"{scheme}://127.0.0.1:{port}{path}"]
    p = Proc(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        o, e = p.popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.cleanup()
        raise Fail(f"curl did not finish within {timeout} s")
    check(p.popen.returncode == 0, f"curl exit {p.popen.returncode}: {e.decode(errors='replace')}")
    lines = o.decode().splitlines()
    check(len(lines) == len(paths), f"curl -w printed {len(lines)} lines for {len(paths)} URLs")
    results = []
    for path, line in zip(paths, lines):
        req, hdr, body, code, lport, nconn = (int(x) for x in line.split())
        results.append({"method": "GET", "path": path, "status": code, "request_bytes": req,
                        "response_bytes": hdr + body, "local_port": lport,
                        "num_connects": nconn})
    check([r["num_connects"] for r in results] == [1] + [0] * (len(paths) - 1)
          and len({r["local_port"] for r in results}) == 1,
          f"curl did not keep one connection alive: {results}")
    return p.pid, results


# ---------------------------------------------------------- transaction checks

_MISSING = object()


def get(obj, dotted):
    """Nested ECS lookup: get(t, 'http.request.method'); '@timestamp' is top-level."""
    if dotted.startswith("@"):
        return obj.get(dotted, _MISSING)
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def split_target(target):
    path, sep, query = target.partition("?")
    return path, (query if sep else None)


def summary(t):
    """One short line describing a transaction, for failure messages."""
    g = lambda k: get(t, k) if get(t, k) is not _MISSING else "?"
    q = get(t, "url.query")
    return (f"[{g('event.sequence')}] {g('phiwatch.role')} pid={g('process.pid')} "
            f"{g('http.request.method')} {g('url.path')}{'' if q is _MISSING else '?' + str(q)} "
            f"{g('http.response.status_code')} req={g('http.request.bytes')} "
            f"resp={g('http.response.bytes')} tls={g('tls.established')} "
            f"{g('source.port')}->{g('destination.port')}")


def on_port(events, port, role=None):
    return [t for t in events if get(t, "destination.port") == port
            and (role is None or get(t, "phiwatch.role") == role)]


def to_epoch_ns(ts):
    import datetime
    d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)
    return int(d.timestamp()) * 1_000_000_000 + d.microsecond * 1000


def txn_problems(t, exp, common):
    """Differences between transaction t and what we know happened ([] if none).

    exp: one request {method, path (with query), status, request_bytes,
    response_bytes, local_port}; common: {pid, name, exe, role, tls, port, t0_ns,
    t1_ns}.
    """
    path, query = split_target(exp["path"])
    want = {
        "event.kind": "event",
        "event.category": ["web"],
        "process.pid": common["pid"],
        "process.name": common["name"],
        "user.id": "-",
        "source.ip": "127.0.0.1",
        "source.port": exp["local_port"],
        "destination.ip": "127.0.0.1",
        "destination.port": common["port"],
        "tls.established": common["tls"],
        "http.version": "1.1",
        "http.request.method": exp["method"],
        "http.request.bytes": exp["request_bytes"],
        "http.response.status_code": exp["status"],
        "http.response.bytes": exp["response_bytes"],
        "url.path": path,
        "phiwatch.role": common["role"],
        "phiwatch.auth": "none",
        "phiwatch.truncated": False,
    }
    bad = []
    for k, v in want.items():
        got = get(t, k)
        # bool vs int matters: True == 1 in Python, not in the contract.
        if got is _MISSING:
            bad.append(f"{k} missing (want {v!r})")
        elif got != v or type(got) is not type(v):
            bad.append(f"{k}={got!r} want {v!r}")
    q = get(t, "url.query")
    if query is None and q is not _MISSING:
        bad.append(f"url.query={q!r} want absent")
    elif query is not None and q != query:
        bad.append(f"url.query={'missing' if q is _MISSING else repr(q)} want {query!r}")
    exe = get(t, "process.executable")
    if not isinstance(exe, str) or os.path.realpath(exe) != os.path.realpath(common["exe"]):
        bad.append(f"process.executable={exe if exe is not _MISSING else 'missing'!r} "
                   f"want {common['exe']!r}")
    ts = get(t, "@timestamp")
    if not isinstance(ts, str) or not TIMESTAMP_RE.match(ts):
        bad.append(f"@timestamp={ts if ts is not _MISSING else 'missing'!r} not RFC3339 UTC with microseconds")
    else:
        ns = to_epoch_ns(ts)
        if not common["t0_ns"] - SLACK_NS <= ns <= common["t1_ns"] + SLACK_NS:
            bad.append(f"@timestamp={ts} outside the test window")
    dur = get(t, "event.duration")
    if not _is_int(dur) or dur <= 0 or dur > common["t1_ns"] - common["t0_ns"] + SLACK_NS:
        bad.append(f"event.duration={dur if dur is not _MISSING else 'missing'!r} "
                   f"want 0 < ns <= test window")
    if not _is_int(get(t, "event.sequence")):
        bad.append("event.sequence missing or not an int")
    return bad


def expect_txns(events, expected, *, port, role, pid, name, exe, tls, t0_ns, t1_ns,
                label=None):
    """Assert that the transactions of (port, role) are exactly `expected`, in order,
    each one exactly equal field by field. Returns the matched transactions."""
    label = label or f"{role} txns on :{port}"
    got = on_port(events, port, role)
    common = dict(pid=pid, name=name, exe=exe, role=role, tls=tls, port=port,
                  t0_ns=t0_ns, t1_ns=t1_ns)
    if len(got) != len(expected):
        raise Fail(f"{label}: {len(got)} transactions, want {len(expected)}: "
                   + "; ".join(summary(t) for t in got[:12]) +
                   f" (want {[e['method'] + ' ' + e['path'] for e in expected]})")
    problems = []
    for i, (t, e) in enumerate(zip(got, expected)):
        for b in txn_problems(t, e, common):
            problems.append(f"#{i} {e['method']} {e['path']}: {b}")
    if problems:
        raise Fail(f"{label}: " + "; ".join(problems[:12])
                   + (f" (+{len(problems) - 12} more)" if len(problems) > 12 else ""))
    seqs = [get(t, "event.sequence") for t in got]
    check(seqs == sorted(seqs) and len(set(seqs)) == len(seqs),
          f"{label}: event.sequence not increasing in file order: {seqs}")
    stamps = [to_epoch_ns(get(t, "@timestamp")) for t in got]
    check(stamps == sorted(stamps), f"{label}: @timestamp not in request order")
    return got


def expect_unique_sequences(events):
    seqs = [get(t, "event.sequence") for t in events]
    dup = len(seqs) - len(set(map(repr, seqs)))
    check(dup == 0, f"{dup} duplicated event.sequence values in the events file")


def now_ns():
    return time.time_ns()
