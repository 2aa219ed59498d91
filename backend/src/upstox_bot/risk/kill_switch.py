"""The kill switch: while it is on, no new entry is taken."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(slots=True)
class KillSwitch:
    active: bool = False
    reason: str = ""
    changed_at: datetime | None = None
    changed_by: str = ""

    def set(self, active: bool, *, reason: str, at: datetime, by: str) -> bool:
        """Turn it on or off; return True when the state changed."""
        changed = active != self.active
        self.active = active
        self.reason = reason
        self.changed_at = at
        self.changed_by = by
        return changed
