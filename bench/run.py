"""`make bench`: every benchmark; results in bench/results.json, tables printed
and written to bench/results.md."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

from bench import agent_bench, executor_bench, http_bench, switchover_bench

BENCHES = {
    "executor": executor_bench.main,
    "agent": agent_bench.main,
    "http": http_bench.main,
    "switchover": switchover_bench.main,
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    md = ["# Benchmark results (`make bench`)", ""]
    for name in names:
        print(f"== {name}")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            BENCHES[name]()
        print(buf.getvalue())
        md += [f"## {name}", "", "```", buf.getvalue().rstrip(), "```", ""]
    Path(__file__).with_name("results.md").write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
