"""Configuration-file commands (failover/config_files.py) run for real: the
POSIX ones in sh, the Windows ones in the lab's cmd.exe stand-in; unsafe text
refused; runbook `config` / `service` steps validated with file:line."""

from __future__ import annotations

import io
import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from failover import config_files as cf
from failover.platforms import UnsafeArgument

CONF = "user = cc\ndatabase = shenzhen-db.cc.example:1521/CCDB\ntimeout = 30\n"
SHANGHAI = "shanghai-db.cc.example:1521/CCDB"
Run = Callable[[str], int]


@pytest.fixture(params=["windows", "lab"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path, Run]:
    """(platform, the config file's path as the IPC names it, run a command line)."""
    conf = tmp_path / "datasource.conf"
    conf.write_text(CONF)
    if request.param == "lab":
        return "lab", conf, lambda line: subprocess.run(["sh", "-c", line], capture_output=True).returncode
    # The cmd.exe stand-in in-process, no simulator or sshd: this stays in the fast tier.
    from failover.lab import wincmd

    (tmp_path / "sim.json").write_text(json.dumps({"ipc": "ipc-a", "codepage": 936}))
    h = wincmd.Host(str(tmp_path))

    def run(line: str) -> int:
        sh = wincmd.Shell(h, wincmd.windows_env("ipc-a", "Administrator"), line=line)
        return sh.run_line(line, {1: sh.sink(io.BytesIO()), 2: sh.sink(io.BytesIO())})

    return "windows", conf, run


def _name(platform: str, conf: Path) -> str:
    return conf.name if platform == "windows" else str(conf)  # the stand-in's "disk" is the IPC directory


def test_backup_set_verify_restore(host: tuple[str, Path, Run]) -> None:
    platform, conf, run = host
    path = _name(platform, conf)
    backup = cf.backup_path(path, "20261206-060000")
    assert run(cf.copy_cmd(platform, path, backup)) == 0
    assert run(cf.verify_cmd(platform, path, "database", SHANGHAI)) == 1  # not yet
    assert run(cf.set_cmd(platform, path, "database", SHANGHAI)) == 0
    assert run(cf.verify_cmd(platform, path, "database", SHANGHAI)) == 0
    lines = conf.read_text().replace("\r\n", "\n").splitlines()
    assert lines == ["user = cc", "timeout = 30", f"database = {SHANGHAI}"]  # the others kept
    assert run(cf.copy_cmd(platform, backup, path)) == 0
    assert conf.read_text() == CONF


def test_set_on_a_missing_file_fails_and_creates_nothing(host: tuple[str, Path, Run]) -> None:
    platform, conf, run = host
    missing = conf.with_name("nosuch.conf")
    assert run(cf.set_cmd(platform, _name(platform, missing), "database", SHANGHAI)) != 0
    assert not missing.exists()


@pytest.mark.parametrize("platform", ["windows", "systemd"])
@pytest.mark.parametrize(
    ("key", "value"), [("database", "x & del *"), ("database", "a)b"), ("data base", "x"), ("db", "50%"), ("k", "")]
)
def test_unsafe_text_is_refused(platform: str, key: str, value: str) -> None:
    with pytest.raises(UnsafeArgument):
        cf.set_cmd(platform, "datasource.conf", key, value)
    with pytest.raises(UnsafeArgument):
        cf.verify_cmd(platform, "datasource.conf", key, value)


def test_windows_paths_are_quoted_or_refused() -> None:
    assert cf.copy_cmd("windows", r"C:\CallCenter\conf\ds.conf", "b") == r'copy /y "C:\CallCenter\conf\ds.conf" "b"'
    with pytest.raises(UnsafeArgument):
        cf.copy_cmd("windows", r"C:\x & del\ds.conf", "b")


# ----- runbook validation of the new steps -----------------------------------------------
RB = textwrap.dedent("""\
    version: 1
    name: ds
    steps:
      - config: {op: backup, ipc: primary, file: datasource}
      - config: {op: set, ipc: ipc-a, file: datasource, key: database, value: "db1:1521/CCDB"}
      - service: {op: restart, name: kcbp, ipc: ipc-a}
    """)


@pytest.mark.parametrize(
    ("old", "new", "line", "text"),
    [
        ('value: "db1:1521/CCDB"', 'value: "db1 & del *"', 5, "String should match pattern"),
        ("key: database, ", "", 5, "needs `key` and `value`"),
        ("op: backup,", "op: backup, key: x,", 4, "takes no `key`"),
        ("file: datasource}", "file: secrets}", 4, "no config file 'secrets' in the inventory of"),
        ("name: kcbp", "name: kcbq", 6, "Input should be 'driver'"),
    ],
)
def test_runbook_config_steps_validated(tmp_path: Path, old: str, new: str, line: int, text: str) -> None:
    from failover import runbook
    from failover.inventory import load
    from tests.test_inventory import GOOD as INV
    from tests.test_inventory import _write

    conf = "\n        config_files: {datasource: d.conf}"
    doc = INV
    for role in ("primary", "standby"):
        doc = doc.replace(f"        preferred_role: {role}", f"        preferred_role: {role}{conf}")
    c = load(str(_write(tmp_path, doc))).clusters[0]
    rb = tmp_path / "rb.yaml"
    rb.write_text(RB)
    assert runbook.load(rb, c).steps[2].title(3) == "restart kcbp on ipc-a"
    rb.write_text(RB.replace(old, new, 1))
    with pytest.raises(runbook.RunbookError) as e:
        runbook.load(rb, c)
    assert any(p.line == line and text in str(p) for p in e.value.problems), e.value.problems


def test_inventory_refuses_a_config_path_cmd_exe_cannot_quote(tmp_path: Path) -> None:
    from failover.inventory import check
    from tests.test_inventory import GOOD as INV
    from tests.test_inventory import _write

    bad = "\n        config_files: {datasource: 'C:\\cc\\a&b.conf'}"
    doc = INV.replace("platform: systemd", "platform: windows").replace(
        "services:\n      driver", "services:\n      fax: {service: FaxServer}\n      driver"
    )
    doc = doc.replace("        preferred_role: primary", "        preferred_role: primary" + bad)
    _, problems = check(_write(tmp_path, doc))
    assert any(
        p.line == 12
        and p.path.endswith("config_files.datasource")
        and "cannot be quoted safely for windows" in p.message
        for p in problems
    ), problems
