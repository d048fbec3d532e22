"""test_install.py — `make install` into a temporary DESTDIR: the exact tree and modes, the unit checked by
`systemd-analyze verify` against the installed binary and man page, the man page rendered by `man -l` (and
groff's warnings), the installed configuration loaded by the installed binary, every configuration key and every
command documented, an existing configuration kept on reinstall. Uses $BUILD (default build) for the binary."""
import gzip
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import lib

REPO = lib.REPO
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
MAN = "/usr/bin/man"
GROFF = "/usr/bin/groff"
SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "CONFIGURATION", "FILES", "SIGNALS",
            "EXIT STATUS", "SECURITY", "EXAMPLES"]
TXN = ('{"@timestamp":"2026-11-28T10:31:13.206440Z","event":{"kind":"event","duration":1,"sequence":1},'
       '"process":{"pid":1,"name":"nginx","executable":"/usr/sbin/nginx"},"user":{"id":"-"},'
       '"source":{"ip":"127.0.0.1","port":5},"destination":{"ip":"127.0.0.1","port":443},'
       '"tls":{"established":true},"http":{"version":"1.1","request":{"method":"GET","bytes":1},'
       '"response":{"status_code":200,"bytes":1}},"url":{"path":"/"},"phiwatch":{"role":"server",'
       '"auth":"none","truncated":false}}\n')


def build_dir():
    b = os.environ.get("BUILD") or "build"
    return Path(b) if os.path.isabs(b) else REPO / b


def make_install(destdir, prefix=None):
    args = ["make", "--no-print-directory", "-C", str(REPO), "install", f"DESTDIR={destdir}",
            f"BUILD={os.environ.get('BUILD') or 'build'}"]
    if prefix:
        args.append(f"prefix={prefix}")
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=lib.clean_env())
    lib.check(r.returncode == 0, f"make install failed: {(r.stdout + r.stderr).strip()[-600:]}")
    return r.stdout + r.stderr


def tree(root):
    """{relative path: (kind, mode)} for everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
            out[str(p.relative_to(root))] = (kind, st.st_mode & 0o7777)
    return out


def config_keys():
    """The dotted keys of user/config.c's table."""
    text = (REPO / "user" / "config.c").read_text()
    keys = re.findall(r'\{ "([a-z_][a-z0-9_.]*)", K_', text)
    lib.check(len(keys) > 40, f"found only {len(keys)} keys in user/config.c")
    return keys


def json_keys(obj, prefix=""):
    for k, v in obj.items():
        dotted = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            yield from json_keys(v, dotted)
        else:
            yield dotted


