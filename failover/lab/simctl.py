"""The simulated IPC's service-control command, run over SSH like `sc.exe` or
`systemctl`. Stdlib only, started as `python -I simctl.py IPC_DIR OP ...` so each
call costs milliseconds.

  simctl.py DIR status                 -> one JSON line: every service + line status
  simctl.py DIR start|stop SERVICE [--timeout S]
  simctl.py DIR fault KIND [SERVICE] [--seconds S]
  simctl.py DIR call inbound|outbound|agent   -> the lab's basic call test
  simctl.py DIR calls active|busy-out|release|stats   -> simulated calls ("ivr=3 agent=2")
  simctl.py DIR calls load [--count N] [--min S] [--max S] [--rate R] [--agent-share F]
  simctl.py DIR serve                  -> long-lived: one request per stdin line

Exit codes: 0 done, 1 failed, 2 usage, 3 service manager unreachable.
"""

from __future__ import annotations

import os
import sys

# Run as a script with -I: the repository is not on sys.path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# The simulator's protocol without importing json and socket (~19 ms of every
# command, and the agent runs one per start or stop): wincmd's small codec.
from failover.lab.wincmd import dumps
from failover.lab.wincmd import request as _request


def request(ipc_dir: str, req: dict, timeout: float) -> dict:
    answer = _request(ipc_dir, req, timeout)
    if not isinstance(answer, dict):
        raise ValueError(f"not a JSON object: {answer!r}")
    return answer


def serve(ipc_dir: str) -> int:
    """A long-lived session: one request per stdin line (the same words as the
    command line), one JSON answer per line. Saves sshd's per-command session
    setup and this interpreter's start-up on the monitor's hot path."""
    import shlex

    for line in sys.stdin:
        words = shlex.split(line)
        if not words:
            continue
        try:
            req = build(words[0], words[1:])
            resp = request(ipc_dir, req, timeout=float(req.get("timeout", 30.0)) + 5)
        except UsageError as e:
            resp = {"ok": False, "error": str(e)}
        except (OSError, ValueError) as e:
            resp = {"ok": False, "error": f"service manager unreachable: {e}"}
        sys.stdout.write(dumps(resp) + "\n")
        sys.stdout.flush()
    return 0


class UsageError(ValueError):
    pass


NUMBER_OPTIONS = ("--timeout", "--seconds", "--count", "--min", "--max", "--rate", "--agent-share")


def build(op: str, rest: list[str]) -> dict:
    opts: dict = {}
    pos: list[str] = []
    i = 0
    while i < len(rest):
        if rest[i] in NUMBER_OPTIONS and i + 1 < len(rest):
            opts[rest[i][2:].replace("-", "_")] = float(rest[i + 1])
            i += 2
        else:
            pos.append(rest[i])
            i += 1
    req: dict = {"op": op, **opts}
    if op in ("start", "stop"):
        if len(pos) != 1:
            raise UsageError(f"usage: simctl DIR {op} SERVICE")
        req["service"] = pos[0]
    elif op == "fault":
        if not pos:
            raise UsageError("usage: simctl DIR fault KIND [SERVICE]")
        req["kind"] = pos[0]
        if len(pos) > 1:
            req["service"] = pos[1]
    elif op == "call":
        req["kind"] = pos[0] if pos else "inbound"
    elif op == "calls":
        req["action"] = pos[0] if pos else "stats"
    elif op != "status":
        raise UsageError(f"unknown operation {op!r}")
    return req


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    ipc_dir, op, rest = argv[0], argv[1], argv[2:]
    if op == "serve":
        return serve(ipc_dir)
    try:
        req = build(op, rest)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    opts = req
    try:
        resp = request(ipc_dir, req, timeout=opts.get("timeout", 30.0) + 5)
    except (OSError, ValueError) as e:
        print(f"service manager unreachable: {e}", file=sys.stderr)
        return 3
    # `calls` answers in the inventory's words (`ivr=3 agent=2`), the rest in JSON.
    print(resp["text"] if op == "calls" and "text" in resp else dumps(resp), flush=True)
    if not resp.get("ok"):
        print(resp.get("error", "failed"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
