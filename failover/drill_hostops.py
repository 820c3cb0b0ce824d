"""The drill's `config` and `service` steps: configuration files backed up,
edited, verified and restored on an IPC, and services stopped / started, with
commands the platform layer builds (cmd.exe + sc.exe on Windows, systemctl,
the lab's simulator) — never the runbook's own shell text.

Each IPC's backup is its own: `backup` records the copy's name for this
(IPC, file), `restore` puts exactly that copy back. A restore with no backup
made in this run changes nothing and says so (a rollback after a failure that
happened before that IPC's backup: its file was never edited).
"""

from __future__ import annotations

from datetime import datetime

from failover import config_files, platforms
from failover import executor as exe
from failover.inventory import Cluster
from failover.runbook import Config, ServiceOp


class HostOps:
    def __init__(self, cluster: Cluster, started: float) -> None:
        self.c = cluster
        self.stamp = datetime.fromtimestamp(started).strftime("%Y%m%d-%H%M%S")
        self.backups: dict[tuple[str, str], str] = {}  # (ipc, file) -> backup path, made in this run

    def config_commands(self, ipc: str, cfg: Config) -> list[str]:
        """The command lines of a config step on `ipc` (dry run, report, run)."""
        i = self.c.ipc(ipc)
        path = i.config_files[cfg.file]
        if cfg.op == "backup":
            return [config_files.copy_cmd(i.platform, path, config_files.backup_path(path, self.stamp))]
        if cfg.op == "restore":
            backup = self.backups.get((ipc, cfg.file), config_files.backup_path(path, self.stamp))
            return [config_files.copy_cmd(i.platform, backup, path)]
        assert cfg.key is not None and cfg.value is not None
        if cfg.op == "set":
            return [config_files.set_cmd(i.platform, path, cfg.key, cfg.value)]
        return [config_files.verify_cmd(i.platform, path, cfg.key, cfg.value)]

    def config(self, ex: exe.Executor, ipc: str, cfg: Config) -> str:
        path = self.c.ipc(ipc).config_files[cfg.file]
        if cfg.op == "restore" and (ipc, cfg.file) not in self.backups:
            return f"no backup of {ipc}'s {cfg.file} was made in this run: its file was not edited, nothing to restore"
        try:
            (cmd,) = self.config_commands(ipc, cfg)
        except platforms.UnsafeArgument as e:
            raise AssertionError(str(e)) from None
        res = ex.run_shell(ipc, cmd, cfg.timeout, f"{cfg.op} {cfg.file}")
        if res.exit_code != 0:
            out = (res.stderr or res.stdout).strip().splitlines()
            what = "does not have" if cfg.op == "verify" else "failed on"
            raise AssertionError(f"{cfg.op} {cfg.file}: {path} {what} {ipc} (exit {res.exit_code}: {out[-1:]})")
        if cfg.op == "backup":
            self.backups[(ipc, cfg.file)] = config_files.backup_path(path, self.stamp)
            return f"{path} backed up to {self.backups[(ipc, cfg.file)]} on {ipc}"
        if cfg.op == "restore":
            return f"{path} restored from {self.backups[(ipc, cfg.file)]} on {ipc}"
        return f"{path} on {ipc}: {cfg.key} = {cfg.value}" + (" (verified)" if cfg.op == "verify" else "")

    def service_commands(self, ipc: str, svc: ServiceOp) -> list[str]:
        ops = ("stop", "start") if svc.op == "restart" else (svc.op,)
        return [f"{ipc}: {c}" for op in ops for c in platforms.step_commands(self.c, ipc, op, svc.name)]

    def service(self, ex: exe.Executor, ipc: str, svc: ServiceOp) -> str:
        if svc.op == "stop":
            return f"{ex.stop(ipc, svc.name)} on {ipc}"
        if svc.op == "start":
            return f"{ex.start(ipc, svc.name)} on {ipc}"
        return f"{ex.restart(ipc, svc.name)} on {ipc} (restarted)"
