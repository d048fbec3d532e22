"""test_status.py — `phiwatch status` over the control socket reports the running
agent's numbers for known traffic, as JSON and as a readable screen."""
import json
import subprocess
import time

import lib


def test_status_of_known_traffic(ctx):
    lib.require_agent()
    lib.require_tools(lib.NGINX, lib.CURL)
    ng = lib.Nginx(ctx).start()
    agent = lib.Agent(ctx, config={"alerts": {"syslog": False}}).start()
    paths = [f"/fhir/Patient/{i}" for i in range(7)]
    lib.run_curl(ctx, ng.port, paths, False)
    # the agent reads events within its poll interval: ask until the count is there
    st = {}
    for _ in range(100):
        r = subprocess.run([str(lib.PHIWATCH), "status", "--json", "--socket", str(agent.control)],
                           capture_output=True, text=True, timeout=30)
        lib.check(r.returncode == 0, f"status failed: {r.stderr}")
        st = json.loads(r.stdout)
        if st.get("transactions", 0) >= 2 * len(paths):
            break
        time.sleep(0.05)
    # host-wide numbers: other traffic on the host only adds
    lib.check(st["ok"] is True and st["transactions"] >= 2 * len(paths),
              f"status transactions {st.get('transactions')}, want >= {2 * len(paths)}")
    lib.check(st["pid"] == agent.popen.pid and st["tracepoints"] >= 12 and st["tls_libraries_hooked"] >= 1,
              f"status: {st}")
    lib.check(st["audit"]["records_written"] >= 2 * len(paths) and st["drops_total"] == 0, f"status: {st}")
    screen = subprocess.run([str(lib.PHIWATCH), "status", "--socket", str(agent.control)],
                            capture_output=True, text=True, timeout=30).stdout
    lib.check(" transactions (" in screen and "audit" in screen and "probes" in screen, f"status screen: {screen}")
    res = agent.stop()
    ng.stop()
    lib.check(len(lib.on_port(res.events, ng.port)) == 2 * len(paths), "events file disagrees")
    ctx.info(screen.splitlines()[0])
