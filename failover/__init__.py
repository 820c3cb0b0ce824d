"""failover: the call-center IPC failover orchestrator.

Module map (one concern each):
- inventory: the YAML inventory, validated with file:line:column errors.
- layouts / rules / capacity: the disaster-recovery plan as pure functions (no I/O).
- quoting / platforms: building and parsing per-platform service commands.
- executor: SSH connections, commands, service operations, ordered plans.
- lab: real ZooKeeper + simulated IPCs behind real sshd, for tests, demos and drills.
- cli: the `failover` command.
"""

__version__ = "0.1.0"
