"""Drill runbooks (YAML in runbooks/): the format and its complete validation
before anything runs — every error with file:line:column and the field.

    version: 1
    name: sunday-drill
    window: {start: "06:00", end: "12:00"}     # optional; else --window
    steps:
      - name: primary line fault
        inject: {fault: line-alarm, ipc: primary}
      - expect: {board_down: home-primary, within: 15}
      - check: [inbound, outbound, agent]
    rollback: [...]    # run only when a step failed (e.g. restore a backup)
    cleanup: [...]     # always run, also after Ctrl-C

IPC references: `primary` / `standby` (whoever holds the role when the step
runs), `home-primary` / `home-standby` (the inventory's preferred roles), or a
name. Each step has exactly one action key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from failover import config_files, yamlpos
from failover import inventory as inv_mod
from failover.inventory import Problem

IpcRef = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
ServiceName = inv_mod.ServiceName
FAULTS = (
    "kill",
    "hang",
    "unhang",
    "stop",
    "fail-start",
    "slow-stop",
    "stop-fail",
    "line-alarm",
    "line-clear",
    "driver-crash",
    "sshd-down",
    "sshd-up",
    "unreachable",
    "reachable",
)
SERVICE_FAULTS = ("kill", "hang", "unhang", "stop", "fail-start", "slow-stop", "stop-fail")
ACTIONS = (
    "inject",
    "restore",
    "expect",
    "check",
    "switchover",
    "failover",
    "rejoin",
    "pause",
    "resume",
    "confirm",
    "wait",
    "run",
    "config",
    "service",
)


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Inject(_M):
    fault: Literal[FAULTS]  # type: ignore[valid-type]
    ipc: IpcRef
    service: ServiceName | None = None
    seconds: Annotated[float, Field(gt=0, le=600)] = 5.0

    @model_validator(mode="after")
    def _svc(self) -> Inject:
        if self.fault in SERVICE_FAULTS and self.service is None:
            raise ValueError(f"fault {self.fault!r} needs a `service`")
        return self


class Restore(_M):
    ipc: IpcRef  # or "all"


class ServiceState(_M):
    name: ServiceName
    state: Literal["running", "stopped"]
    on: IpcRef


class Expect(_M):
    primary: IpcRef | None = None
    service: ServiceState | None = None
    capacity_at_least: Annotated[int, Field(ge=0)] | None = None
    standby_ineligible: bool | None = None
    standby_eligible: bool | None = None
    epoch_increased: bool | None = None
    board_down: IpcRef | None = None
    within: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _some(self) -> Expect:
        keys = (
            "primary",
            "service",
            "capacity_at_least",
            "standby_ineligible",
            "standby_eligible",
            "epoch_increased",
            "board_down",
        )
        if all(getattr(self, k) is None for k in keys):
            raise ValueError(f"an expectation needs at least one condition: {', '.join(keys)}")
        return self


class Drain(_M):
    """A drained switchover step (docs/cli.md): busy out, calls finish, then
    the hand-over. A drill runs unattended: at the deadline it proceeds
    (cutting the calls left) or cancels (the step fails), never asks."""

    below: Annotated[int, Field(ge=0)] = 0
    max_wait: Annotated[float, Field(gt=0, le=86400)] = 900.0
    on_deadline: Literal["proceed", "cancel"] = "cancel"


class Switchover(_M):
    to: IpcRef | None = None
    reason: str = ""
    drain: Drain | None = None


class ToIpc(_M):
    ipc: IpcRef
    reason: str = ""


class FailoverStep(_M):
    to: IpcRef
    force: bool = False
    reason: str = ""


class Pause(_M):
    reason: str = ""


class Confirm(_M):
    prompt: str
    timeout: Annotated[float, Field(gt=0, le=86400)] = 300.0


class Run(_M):
    ipc: IpcRef
    command: str
    timeout: Annotated[float, Field(gt=0, le=3600)] = 60.0
    expect_output: str | None = None  # the output must contain this


class Config(_M):
    """One operation on an IPC's configuration file (inventory `config_files`):
    backup (a copy named with the drill's start time), set KEY = VALUE,
    verify that line, restore from this run's backup."""

    op: Literal["backup", "set", "verify", "restore"]
    ipc: IpcRef
    file: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")]
    key: Annotated[str, Field(pattern=config_files.KEY_PATTERN)] | None = None
    value: Annotated[str, Field(pattern=config_files.VALUE_PATTERN)] | None = None
    timeout: Annotated[float, Field(gt=0, le=600)] = 30.0

    @model_validator(mode="after")
    def _key_value(self) -> Config:
        needs = self.op in ("set", "verify")
        if needs and (self.key is None or self.value is None):
            raise ValueError(f"config op {self.op!r} needs `key` and `value`")
        if not needs and (self.key is not None or self.value is not None):
            raise ValueError(f"config op {self.op!r} takes no `key` / `value`")
        return self


class ServiceOp(_M):
    """Stop, start or restart one service on an IPC as the platform does it
    (sc.exe, systemctl, the lab's simulator), with the inventory's timeouts."""

    op: Literal["stop", "start", "restart"]
    name: ServiceName
    ipc: IpcRef


class Step(_M):
    name: str | None = None
    continue_on_failure: bool = False
    inject: Inject | None = None
    restore: Restore | None = None
    expect: Expect | None = None
    check: list[Literal["inbound", "outbound", "agent"]] | None = None
    switchover: Switchover | None = None
    failover: FailoverStep | None = None
    rejoin: ToIpc | None = None
    pause: Pause | None = None
    resume: Pause | None = None
    confirm: Confirm | None = None
    wait: Annotated[float, Field(gt=0, le=3600)] | None = None
    run: Run | None = None
    config: Config | None = None
    service: ServiceOp | None = None

    @model_validator(mode="after")
    def _one(self) -> Step:
        present = [a for a in ACTIONS if getattr(self, a) is not None]
        if len(present) != 1:
            raise ValueError(
                f"a step has exactly one action ({', '.join(ACTIONS)}); this one has {', '.join(present) or 'none'}"
            )
        return self

    @property
    def action(self) -> str:
        return next(a for a in ACTIONS if getattr(self, a) is not None)

    def title(self, n: int) -> str:
        """The step's name, or one said from what it does (never "step 9: check")."""
        return self.name or self.summary()

    def summary(self) -> str:
        # IPC references are shown as written (home-primary, ...): the runbook's words
        said = {
            "inject": lambda i: f"inject {i.fault}{' ' + i.service if i.service else ''} on {i.ipc}",
            "restore": lambda r: f"clear injected faults on {r.ipc}",
            "expect": lambda e: "expect " + ", ".join(_conditions(e)),
            "check": lambda c: f"basic call tests ({', '.join(c)})",
            "switchover": lambda s: f"switchover to {s.to or 'standby'}",
            "failover": lambda f: f"failover to {f.to}",
            "rejoin": lambda r: f"rejoin {r.ipc}",
            "pause": lambda _: "pause automatic actions",
            "resume": lambda _: "resume automatic actions",
            "confirm": lambda c: f"confirm: {c.prompt}",
            "wait": lambda w: f"wait {w:g} s",
            "run": lambda r: f"run on {r.ipc}: {r.command}",
            "config": lambda c: f"{c.op} {c.file} on {c.ipc}" + (f": {c.key} = {c.value}" if c.key else ""),
            "service": lambda v: f"{v.op} {v.name} on {v.ipc}",
        }
        text = said[self.action](getattr(self, self.action))
        return text if len(text) <= 70 else text[:69] + "…"


def _conditions(e: Expect) -> list[str]:
    out = [f"primary {e.primary}"] if e.primary else []
    if e.service is not None:
        out.append(f"{e.service.name} {e.service.state} on {e.service.on}")
    if e.board_down:
        out.append(f"{e.board_down}'s board down")
    if e.capacity_at_least is not None:
        out.append(f"capacity >= {e.capacity_at_least}")
    flags = ("standby_ineligible", "standby_eligible", "epoch_increased")
    out += [f.replace("_", " ") for f in flags if getattr(e, f)]
    return out


class Window(_M):
    start: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]  # local time, HH:MM
    end: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class Runbook(_M):
    version: Literal[1]
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,59}$")]
    description: str = ""
    cluster: str | None = None
    window: Window | None = None
    steps: Annotated[list[Step], Field(min_length=1)]
    rollback: list[Step] = []
    cleanup: list[Step] = []


