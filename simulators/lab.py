"""Offline lab results: the measurement error of the lab, and the CSV files a LIMS exports.

A sample is taken from the broth at set times after inoculation (every `every_h` hours, and a final one
at harvest start); it removes its volume from the fermenter (simulators.fermenter.take_sample). The lab
reports titer (product), dry cell weight (biomass) and glucose [g/L] `delay_h` hours later, each with a
Gaussian error: relative SD `titer_cv`, `dcw_cv`; glucose with relative SD `glucose_cv` plus an absolute
SD `glucose_sd` [g/L] (the assay's floor). A result never reads below 0.

Delivery: as an MQTT message on <prefix>/<equipment>/lab, published at the report time with the source
timestamp of the *sampling* time: {"ts", "status", "batch_id", "sample_id", "titer", "dcw", "glucose",
"sample_volume_l", "reported_at"}; or as a row appended to <dir>/lab/<batch_id>.csv at the report time, in
the wide format `biopilot lab import` reads: `time` (sampling time, ISO-8601 UTC), `sample_volume_l`, then
`titer [g/L]`, `dcw [g/L]`, `glucose [g/L]`. (Sample ids and report times are in the run's truth file.)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from biopilot.ids import inside

CSV_COLUMNS = ("time", "sample_volume_l", "titer [g/L]", "dcw [g/L]", "glucose [g/L]")


@dataclass(frozen=True)
class LabError:
    titer_cv: float = 0.03
    dcw_cv: float = 0.04
    glucose_cv: float = 0.03
    glucose_sd: float = 0.05


def measure(x: float, s: float, p: float, err: LabError, rng: np.random.Generator) -> dict[str, float]:
    """Lab readings of true biomass x, glucose s and product p [g/L]."""
    z = rng.standard_normal(3)
    titer = p * (1 + err.titer_cv * z[0])
    dcw = x * (1 + err.dcw_cv * z[1])
    glucose = s * (1 + err.glucose_cv * z[2]) + err.glucose_sd * rng.standard_normal()
    return {
        "titer": round(max(titer, 0.0), 3),
        "dcw": round(max(dcw, 0.0), 2),
        "glucose": round(max(glucose, 0.0), 3),
    }


def append_csv(
    directory: Path, *, batch_id: str, sampled_at: datetime, volume_l: float, values: dict[str, float]
) -> Path:
    """Append one result row to <directory>/<batch_id>.csv (with a header when the file is new)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = inside(directory, f"{batch_id}.csv", "batch id")
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(CSV_COLUMNS)
        w.writerow(
            [sampled_at.isoformat(), f"{volume_l:g}", values["titer"], values["dcw"], values["glucose"]]
        )
    return path
