"""Inventory validation: the shipped example and the lab's inventory are valid;
bad files produce every error with the right line number and field."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from failover import inventory as inv_mod
from failover.cli import main
from tests.conftest import REPO

EXAMPLE = REPO / "inventory" / "example-windows.yaml"


def test_example_is_valid() -> None:
    inv = inv_mod.load(EXAMPLE)
    c = inv.cluster()
    assert [i.name for i in c.ipcs] == ["ipc-new", "ipc-old"]
    assert c.home_primary().channels == 60 and c.peer("ipc-new").channels == 30
    assert all(i.platform == "windows" and i.fax_channels == 4 for i in c.ipcs)


def test_cli_check_example_ok() -> None:
    r = CliRunner().invoke(main, ["inventory", "check", str(EXAMPLE)])
    assert r.exit_code == 0, r.output
    assert "OK" in r.output and "ipc-new" in r.output


def _write(tmp_path: Path, text: str) -> Path:
    keys = tmp_path / "k"
    keys.mkdir(exist_ok=True)
    (keys / "id").write_text("x")
    (keys / "kh").write_text("")
    p = tmp_path / "inv.yaml"
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


GOOD = """
version: 1
clusters:
  - name: cc
    zookeeper: {hosts: ["127.0.0.1:2181"], path: /failover/cc}
    ipcs:
      - name: ipc-a
        address: 10.0.0.1
        platform: systemd
        ssh: {user: root, key: k/id, known_hosts: k/kh}
        channels: 60
        preferred_role: primary
        http: {advertise: 10.0.1.1}
      - name: ipc-b
        address: 10.0.0.2
        platform: systemd
        ssh: {user: root, key: k/id, known_hosts: k/kh}
        channels: 30
        preferred_role: standby
        http: {advertise: 10.0.1.2}
    services:
      driver: {service: dialogic.service}
      kcxp: {service: kcxp.service}
      kcbp: {service: kcbp.service}
      kcxp-replica: {service: kcxp-replica.service}
      kcbp-replica: {service: kcbp-replica.service}
      cti: {service: cti.service}
      ivr: {service: ivr.service}
