"""zkstore's handling of a silent server, without a network: the reconnect
order after abandoning a server (the behaviour under a real SIGSTOPped server
is in test_resilience.py)."""

from __future__ import annotations

from kazoo.client import KazooClient

from failover import zkstore


def test_abandoned_server_is_tried_last_and_the_rest_kept() -> None:
    zk = KazooClient(hosts="127.0.0.1:2181,127.0.0.1:2182,localhost:2183")
    zkstore._try_it_last(zk, "127.0.0.1", 2181)
    assert zk.hosts[-1] == ("127.0.0.1", 2181)
    assert sorted(zk.hosts[:2]) == [("127.0.0.1", 2182), ("localhost", 2183)]
    assert zk.randomize_hosts is False  # kazoo would reshuffle it to the front
    zkstore._try_it_last(zk, "127.0.0.1", 2183)  # matched through name resolution
    assert zk.hosts[-1] == ("localhost", 2183)


def test_unknown_server_leaves_the_list_alone() -> None:
    zk = KazooClient(hosts="127.0.0.1:2181,127.0.0.1:2182")
    zkstore._try_it_last(zk, "127.0.0.1", 9999)
    assert zk.hosts == [("127.0.0.1", 2181), ("127.0.0.1", 2182)]
    assert zk.randomize_hosts is True


def test_drop_without_a_connection_is_a_no_op() -> None:
    assert zkstore.drop_connection(KazooClient(hosts="127.0.0.1:2181")) is None
