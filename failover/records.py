"""Typed records for every znode the cluster keeps in ZooKeeper (layout in
zkstore.py): the cluster record and its hand-over, the leader, each agent's
member record, the operator's request, the pause flag and history entries.

Each record reads a znode's JSON with `from_json` and gives it back with
`to_json`, which produces exactly the dict today's writers produce: same keys,
same values, same omissions, so the bytes in ZooKeeper do not change. Keys a
record does not know (a newer writer's) are kept in `extra` and written back,
so a rewrite by an older agent does not drop them. A key that today's writers
sometimes leave out is a field whose None means "absent" (it is then not
written); a key they always write is always written, None or not. A key
missing from what was read (a record by an older or a minimal writer) stays
missing when the record is written back, unless its value was changed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from failover.rules import Role

# The history kinds of a takeover: a new primary took the role (automatic or
# operator-driven). The health endpoint's last_failover counts these.
PROMOTION_KINDS: tuple[str, ...] = ("failover", "takeover", "switchover", "manual-failover")
# What `failover status` shows as the last change of primary: a promotion or
# the cluster's first primary.
PRIMARY_CHANGE_KINDS: tuple[str, ...] = (*PROMOTION_KINDS, "bootstrap")
# Every kind that changes an IPC's role or layout (the drills wait for these).
ROLE_CHANGE_KINDS: tuple[str, ...] = (*PROMOTION_KINDS, "board-down", "standby-fault")

R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class Record:
    """The JSON mapping shared by every record: field names are the JSON keys
    except where `KEYS` renames them ("from" is a Python keyword)."""

    KEYS: ClassVar[Mapping[str, str]] = {}  # field name -> JSON key, where they differ
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()  # fields whose None means "key absent"
    # The known keys missing from what `from_json` read: not written back while
    # they keep their default, so a rewrite does not add keys nobody set.
    absent: frozenset[str] = field(default=frozenset(), kw_only=True, compare=False, repr=False)

    @classmethod
    def _key(cls, name: str) -> str:
        return cls.KEYS.get(name, name)

    @classmethod
    def _known(cls) -> tuple[dataclasses.Field, ...]:
        return _layout(cls)[0]

    @classmethod
    def from_json(cls: type[R], d: Mapping[str, Any] | None) -> R:
        """Tolerant: a missing key takes its default, an unknown one goes to `extra`."""
        d = d or {}
        _, pairs, keys = _layout(cls)
        kw = {name: cls._convert(name, d[key]) for name, key in pairs if key in d}
        extra = {k: v for k, v in d.items() if k not in keys}
        absent = frozenset(name for name, _ in pairs if name not in kw)
        return cls(**kw, extra=extra, absent=absent)  # type: ignore[call-arg]

    @classmethod
    def _convert(cls, name: str, value: Any) -> Any:
        """A JSON value into the field's type (overridden where a field is typed deeper)."""
        return value

    def _json_value(self, name: str, value: Any) -> Any:
        return value

    def _omitted(self, f: dataclasses.Field, value: Any) -> bool:
        if value is None and f.name in self.OPTIONAL:
            return True
        return f.name in self.absent and value == _default(f)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        known, pairs, _ = _layout(type(self))
        for f, (name, key) in zip(known, pairs, strict=True):
            value = getattr(self, name)
            if not self._omitted(f, value):
                out[key] = self._json_value(name, value)
        return {**out, **getattr(self, "extra", {})}


@functools.cache
def _layout(cls: type) -> tuple[tuple[dataclasses.Field, ...], tuple[tuple[str, str], ...], frozenset[str]]:
    """A record class's fields, (field name, JSON key) pairs and JSON keys,
    worked out once: every cycle reads and writes records (the simulator runs
    hundreds of thousands of cycles)."""
    # `extra` (unknown keys) and `fields` (a history entry's kind-specific
    # keys) are written out whole; `absent` is bookkeeping.
    known = tuple(f for f in dataclasses.fields(cls) if f.name not in ("extra", "absent", "fields"))
    pairs = tuple((f.name, cls._key(f.name)) for f in known)
    return known, pairs, frozenset(k for _, k in pairs)


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


