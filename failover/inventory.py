"""The inventory: clusters (pairs of IPCs), how to reach them, their services,
probes, smoke checks, timings and policy. YAML in, a validated frozen model out.

Validation collects *every* error, each with file:line:column, the field path
and what is expected; unknown keys are errors (a typo must not pass silently).
Secrets (ZooKeeper digest credentials) are never inline: only the name of an
environment variable or a file that holds them.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from failover import platforms, yamlpos
from failover.layouts import (
    APP_SERVICES,
    DEFAULT_AFTER,
    DEFAULT_LAYOUTS,
    SERVICES,
    Layout,
    running_set,
    start_order,
)

ServiceName = Literal["driver", "kcxp", "kcbp", "kcxp-replica", "kcbp-replica", "cti", "ivr", "fax"]
LayoutName = Literal["primary", "standby", "promoted", "fenced"]
SmokeName = Literal["inbound", "outbound", "agent"]
Platform = Literal["windows", "systemd", "lab"]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
Seconds = Annotated[float, Field(gt=0, le=3600)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TcpProbe(_Model):
    """Application-level probe: connect, send `send`, expect a reply starting
    with `expect`. A hung process accepts TCP (the kernel does) but never answers."""

    port: Annotated[int, Field(ge=1, le=65535)]
    host: str | None = None  # default: the IPC's address
    send: str = "PING\n"
    expect: str
    timeout: Seconds = 1.0


class Probe(_Model):
    tcp: TcpProbe | None = None
    command: str | None = None  # run on the IPC over SSH; exit 0 = healthy
    timeout: Seconds = 5.0

    @model_validator(mode="after")
    def _one(self) -> Probe:
        if (self.tcp is None) == (self.command is None):
            raise ValueError("a probe is either `tcp` or `command`, exactly one")
        return self


class Commands(_Model):
    """Explicit commands instead of a platform service name. `status` exits 0
    when running, 3 or 7 when cleanly stopped (LSB / Pacemaker), else failed."""

    start: str
    stop: str
    status: str


class Service(_Model):
    service: str | None = None  # the platform's service name (sc.exe / systemd unit / lab)
    commands: Commands | None = None
    probe: Probe | None = None
    start_timeout: Seconds = 30.0
    stop_timeout: Seconds = 30.0
    after: list[ServiceName] | None = None  # start-order constraints; None = the plan's

    @model_validator(mode="after")
    def _one(self) -> Service:
        if (self.service is None) == (self.commands is None):
            raise ValueError("give either `service` (the platform's name) or `commands`, exactly one")
        return self


class Ssh(_Model):
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: Annotated[str, Field(pattern=r"^[A-Za-z0-9._][A-Za-z0-9._@\\-]{0,63}$")]
    key: str  # private key file (key authentication only)
    known_hosts: str  # strict host key checking against this file
    connect_timeout: Seconds = 5.0


class LabHost(_Model):
    control: list[str]  # argv of the lab's service-control command (simctl)


class HttpAuth(_Model):
    """Optional auth for /cluster and /history (health, primary, standby and
    metrics stay open for monitoring). Secrets come from env or file only."""

    token_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None  # bearer token
    token_file: str | None = None
    basic_file: str | None = None  # a file holding "user:password"

    def secrets(self) -> tuple[str | None, str | None]:
        """(bearer token, 'user:password'), read now; never logged."""
        token = None
        if self.token_env:
            token = os.environ.get(self.token_env) or None
        elif self.token_file:
            token = Path(self.token_file).read_text().strip() or None
        basic = Path(self.basic_file).read_text().strip() if self.basic_file else None
        return token, basic


class HttpApi(_Model):
    """The agent's HTTP endpoint. Agents run on hosts of their own beside the
    IPCs, so by default it listens on every interface; `advertise` is the
    address the *peer's* agent uses to reach it (the failsafe lease goes there),
    required whenever `bind` is a wildcard."""

    enabled: bool = True
    bind: str = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = 8008
    advertise: Annotated[str, Field(pattern=r"^[A-Za-z0-9.\-]{1,253}$|^\[?[0-9A-Fa-f:]+\]?$")] | None = None
    auth: HttpAuth | None = None

    def reach_address(self) -> str:
        """The address a peer connects to: advertise, else the bind address."""
        return self.advertise or self.bind

    def url(self) -> str:
        host = self.reach_address()
        return f"http://[{host.strip('[]')}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


class Fence(_Model):
    """A fence device for one IPC (a BMC, a switched PDU): commands run on the
    agent's own host, never through a shell, with the fence-agents exit-code
    contract, so Debian's fence_ipmilan, fence_apc_snmp, fence_ilo ... work as
    they are. `status`: 0 powered on, 2 powered off, anything else an error;
    `off`/`on`: 0 done. Its password only by reference: the fence-agents'
    `--password-script`, or `secret_env`/`secret_file`, handed to the commands
    as the environment variable FAILOVER_FENCE_SECRET."""

    off: Annotated[str, Field(min_length=1)]
    status: Annotated[str, Field(min_length=1)]
    on: str | None = None
    timeout: Seconds = 20.0  # each command, and the wait for "powered off" after `off`
    secret_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    secret_file: str | None = None

    @model_validator(mode="after")
    def _no_inline_secret(self) -> Fence:
        for cmd in filter(None, (self.off, self.status, self.on)):
            try:
                shlex.split(cmd)
            except ValueError as e:
                raise ValueError(f"cannot split this command into arguments ({e}): it is run without a shell") from None
            if INLINE_SECRET.search(cmd):
                raise ValueError(
                    "a password inline in a fence command would show in logs and `ps`: use "
                    "--password-script, secret_env or secret_file"
                )
        return self

    def secret(self) -> str | None:
        """Read now, handed to the commands' environment only; never logged."""
        if self.secret_env:
            return os.environ.get(self.secret_env) or None
        if self.secret_file:
            return Path(self.secret_file).read_text().strip() or None
        return None


