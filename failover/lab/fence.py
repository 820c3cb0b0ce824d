"""The lab's fence device: a power switch per simulated IPC, like a BMC on a
separate management network. fence-agents-like:

  python -m failover.lab.fence --root LAB_DIR --ipc IPC on|off|status
  (also `--action X` / `-o X`, `--plug IPC` / `-n IPC`, `--autostart cti,ivr` for `on`)

Exit codes, the fence-agents contract: `status` 0 powered on, 2 powered off,
1 error; `off` / `on` 0 done, 1 error. Usage errors exit 1 too, never 2 (a
caller would read 2 from `status` as "powered off").

It acts through the lab's files and PIDs, never through the IPC's network, so
it works from any network namespace (an agent on a host of its own):

- `off`: a power cut. Every process of the IPC dies by SIGKILL at once: its
  service manager (the simulator), every service process, its sshd with every
  session (so SSH is refused and every probe fails). Recorded as powered off
  in lab.json. Idempotent.
- `on`: power back. The simulator and sshd start again; at boot the simulator
  starts the board driver, any service sim.json's "start_types" marks
  AUTO_START, and the services given with `autostart` (Windows services whose
  start type is Automatic: they come back after a reboot). Returns once sshd
  listens and the boot services run. Idempotent (on when on: nothing).
- `status`: the recorded power state (read without a lock: lab.json is
  replaced atomically, so a reader sees the state before or after a change,
  never half of it).

`lab fault IPC fence-broken` makes every command of the device exit 1 (a BMC
that does not answer) until `fence-fixed` (or `restore`). The lab's own
`power-off` / `power-on` faults are the same code (someone at the plug): they
work with the device broken.

Writers of lab.json (this device, `Lab.fault`, `Lab.save`, `Lab.down`) hold
<root>/lab.lock (flock), so a power change from another process never loses
another's PIDs.

Imports the stdlib and small lab modules only: `status` is one interpreter
start (~70 ms).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

STATE = "lab.json"
LOCK = "lab.lock"
ON, OFF = "on", "off"
EXIT_ON, EXIT_ERROR, EXIT_OFF = 0, 1, 2  # fence-agents: status 0 on, 2 off, anything else an error
ACTIONS = ("on", "off", "status")
BOOT_DEFAULT = ("driver",)  # what a lab IPC starts at boot by itself: the board driver
REPO = str(Path(__file__).resolve().parents[2])
AUTO_START = 2  # the Windows start type (sim.py)


class FenceError(RuntimeError):
    pass


# ----- the lock and the state file ---------------------------------------------
_thread_lock = threading.RLock()  # threads of one process: flock is per open file, not per thread
_held: dict[str, list[int]] = {}  # root -> [fd, depth]: reentrant within a process


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Exclusive hold of <root>/lab.lock (reentrant within the process)."""
    key = str(root)
    with _thread_lock:
        entry = _held.get(key)
        if entry is None:
            try:
                fd = os.open(Path(root) / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                raise FenceError(f"no lab in {root}") from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            entry = _held[key] = [fd, 0]
        entry[1] += 1
        try:
            yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                os.close(entry[0])  # releases the flock


def read_state(root: Path) -> dict:
    try:
        return json.loads((Path(root) / STATE).read_text())
    except FileNotFoundError:
        raise FenceError(f"no lab in {root} (run `failover lab up`)") from None
    except ValueError as e:
        raise FenceError(f"unreadable {Path(root) / STATE}: {e}") from None


def write_state(root: Path, data: dict) -> None:
    """Atomically (a reader sees the old file or the new one). Hold `locked`."""
    path = Path(root) / STATE
    tmp = path.with_name(f".{STATE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _entry(data: dict, ipc: str) -> dict:
    for i in data.get("ipcs", []):
        if i.get("name") == ipc:
            return i
    names = ", ".join(i.get("name", "?") for i in data.get("ipcs", []))
    raise FenceError(f"no IPC named {ipc!r} in the lab (have: {names})")


def power_state(entry: dict) -> str:
    return entry.get("power") or ON


# ----- the device's actions --------------------------------------------------------
def status(root: Path, ipc: str, device: bool = True) -> str:
    """'on' or 'off'. device: as the fence device answers (fails when broken)."""
    entry = _entry(read_state(root), ipc)
    if device:
        _check_device(entry)
    return power_state(entry)


def set_broken(root: Path, ipc: str, broken: bool) -> str:
    with locked(root):
        data = read_state(root)
        _entry(data, ipc)["fence_broken"] = broken
        write_state(root, data)
    return f"{ipc}: fence device {'not answering (every command exits 1)' if broken else 'answering again'}"


def _check_device(entry: dict) -> None:
    if entry.get("fence_broken"):
        raise FenceError(
            f"fence device of {entry['name']}: no answer from its management controller "
            "(lab fault fence-broken; `failover lab fault IPC fence-fixed` repairs it)"
        )


def power_off(root: Path, ipc: str, device: bool = False) -> str:
    """Cut the IPC's power: every process of it killed by SIGKILL (idempotent)."""
    t0 = time.monotonic()
    with locked(root):
        data = read_state(root)
        entry = _entry(data, ipc)
        if device:
            _check_device(entry)
        was = power_state(entry)
        killed = cut(entry, data["labid"])
        entry.update(power=OFF, sim_pid=None, sshd_pid=None)
        write_state(root, data)
    with contextlib.suppress(FileNotFoundError):
        (Path(entry["dir"]) / "sim.ready").unlink()
    took = time.monotonic() - t0
    if was == OFF:
        return f"{ipc}: already powered off" + (f" ({len(killed)} stray processes killed)" if killed else "")
    return f"{ipc}: powered off ({len(killed)} processes killed in {took * 1000:.0f} ms)"


def power_on(root: Path, ipc: str, autostart: Iterable[str] = (), device: bool = False, timeout: float = 20) -> str:
    """Power back: the simulator and sshd start; at boot only the driver, the
    services sim.json marks AUTO_START and `autostart` start (idempotent).
    Returns once sshd listens and the boot services run."""
    from failover.lab.procs import alive
    from failover.lab.sshd import SshdHost

    with locked(root):
        data = read_state(root)
        entry = _entry(data, ipc)
        if device:
            _check_device(entry)
        boot = boot_services(entry["dir"], autostart)
        if power_state(entry) == ON:
            return f"{ipc}: already powered on"
        d = Path(entry["dir"])
        with contextlib.suppress(FileNotFoundError):
            (d / "sim.ready").unlink()
        sim_pid = start_sim(entry["dir"], entry.get("netns"), boot)
        sshd = SshdHost(
            entry["name"], entry["address"], entry["ssh_port"], d / "ssh", d / "unused.pub", None, entry.get("netns")
        )
        sshd.start()  # the config prepare() wrote at `lab up` (platform profile included)
        entry.update(power=ON, sim_pid=sim_pid, sshd_pid=sshd.pid)
        write_state(root, data)
    # Boot outside the lock: `status` says on from here (power is applied).
    wait_sim(entry["dir"], sim_pid, timeout)
    try:
        sshd.wait_listening(timeout)
    except RuntimeError as e:
        raise FenceError(str(e)) from None
    if not alive(sim_pid):
        raise FenceError(f"{ipc}: its service simulator exited at boot")
    return f"{ipc}: powered on; started at boot: {', '.join(boot)}"


def boot_services(ipc_dir: str, autostart: Iterable[str] = ()) -> list[str]:
    """The driver, sim.json's AUTO_START services and `autostart` (logical or
    the platform's names, comma lists accepted), in the plan's start order."""
    from failover.layouts import SERVICES, start_order

    cfg = json.loads((Path(ipc_dir) / "sim.json").read_text())
    names = {k.lower(): v for k, v in cfg.get("names", {}).items()}
    want = set(BOOT_DEFAULT)
    for svc, value in cfg.get("start_types", {}).items():
        if str(value).upper() == "AUTO_START" or str(value) == str(AUTO_START):
            want.add(names.get(svc.lower(), svc))
    for item in autostart:
        for word in (w.strip() for w in str(item).split(",")):
            if not word:
                continue
            svc = names.get(word.lower(), word)
            if svc not in SERVICES:
                raise FenceError(f"unknown service {word!r} to start at boot (one of {', '.join(SERVICES)})")
            want.add(svc)
    return start_order(want)


# ----- the simulator: started by `lab up` and by power-on --------------------------
def start_sim(ipc_dir: str, netns: str | None, boot: list[str] | None = None) -> int:
    """Spawn the IPC's service manager (detached; in its namespace); `boot`:
    the services it starts by itself (None: sim.json's "autostart")."""
    from failover.lab.procs import spawn

    cmd = [sys.executable, "-m", "failover.lab.sim", ipc_dir]
    if boot is not None:
        cmd += ["--boot", ",".join(boot)]
    return spawn(cmd, Path(ipc_dir) / "sim.log", netns, cwd=REPO)


def wait_sim(ipc_dir: str, pid: int | None, timeout: float = 20) -> None:
    from failover.lab.procs import alive

    d = Path(ipc_dir)
    deadline = time.monotonic() + timeout
    while not (d / "sim.ready").exists():
        if not alive(pid or 0):
            log = (d / "sim.log").read_text(errors="replace")[-800:]
            raise FenceError(f"the service simulator of {d.name} exited:\n{log}")
        if time.monotonic() > deadline:
            raise FenceError(f"the service simulator of {d.name} is not ready")
        time.sleep(0.01)


# ----- the power cut ----------------------------------------------------------------
def cut(entry: dict, labid: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process of one lab IPC: the simulator and sshd (frozen
    first with SIGSTOP, so neither forks while its tree is read), their
    descendants (sshd's sessions and what they run), any service process of
    this IPC (by its marker, e.g. orphaned by an earlier simulator) and any
    process with an argument inside the IPC's directory. Returns the PIDs killed."""
    from failover.lab.procs import alive, cmdline, descendants

    d = entry["dir"]
    roots = []
    for pid, marker in ((entry.get("sim_pid"), d), (entry.get("sshd_pid"), "sshd_config")):
        # PIDs are reused: only ours (sshd's title may read empty for an instant).
        if pid and alive(pid) and (marker in cmdline(pid) or not cmdline(pid)):
            roots.append(pid)
    for pid in roots:
        _signal(pid, signal.SIGSTOP)
    victims = set(roots)
    for pid in roots:
        victims.update(descendants(pid))
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        victims.update(ipc_pids(d, labid, entry["name"]))
        victims -= _spared()
        fresh = [p for p in victims - killed if alive(p)]
        for pid in fresh:
            _signal(pid, signal.SIGKILL)
        killed.update(fresh)
        left = [p for p in victims if alive(p)]
        if not left and not fresh:
            return sorted(killed)
        if time.monotonic() > deadline:
            raise FenceError(f"{entry['name']}: processes {left} survived SIGKILL")
        for pid in left:
            _reap(pid)
        time.sleep(0.005)


def ipc_pids(ipc_dir: str, labid: str, ipc: str) -> list[int]:
    """Live processes of one lab IPC found in /proc: its service processes
    (marker, lab id, IPC name) and any process with an argument inside its
    directory (the simulator, sshd, the stand-ins its sessions run)."""
    from failover.lab.procs import pids_where
    from failover.lab.sim import MARKER

    inside = re.compile(re.escape(os.fsencode(ipc_dir)) + rb"(?![^/\s'\";&|)])")
    marker, lab, name = MARKER.encode(), labid.encode(), ipc.encode()

    def match(argv: list[bytes]) -> bool:
        if marker in argv:
            i = argv.index(marker)
            args = dict(zip(argv[i + 1 :: 2], argv[i + 2 :: 2], strict=False))
            if args.get(b"--lab") == lab and args.get(b"--ipc") == name:
                return True
        return any(inside.search(a) for a in argv)

    return pids_where(match)


def _spared() -> set[int]:
    from failover.lab.procs import ancestors

    return {os.getpid(), *ancestors(os.getpid())}


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


# ----- the command ----------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            # Never argparse's exit 2: from `status` it would read as "powered off".
            self.print_usage(sys.stderr)
            print(f"fence: {message}", file=sys.stderr)
            sys.exit(EXIT_ERROR)

    p = Parser(prog="python -m failover.lab.fence", description="The lab's fence device (a power switch per IPC).")
    p.add_argument("--root", default=os.environ.get("FAILOVER_LAB_DIR", "/tmp/failover-lab"), help="lab directory")
    p.add_argument("--ipc", "--plug", "-n", dest="ipc", required=True, help="the simulated IPC")
    p.add_argument("--action", "-o", dest="opt_action", choices=ACTIONS)
    p.add_argument("action", nargs="?", choices=ACTIONS)
    p.add_argument("--autostart", default="", help="on: services started at boot besides the driver (cti,ivr)")
    a = p.parse_args(argv)
    action = a.action or a.opt_action
    if not action or (a.action and a.opt_action and a.action != a.opt_action):
        p.error("one action: on, off or status")
    root = Path(a.root)
    try:
        if action == "status":
            state = status(root, a.ipc)
            print(f"Status: {state.upper()}")
            return EXIT_ON if state == ON else EXIT_OFF
        if action == "off":
            print(power_off(root, a.ipc, device=True))
        else:
            print(power_on(root, a.ipc, [a.autostart], device=True))
        return 0
    except FenceError as e:
        print(f"fence: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