@dataclass(frozen=True)
class Handoff(Record):
    """The primary giving the role up, in P/cluster's `handoff`: to whom, why,
    with which proof that its CTI/IVR are stopped, and its timings. `kind` is
    failover, manual-failover, switchover or switch-back."""

    KEYS: ClassVar[Mapping[str, str]] = {"frm": "from"}
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"who", "request", "fault_seen_at", "proof", "calls"})

    frm: str = ""
    to: str = ""
    kind: str = "failover"
    reason: str = ""
    epoch: int = 0
    decided_at: float = 0.0
    stopped_at: float = 0.0
    fault_seen_at: float | None = None  # absent on a switch-back
    who: str | None = None  # the operator or agent, absent on an automatic failover
    request: str | None = None  # the operator's request id, when one asked for it
    proof: Mapping[str, Any] | None = None  # fencing.Proof.record(); absent on hand-overs older than proofs
    # A switchover's calls {at_start, at_handover, drain_s, drained_at, cut}, for its history (inventory `calls`)
    calls: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterRecord(Record):
    """P/cluster: who is primary, every IPC's role, and the epoch (the fencing
    token). Changed only with a conditional write (Store.update_cluster)."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"counts", "rejoin", "updated"})

    epoch: int = 0
    primary: str | None = None
    roles: Mapping[str, Role] = field(default_factory=dict)
    board_down: tuple[str, ...] = ()
    failovers: tuple[float, ...] = ()  # wall times of automatic takeovers (flap damping), the last 20
    handoff: Handoff | None = None
    counts: Mapping[str, int] | None = None  # takeovers by kind, monotonic; absent before the first
    rejoin: Mapping[str, Mapping[str, Any]] | None = None  # ipc -> {by, at}: an operator's rejoin not done yet
    updated: float | None = None  # wall time of the last write (set by the Store)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def _convert(cls, name: str, value: Any) -> Any:
        if name == "roles":
            return {k: Role(v) for k, v in (value or {}).items()}
        if name in ("board_down", "failovers"):
            return tuple(value or ())
        if name == "handoff":
            return None if value is None else Handoff.from_json(value)
        return value

    def _json_value(self, name: str, value: Any) -> Any:
        if name == "roles":
            return {k: Role(v).value for k, v in value.items()}
        if name in ("board_down", "failovers"):
            return list(value)
        if name == "handoff":
            return None if value is None else value.to_json()
        return value


@dataclass(frozen=True)
class LeaderRecord(Record):
    """P/leader (ephemeral): the agent holding the primary role."""

    ipc: str | None = None
    epoch: int = 0
    since: float = 0.0
    host: str = ""
    pid: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MemberRecord(Record):
    """P/members/<ipc> (ephemeral): what an IPC's agent publishes every cycle
    (agent/publishing.py). `obs` is monitor.to_record's observation of its IPC
    (services, line, reachability), kept as that mapping."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"failsafe_path", "updated", "calls", "busy_out"})

    ipc: str = ""
    cluster: str = ""
    role: str = "unknown"
    leader: bool = False
    epoch: int = 0
    eligible: bool = False
    obs: Mapping[str, Any] = field(default_factory=dict)
    sentence: str = ""
    decision: str = ""
    alerts: tuple[str, ...] = ()
    way_out: str = ""
    failsafe_path: Mapping[str, Any] | None = None  # {ok, why}
    faults: tuple[str, ...] = ()
    paused: bool = False
    self_fenced: bool = False
    updated: float | None = None  # wall time of the agent's last publication
    agent: Mapping[str, Any] = field(default_factory=dict)  # {host, pid}
    calls: Mapping[str, Any] | None = None  # the primary's active calls {active, ivr, agent} (inventory `calls`)
    busy_out: Mapping[str, Any] | None = None  # BusyOut.to_json() while a drain holds new calls off
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def _convert(cls, name: str, value: Any) -> Any:
        return tuple(value) if name in ("alerts", "faults") else value

    def _json_value(self, name: str, value: Any) -> Any:
        return list(value) if name in ("alerts", "faults") else value


