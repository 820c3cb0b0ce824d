"""The lab's stand-in for `systemctl` on a simulated systemd IPC, plus the
host's other commands the orchestrator runs there: the board's line check, the
call test and fault injection. Stdlib only, started as
`python -I systemctl.py IPC_DIR TOOL ARGS...` (the IPC's bin/ wrappers do that),
with -S too (no site: stdlib only), as each command is one interpreter start.

  systemctl show -p ActiveState [--value] UNIT...   active | inactive | activating | deactivating | failed
  systemctl is-active [-q] UNIT...                  exit 0 if one is active, 3 otherwise
  systemctl start|stop UNIT...                      block until the job is done (exit 1 on failure)
  systemctl kill -s KILL UNIT...                    SIGKILL the unit's process
  systemctl status UNIT                             a short summary (exit 0 active, 3 not, 4 no such unit)
  linestat                                          exit 0 line up, 1 line alarm, 3 driver not running
  labcall inbound|outbound|agent                    the lab's basic call test (exit 0 answered)
  labcalls active|busy-out|release                  simulated calls (active prints `ivr=N agent=M`)
  labfault KIND [SERVICE] [--seconds S]             inject a fault (sim.py's kinds)

Units map to the simulator's logical services through sim.json's "names"; each
unit's TimeoutStartSec / TimeoutStopSec come from its "unit_timeouts". Exit
codes follow systemctl's: 1 failed, 3 not active, 4 no such unit, 5 not loaded.
"""

from __future__ import annotations

import os
import sys

# -I leaves the repository off sys.path; simctl is the one way to the simulator.
# (os.path, not pathlib: every import counts in a command run per service.)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# wincmd's request/loads speak the simulator's JSON protocol without importing
# json and socket (~19 ms of a ~34 ms command here; real systemctl takes a few).
from failover.lab.wincmd import loads, request

DEFAULT_TIMEOUT = 90.0  # systemd's DefaultTimeoutStartSec / DefaultTimeoutStopSec
SLACK = 30.0  # on top of a job's timeout: the simulator may sleep a slow-start first
ACTIVE_STATES = {"RUNNING": "active", "START_PENDING": "activating", "STOP_PENDING": "deactivating"}
SUB_STATES = {"active": "running", "activating": "start", "deactivating": "stop-sigterm", "failed": "failed"}
LINE_EXIT = {"up": 0, "alarm": 1, "down": 3}
UNREACHABLE = 4  # linestat: the simulator does not answer (the contract's "unknown")


class Host:
    """One simulated IPC as seen from its own shell."""

    def __init__(self, ipc_dir: str) -> None:
        self.dir = ipc_dir
        with open(os.path.join(ipc_dir, "sim.json")) as f:
            cfg = loads(f.read())
        assert isinstance(cfg, dict)
        self.units: dict[str, str] = cfg.get("names", {})
        self.timeouts: dict[str, dict[str, float]] = cfg.get("unit_timeouts", {})

    def ask(self, req: dict, timeout: float = 10.0) -> dict:
        answer = request(self.dir, req, timeout)
        return answer if isinstance(answer, dict) else {}

    def unit(self, arg: str) -> str:
        # systemctl takes `cc-cti` for `cc-cti.service`.
        return arg if "." in arg else f"{arg}.service"

    def timeout(self, unit: str, op: str) -> float:
        return float(self.timeouts.get(unit, {}).get(op, DEFAULT_TIMEOUT))


def active_state(svc: dict | None) -> str:
    """systemd's ActiveState of one simulated service. `failed`: it stopped with
    an unclean exit (killed, crashed, failed to start), which the simulator's
    last_exit records; a stop it was asked for ends with exit 0."""
    if svc is None:
        return "inactive"  # systemd shows an unknown unit as inactive (LoadState=not-found)
    state = ACTIVE_STATES.get(svc["state"])
    if state:
        return state
    return "failed" if svc.get("last_exit") not in (None, 0) else "inactive"