# fence-agents' inline password forms: -p X, --password X / --password=X, passwd=X
INLINE_SECRET = re.compile(r"(?:^|\s)(?:-p\s|--password(?:\s|=)|passwd=)")


class Ipc(_Model):
    name: Name
    address: Annotated[str, Field(pattern=r"^[A-Za-z0-9.:\-]{1,253}$")]
    platform: Platform
    ssh: Ssh
    channels: Annotated[int, Field(ge=0, le=480)]  # E1/T1 channels cabled to this IPC's board
    fax_channels: Annotated[int, Field(ge=0, le=64)] = 0
    preferred_role: Literal["primary", "standby"]
    probe_ports: dict[ServiceName, Annotated[int, Field(ge=1, le=65535)]] = {}
    lab: LabHost | None = None
    faults: dict[str, str] = {}  # fault name -> command, for drills on real hosts
    # name -> the file's path on the IPC (e.g. datasource: 'C:\CallCenter\conf\datasource.conf'),
    # for runbook `config` steps (back up, set a key, verify, restore)
    config_files: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")], str] = {}
    http: HttpApi = HttpApi()  # the agent's health endpoint
    fence: Fence | None = None  # a fence device: proof that this IPC is off (docs/agent.md)


class ZkAuth(_Model):
    scheme: Literal["digest"] = "digest"
    env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ZkAuth:
        if (self.env is None) == (self.file is None):
            raise ValueError("credentials come from `env` (a variable name) or `file`, exactly one")
        return self

    def credentials(self) -> str:
        """'user:password', read at use time; never logged."""
        if self.env:
            value = os.environ.get(self.env)
            if not value:
                raise InventoryError([f"ZooKeeper credentials: environment variable {self.env} is not set"])
            return value.strip()
        assert self.file is not None
        return Path(self.file).read_text().strip()


