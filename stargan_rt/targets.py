"""Which engine targets this machine can run, and for each one it cannot, why; ``--target auto``
takes the first available one in the registry's order (``stargan_rt.backends.BACKENDS``).
Probing imports the runtime libraries lazily so a device only needs the one it uses."""
from __future__ import annotations

from typing import Callable

from stargan_rt.backends import BACKENDS, TARGETS, TargetStatus
from stargan_rt.errors import UserError

PREFERENCE = TARGETS
# target -> probe; a table so that tests can stand in for a runtime that is (not) installed
PROBES: dict[str, Callable[[], TargetStatus]] = {name: b.probe for name, b in BACKENDS.items()}

__all__ = ["PREFERENCE", "PROBES", "TargetStatus", "probe", "probe_all", "resolve_target"]


def probe(target: str) -> TargetStatus:
    return PROBES[target]()


def probe_all() -> list[TargetStatus]:
    return [probe(name) for name in PREFERENCE]


def resolve_target(target: str, log: Callable[[str], None] = print) -> str:
    """``auto`` -> the first available target in the order of preference (saying which and
    why); an explicit target is checked to be installed."""
    if target == "auto":
        statuses = probe_all()
        chosen = next((s for s in statuses if s.available), None)
        if chosen is None:
            raise UserError("no engine target is available; install one: " + "; ".join(
                f"{s.name}: {s.detail or BACKENDS[s.name].install_hint}" for s in statuses))
        skipped = [f"{s.name}: {s.detail}" for s in statuses[:statuses.index(chosen)]]
        why = f" (skipped {'; '.join(skipped)})" if skipped else " (first in the preference order)"
        log(f"target auto -> {chosen.name} {chosen.version} on {chosen.detail}{why}")
        return chosen.name
    if target not in BACKENDS:
        raise UserError(f"unknown target {target!r}; expected auto or one of {', '.join(TARGETS)}")
    status = probe(target)
    if not status.available:
        hint = ("" if "pip install" in status.detail
                else f"; install it with: {BACKENDS[target].install_hint}")
        raise UserError(f"target {target} is not available here: {status.detail}{hint}")
    return target