def _services(host: Host) -> dict[str, dict]:
    st = host.ask({"op": "status"})
    return st.get("services", {})


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


# ----- systemctl verbs ----------------------------------------------------------
def show(host: Host, args: list[str]) -> int:
    props: list[str] = []
    value_only = False
    units: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-p", "--property") and i + 1 < len(args):
            props += args[i + 1].split(",")
            i += 2
            continue
        if a.startswith("--property="):
            props += a.split("=", 1)[1].split(",")
        elif a == "--value":
            value_only = True
        else:
            units.append(host.unit(a))
        i += 1
    services = _services(host)
    props = props or ["ActiveState"]
    for n, unit in enumerate(units):
        if n:
            print()  # systemctl separates units with a blank line, --value or not
        svc = services.get(host.units.get(unit, ""))
        state = active_state(svc)
        values = {
            "Id": unit,
            "LoadState": "loaded" if unit in host.units else "not-found",
            "ActiveState": state,
            "SubState": SUB_STATES.get(state, "dead"),
            "MainPID": str((svc or {}).get("pid") or 0),
        }
        for p in props:
            v = values.get(p, "")
            print(v if value_only else f"{p}={v}")
    return 0


def is_active(host: Host, args: list[str]) -> int:
    quiet = any(a in ("-q", "--quiet") for a in args)
    units = [host.unit(a) for a in args if not a.startswith("-")]
    services = _services(host)
    states = [active_state(services.get(host.units.get(u, ""))) for u in units]
    if not quiet:
        print("\n".join(states))
    return 0 if "active" in states else 3


def status(host: Host, args: list[str]) -> int:
    units = [host.unit(a) for a in args if not a.startswith("-")]
    services = _services(host)
    code = 0
    for unit in units:
        if unit not in host.units:
            _err(f"Unit {unit} could not be found.")
            code = max(code, 4)
            continue
        svc = services.get(host.units[unit])
        state = active_state(svc)
        pid = (svc or {}).get("pid")
        print(f"● {unit} - {host.units[unit]} (lab simulator)")
        print(f"     Active: {state} ({SUB_STATES.get(state, 'dead')})")
        if pid:
            print(f"   Main PID: {pid}")
        if state != "active":
            code = max(code, 3)
    return code


def _job_failed(unit: str, why: str) -> None:
    _err(f"Job for {unit} failed because {why}.")
    _err(f'See "systemctl status {unit}" and "journalctl -xeu {unit}" for details.')


def start(host: Host, unit: str) -> int:
    if unit not in host.units:
        _err(f"Failed to start {unit}: Unit {unit} not found.")
        return 5
    t = host.timeout(unit, "start")
    resp = host.ask({"op": "start", "service": host.units[unit], "timeout": t}, timeout=t + SLACK)
    if resp.get("ok"):
        return 0
    timed_out = "not up after" in str(resp.get("error", ""))
    _job_failed(unit, "a timeout was exceeded" if timed_out else "the control process exited with error code")
    return 1


def stop(host: Host, unit: str) -> int:
    """systemd never leaves a stop pending: past TimeoutStopSec it SIGKILLs the
    service, the unit ends `failed` and the stop job itself is done (exit 0)."""
    if unit not in host.units:
        _err(f"Failed to stop {unit}: Unit {unit} not loaded.")
        return 5
    name, t = host.units[unit], host.timeout(unit, "stop")
    resp = host.ask({"op": "stop", "service": name, "timeout": t}, timeout=t + SLACK)
    if resp.get("ok"):
        return 0
    host.ask({"op": "fault", "kind": "kill", "service": name})
    return 0