class ZooKeeper(_Model):
    hosts: Annotated[list[Annotated[str, Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")]], Field(min_length=1)]
    path: Annotated[str, Field(pattern=r"^(/[A-Za-z0-9_.\-]+)+$")]
    auth: ZkAuth | None = None


class Timings(_Model):
    monitor_interval: Annotated[float, Field(ge=0.05, le=60)] = 1.0
    failures_before_fault: Annotated[int, Field(ge=1, le=20)] = 2
    session_timeout: Annotated[float, Field(ge=2, le=60)] = 6.0


class Policy(_Model):
    mode: Literal["automatic", "manual"] = "automatic"
    max_failovers: Annotated[int, Field(ge=1, le=100)] = 2  # automatic failovers per window
    failover_window: Seconds = 3600.0
    restart_in_place: bool = True  # KCXP/KCBP faults (and CTI/IVR with no standby)
    max_restarts: Annotated[int, Field(ge=0, le=20)] = 3


class LineCheck(_Model):
    """How to read the board's line state on an IPC, run as part of its batched
    status (still one round trip): exit 0 line up, 1 line alarm, 3 board driver
    not running, anything else unknown. Without one, line state is "not
    monitored": it never blocks a switchover or a failover."""

    command: str
    timeout: Seconds = 5.0


class Calls(_Model):
    """The calls in progress on an IPC, and how to stop it taking new ones
    (a drained switchover, docs/cli.md). Operator commands run on the IPC as
    written, like `line_check`: `active` prints the number of calls in
    progress, or `ivr=N agent=M` when the CTI can tell them apart; `busy_out`
    makes the lines answer busy (or the PBX route elsewhere); `release` undoes
    it. Exit 0 = done."""

    active: Annotated[str, Field(min_length=1)]
    busy_out: Annotated[str, Field(min_length=1)]
    release: Annotated[str, Field(min_length=1)]
    # Each command runs in the primary's cycle (busy_out, release) or beside it
    # (active): a bound that keeps a hung CTI from delaying fault detection.
    timeout: Annotated[float, Field(gt=0, le=10)] = 5.0


class SmokeCheck(_Model):
    command: str  # run on the IPC that serves calls; exit 0 = passed
    timeout: Seconds = 30.0


class Webhook(_Model):
    """A receiver of the agents' notifications: a JSON POST to `url`
    (docs/monitoring.md). Its token only by reference (`token_env` or
    `token_file`), sent as `header` ("Authorization: Bearer <token>" by
    default); a URL with user:password in it is refused (semantic_checks)."""

    name: Name
    url: Annotated[str, Field(min_length=8, max_length=2000)]
    token_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    token_file: str | None = None
    header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] = "Authorization"
    timeout: Annotated[float, Field(gt=0, le=60)] = 5.0  # each attempt
    # then the dead-letter file; with the default waits (1, 2, 4 ... 32, then
    # 60 s) 20 attempts cover about 15 minutes of a receiver being down.
    attempts: Annotated[int, Field(ge=1, le=100)] = 20
    backoff: Annotated[float, Field(gt=0, le=600)] = 1.0  # first wait, doubled after each failure
    max_backoff: Annotated[float, Field(gt=0, le=3600)] = 60.0

    def token(self) -> str | None:
        """Read at send time (a rotated token is picked up); never logged."""
        if self.token_env:
            return os.environ.get(self.token_env) or None
        if self.token_file:
            return Path(self.token_file).read_text().strip() or None
        return None


class Notify(_Model):
    """Where the agents send notifications of role changes, faults, holds,
    failed steps and a broken failsafe path (failover/notify/)."""

    webhooks: Annotated[list[Webhook], Field(min_length=1)]
    poll_interval: Annotated[float, Field(ge=0.1, le=60)] = 1.0  # how often the sender looks for new events
    # A condition (hold, fault, alert) is notified once it has lasted this long
    # (a broken failsafe path: at least 30 s, three of its tests).
    settle: Annotated[float, Field(ge=0, le=600)] = 5.0


class Cluster(_Model):
    name: Name
    drills_allowed: bool = False
    zookeeper: ZooKeeper
    timings: Timings = Timings()
    policy: Policy = Policy()
    ipcs: list[Ipc]
    services: dict[ServiceName, Service]
    smoke_checks: dict[SmokeName, SmokeCheck] = {}
    line_check: LineCheck | None = None
    calls: Calls | None = None
    layouts: dict[LayoutName, list[ServiceName]] = {}
    notify: Notify | None = None

    # ---- helpers used by the rest of the package (pure) -------------------
    def ipc(self, name: str) -> Ipc:
        for i in self.ipcs:
            if i.name == name:
                return i
        raise KeyError(name)

    def peer(self, name: str) -> Ipc:
        return next(i for i in self.ipcs if i.name != name)

    def line_monitored(self, name: str) -> bool:
        """The board's line state is read on this IPC: a `line_check`, or the
        lab's simulator, which reports it with every status."""
        return self.line_check is not None or self.ipc(name).platform == "lab"

    def home_primary(self) -> Ipc:
        return next(i for i in self.ipcs if i.preferred_role == "primary")

    def after(self) -> dict[str, tuple[str, ...]]:
        return {
            s: tuple(svc.after) if svc.after is not None else DEFAULT_AFTER.get(s, ())
            for s, svc in self.services.items()
        }

    def running(self, layout: Layout, board_down: bool = False) -> frozenset[str]:
        return running_set(layout, self.services, self.layouts, board_down)


class Inventory(_Model):
    version: Literal[1]
    clusters: Annotated[list[Cluster], Field(min_length=1)]

    def cluster(self, name: str | None = None) -> Cluster:
        if name is None:
            if len(self.clusters) == 1:
                return self.clusters[0]
            names = ", ".join(c.name for c in self.clusters)
            raise InventoryError([f"the inventory has several clusters ({names}): name one with --cluster"])
        for c in self.clusters:
            if c.name == name:
                return c
        raise InventoryError([f"no cluster named {name!r} (have: {', '.join(c.name for c in self.clusters)})"])

    def find_ipc(self, name: str) -> tuple[Cluster, Ipc]:
        for c in self.clusters:
            for i in c.ipcs:
                if i.name == name:
                    return c, i
        names = ", ".join(i.name for c in self.clusters for i in c.ipcs)
        raise InventoryError([f"no IPC named {name!r} (have: {names})"])


# ---------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------


class InventoryError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.column}: {where}{self.message}"


def render_path(path: Iterable[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


PATH_FIELDS = (("ssh", "key"), ("ssh", "known_hosts"))


def load(file: str | os.PathLike[str]) -> Inventory:
    """Load and validate an inventory; raise InventoryError with every problem."""
    inv, problems = check(file)
    if problems:
        raise InventoryError([str(p) for p in problems])
    assert inv is not None
    return inv


def check(file: str | os.PathLike[str]) -> tuple[Inventory | None, list[Problem]]:
    path = Path(file)
    fname = str(file)
    try:
        text = path.read_text()
    except OSError as e:
        return None, [Problem(fname, 1, 1, "", f"cannot read the inventory: {e.strerror}")]
    try:
        loaded = yamlpos.load(text)
    except yamlpos.YamlSyntaxError as e:
        return None, [Problem(fname, e.mark.line, e.mark.column, "", e.message)]

    problems = [Problem(fname, m.line, m.column, render_path(p), msg) for p, m, msg in loaded.problems]
    if not isinstance(loaded.data, dict):
        return None, [
            *problems,
            Problem(fname, 1, 1, "", "expected a mapping with `version` and `clusters`"),
        ]
    data = _resolve_paths(loaded.data, path.parent)
    try:
        inv = Inventory.model_validate(data)
    except ValidationError as e:
        problems += [_from_pydantic(fname, loaded, err) for err in e.errors()]
        return None, _sorted(problems)
    problems += [Problem(fname, *_pos(loaded, p), render_path(p), msg) for p, msg in semantic_checks(inv)]
    return (None if problems else inv), _sorted(problems)


def _pos(loaded: yamlpos.Loaded, path: tuple[str | int, ...]) -> tuple[int, int]:
    m = loaded.where(path)
    return m.line, m.column


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(set(problems), key=lambda p: (p.line, p.column, p.path, p.message))


def _resolve_paths(data: dict, base: Path) -> dict:
    """Relative key / known_hosts / credentials paths are relative to the inventory."""

    def fix(v: Any) -> Any:
        return str((base / v).resolve()) if isinstance(v, str) and v and not v.startswith("/") else v

    for c in data.get("clusters") or []:
        if not isinstance(c, dict):
            continue
        for ipc in c.get("ipcs") or []:
            ssh = ipc.get("ssh") if isinstance(ipc, dict) else None
            if isinstance(ssh, dict):
                for k in ("key", "known_hosts"):
                    if k in ssh:
                        ssh[k] = fix(ssh[k])
        zk = c.get("zookeeper")
        auth = zk.get("auth") if isinstance(zk, dict) else None
        if isinstance(auth, dict) and "file" in auth:
            auth["file"] = fix(auth["file"])
        notify = c.get("notify")
        for hook in (notify.get("webhooks") if isinstance(notify, dict) else None) or []:
            if isinstance(hook, dict) and "token_file" in hook:
                hook["token_file"] = fix(hook["token_file"])
    return data


def _from_pydantic(fname: str, loaded: yamlpos.Loaded, err: Any, root: Any = None) -> Problem:
    loc = tuple(x for x in err["loc"] if x != "[key]")
    # pydantic names union/function-validator branches in loc; drop what is not
    # a real key so the path matches the YAML.
    loc = tuple(x for x in loc if not (isinstance(x, str) and ("[" in x or "function-" in x)))
    kind = err["type"]
    if kind == "extra_forbidden":
        key = loc[-1]
        allowed = _allowed_keys(loc[:-1], root or Inventory)
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        msg = f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        if allowed:
            msg += f"; expected one of: {', '.join(allowed)}"
        m = loaded.where(loc, prefer_key=True)
    elif kind == "missing":
        msg = f"missing required key {loc[-1]!r}"
        m = loaded.where(loc[:-1])
    else:
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        if kind not in ("model_type", "dict_type", "list_type") and not isinstance(got, dict | list):
            msg += f" (got {got!r})"
        m = loaded.where(loc, prefer_key="[key]" in err["loc"])
    return Problem(fname, m.line, m.column, render_path(loc), msg)


def _allowed_keys(loc: tuple[str | int, ...], root: Any = None) -> list[str]:
    """The keys a mapping at this path accepts, from the model annotations."""
    tp: Any = root or Inventory
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    if typing.get_origin(tp) is dict:
        key = _unwrap(typing.get_args(tp)[0])
        if typing.get_origin(key) is Literal:
            return [str(a) for a in typing.get_args(key)]
    return []


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0]
        else:
            return tp


def semantic_checks(inv: Inventory) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-field rules pydantic cannot express. Returns (path, message) pairs."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    seen_clusters: dict[str, int] = {}
    seen_ipcs: dict[str, str] = {}
    seen_zk: dict[tuple[str, ...], str] = {}
    for ci, c in enumerate(inv.clusters):
        cp: tuple[str | int, ...] = ("clusters", ci)
        if c.name in seen_clusters:
            out.append(
                (
                    cp + ("name",),
                    f"duplicate cluster name {c.name!r} (also clusters[{seen_clusters[c.name]}])",
                )
            )
        seen_clusters.setdefault(c.name, ci)
        zkey = (*sorted(c.zookeeper.hosts), c.zookeeper.path)
        if zkey in seen_zk:
            out.append(
                (
                    cp + ("zookeeper", "path"),
                    f"ZooKeeper path {c.zookeeper.path} is already used by cluster {seen_zk[zkey]!r}",
                )
            )
        seen_zk.setdefault(zkey, c.name)
        if len(c.ipcs) != 2:
            out.append((cp + ("ipcs",), f"a cluster has exactly two IPCs, this one has {len(c.ipcs)}"))
        prim = [i.name for i in c.ipcs if i.preferred_role == "primary"]
        if len(c.ipcs) == 2 and len(prim) != 1:
            out.append(
                (
                    cp + ("ipcs",),
                    f"exactly one IPC must have preferred_role: primary (found {len(prim)})",
                )
            )
        for ii, ipc in enumerate(c.ipcs):
            ip: tuple[str | int, ...] = cp + ("ipcs", ii)
            if ipc.name in seen_ipcs:
                out.append(
                    (
                        ip + ("name",),
                        f"duplicate IPC name {ipc.name!r} (also in cluster {seen_ipcs[ipc.name]!r})",
                    )
                )
            seen_ipcs.setdefault(ipc.name, c.name)
            out += _ipc_checks(c, cp, ipc, ip)
        out += _lease_path_checks(c, cp)
        if c.zookeeper.auth and c.zookeeper.auth.file and not Path(c.zookeeper.auth.file).is_file():
            out.append((cp + ("zookeeper", "auth", "file"), f"file not found: {c.zookeeper.auth.file}"))
        out += _layout_checks(c, cp)
        out += _notify_checks(c, cp)
    return out


def _ipc_checks(
    c: Cluster, cp: tuple[str | int, ...], ipc: Ipc, ip: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    """One IPC's own rules: its files, its platform's sections, and the names
    and paths its platform's shell must carry."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    for k in ("key", "known_hosts"):
        f = getattr(ipc.ssh, k)
        if not Path(f).is_file():
            out.append((ip + ("ssh", k), f"file not found: {f}"))
    if ipc.platform == "lab" and ipc.lab is None:
        out.append((ip + ("platform",), "platform `lab` needs a `lab:` section with `control`"))
    if ipc.platform != "lab" and ipc.lab is not None:
        out.append((ip + ("lab",), f"a `lab:` section is only for platform lab, not {ipc.platform}"))
    for name, path in ipc.config_files.items():
        if not _quotable(ipc.platform, path):
            out.append(
                (
                    ip + ("config_files", name),
                    f"path {path!r} has characters that cannot be quoted safely for {ipc.platform}",
                )
            )
    for s in ipc.probe_ports:
        if s not in c.services:
            out.append((ip + ("probe_ports", s), f"probe port for undefined service {s!r}"))
    for s, svc in c.services.items():
        if svc.service is not None and not platforms.safe_name(ipc.platform, svc.service):
            out.append(
                (
                    cp + ("services", s, "service"),
                    f"service name {svc.service!r} has characters that cannot be quoted "
                    f"safely for {ipc.platform} (IPC {ipc.name})",
                )
            )
    return out


def _notify_checks(c: Cluster, cp: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """Webhook receivers: a URL that works, a token by reference only. The
    URL itself is never echoed: it may hold the very secret being refused."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[str] = set()
    for k, hook in enumerate(c.notify.webhooks if c.notify else ()):
        hp = cp + ("notify", "webhooks", k)
        if hook.name in seen:
            out.append((hp + ("name",), f"duplicate webhook name {hook.name!r}"))
        seen.add(hook.name)
        out += [(hp + ("url",), why) for why in _url_problems(hook.url)]
        if hook.token_env and hook.token_file:
            out.append((hp + ("token_env",), "the token comes from `token_env` or `token_file`, not both"))
        if hook.token_file and not Path(hook.token_file).is_file():
            out.append((hp + ("token_file",), f"file not found: {hook.token_file}"))
        if (hook.token_env or hook.token_file) and _plain_http_off_host(hook.url):
            out.append(
                (
                    hp + ("url",),
                    "a token over plain http:// crosses the network readable: use https:// "
                    "(http:// only to a receiver on this host)",
                )
            )
        if hook.max_backoff < hook.backoff:
            out.append(
                (hp + ("max_backoff",), f"max_backoff ({hook.max_backoff:g}) is below backoff ({hook.backoff:g})")
            )
    return out


def _plain_http_off_host(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
    except ValueError:
        return False  # said by _url_problems
    return u.scheme == "http" and not _is_loopback(u.hostname or "")


def _url_problems(url: str) -> list[str]:
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        u.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError:
        return ["not a valid URL"]
    if u.scheme not in ("http", "https") or not u.hostname:
        return ["expected http://host[:port]/path or https://host[:port]/path"]
    if u.username or u.password:
        return [
            "user:password in the URL would show in logs and `ps`: give the token by reference "
            "(token_env or token_file)"
        ]
    return []


def _quotable(platform: str, path: str) -> bool:
    quote = platforms.quote_cmd if platform == "windows" else platforms.quote_posix
    try:
        quote(path + ".20260101-000000.bak")  # the longest name a config step derives from it (a backup)
    except platforms.UnsafeArgument:
        return False
    return bool(path)


_WILDCARDS = {"0.0.0.0", "::", "[::]", "*", ""}


def _is_loopback(host: str) -> bool:
    h = host.strip("[]").lower()
    return h == "localhost" or h == "::1" or h.startswith("127.")


def _lease_path_checks(c: Cluster, cp: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """The failsafe lease goes from one agent to the other's endpoint: refuse an
    address on which an agent would reach itself, or nothing (docs/resilience.md)."""
    if len(c.ipcs) != 2 or not all(i.http.enabled for i in c.ipcs):
        return []
    out: list[tuple[tuple[str | int, ...], str]] = []
    for k, ipc in enumerate(c.ipcs):
        peer = c.ipcs[1 - k]
        here = cp + ("ipcs", k, "http")
        addr, other = ipc.http.reach_address(), peer.http.reach_address()
        where = here + (("advertise",) if ipc.http.advertise else ())
        if addr.strip() in _WILDCARDS:
            out.append(
                (
                    here,
                    f"{ipc.name}'s agent listens on {addr or 'every address'} with no `advertise`: set "
                    f"http.advertise to the address {peer.name}'s agent reaches it at (its failsafe lease goes there)",
                )
            )
        elif _is_loopback(addr) and not _is_loopback(other):
            out.append(
                (
                    where,
                    f"{addr} is a loopback address, but {peer.name}'s agent is on another host ({other}): "
                    f"set http.advertise to an address {peer.name}'s agent can reach",
                )
            )
    for k, ipc in enumerate(c.ipcs):
        auth = ipc.http.auth
        if auth is not None and auth.basic_file and not (auth.token_env or auth.token_file):
            out.append(
                (
                    cp + ("ipcs", k, "http", "auth", "basic_file"),
                    "basic_file opens the status page to people; the other agent's failsafe lease needs a bearer "
                    "token beside it (token_env or token_file): /failsafe never takes the page's password",
                )
            )
    a, b = c.ipcs
    if a.http.reach_address() == b.http.reach_address() and a.http.port == b.http.port:
        out.append(
            (
                cp + ("ipcs", 1, "http"),
                f"both agents' endpoints are {a.http.reach_address()}:{a.http.port}: each agent would ask itself "
                "for its failsafe lease; give each its own address (http.advertise) or port",
            )
        )
    return out


def _layout_checks(c: Cluster, cp: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    out: list[tuple[tuple[str | int, ...], str]] = []
    for s, svc in c.services.items():
        for dep in svc.after or ():
            if dep not in c.services:
                out.append(
                    (
                        cp + ("services", s, "after"),
                        f"{s} is ordered after undefined service {dep!r}",
                    )
                )
    try:
        start_order(c.services, c.after())
    except ValueError as e:
        out.append((cp + ("services",), str(e)))
    for layout in Layout:
        names = c.layouts.get(layout.value, DEFAULT_LAYOUTS[layout])
        lp = cp + ("layouts", layout.value) if layout.value in c.layouts else cp + ("services",)
        for s in sorted(set(names) - set(c.services)):
            origin = "" if layout.value in c.layouts else " (the plan's default layout)"
            out.append((lp, f"role layout {layout.value!r}{origin} names undefined service {s!r}"))
        if layout in (Layout.STANDBY, Layout.FENCED):
            for s in sorted(APP_SERVICES & set(names)):
                out.append(
                    (
                        lp,
                        f"role layout {layout.value!r} must not run {s}: it would answer calls on both IPCs",
                    )
                )
        if layout in (Layout.PRIMARY, Layout.PROMOTED):
            for s in sorted(APP_SERVICES - set(names)):
                out.append((lp, f"role layout {layout.value!r} must run {s}: it serves the calls"))
    return out


def summary(inv: Inventory, file: str) -> str:
    lines = [f"{file}: OK: {len(inv.clusters)} cluster(s)"]
    for c in inv.clusters:
        lines.append(
            f"  cluster {c.name} (ZooKeeper {','.join(c.zookeeper.hosts)} {c.zookeeper.path}; "
            f"policy {c.policy.mode}; monitor every {c.timings.monitor_interval:g} s, "
            f"fault after {c.timings.failures_before_fault} failed probes, "
            f"session {c.timings.session_timeout:g} s)"
        )
        for i in c.ipcs:
            lines.append(
                f"    {i.name:<12} {i.preferred_role:<8} {i.platform:<8} {i.address}:{i.ssh.port}"
                f"  {i.channels} line channels, {i.fax_channels} fax"
            )
        order = start_order(c.services, c.after())
        lines.append(f"    services (start order): {', '.join(order)}")
        if c.smoke_checks:
            lines.append(f"    smoke checks: {', '.join(c.smoke_checks)}")
        if c.calls is not None:
            lines.append(f"    active calls: `{c.calls.active}` (drained switchovers possible)")
        if c.notify:
            lines.append(f"    notifications to: {', '.join(h.name for h in c.notify.webhooks)}")
    return "\n".join(lines)


__all__ = [
    "SERVICES",
    "Cluster",
    "Inventory",
    "InventoryError",
    "Ipc",
    "Problem",
    "check",
    "load",
    "summary",
]
