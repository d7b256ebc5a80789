#!/usr/bin/env python3
"""Judge one kernel-matrix guest from its console log.

The guest (scripts/kernel-matrix/init.sh) prints "EAM key=value" lines and
"=== BEGIN name" ... "=== END name" sections: the agent's status JSON, its
outbox listing (the alerts bound for the fleet), the `sensor watch --json`
events, the agent's log. This prints one line with the kernel's figures, the
failed checks below it, and exits 1 when a check failed.

usage: check.py --name NAME --lsm yes|no --sensor yes|no --seconds N CONSOLE_LOG
"""
import argparse
import json
import re
import sys

RULES = {
    "shadow": "Sensitive file read by untrusted process",
    "etc_write": "Write below etc or binary directories",
    "ptrace": "Ptrace attach to another process",
    "shm": "Fileless execution from shared memory or memfd",
}
EXEC_REFUSED = "Denied executable refused"
EXEC_KILLED = "Denied executable killed"
OPEN_REFUSED = "Denied file open refused"


def parse(text):
    kv, sections, cur = {}, {}, None
    for line in text.splitlines():
        line = line.rstrip("\r")
        if cur is not None:
            if line == f"=== END {cur}":
                cur = None
            else:
                sections[cur].append(line)
            continue
        m = re.match(r"^=== BEGIN (\w+)$", line)
        if m:
            cur = m.group(1)
            sections[cur] = []
            continue
        m = re.match(r"^EAM (\w+)=(.*)$", line)
        if m:
            kv[m.group(1)] = m.group(2).strip()
    return kv, {k: "\n".join(v) for k, v in sections.items()}


def load_json(s):
    try:
        return json.loads(s)
    except ValueError:
        return None


