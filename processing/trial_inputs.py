"""What the verdict and the money of a trial take in: runs with their KPI records, and the exclusions.

Part B (the catalog and the CLI) builds these from stored runs; processing never reads storage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from biopilot.records import KpiRecord

BAD_FLAG_PREFIXES = ("implausible", "missing_input")


@dataclass(frozen=True)
class RunRecord:
    """One run as the verdict sees it: its id, start time, and KPI records by name."""

    run_id: str
    start: datetime
    kpis: Mapping[str, KpiRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class Exclusion:
    """A run left out of the verdict, with the written reason, who and when (the catalog's ledger)."""

    run_id: str
    reason: str
    by: str = ""
    at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "reason": self.reason,
            "by": self.by,
            "at": self.at.isoformat() if self.at else None,
        }


def usable_problem(rec: KpiRecord | None, min_coverage: float, *, positive: bool = False) -> str | None:
    """Why a KPI record cannot enter a verdict, or None when it can: no record, no (finite) value, an
    `implausible…` or `missing_input…` flag, coverage below min_coverage, not final (the run is still
    open), or (positive=True, for a ratio) a value ≤ 0. The text follows the run id in a sentence."""
    if rec is None:
        return "has no value (not computed)"
    flags = ", ".join(rec.flags)
    if rec.value is None or not math.isfinite(rec.value):
        return f"has no value ({flags})" if flags else "has no value"
    bad = [f for f in rec.flags if f.startswith(BAD_FLAG_PREFIXES)]
    if bad:
        return f"is flagged {', '.join(bad)}"
    if rec.coverage < min_coverage:
        return f"covers {rec.coverage * 100:.0f} % of its inputs (< {min_coverage * 100:.0f} %)"
    if not rec.final:
        return "is provisional (the run is still open)"
    if positive and rec.value <= 0:
        return f"is {rec.value:.3g} (a relative margin needs values above 0)"
    return None
