"""The agent: one per IPC (docs/agent.md). The class is assembled from one
module per concern:

- core.py: lifecycle and the cycle (snapshot -> move -> decide -> act -> publish);
- observing.py: its own IPC, the cluster's records, the typed snapshot;
- leadership.py: the ZooKeeper session, `leader`, the watchdog, the failsafe lease, the start guard;
- primary.py: bootstrap, the primary's cycle, the hand-over of rule 2, continuous fencing;
- standby.py: the standby's cycle, rule 3, whether to take the role;
- takeover.py: taking the role with a proof (fencing.py), promotion, the history entry;
- switchover.py: a planned switchover and its hand-back;
- publishing.py: member record, HTTP state, requests' progress;
- state.py: timing, memory, small pure helpers.
"""

from failover.agent.core import Agent, main_loop
from failover.agent.state import WATCHDOG, DuplicateAgent, LeasePath, Memory, Timing

__all__ = ["WATCHDOG", "Agent", "DuplicateAgent", "LeasePath", "Memory", "Timing", "main_loop"]