@dataclass(frozen=True)
class Request(Record):
    """P/switchover: an operator's switchover or manual failover and how it
    goes (ops.new_request writes it, the agents add progress and the result)."""

    KEYS: ClassVar[Mapping[str, str]] = {"frm": "from"}
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"result", "cancelled", "drain", "draining", "question", "answer"})

    id: str | None = None
    kind: str = "switchover"
    to: str | None = None
    frm: str | None = None
    operator: str = "?"
    reason: str = ""
    at: float | None = None  # a scheduled switchover's wall time
    allow_paused: bool = False
    force: bool = False
    confirm_dead: str | None = None  # the old primary an operator confirmed powered off
    requested_at: float | None = None
    state: str = "pending"  # pending, running, then one of zkstore.FINAL_STATES
    progress: tuple[str, ...] = ()
    result: Mapping[str, Any] | None = None  # {state, why, ...}, once finished
    cancelled: Mapping[str, Any] | None = None  # {by, at, reason, was}, once cancelled
    # A drained switchover (failover/drain.py): the operator's {below, max_wait,
    # on_deadline}; the primary's {started, at_start, calls}; at the deadline
    # the question asked and the operator's answer ("proceed" | "cancel").
    drain: Mapping[str, Any] | None = None
    draining: Mapping[str, Any] | None = None
    question: str | None = None
    answer: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def _convert(cls, name: str, value: Any) -> Any:
        return tuple(value or ()) if name == "progress" else value

    def _json_value(self, name: str, value: Any) -> Any:
        return list(value) if name == "progress" else value


@dataclass(frozen=True)
class BusyOut(Record):
    """P/busy-out-<ipc>: that IPC busied out by a drained switchover's request
    since a wall time; written before the busy-out command runs, deleted once
    it is released (agent/drain.py)."""

    ipc: str = ""
    request: str | None = None
    since: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pause(Record):
    """P/pause: automation paused by an operator."""

    reason: str = ""
    operator: str = "?"
    since: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HistoryEntry(Record):
    """P/history/h-NNNN: a role change, a switchover, a drill, a pause.
    Beyond the four keys every entry has, what an entry says depends on its
    kind (a takeover's proof and timings, a drill's report), and whether a key
    is there at all is part of the record (a bootstrap writes "from": null, a
    pause no "from"): those keys are kept in `fields` as written."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"when", "id"})

    kind: str = "?"
    who: str = "?"
    why: str = ""
    outcome: str = ""
    when: float | None = None  # set by the Store when written
    id: str | None = None  # the znode's name (h-NNNN), set when read; not stored in the znode
    fields: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, kind: str, who: str, why: str, outcome: str = "done", **fields: Any) -> HistoryEntry:
        """The one constructor for new entries; `frm` is written as "from"."""
        if "frm" in fields:
            fields["from"] = fields.pop("frm")
        return cls(kind, who, why, outcome, fields=fields)

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> HistoryEntry:
        d = d or {}
        names = _layout(cls)[2]
        kw = {k: v for k, v in d.items() if k in names}
        rest = {k: v for k, v in d.items() if k not in names}
        return cls(**kw, fields=rest, absent=frozenset(names - set(kw)))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), **self.fields}

    def get(self, key: str, default: Any = None) -> Any:
        """A kind-specific key ("from", "to", "epoch", "proof", "duration_s", ...)."""
        return self.fields.get(key, default)

    @property
    def frm(self) -> str | None:
        return self.fields.get("from")

    @property
    def to(self) -> str | None:
        return self.fields.get("to")

    @property
    def epoch(self) -> int | None:
        return self.fields.get("epoch")

    @property
    def proof(self) -> Mapping[str, Any] | None:
        return self.fields.get("proof")
