"""The cluster's records in ZooKeeper, and fail-fast access to them.

Layout under the cluster's path P (docs/zookeeper.md):

  P/leader            ephemeral  the agent holding the primary role: {ipc, epoch, since}
  P/cluster           persistent {epoch, primary, roles, board_down, handoff, failovers, updated}
                                 written only with a conditional (versioned) set: the epoch
                                 is the fencing token, bumped on every change of primary
  P/members/<ipc>     ephemeral  each agent's record: observed state, last sentence
  P/history/h-NNNN    persistent sequential: role changes, switchovers, drills
  P/switchover        persistent a pending switchover request
  P/busy-out-<ipc>    persistent that IPC is busied out by a drained switchover (until released)
  P/pause             persistent the pause flag {reason, operator, since}

Every call fails fast when the client is not connected (kazoo queues requests
while disconnected; a loop waiting on them would freeze and never demote).
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import ZnodeStat
from kazoo.retry import KazooRetry

from failover.inventory import Cluster
from failover.records import BusyOut, ClusterRecord, HistoryEntry, LeaderRecord, MemberRecord, Pause, Request

OP_TIMEOUT = 2.0
log = logging.getLogger("failover.zkstore")
FINAL_STATES = ("done", "failed", "refused", "cancelled")
T = TypeVar("T")


class ZkUnavailable(Exception):
    """ZooKeeper cannot answer now (not connected, or no answer in time)."""


class Conflict(Exception):
    """A conditional write lost: somebody changed the record first."""


def connect(
    cluster: Cluster,
    timeout: float | None = None,
    client_id: tuple[int, bytes] | None = None,
    read_only: bool = False,
) -> KazooClient:
    zk = cluster.zookeeper
    auth = None
    if zk.auth is not None:
        auth = [("digest", zk.auth.credentials())]
    # Reconnect at least every second, however long the outage: kazoo's default
    # backoff grows to a minute, long enough for our session to expire after
    # ZooKeeper is back.
    retry = KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0)
    return KazooClient(
        hosts=",".join(zk.hosts),
        timeout=timeout or cluster.timings.session_timeout,
        client_id=client_id,
        auth_data=auth,
        read_only=read_only or None,
        connection_retry=retry,
    )


def drop_connection(zk: KazooClient) -> str | None:
    """Make kazoo abandon the server it is connected to and resume the same
    session on another one. Returns the abandoned server ("host:port"), or None
    if there was no live socket to drop.

    Why: kazoo counts every request it sends as a heartbeat and only ever
    checks for a missing *ping* reply, so a client that sends requests more
    often than every read-timeout/2 (the agent's watchdog reads every 0.2 s)
    never notices a hung server (SIGSTOPped, a stalled JVM): it stays
    "CONNECTED" to it until its session expires on the rest of the ensemble.
    The Java client drops a connection that has received nothing for 2/3 of
    the session timeout; Store does the same at 1/3 (see `Store._no_answer`).
    Shutting the socket down makes kazoo's own loop see a broken connection and
    go through its normal reconnect path (there is no public API for this)."""
    sock = getattr(getattr(zk, "_connection", None), "_socket", None)
    if sock is None:
        return None
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return None
    _try_it_last(zk, host, port)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return None
    return f"{host}:{port}"


def _try_it_last(zk: KazooClient, ip: str, port: int) -> None:
    """Reorder the client's server list so the abandoned server is tried last.
    kazoo reshuffles the list on every reconnect cycle and may pick the silent
    server again first, costing a connect timeout (S / number of servers) out
    of the session's remaining time; the Java client walks a ring instead."""

    def is_it(h: str, p: int) -> bool:
        if p != port:
            return False
        try:
            return h == ip or any(a[4][0] == ip for a in socket.getaddrinfo(h, p, 0, 0, socket.IPPROTO_TCP))
        except OSError:
            return False

    hosts = list(zk.hosts or [])
    others = [hp for hp in hosts if not is_it(*hp)]
    if len(others) in (0, len(hosts)):
        return
    random.shuffle(others)  # spread the clients of the silent server over the others
    ordered = others + [hp for hp in hosts if is_it(*hp)]
    zk.set_hosts(",".join(f"{_bracket(h)}:{p}" for h, p in ordered), randomize_hosts=False)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def acl_for(cluster: Cluster) -> list | None:
    """With credentials configured, the cluster's znodes carry a digest ACL:
    full rights for those credentials, read for anyone (monitoring); a client
    without them cannot change anything."""
    if cluster.zookeeper.auth is None:
        return None
    from kazoo.security import make_acl, make_digest_acl

    user, _, password = cluster.zookeeper.auth.credentials().partition(":")
    return [make_digest_acl(user, password, all=True), make_acl("world", "anyone", read=True)]


def dumps(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def loads(raw: bytes | None) -> Any:
    return json.loads(raw) if raw else None


@dataclass
class Versioned(Generic[T]):
    data: T
    version: int  # -1 when the node does not exist yet


class Store:
    def __init__(self, zk: KazooClient, path: str, acl: list | None = None, drop_after: float | None = None) -> None:
        self.zk = zk
        self.path = path.rstrip("/")
        self.acl = acl
        # A server silent this long while we are "connected" is abandoned
        # (drop_connection): a third of the session timeout leaves two thirds
        # for kazoo to resume the session elsewhere before it expires.
        self.drop_after = drop_after if drop_after is not None else zk._session_timeout / 3000.0
        self.last_answer = time.monotonic()

    # ----- paths -------------------------------------------------------------
    @property
    def leader_path(self) -> str:
        return f"{self.path}/leader"

    @property
    def cluster_path(self) -> str:
        return f"{self.path}/cluster"

    def member_path(self, ipc: str) -> str:
        return f"{self.path}/members/{ipc}"

    @property
    def history_path(self) -> str:
        return f"{self.path}/history"

    @property
    def switchover_path(self) -> str:
        return f"{self.path}/switchover"

    @property
    def pause_path(self) -> str:
        return f"{self.path}/pause"

    # ----- fail-fast primitives ------------------------------------------------
    def connected(self) -> bool:
        return self.zk.state == KazooState.CONNECTED

    def _wait(self, async_result: Any, timeout: float) -> Any:
        try:
            got = async_result.get(timeout=timeout)
        except KazooTimeoutError:
            self._no_answer()
            raise ZkUnavailable(f"no answer from ZooKeeper within {timeout:g} s") from None
        except (NoNodeError, NodeExistsError, BadVersionError):
            self.last_answer = time.monotonic()  # the server answered, with an error code
            raise
        self.last_answer = time.monotonic()
        return got

    def _no_answer(self) -> None:
        """A request went unanswered: if the server has been silent for
        `drop_after` while kazoo still says CONNECTED, abandon it."""
        now = time.monotonic()
        silent = now - self.last_answer
        if silent < self.drop_after or not self.connected():
            return
        server = drop_connection(self.zk)
        self.last_answer = now  # give the reconnect its time before judging again
        if server is not None:
            log.warning(
                "ZooKeeper server %s has not answered for %.1f s while connected: dropping the connection "
                "so the session resumes on another server",
                server,
                silent,
            )

    def _guard(self) -> None:
        if not self.connected():
            raise ZkUnavailable(f"not connected to ZooKeeper ({self.zk.state})")

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = OP_TIMEOUT, **kw: Any) -> Any:
        self._guard()
        try:
            return self._wait(fn(*args, **kw), timeout)
        except (NoNodeError, NodeExistsError, BadVersionError):
            raise
        except ZkUnavailable:
            raise
        except Exception as e:  # ConnectionLoss, SessionExpired, ...
            raise ZkUnavailable(f"{type(e).__name__}: {e}") from None

    def sync(self) -> None:
        """Make our server catch up with the leader before reading: ZooKeeper
        reads are served locally and may lag (a fresh CLI session on a follower
        would otherwise show a state older than the agents')."""
        self.call(self.zk.sync_async, self.path)

    def get(self, path: str, timeout: float = OP_TIMEOUT) -> tuple[Any, ZnodeStat] | None:
        try:
            raw, stat = self.call(self.zk.get_async, path, timeout=timeout)
        except NoNodeError:
            return None
        return loads(raw), stat

    def ensure_layout(self) -> None:
        parent = self.path.rsplit("/", 1)[0]
        if parent:  # shared by every cluster on the ensemble: open, so each can create its own subtree
            self._guard()
            try:
                self.zk.ensure_path_async(parent).get(timeout=OP_TIMEOUT)
            except KazooTimeoutError:
                raise ZkUnavailable("no answer from ZooKeeper") from None
            except NodeExistsError:
                pass
        for p in (self.path, f"{self.path}/members", self.history_path):
            self._guard()
            try:
                self.zk.ensure_path_async(p, acl=self.acl).get(timeout=OP_TIMEOUT)
            except KazooTimeoutError:
                raise ZkUnavailable("no answer from ZooKeeper") from None
            except NodeExistsError:
                pass

    # ----- leader ----------------------------------------------------------------
    def leader(self, timeout: float = OP_TIMEOUT) -> tuple[LeaderRecord, int] | None:
        """(record, ephemeralOwner session id) of the leader znode, or None."""
        got = self.get(self.leader_path, timeout)
        if got is None:
            return None
        data, stat = got
        return LeaderRecord.from_json(data), stat.ephemeralOwner

    def take_leader(self, rec: LeaderRecord, owner: int | None = None) -> bool:
        """Create the ephemeral leader znode. True also when it exists and is
        owned by session `owner` (ours, resumed after an agent restart)."""
        try:
            self.call(self.zk.create_async, self.leader_path, dumps(rec.to_json()), acl=self.acl, ephemeral=True)
            return True
        except NodeExistsError:
            if owner is None:
                return False
            got = self.get(self.leader_path)
            return got is not None and got[1].ephemeralOwner == owner

    def release_leader(self, session_id: int) -> None:
        got = self.get(self.leader_path)
        if got is not None and got[1].ephemeralOwner == session_id:
            try:
                self.call(self.zk.delete_async, self.leader_path, version=got[1].version)
            except (NoNodeError, BadVersionError):
                pass

    # ----- the cluster record (CAS) ----------------------------------------------
    def cluster(self) -> Versioned[ClusterRecord] | None:
        got = self.get(self.cluster_path)
        if got is None:
            return None
        return Versioned(ClusterRecord.from_json(got[0]), got[1].version)

    def create_cluster(self, rec: ClusterRecord) -> bool:
        try:
            self.call(self.zk.create_async, self.cluster_path, _stamped(rec), acl=self.acl)
            return True
        except NodeExistsError:
            return False

    def update_cluster(self, expected_version: int, rec: ClusterRecord) -> int:
        try:
            stat = self.call(self.zk.set_async, self.cluster_path, _stamped(rec), version=expected_version)
        except (BadVersionError, NoNodeError):
            raise Conflict("the cluster record changed meanwhile") from None
        return stat.version

    # ----- members -----------------------------------------------------------------
    def publish_member(self, ipc: str, rec: MemberRecord) -> None:
        path = self.member_path(ipc)
        record = rec.to_json()
        try:
            self.call(self.zk.set_async, path, dumps(record))
        except NoNodeError:
            try:
                self.call(self.zk.create_async, path, dumps(record), acl=self.acl, ephemeral=True)
            except NodeExistsError:
                self.call(self.zk.set_async, path, dumps(record))

    def member_owner(self, ipc: str) -> tuple[MemberRecord, int] | None:
        """(record, ephemeralOwner session id) of an IPC's member znode."""
        got = self.get(self.member_path(ipc))
        return None if got is None else (MemberRecord.from_json(got[0]), got[1].ephemeralOwner)

    def member(self, ipc: str) -> MemberRecord | None:
        got = self.get(self.member_path(ipc))
        return None if got is None or got[0] is None else MemberRecord.from_json(got[0])

    # ----- history ------------------------------------------------------------------
    def add_history(self, entry: HistoryEntry) -> None:
        self.call(
            self.zk.create_async,
            f"{self.history_path}/h-",
            dumps({"when": time.time(), **entry.to_json()}),
            acl=self.acl,
            sequence=True,
        )

    def history_count(self) -> int:
        """How many history entries exist (one cheap call: the parent's stat)."""
        stat = self.call(self.zk.exists_async, self.history_path)
        return int(stat.numChildren) if stat else 0

    def history_names(self) -> list[str]:
        """The history entries' znode names, oldest first."""
        try:
            return sorted(self.call(self.zk.get_children_async, self.history_path))
        except NoNodeError:
            return []

    def history(self, limit: int = 50, after: str | None = None) -> list[HistoryEntry]:
        """The newest `limit` entries; with `after` (a znode name), the oldest
        `limit` entries that came after it instead."""
        names = self.history_names()
        names = [n for n in names if n > after][:limit] if after is not None else names[-limit:]
        out = []
        for n in names:
            got = self.get(f"{self.history_path}/{n}")
            if got is not None:
                out.append(HistoryEntry.from_json({"id": n, **(got[0] or {})}))
        return out

    # ----- requests (switchover / manual failover) --------------------------------
    def request(self) -> Versioned[Request] | None:
        got = self.get(self.switchover_path)
        if got is None:
            return None
        return Versioned(Request.from_json(got[0]), got[1].version)

    def create_request(self, req: Request) -> Versioned[Request] | None:
        """Create the request, replacing a finished one. Returns None on
        success, or the pending request that blocks this one."""
        for _ in range(3):
            try:
                self.call(self.zk.create_async, self.switchover_path, dumps(req.to_json()), acl=self.acl)
                return None
            except NodeExistsError:
                cur = self.request()
                if cur is None:
                    continue
                if cur.data.state not in FINAL_STATES:
                    return cur
                try:
                    self.call(self.zk.delete_async, self.switchover_path, version=cur.version)
                except (NoNodeError, BadVersionError):
                    continue
        return self.request()

    def update_request(self, version: int, req: Request) -> int:
        try:
            stat = self.call(self.zk.set_async, self.switchover_path, dumps(req.to_json()), version=version)
        except (BadVersionError, NoNodeError):
            raise Conflict("the request changed meanwhile") from None
        return stat.version

    def delete_request(self, version: int) -> None:
        try:
            self.call(self.zk.delete_async, self.switchover_path, version=version)
        except (BadVersionError, NoNodeError):
            raise Conflict("the request changed meanwhile") from None

    # ----- pause ----------------------------------------------------------------------
    def pause(self) -> Pause | None:
        got = self.get(self.pause_path)
        return None if got is None or got[0] is None else Pause.from_json(got[0])

    def set_pause(self, reason: str, operator: str) -> None:
        data = dumps(Pause(reason, operator, time.time()).to_json())
        try:
            self.call(self.zk.create_async, self.pause_path, data, acl=self.acl)
        except NodeExistsError:
            self.call(self.zk.set_async, self.pause_path, data)

    # ----- busy-out (a drained switchover) ----------------------------------------
    def busy_out_path(self, ipc: str) -> str:
        return f"{self.path}/busy-out-{ipc}"

    def busy_out(self, ipc: str) -> BusyOut | None:
        """ "IPC busied out since T by request R", written before the busy-out
        command runs and removed once it is released: whatever ends the
        switchover (or restarts the agent) finds it here."""
        got = self.get(self.busy_out_path(ipc))
        return None if got is None or got[0] is None else BusyOut.from_json(got[0])

    def set_busy_out(self, ipc: str, request: str | None) -> None:
        data = dumps(BusyOut(ipc, request, time.time()).to_json())
        try:
            self.call(self.zk.create_async, self.busy_out_path(ipc), data, acl=self.acl)
        except NodeExistsError:
            self.call(self.zk.set_async, self.busy_out_path(ipc), data)

    def clear_busy_out(self, ipc: str) -> None:
        try:
            self.call(self.zk.delete_async, self.busy_out_path(ipc))
        except NoNodeError:
            pass

    def clear_pause(self) -> None:
        try:
            self.call(self.zk.delete_async, self.pause_path)
        except NoNodeError:
            pass


def _stamped(rec: ClusterRecord) -> bytes:
    """P/cluster's bytes, with the time of this write (whatever `rec` says)."""
    return dumps({**rec.to_json(), "updated": time.time()})
