"""The drill window: a daily HH:MM-HH:MM span (possibly across midnight) in
local time, when a drill may change the cluster. Pure: the caller passes the
clock, so tests pin any hour and the CLI passes the real one.

A dry run changes nothing, so it runs at any hour and says when the window
opens; a real run outside it is refused with the same sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta


@dataclass(frozen=True)
class Window:
    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        """'06:00-12:00' -> Window; ValueError with the expected form."""
        start, sep, end = text.partition("-")
        if not sep:
            raise ValueError(f"drill window {text!r}: expected HH:MM-HH:MM")
        try:
            return cls(_hhmm(start), _hhmm(end))
        except ValueError:
            raise ValueError(f"drill window {text!r}: expected HH:MM-HH:MM (00:00 to 23:59)") from None

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, now: datetime) -> bool:
        t = now.time().replace(second=0, microsecond=0)
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end  # across midnight, e.g. 22:00-06:00

    def next_opening(self, now: datetime) -> datetime:
        """The next time the window starts, strictly after `now` when it is
        open now (then it is the next day's opening)."""
        today = now.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        return today if today > now else today + timedelta(days=1)

    def describe(self, now: datetime) -> str:
        """One sentence for the console: open now (until when), or when it opens."""
        if self.contains(now):
            return f"the drill window {self} is open now (until {self.end:%H:%M} local time)"
        opening = self.next_opening(now)
        return f"the window opens at {opening:%A %Y-%m-%d %H:%M} local time (drill window {self})"


def _hhmm(text: str) -> time:
    hh, sep, mm = text.strip().partition(":")
    if not sep or len(hh) != 2 or len(mm) != 2 or not (hh.isdigit() and mm.isdigit()):
        raise ValueError(text)
    return time(int(hh), int(mm))