def events_of(text):
    out = []
    for line in text.splitlines():
        e = load_json(line)
        if isinstance(e, dict) and "evt" in e:
            out.append(e)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--lsm", choices=["yes", "no"], required=True)
    ap.add_argument("--sensor", choices=["yes", "no"], required=True)
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("console")
    a = ap.parse_args()
    text = open(a.console, errors="replace").read()
    kv, sec = parse(text)
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    check("=== DONE" in text, "the guest did not finish (timeout or crash; see the console log)")
    status = load_json(sec.get("status", "")) or {}
    stages = status.get("stages") or {}
    outbox = load_json(sec.get("outbox", "")) or {}
    abouts = [r.get("about", "") for c in outbox.get("classes", []) for r in c.get("oldest", []) or []]
    events = events_of(sec.get("events", ""))

    def alert(rule):
        return any(ab.endswith(": " + rule) or ab == rule for ab in abouts)

    for st in ("outbox", "rules", "metrics"):
        check((stages.get(st) or {}).get("state") == "running", f"stage {st} is not running")
    check(kv.get("agent_exit") == "0", f"the agent exited with {kv.get('agent_exit')} on SIGTERM")
    sensor = stages.get("sensor") or {}
    details = sensor.get("details") or {}
    attached = details.get("probes_attached", 0)
    missing = details.get("probes_missing") or []

    if a.sensor == "no":
        check(sensor.get("state") == "failed", f"the sensor is {sensor.get('state')}, expected failed")
        check(details.get("error_code") == "unsupported_arch",
              f"the sensor's error_code is {details.get('error_code')}, expected unsupported_arch")
    else:
        check(sensor.get("state") in ("running", "degraded"), f"the sensor is {sensor.get('state')}: {sensor.get('summary')}")

        def has(pred, what):
            check(any(pred(e) for e in events), f"no {what} event")

        has(lambda e: e["evt"]["type"] == "execve" and "matrix-exec" in e["proc"].get("cmdline", ""), "execve (busybox echo matrix-exec)")
        has(lambda e: e["evt"]["type"].startswith("open") and (e.get("fd") or {}).get("name") == "/etc/shadow", "open of /etc/shadow")
        has(lambda e: e["evt"]["type"].startswith("open") and (e.get("fd") or {}).get("name") == "/etc/matrix-write", "open for writing of /etc/matrix-write")
        has(lambda e: e["evt"]["type"] == "connect" and ":9" in (e.get("fd") or {}).get("name", ""), "connect to port 9")
        has(lambda e: e["evt"]["type"] == "ptrace", "ptrace")
        has(lambda e: e["evt"]["type"] == "execve" and e["proc"].get("exepath") == "/dev/shm/busybox", "execve from /dev/shm")
        for action, rule in RULES.items():
            check(alert(rule), f"no alert '{rule}' ({action})")
        check(kv.get("denied_exec_ran") == "no", "the denied executable ran")
        check(kv.get("denied_link_ran") == "no", "a hard link to the denied executable ran")
        if a.lsm == "yes":
            check(details.get("deny_exec_mode") == "lsm", f"deny_exec_mode is {details.get('deny_exec_mode')}, expected lsm")
            check(details.get("deny_open_mode") == "lsm", f"deny_open_mode is {details.get('deny_open_mode')}, expected lsm")
            check(kv.get("rc_denied_exec") == "126" and "not permitted" in kv.get("denied_exec_msg", ""),
                  f"the denied exec gave {kv.get('rc_denied_exec')} ({kv.get('denied_exec_msg')}), expected 126 with EPERM")
            check(kv.get("rc_denied_link") == "126", f"the denied hard link gave {kv.get('rc_denied_link')}, expected 126")
            check(alert(EXEC_REFUSED), f"no alert '{EXEC_REFUSED}'")
            check(kv.get("denied_open_content") == "original", "the denied write changed /etc/rancher/k3s/config.yaml")
            check("not permitted" in kv.get("denied_open_msg", ""), f"the denied write said '{kv.get('denied_open_msg')}', expected EPERM")
            check(alert(OPEN_REFUSED), f"no alert '{OPEN_REFUSED}'")
            check(kv.get("allowed_open_content") == "by-k3s", "the allowed writer (/usr/local/bin/k3s) could not write")
            check(kv.get("rc_read_open") == "0", "reading a deny_open path (writes only) was refused")
            refused = details.get("refused_total_by_list") or {}
            check(refused.get("exec", 0) >= 1 and refused.get("open", 0) >= 1, f"refusals not counted: {refused}")
        else:
            check(details.get("deny_exec_mode") == "kill", f"deny_exec_mode is {details.get('deny_exec_mode')}, expected kill")
            check(str(details.get("deny_open_mode", "")).startswith("unavailable"),
                  f"deny_open_mode is {details.get('deny_open_mode')}, expected unavailable")
            check(kv.get("rc_denied_exec") == "137", f"the denied exec gave {kv.get('rc_denied_exec')}, expected 137 (SIGKILL)")
            check(kv.get("rc_denied_link") == "137", f"the denied hard link gave {kv.get('rc_denied_link')}, expected 137 (SIGKILL)")
            check(alert(EXEC_KILLED), f"no alert '{EXEC_KILLED}'")

    ok = not failures
    print(
        f"{a.name:<12} {kv.get('kernel', '?'):<22} {'ok  ' if ok else 'FAIL'}"
        f" sensor={sensor.get('state', '?')}"
        f" probes={attached} missing={','.join(missing) or '-'}"
        f" ready_ms={kv.get('ready_ms', '?')} sensor_startup_s={details.get('startup_seconds', '-')}"
        f" lsm={'bpf' if 'bpf' in kv.get('lsm', '').split(',') else 'no'}"
        f" deny_exec={details.get('deny_exec_mode', '-')} deny_open={str(details.get('deny_open_mode', '-')).split(':')[0]}"
        f" events={len(events)} alerts={len(abouts)} stop_ms={kv.get('stop_ms', '?')} vm_s={a.seconds}"
    )
    for f in failures:
        print(f"    - {f}")
    sys.exit(0 if ok else 1)


main()