"""


def test_good_minimal_file(tmp_path: Path) -> None:
    inv = inv_mod.load(_write(tmp_path, GOOD))
    assert inv.cluster("cc").timings.failures_before_fault == 2  # defaults applied


# (description, edit of GOOD as (old, new), expected line, expected text)
BAD = [
    (
        "status page password without an agent token",
        ("        http: {advertise: 10.0.1.1}", "        http: {advertise: 10.0.1.1, auth: {basic_file: k/id}}"),
        12,
        "failsafe lease needs a bearer token beside it",
    ),
    (
        "unknown key (typo)",
        ("        channels: 60", "        chanels: 60"),
        10,
        "unknown key 'chanels' (did you mean 'channels'?)",
    ),
    (
        "wrong type",
        ("        channels: 30", "        channels: thirty"),
        17,
        "channels: Input should be a valid integer",
    ),
    (
        "out of range port",
        ("ssh: {user: root, key: k/id", "ssh: {port: 70000, user: root, key: k/id"),
        9,
        "ssh.port: Input should be less than or equal to 65535",
    ),
    (
        "missing required key",
        ("        address: 10.0.0.2\n", ""),
        13,
        "missing required key 'address'",
    ),
    (
        "bad platform",
        (
            "        platform: systemd\n        ssh: {user: root, key: k/id, known_hosts: k/kh}\n        channels: 30",
            "        platform: solaris\n        ssh: {user: root, key: k/id, known_hosts: k/kh}\n        channels: 30",
        ),
        15,
        "'windows', 'systemd' or 'lab'",
    ),
    (
        "duplicate IPC name",
        ("      - name: ipc-b", "      - name: ipc-a"),
        13,
        "duplicate IPC name 'ipc-a'",
    ),
    (
        "duplicate YAML key",
        (
            "      cti: {service: cti.service}",
            "      cti: {service: cti.service}\n      cti: {service: other.service}",
        ),
        27,
        "duplicate key 'cti'",
    ),
    (
        "unknown service name",
        (
            "      ivr: {service: ivr.service}",
            "      ivr: {service: ivr.service}\n      sms: {service: sms.service}",
        ),
        28,
        "'driver', 'kcxp'",
    ),
    (
        "layout names undefined service",
        ("      kcbp-replica: {service: kcbp-replica.service}\n", ""),
        21,
        "role layout 'promoted' (the plan's default layout) names undefined service 'kcbp-replica'",
    ),
    (
        "missing key file",
        (
            "ssh: {user: root, key: k/id, known_hosts: k/kh}\n        channels: 30",
            "ssh: {user: root, key: k/nope, known_hosts: k/kh}\n        channels: 30",
        ),
        16,
        "file not found",
    ),
    (
        "unsafe service name",
        ("      cti: {service: cti.service}", "      cti: {service: 'cti; rm -rf /'}"),
        26,
        "cannot be quoted safely for systemd",
    ),
    (
        "two preferred primaries",
        (
            "        channels: 30\n        preferred_role: standby",
            "        channels: 30\n        preferred_role: primary",
        ),
        6,
        "exactly one IPC must have preferred_role: primary",
    ),
    (
        "inline secret",
        ("path: /failover/cc}", "path: /failover/cc, auth: {password: hunter2}}"),
        4,
        "unknown key 'password'",
    ),
    ("YAML syntax error", ("    ipcs:", "    ipcs: [unclosed"), 6, "YAML syntax"),
    (
        "cycle in start order",
        (
            "      driver: {service: dialogic.service}",
            "      driver: {service: dialogic.service, after: [ivr]}",
        ),
        21,
        "cyclic start order",
    ),
    (
        "no address for the failsafe lease",
        ("        http: {advertise: 10.0.1.1}\n", ""),
        6,
        "ipc-a's agent listens on 0.0.0.0 with no `advertise`",
    ),
    (
        "loopback address, agents on two hosts",
        ("http: {advertise: 10.0.1.1}", "http: {advertise: 127.0.0.1}"),
        12,
        "127.0.0.1 is a loopback address, but ipc-b's agent is on another host (10.0.1.2)",
    ),
    (
        "both agents on one endpoint",
        ("http: {advertise: 10.0.1.2}", "http: {advertise: 10.0.1.1}"),
        19,
        "each agent would ask itself for its failsafe lease",
    ),
    (
        "line check without a command",
        ("      ivr: {service: ivr.service}", "      ivr: {service: ivr.service}\n    line_check: {timeout: 2}"),
        28,
        "missing required key 'command'",
    ),
    (
        "CTI in the standby layout",
        (
            "      ivr: {service: ivr.service}",
            "      ivr: {service: ivr.service}\n    layouts:\n      standby: [driver, cti]",
        ),
        29,
        "must not run cti",
    ),
]


@pytest.mark.parametrize(("desc", "edit", "line", "text"), BAD, ids=[b[0] for b in BAD])
def test_bad_file(tmp_path: Path, desc: str, edit: tuple[str, str], line: int, text: str) -> None:
    assert edit[0] in GOOD, f"test setup: {edit[0]!r} not in GOOD"
    p = _write(tmp_path, GOOD.replace(edit[0], edit[1], 1))
    inv, problems = inv_mod.check(p)
    assert inv is None
    msgs = [str(x) for x in problems]
    hit = [m for m in msgs if text in m]
    assert hit, f"{desc}: expected {text!r} in {msgs}"
    assert any(m.startswith(f"{p}:{line}:") for m in hit), f"{desc}: expected line {line}: {hit}"


def test_every_error_listed_and_exit_2(tmp_path: Path) -> None:
    text = GOOD.replace("        channels: 60", "        chanels: 60").replace(
        "        channels: 30", "        channels: thirty"
    )
    p = _write(tmp_path, text)
    r = CliRunner().invoke(main, ["inventory", "check", str(p)])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if re.match(rf"{re.escape(str(p))}:\d+:\d+: ", ln)]
    assert len(lines) >= 2, r.output
    assert "2 error(s)" in r.output or "error(s)" in r.output


def test_credentials_from_env_never_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, GOOD.replace("path: /failover/cc}", "path: /failover/cc, auth: {env: CC_ZK}}"))
    inv = inv_mod.load(p)
    auth = inv.cluster().zookeeper.auth
    assert auth is not None
    monkeypatch.setenv("CC_ZK", "fo:s3cret")
    assert auth.credentials() == "fo:s3cret"
    assert "s3cret" not in repr(inv)  # the model holds the variable's name only