class RunbookError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def load(path: str | os.PathLike[str], cluster: inv_mod.Cluster | None = None) -> Runbook:
    """Validate completely (schema, then references against the inventory);
    raise RunbookError with every problem."""
    fname = str(path)
    try:
        loaded = yamlpos.load(Path(path).read_text())
    except OSError as e:
        raise RunbookError([Problem(fname, 1, 1, "", f"cannot read the runbook: {e.strerror}")]) from None
    except yamlpos.YamlSyntaxError as e:
        raise RunbookError([Problem(fname, e.mark.line, e.mark.column, "", e.message)]) from None
    problems = [Problem(fname, m.line, m.column, inv_mod.render_path(p), msg) for p, m, msg in loaded.problems]
    try:
        rb = Runbook.model_validate(loaded.data)
    except ValidationError as e:
        problems += [inv_mod._from_pydantic(fname, loaded, err, Runbook) for err in e.errors()]
        raise RunbookError(sorted(set(problems), key=lambda p: (p.line, p.column))) from None
    if cluster is not None:
        names = {i.name for i in cluster.ipcs} | {"primary", "standby", "home-primary", "home-standby"}
        for section in ("steps", "rollback", "cleanup"):
            for n, st in enumerate(getattr(rb, section)):
                for ref_path, ref in _refs(st):
                    allowed = names | ({"all"} if st.restore is not None else set())
                    if ref not in allowed:
                        m = loaded.where((section, n, *ref_path))
                        problems.append(
                            Problem(
                                fname,
                                m.line,
                                m.column,
                                inv_mod.render_path((section, n, *ref_path)),
                                f"unknown IPC {ref!r}; expected one of: {', '.join(sorted(allowed))}",
                            )
                        )
                if st.check is not None:
                    missing = [c for c in st.check if c not in cluster.smoke_checks]
                    if missing:
                        m = loaded.where((section, n, "check"))
                        problems.append(
                            Problem(
                                fname,
                                m.line,
                                m.column,
                                inv_mod.render_path((section, n, "check")),
                                f"no smoke check {', '.join(missing)} in the inventory",
                            )
                        )
                for ref_path, msg in _host_problems(st, cluster):
                    m = loaded.where((section, n, *ref_path))
                    path = inv_mod.render_path((section, n, *ref_path))
                    problems.append(Problem(fname, m.line, m.column, path, msg))
    if problems:
        raise RunbookError(sorted(set(problems), key=lambda p: (p.line, p.column)))
    return rb


