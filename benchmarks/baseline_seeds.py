"""Batch MSPC and golden-batch envelopes against simulated baseline and faulty runs, over many seeds.

    .venv/bin/python benchmarks/baseline_seeds.py [--seeds 20] [--first-seed 1] [--reference 10]

Per seed, the simulator's historical mode (tests/processing/simbatches.py: config/scenarios/baseline.toml,
its run-to-run variability, 30 s model steps, one sample per 5 min) makes reference + 1 normal runs and
three faulty runs after them:
  drift     a temperature probe drifting +0.25 K/h for 4 h from 26 h after the fill (a sensor fault)
  do_dip    oxygen transfer cut to 50 % of kLa for 4 h from 30 h (foaming: DO dips, the cascade reacts)
  feed      the feed pump stopped for 2 h from 30 h (a process fault)
Runs are aligned by phase landmarks (feed start, harvest start) on a 15 min grid from inoculation to the
reference harvest start, ten variables (simbatches.VARIABLES).

Baseline (false alarms): every normal run (the reference runs and the extra one) is left out in turn and
judged by a model of the other `reference` runs: offline inside = T² and SPE both ≤ their 99 % limits;
online = no alarm (3 consecutive points above a 99 % limit); envelope = no deviation alarm on any of the
ten tags (alarm band 99 %, k = 3, cleared after 3 points inside).
Faulty runs (model of the first `reference` runs): detected offline (T² or SPE above its 99 % limit) and
online (an alarm after the fault starts; delay from the fault start), and the top contributor (largest
relative contribution) names the variable at fault: temperature; dissolved_oxygen, agitation_speed or
air_flow (the oxygen transfer loop: kLa itself is not measured); feed_rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processing.alignment import GridSeries
from processing.deviation import deviation_alarms
from processing.envelope import golden_envelope
from processing.mspc import fit_mspc, mspc_offline, mspc_online
from tests.processing import simbatches as sb

FAULTS = sb.FAULTS


def seed_figures(seed: int, reference: int) -> dict[str, object]:
    """Every figure of one seed (see the module docstring)."""
    runs = sb.with_faults(seed, reference)
    normal = runs[: reference + 1]
    alignment = sb.landmark_alignment(runs[:reference])
    g = sb.model_grid(alignment)
    arrays = [sb.run_grid_array(r, alignment, g) for r in runs]
    x = np.stack([a for a, _ in arrays])
    out: dict[str, object] = {"baseline": [], "faults": {}}
    for i in range(len(normal)):
        ref = [j for j in range(len(normal)) if j != i][:reference]
        model = fit_mspc(
            x[ref], variables=sb.ROLES, units=sb.UNITS, grid=g, alignment=alignment,
            runs=[runs[j].batch_id for j in ref],
        )  # fmt: skip
        off = mspc_offline(model, x[i])
        on = mspc_online(model, x[i], ts_us=arrays[i][1])
        tags_alarmed = []
        for v, role in enumerate(sb.ROLES):
            env = golden_envelope(
                g, x[ref][:, :, v], [runs[j].batch_id for j in ref], equipment=sb.EQUIPMENT, product="",
                tag=role, unit=sb.UNITS[v], alignment=alignment,
            )  # fmt: skip
            live = GridSeries(role, alignment, g, x[i][:, v], np.zeros(len(g), dtype=bool), arrays[i][1])
            if deviation_alarms(env, live):
                tags_alarmed.append(role)
        out["baseline"].append(
            {
                "a": model.n_components,
                "offline_inside": off.inside(0.99),
                "t2_ratio": off.t2 / off.t2_limits[0.99],
                "spe_ratio": off.spe / off.spe_limits[0.99],
                "online_alarm": bool(on.alarms),
                "online_alarms": [(a.statistic, a.t, round(a.peak_ratio, 2)) for a in on.alarms],
                "top": off.top_variable,
                "envelope_tags": tags_alarmed,
            }
        )
    ref = list(range(reference))
    model = fit_mspc(
        x[ref], variables=sb.ROLES, units=sb.UNITS, grid=g, alignment=alignment,
        runs=[runs[j].batch_id for j in ref],
    )  # fmt: skip
    for n, (name, (_, expected)) in enumerate(FAULTS.items()):
        i = reference + 1 + n
        run = runs[i]
        t_start = sb.fault_start_h(run, alignment)
        off = mspc_offline(model, x[i])
        on = mspc_online(model, x[i], ts_us=arrays[i][1])
        after = [a for a in on.alarms if a.t >= t_start - 1e-9]
        first = after[0] if after else None
        out["faults"][name] = {
            "offline_out": not off.inside(0.99),
            "offline_top": off.top_variable,
            "offline_top_ok": off.top_variable in expected,
            "online_detected": first is not None,
            "online_delay_h": (first.t - t_start) if first else None,
            "online_top": first.top_variable if first else None,
            "online_top_ok": bool(first and first.top_variable in expected),
            "false_before": any(a.t < t_start - 1e-9 for a in on.alarms),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--reference", type=int, default=10)
    ap.add_argument("--details", action="store_true", help="print every check that is not clean")
    args = ap.parse_args()
    t0 = time.perf_counter()
    base = []
    faults: dict[str, list[dict]] = defaultdict(list)
    comps: Counter[int] = Counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        figs = seed_figures(seed, args.reference)
        base.extend(figs["baseline"])  # type: ignore[arg-type]
        for name, f in figs["faults"].items():  # type: ignore[union-attr]
            faults[name].append(f)
        comps.update(b["a"] for b in figs["baseline"])  # type: ignore[union-attr]
        if args.details:
            for i, b in enumerate(figs["baseline"]):  # type: ignore[arg-type]
                if not b["offline_inside"] or b["online_alarm"] or b["envelope_tags"]:
                    print(f"  seed {seed} run {i + 1}: {b}")
            for name, f in figs["faults"].items():  # type: ignore[union-attr]
                if not (f["offline_out"] and f["offline_top_ok"] and f["online_top_ok"]) or f["false_before"]:
                    print(f"  seed {seed} fault {name}: {f}")
        print(f"seed {seed}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    n = len(base)
    print(f"{args.seeds} seeds × {args.reference + 1} normal runs left out = {n} baseline checks")
    print(f"  components chosen: {dict(sorted(comps.items()))}")
    inside = sum(b["offline_inside"] for b in base)
    print(f"  MSPC offline inside both 99 % limits: {inside}/{n} = {inside / n:.1%}")
    t2_out = sum(b["t2_ratio"] > 1 for b in base)
    spe_out = sum(b["spe_ratio"] > 1 for b in base)
    print(f"    T² above: {t2_out}, SPE above: {spe_out}")
    both = sum(b["offline_inside"] and not b["online_alarm"] for b in base)
    print(f"  MSPC offline inside and online without alarm: {both}/{n} = {both / n:.1%}")
    quiet = sum(not b["online_alarm"] for b in base)
    print(f"  MSPC online without alarm (3 points above 99 %): {quiet}/{n} = {quiet / n:.1%}")
    env_quiet = sum(not b["envelope_tags"] for b in base)
    per_tag = Counter(t for b in base for t in b["envelope_tags"])
    print(f"  envelopes (10 tags, 99 % band, k = 3) without alarm: {env_quiet}/{n} = {env_quiet / n:.1%}")
    print(f"    runs with an alarm, per tag: {dict(per_tag.most_common())}")
    for name, rows in faults.items():
        m = len(rows)
        det = sum(r["offline_out"] for r in rows)
        top = sum(r["offline_top_ok"] for r in rows)
        on = sum(r["online_detected"] for r in rows)
        on_top = sum(r["online_top_ok"] for r in rows)
        delays = [r["online_delay_h"] for r in rows if r["online_delay_h"] is not None]
        before = sum(r["false_before"] for r in rows)
        tops = Counter(r["offline_top"] for r in rows)
        print(
            f"  fault {name}: offline detected {det}/{m}, top contributor right {top}/{m} {dict(tops)};"
            f" online detected {on}/{m} (median delay {np.median(delays) if delays else float('nan'):.2f} h),"
            f" first alarm's top right {on_top}/{m}; alarms before the fault {before}/{m}"
        )
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
