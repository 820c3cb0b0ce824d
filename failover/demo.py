"""`make demo`: bring the built-in lab up, show it, inject one fault so the
observer's view changes, and take everything down again (--keep keeps it up)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from failover.cli import main as cli
from failover.lab.lab import Lab


def _show(args: list[str]) -> None:
    print(f"\n$ failover {' '.join(args)}")
    r = CliRunner().invoke(cli, args)
    print(r.output.rstrip())


def main() -> int:
    keep = "--keep" in sys.argv
    root = Path(tempfile.mkdtemp(prefix="failover-demo-")) / "lab"
    print(f"Bringing up the lab in {root} (3 ZooKeeper nodes, 2 simulated IPCs behind real sshd)...")
    lab = Lab(root=root)
    t0 = time.monotonic()
    lab.up()
    print(f"lab {lab.labid} up in {time.monotonic() - t0:.2f} s")
    try:
        _show(["inventory", "check", str(lab.inventory_path)])
        _show(["lab", "status", "--dir", str(root)])
        _show(["lab", "fault", "--dir", str(root), "ipc-a", "hang", "ivr"])
        _show(["lab", "status", "--dir", str(root)])
        _show(["lab", "fault", "--dir", str(root), "ipc-a", "restore"])
    finally:
        if keep:
            print(f"\nlab kept: failover lab status --dir {root}; failover lab down --dir {root}")
        else:
            stuck = lab.down()
            print(f"\nlab down: {'no process left' if not stuck else f'STUCK PIDs {stuck}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
