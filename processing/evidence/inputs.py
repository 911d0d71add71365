"""What an evidence pack shows, gathered before it is drawn: `EvidenceInputs` holds everything and needs no
store. The catalog fills it (part C of issue 10: `biopilot report TRIAL --out DIR`); tests and the dev path
`biopilot report build-json` fill it from a JSON document (`inputs_from_json`, the inverse of
`inputs_to_json`).

JSON form of the inputs (format "biopilot-evidence-inputs-1"; the verdict is not in it: `inputs_from_json`
judges the runs by the judged charter version, as `biopilot verdict` does):
  {"format", "trial", "site",
   "charter_versions": [{"version", "charter": canonical JSON text, "reason", "by", "at"}],
   "judged_version": int, "charter_changed_after_start": bool, "seed": int,
   "runs": [{"run", "group" ("trial" | "baseline"), "start", "kpis": [KpiRecord.to_json()]}],
   "sources": [{"run", "origin", "site_config_sha256", "biopilot_version",
                "imports": [{"file", "sha256", "rows", "samples", "imported"}]}],
   "exclusions": [{"run", "reason", "by", "at"}]}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from biopilot.charter import CHARTER_FORMAT, Charter, canonical_json, charter_sha256
from biopilot.records import ImportRecord, KpiRecord
from processing.evidence.errors import EvidenceError
from processing.trial_inputs import Exclusion, RunRecord
from processing.verdict import Verdict, judge

INPUTS_FORMAT = "biopilot-evidence-inputs-1"


@dataclass(frozen=True)
class CharterVersion:
    """One version of the trial's charter as the catalog keeps it: the canonical JSON text exactly
    (biopilot.charter.canonical_json), its SHA-256, why it was made, by whom and when."""

    version: int
    canonical_json: str
    sha256: str
    reason: str  # "" for the first lock
    by: str
    at: datetime

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.canonical_json.encode("utf-8")).hexdigest()
        if digest != self.sha256:
            raise EvidenceError(
                f"charter version {self.version}: the SHA-256 {self.sha256} is not that of its canonical "
                f"JSON ({digest})"
            )

    @property
    def charter(self) -> Charter:
        doc = json.loads(self.canonical_json)
        if doc.get("format") != CHARTER_FORMAT:
            raise EvidenceError(f"charter version {self.version}: not a {CHARTER_FORMAT} canonical JSON")
        return Charter.model_validate(doc["charter"])

    @classmethod
    def of(cls, version: int, charter: Charter, *, reason: str, by: str, at: datetime) -> CharterVersion:
        return cls(version, canonical_json(charter), charter_sha256(charter), reason, by, at)


@dataclass(frozen=True)
class RunSource:
    """Where one run's data came from: live collection or an imported file (with the file's SHA-256 from
    the catalog's ImportRecord), the site config's SHA-256 and the BioPilot version that recorded it."""

    run_id: str
    origin: str  # biopilot.records.RunOrigin: "live" | "import" | "manual"
    imports: tuple[ImportRecord, ...] = ()
    site_config_sha256: str | None = None
    biopilot_version: str | None = None


@dataclass(frozen=True)
class EvidenceInputs:
    """Everything an evidence pack shows.

    trial_id            the trial's id
    site                the host plant (site name), "" when unknown
    charter_versions    every version of the charter, oldest first
    verdict             processing.verdict.judge(...) by the judged version: it carries the charter, its
                        version and SHA-256, whether it changed after the first trial run started, the
                        exclusions (with who and when), the verdict without them, and the money
    trial_runs, baseline_runs   the runs with every KPI record (value, unit, coverage, flags, inputs)
    sources             one per run (runs without one are shown as "unknown")
    hidden              runs the reader may not see, each with the name it is shown by ("baseline run K"): a
                        pack for a startup or a partner shows the baseline as aggregates only (no such run's
                        id, row or value; processing.verdict.hide_runs)
    """

    trial_id: str
    charter_versions: tuple[CharterVersion, ...]
    verdict: Verdict
    trial_runs: tuple[RunRecord, ...]
    baseline_runs: tuple[RunRecord, ...]
    sources: tuple[RunSource, ...] = ()
    site: str = ""
    hidden: Mapping[str, str] = field(default_factory=dict)
    _sources: Mapping[str, RunSource] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.trial_id:
            raise EvidenceError("an evidence pack needs a trial id")
        versions = [v.version for v in self.charter_versions]
        if versions != sorted(set(versions)):
            raise EvidenceError(f"charter versions must be distinct and oldest first, got {versions}")
        judged = self.judged_version
        if judged.sha256 != self.verdict.charter_sha256:
            raise EvidenceError(
                f"the verdict used charter version {judged.version} with SHA-256 "
                f"{self.verdict.charter_sha256}, but that version's SHA-256 is {judged.sha256}"
            )
        ids = [r.run_id for r in (*self.trial_runs, *self.baseline_runs)]
        if len(ids) != len(set(ids)):
            raise EvidenceError("a run is listed twice among the trial and baseline runs")
        judged_ids = {r.run_id for r in self.verdict.primary.runs}
        if judged_ids != set(ids):
            raise EvidenceError(
                "the runs given are not the runs the verdict judged: "
                f"{', '.join(sorted(judged_ids ^ set(ids)))}"
            )
        sources = {s.run_id: s for s in self.sources}
        if len(sources) != len(self.sources):
            raise EvidenceError("a run has two sources")
        unknown = sorted(set(sources) - set(ids))
        if unknown:
            raise EvidenceError(f"sources of runs that are not in the trial: {', '.join(unknown)}")
        object.__setattr__(self, "_sources", sources)

    @property
    def judged_version(self) -> CharterVersion:
        for v in self.charter_versions:
            if v.version == self.verdict.charter_version:
                return v
        raise EvidenceError(
            f"the verdict used charter version {self.verdict.charter_version}, which is not in the history "
            f"({', '.join(str(v.version) for v in self.charter_versions) or 'empty'})"
        )

    @property
    def charter(self) -> Charter:
        return self.verdict.charter

    @property
    def exclusions(self) -> tuple[Exclusion, ...]:
        return self.verdict.exclusions

    @property
    def runs(self) -> tuple[tuple[str, RunRecord], ...]:
        """(group, run), trial runs first, each group in start order."""
        return tuple(
            (group, r)
            for group, runs in (("trial", self.trial_runs), ("baseline", self.baseline_runs))
            for r in sorted(runs, key=lambda r: (r.start, r.run_id))
        )

    @property
    def first_trial_start(self) -> datetime | None:
        return min((r.start for r in self.trial_runs), default=None)

    def source(self, run_id: str) -> RunSource | None:
        return self._sources.get(run_id)


# -- JSON (the dev path and the tests) ----------------------------------------------------------------
def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _kpi_from_json(doc: Mapping[str, Any]) -> KpiRecord:
    return KpiRecord(
        name=doc["name"],
        value=None if doc.get("value") is None else float(doc["value"]),
        unit=doc.get("unit", ""),
        coverage=float(doc.get("coverage", 0.0)),
        flags=tuple(doc.get("flags", ())),
        final=bool(doc.get("final", False)),
        version=doc.get("version", ""),
        computed=_time(doc.get("computed")) or datetime.fromisoformat("1970-01-01T00:00:00+00:00"),
        inputs={k: float(v) for k, v in doc.get("inputs", {}).items()},
    )


def inputs_from_json(doc: Mapping[str, Any]) -> EvidenceInputs:
    """EvidenceInputs from its JSON form (module docstring): the runs are judged by the judged charter
    version (processing.verdict.judge). EvidenceError naming what is wrong."""
    if doc.get("format") != INPUTS_FORMAT:
        raise EvidenceError(f"not a {INPUTS_FORMAT} document (format {doc.get('format')!r})")
    try:
        versions = tuple(
            CharterVersion(
                int(v["version"]),
                v["charter"],
                hashlib.sha256(v["charter"].encode("utf-8")).hexdigest(),
                v.get("reason", ""),
                v.get("by", ""),
                datetime.fromisoformat(v["at"]),
            )
            for v in doc["charter_versions"]
        )
        trial: list[RunRecord] = []
        baseline: list[RunRecord] = []
        for r in doc["runs"]:
            kpis = {k["name"]: _kpi_from_json(k) for k in r["kpis"]}
            rec = RunRecord(r["run"], datetime.fromisoformat(r["start"]), kpis)
            if r["group"] not in ("trial", "baseline"):
                raise EvidenceError(f"run {r['run']}: group {r['group']!r} is neither trial nor baseline")
            (trial if r["group"] == "trial" else baseline).append(rec)
        sources = tuple(
            RunSource(
                s["run"],
                s["origin"],
                tuple(
                    ImportRecord(
                        i["sha256"],
                        s["run"],
                        i["file"],
                        int(i.get("rows", 0)),
                        int(i.get("samples", 0)),
                        datetime.fromisoformat(i["imported"]),
                    )
                    for i in s.get("imports", ())
                ),
                s.get("site_config_sha256"),
                s.get("biopilot_version"),
            )
            for s in doc.get("sources", ())
        )
        exclusions = tuple(
            Exclusion(e["run"], e["reason"], e.get("by", ""), _time(e.get("at")))
            for e in doc.get("exclusions", ())
        )
        judged_no = int(doc.get("judged_version", versions[-1].version if versions else 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise EvidenceError(f"evidence inputs: {type(exc).__name__}: {exc}") from None
    judged = next((v for v in versions if v.version == judged_no), None)
    if judged is None:
        raise EvidenceError(f"evidence inputs: judged_version {judged_no} is not among the charter versions")
    verdict = judge(
        judged.charter,
        trial,
        baseline,
        exclusions=exclusions,
        charter_version=judged.version,
        charter_changed_after_start=bool(doc.get("charter_changed_after_start", False)),
        seed=int(doc.get("seed", 0)),
    )
    return EvidenceInputs(
        doc["trial"], versions, verdict, tuple(trial), tuple(baseline), sources, doc.get("site", "")
    )


def inputs_to_json(inputs: EvidenceInputs, *, seed: int = 0) -> dict[str, Any]:
    """The JSON form of EvidenceInputs (the verdict is left out: `inputs_from_json` judges again)."""
    return {
        "format": INPUTS_FORMAT,
        "trial": inputs.trial_id,
        "site": inputs.site,
        "charter_versions": [
            {
                "version": v.version,
                "charter": v.canonical_json,
                "reason": v.reason,
                "by": v.by,
                "at": v.at.isoformat(),
            }
            for v in inputs.charter_versions
        ],
        "judged_version": inputs.verdict.charter_version,
        "charter_changed_after_start": inputs.verdict.charter_changed_after_start,
        "seed": seed,
        "runs": [
            {
                "run": r.run_id,
                "group": g,
                "start": r.start.isoformat(),
                "kpis": [k.to_json() for _, k in sorted(r.kpis.items())],
            }
            for g, r in inputs.runs
        ],
        "sources": [
            {
                "run": s.run_id,
                "origin": s.origin,
                "site_config_sha256": s.site_config_sha256,
                "biopilot_version": s.biopilot_version,
                "imports": [
                    {
                        "file": i.file,
                        "sha256": i.sha256,
                        "rows": i.rows,
                        "samples": i.samples,
                        "imported": i.imported.isoformat(),
                    }
                    for i in s.imports
                ],
            }
            for s in inputs.sources
        ],
        "exclusions": [e.to_json() for e in inputs.exclusions],
    }
