"""The plan's role layouts, as data (from the DR plan, domain.md).

Which services run on an IPC is a function of its role only. Everything not
listed in a layout must be stopped. Read this file as the plan's table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

# Logical service names, in the plan's start order (driver first, IVR last).
SERVICES: tuple[str, ...] = (
    "driver",  # Dialogic board driver
    "fax",  # fax board service: optional, follows its board (the driver)
    "kcxp",  # the IPC's own message middleware
    "kcbp",  # the IPC's own business middleware
    "kcxp-replica",  # replica of the primary's KCXP, pointing at this machine
    "kcbp-replica",
    "cti",
    "ivr",
)
LABELS: Mapping[str, str] = {
    "driver": "board driver",
    "fax": "fax",
    "kcxp": "KCXP",
    "kcbp": "KCBP",
    "kcxp-replica": "KCXP replica",
    "kcbp-replica": "KCBP replica",
    "cti": "CTI",
    "ivr": "IVR",
    "line": "line",
    "host": "SSH",
}
REQUIRED_SERVICES: frozenset[str] = frozenset(SERVICES) - {"fax"}
APP_SERVICES: frozenset[str] = frozenset({"cti", "ivr"})  # what answers calls
BOARD_SERVICES: frozenset[str] = frozenset({"driver", "fax"})  # stopped by a board fault
MIDDLEWARE: frozenset[str] = frozenset({"kcxp", "kcbp", "kcxp-replica", "kcbp-replica"})

# Start-order constraints (like systemd After=): ordering only, applied among
# the services a plan touches. Stops run in the reverse order.
DEFAULT_AFTER: Mapping[str, tuple[str, ...]] = {
    "driver": (),
    "kcxp": ("driver",),
    "kcbp": ("driver", "kcxp"),
    "kcxp-replica": ("driver",),
    "kcbp-replica": ("driver", "kcxp-replica"),
    "cti": ("driver", "kcxp", "kcbp", "kcxp-replica", "kcbp-replica"),
    "ivr": ("cti",),
    "fax": ("driver",),
}


class Layout(StrEnum):
    PRIMARY = "primary"  # the home primary serving calls
    STANDBY = "standby"
    PROMOTED = "promoted"  # a standby serving calls after a failover
    FENCED = "fenced"  # failed / fenced: everything stopped


# The plan's table. Fax is added wherever the driver runs ("fax follows its board").
DEFAULT_LAYOUTS: Mapping[Layout, frozenset[str]] = {
    Layout.PRIMARY: frozenset({"driver", "cti", "ivr", "kcxp", "kcbp"}),
    Layout.STANDBY: frozenset({"driver", "kcxp", "kcbp"}),
    Layout.PROMOTED: frozenset({"driver", "cti", "ivr", "kcxp-replica", "kcbp-replica"}),
    Layout.FENCED: frozenset(),
}


def running_set(
    layout: Layout,
    defined: Iterable[str],
    overrides: Mapping[str, Iterable[str]] | None = None,
    board_down: bool = False,
) -> frozenset[str]:
    """Services that must run on an IPC in this layout, restricted to the
    services the cluster defines. board_down: the plan's rule 1 variant, with
    the board's services (driver, fax) stopped and everything else unchanged."""
    defined = frozenset(defined)
    base = frozenset(overrides[layout.value]) if overrides and layout.value in overrides else (DEFAULT_LAYOUTS[layout])
    run = set(base & defined)
    if "driver" in run and "fax" in defined:
        run.add("fax")
    if board_down:
        run -= BOARD_SERVICES
    return frozenset(run)


def start_order(services: Iterable[str], after: Mapping[str, Iterable[str]] = DEFAULT_AFTER) -> list[str]:
    """Topological order of `services` under the `after` constraints; ties are
    broken by the plan's order (SERVICES), so the result is deterministic."""
    todo = set(services)
    rank = {s: i for i, s in enumerate(SERVICES)}
    order: list[str] = []
    while todo:
        ready = [s for s in todo if not (set(after.get(s, ())) & todo)]
        if not ready:
            raise ValueError(f"cyclic start order among: {', '.join(sorted(todo))}")
        nxt = min(ready, key=lambda s: (rank.get(s, len(rank)), s))
        order.append(nxt)
        todo.remove(nxt)
    return order


def stop_order(services: Iterable[str], after: Mapping[str, Iterable[str]] = DEFAULT_AFTER) -> list[str]:
    return list(reversed(start_order(services, after)))