def kill(host: Host, args: list[str]) -> int:
    sig, units, i = "TERM", [], 0
    while i < len(args):
        a = args[i]
        if a in ("-s", "--signal") and i + 1 < len(args):
            sig, i = args[i + 1], i + 2
            continue
        if a.startswith("--signal="):
            sig = a.split("=", 1)[1]
        else:
            units.append(host.unit(a))
        i += 1
    if sig.upper().removeprefix("SIG") not in ("KILL", "9"):
        _err(f"the lab's systemctl sends only KILL (asked for {sig})")
        return 1
    code = 0
    for unit in units:
        if unit not in host.units:
            _err(f"Failed to kill unit {unit}: Unit {unit} not loaded.")
            code = 1
            continue
        resp = host.ask({"op": "fault", "kind": "kill", "service": host.units[unit]})
        if not resp.get("ok"):
            # Nothing left to kill: systemd reports it the same way.
            _err(f"Failed to kill unit {unit}: No main process to kill")
            code = 1
    return code


def systemctl(host: Host, argv: list[str]) -> int:
    # Options systemctl accepts anywhere that change nothing here.
    argv = [a for a in argv if a not in ("--no-pager", "--no-ask-password", "--no-block", "--system")]
    if not argv:
        _err("usage: systemctl show|is-active|start|stop|kill|status UNIT...")
        return 1
    verb, rest = argv[0], argv[1:]
    if verb == "show":
        return show(host, rest)
    if verb == "is-active":
        return is_active(host, rest)
    if verb == "status":
        return status(host, rest)
    if verb == "kill":
        return kill(host, rest)
    if verb in ("start", "stop"):
        units = [host.unit(a) for a in rest if not a.startswith("-")]
        if not units:
            _err("Too few arguments.")
            return 1
        fn = start if verb == "start" else stop
        return max(fn(host, u) for u in units)
    _err(f"Unknown command verb {verb}.")
    return 1


# ----- the IPC's other commands ----------------------------------------------------
def linestat(host: Host, argv: list[str]) -> int:
    line = str(host.ask({"op": "status"}).get("line", "unknown"))
    print(f"line {line}")
    return LINE_EXIT.get(line, UNREACHABLE)


def labcall(host: Host, argv: list[str]) -> int:
    kind = argv[0] if argv else "inbound"
    resp = host.ask({"op": "call", "kind": kind})
    if resp.get("ok"):
        print(resp.get("detail", ""))
        return 0
    _err(str(resp.get("error", "call failed")))
    return 1


def labfault(host: Host, argv: list[str]) -> int:
    seconds, pos, i = 5.0, [], 0
    while i < len(argv):
        if argv[i] == "--seconds" and i + 1 < len(argv):
            seconds, i = float(argv[i + 1]), i + 2
            continue
        pos.append(argv[i])
        i += 1
    if not pos:
        _err("usage: labfault KIND [SERVICE] [--seconds S]")
        return 2
    service = pos[1] if len(pos) > 1 else None
    if service is not None:  # a unit name or the simulator's own name
        service = host.units.get(host.unit(service), service)
    resp = host.ask({"op": "fault", "kind": pos[0], "service": service, "seconds": seconds})
    if resp.get("ok"):
        print(resp.get("detail", ""))
        return 0
    _err(str(resp.get("error", "failed")))
    return 1


def labcalls(host: Host, argv: list[str]) -> int:
    """Simulated calls: active (prints `ivr=N agent=M`), busy-out, release."""
    resp = host.ask({"op": "calls", "action": argv[0] if argv else "active"})
    if resp.get("ok"):
        print(resp.get("text", ""))
        return 0
    _err(str(resp.get("error", "failed")))
    return 1


TOOLS = {"systemctl": systemctl, "linestat": linestat, "labcall": labcall, "labfault": labfault, "labcalls": labcalls}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in TOOLS:
        _err(__doc__ or "")
        return 2
    try:
        host = Host(argv[0])
        return TOOLS[argv[1]](host, argv[2:])
    except (OSError, ValueError) as e:
        # The simulator is down: the host's service manager does not answer.
        _err(f"Failed to connect to bus: {e}")
        return UNREACHABLE if argv[1] == "linestat" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