def test_install_tree_unit_man_config(ctx):
    binary = build_dir() / "phiwatch"
    if not binary.is_file():
        raise lib.Skip(f"{binary} missing (build it with make)")
    for tool in (SYSTEMD_ANALYZE, MAN, GROFF):
        lib.require_tools(tool)
    root = Path(ctx.tmp) / "root"
    make_install(root, prefix="/usr")

    # the tree, exactly
    files = {
        "usr/sbin/phiwatch": 0o755,
        "etc/phiwatch/phiwatch.json": 0o600,
        "lib/systemd/system/phiwatch.service": 0o644,
        "usr/share/man/man8/phiwatch.8.gz": 0o644,
    }
    got = tree(root)
    want_dirs = {str(Path(f).parents[i]) for f in files for i in range(len(Path(f).parts) - 1)}
    extra = sorted(set(got) - set(files) - want_dirs)
    lib.check(not extra, f"unexpected installed paths: {extra}")
    for f, mode in files.items():
        lib.check(got.get(f) == ("file", mode), f"{f}: {got.get(f)}, want a file with mode {mode:04o}")
    for d in want_dirs:
        lib.check(got.get(d, ("?",))[0] == "dir", f"{d} is not a directory")
    lib.check((root / "usr/sbin/phiwatch").read_bytes() == binary.read_bytes(), "installed binary differs")
    lib.check((root / "etc/phiwatch/phiwatch.json").read_bytes() == (REPO / "dist/phiwatch.json").read_bytes(),
              "installed config differs from dist/phiwatch.json")

    # the unit: ExecStart at the installed binary, hardening that keeps BPF possible
    unit = (root / "lib/systemd/system/phiwatch.service").read_text()
    lib.check(not re.search(r"@[A-Z_]+@", unit), "an @PLACEHOLDER@ is left in the unit")
    lib.check(re.search(r"^ExecStart=/usr/sbin/phiwatch run$", unit, re.M), "ExecStart is not /usr/sbin/phiwatch run")
    lib.check(re.search(r"^Restart=on-failure$", unit, re.M), "no Restart=on-failure")
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M)
    lib.check(caps and set(caps.group(1).split()) >= {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE",
                                                        "CAP_DAC_READ_SEARCH", "CAP_SETPCAP"},
              f"CapabilityBoundingSet lacks what the agent needs (privs_drop needs CAP_SETPCAP): {caps}")
    for bad in (r"^ProtectProc=invisible", r"^ProcSubset=pid", r"^PrivateUsers=yes"):
        lib.check(not re.search(bad, unit, re.M), f"{bad[1:]} would hide the processes to watch")
    for f in re.findall(r"^SystemCallFilter=(.*)$", unit, re.M):
        lib.check(f.startswith("~") and not re.search(r"@debug|@privileged|@mount|bpf|perf_event_open|@system-service",
                                                      f), f"SystemCallFilter={f} may block bpf/perf/mount")
    for d in ("NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=phiwatch", "RuntimeDirectory=phiwatch",
              "UMask=0077", "StandardOutput=null"):
        lib.check(re.search(rf"^{re.escape(d)}$", unit, re.M), f"no {d} in the unit")

    # systemd-analyze verify, against the installed tree: --root with the host's own units beside ours (for
    # sysinit.target and friends), MANPATH at the installed man page for Documentation=man:phiwatch(8)
    vroot = Path(ctx.tmp) / "verify-root"
    shutil.copytree("/lib/systemd/system", vroot / "lib/systemd/system", symlinks=True)
    shutil.copytree(root, vroot, symlinks=True, dirs_exist_ok=True)
    for cmd in re.findall(r"^Exec[A-Za-z]+=[-@:+!]*(/\S+)", unit, re.M):   # host tools the unit calls (/bin/kill)
        if not (vroot / cmd.lstrip("/")).exists():
            lib.check(os.access(cmd, os.X_OK), f"the unit calls {cmd}, which this host lacks")
            (vroot / cmd.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cmd, vroot / cmd.lstrip("/"))
    env = dict(lib.clean_env(), MANPATH=str(vroot / "usr/share/man"))
    unit_path = vroot / "lib/systemd/system/phiwatch.service"
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", f"--root={vroot}", str(unit_path)], capture_output=True,
                       text=True, timeout=60, env=env)
    lib.check(r.returncode == 0 and "phiwatch" not in r.stdout + r.stderr,
              f"systemd-analyze verify: rc={r.returncode} {(r.stdout + r.stderr).strip()[-600:]}")
    # ... and it does look at the binary: gone, verify fails
    (vroot / "usr/sbin/phiwatch").unlink()
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", f"--root={vroot}", str(unit_path)], capture_output=True,
                       text=True, timeout=60, env=env)
    lib.check(r.returncode != 0 and "not executable" in r.stdout + r.stderr,
              f"verify passed without the binary: {(r.stdout + r.stderr).strip()[-300:]}")

    # the man page: renders, no groff warnings, every section, every command, every configuration key
    man_gz = root / "usr/share/man/man8/phiwatch.8.gz"
    src = gzip.decompress(man_gz.read_bytes()).decode("ascii")
    version = re.search(r"^VERSION\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    lib.check(re.search(rf'^\.TH PHIWATCH 8 "[^"]*" "phiwatch {re.escape(version)}"', src, re.M),
              f".TH does not carry version {version}")
    g = subprocess.run([GROFF, "-man", "-ww", "-z"], input=src, capture_output=True, text=True, timeout=60)
    lib.check(g.returncode == 0 and not g.stderr.strip(), f"groff warnings: {g.stderr.strip()[-400:]}")
    m = subprocess.run([MAN, "-P", "cat", "-l", str(man_gz)], capture_output=True, text=True, timeout=60,
                       env=dict(lib.clean_env(), MANWIDTH="100"))
    lib.check(m.returncode == 0 and "phiwatch" in m.stdout, f"man -l failed: {m.stderr.strip()[-300:]}")
    text = re.sub(r".\x08", "", m.stdout)
    heads = [l.strip() for l in text.splitlines() if l and not l[0].isspace()]
    missing = [s for s in SECTIONS if s not in heads]
    lib.check(not missing, f"man page sections missing: {missing}")
    flat = re.sub(r"\s+", " ", text)  # the page turns hyphenation off (.nh): keys are never split
    keys = config_keys()
    undocumented = [k for k in keys if k not in flat]
    lib.check(not undocumented, f"configuration keys missing from phiwatch(8): {undocumented}")
    main_c = (REPO / "user" / "main.c").read_text()
    commands = re.findall(r'\{ "([a-z]+)", cmd_[a-z_]+,', main_c)
    lib.check("run" in commands, f"no command table in user/main.c: {commands}")
    cmd_section = text[text.index("\nCOMMANDS"):text.index("\nOPTIONS")]
    missing = [c for c in commands if not re.search(rf"^\s+{c}\b", cmd_section, re.M)]
    lib.check(not missing, f"commands missing from COMMANDS in phiwatch(8): {missing}")

    # the installed configuration: every key of config.c that has a literal default, loaded by the installed
    # binary without a complaint (string keys whose default is "unset" or derived cannot be written in JSON)
    cfg = json.loads((root / "etc/phiwatch/phiwatch.json").read_text())
    derived = {"alerts.file", "audit.dir", "audit.initial_key_path", "audit.encryption_key_path", "forensics.dir"}
    in_json = set(json_keys(cfg))
    lib.check(in_json <= set(keys), f"keys in phiwatch.json that config.c does not know: {sorted(in_json - set(keys))}")
    lib.check(set(keys) - derived <= in_json,
              f"keys of config.c missing from dist/phiwatch.json: {sorted(set(keys) - derived - in_json)}")
    one = Path(ctx.tmp) / "one.jsonl"
    one.write_text(TXN)
    r = subprocess.run([str(root / "usr/sbin/phiwatch"), "replay", "--config", str(root / "etc/phiwatch/phiwatch.json"),
                        str(one)], capture_output=True, text=True, timeout=60, env=lib.clean_env())
    lib.check(r.returncode == 0 and not r.stderr.strip(),
              f"the installed binary refuses the installed config: rc={r.returncode} {r.stderr.strip()[-300:]}")

    # reinstall over an edited configuration: kept
    conf = root / "etc/phiwatch/phiwatch.json"
    edited = conf.read_text().replace('"ringbuf_mb": 16', '"ringbuf_mb": 32')
    lib.check(edited != conf.read_text(), "could not edit the installed config")
    conf.write_text(edited)
    out = make_install(root, prefix="/usr")
    lib.check(conf.read_text() == edited and "keeping" in out, f"reinstall replaced the configuration: {out[-300:]}")
    lib.check(stat.S_IMODE(conf.stat().st_mode) == 0o600, "reinstall changed the config's mode")

    # the default prefix: /usr/local/sbin, and the unit follows it
    root2 = Path(ctx.tmp) / "root-local"
    make_install(root2)
    lib.check((root2 / "usr/local/sbin/phiwatch").is_file(), "prefix /usr/local: no usr/local/sbin/phiwatch")
    lib.check((root2 / "usr/local/share/man/man8/phiwatch.8.gz").is_file(), "prefix /usr/local: no man page")
    unit2 = (root2 / "lib/systemd/system/phiwatch.service").read_text()
    lib.check(re.search(r"^ExecStart=/usr/local/sbin/phiwatch run$", unit2, re.M),
              "prefix /usr/local: ExecStart does not follow")
    ctx.info(f"installed {len(files)} files; verify OK; {len(keys)} config keys documented; commands {commands}")