def _host_problems(st: Step, cluster: inv_mod.Cluster) -> list[tuple[tuple[str, ...], str]]:
    """A `config` step's file must be declared on every IPC its reference can
    mean (`primary` can be either); a `service` step's service must exist."""
    out: list[tuple[tuple[str, ...], str]] = []
    if st.config is not None:
        ref = st.config.ipc
        home = next(i.name for i in cluster.ipcs if i.preferred_role == "primary")
        named = {"home-primary": home, "home-standby": next((i.name for i in cluster.ipcs if i.name != home), "")}
        ipcs = [i for i in cluster.ipcs if i.name == named.get(ref, ref) or ref in ("primary", "standby")]
        lacking = [i.name for i in ipcs if st.config.file not in i.config_files]
        if lacking:
            out.append(
                (("config", "file"), f"no config file {st.config.file!r} in the inventory of {', '.join(lacking)}")
            )
    if st.service is not None and st.service.name not in cluster.services:
        out.append((("service", "name"), f"no service {st.service.name!r} in the inventory"))
    return out


def _refs(st: Step) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = []
    for action, field in (
        ("inject", "ipc"),
        ("restore", "ipc"),
        ("rejoin", "ipc"),
        ("run", "ipc"),
        ("config", "ipc"),
        ("service", "ipc"),
        ("switchover", "to"),
        ("failover", "to"),
    ):
        obj = getattr(st, action)
        if obj is not None and getattr(obj, field, None):
            out.append(((action, field), getattr(obj, field)))
    if st.expect is not None:
        for key in ("primary", "board_down"):
            if getattr(st.expect, key):
                out.append((("expect", key), getattr(st.expect, key)))
        if st.expect.service is not None:
            out.append((("expect", "service", "on"), st.expect.service.on))
    return out
