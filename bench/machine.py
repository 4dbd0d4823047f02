"""How disturbed the machine was while a bench ran: the CPU time the hypervisor took.

On a shared virtual machine a neighbour can take 40 % of the CPUs for minutes
(the kernel counts it as ``steal``); the same code then measures 3x slower. The
benches print ``cpu_steal_pct`` beside their figures, so a reader can tell a
slow machine from a slow change.
"""

from __future__ import annotations

from pathlib import Path

_STAT = Path("/proc/stat")


def _cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) ticks of all CPUs since boot, or ``None`` where the kernel does not say."""
    try:
        fields = _STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(value) for value in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already in user
    return ticks[7], sum(ticks[:8])


class StealMeter:
    """``with StealMeter() as steal: ...`` then ``steal.percent``: the share of CPU time stolen meanwhile."""

    def __init__(self) -> None:
        self.percent: float | None = None
        self._start: tuple[int, int] | None = None

    def __enter__(self) -> StealMeter:
        self._start = _cpu_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        end = _cpu_ticks()
        if self._start is None or end is None or end[1] <= self._start[1]:
            return
        self.percent = round(100 * (end[0] - self._start[0]) / (end[1] - self._start[1]), 1)
