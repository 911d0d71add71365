"""Baseline references and live alarms, piece by piece (processing/baseline.py, processing/live_alarms.py):
the selection rule, alignment choices, reading a run on the grid from store buckets, building (and refusing)
references, one envelope alarm from stored data, and reconciling evaluations with stored alarms. Every
expected value is worked out by hand in the test from the data it writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from biopilot.records import Phase, Run
from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, Sample
from processing.alignment import Alignment
from processing.baseline import (
    BaselineError,
    alignment_key,
    bucket_series,
    build_references,
    common_landmarks,
    parse_alignment,
    reference_grid,
    run_on_grid,
    select_baseline_runs,
)
from processing.envelope import Envelope
from processing.live_alarms import LiveReferences, evaluate_run, reconcile
from storage import Catalog, SqliteStore
from storage.alarms import Alarm, AlarmObservation, Alarms
from tests.processing import livesim

T0 = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)
H = timedelta(hours=1)
MIN = timedelta(minutes=1)


def at(hours: float) -> datetime:
    return T0 + hours * H


# -- the selection rule ----------------------------------------------------------------------------------
def _run(name: str, start_h: float, end_h: float | None, *, eq: str = "F-101", kind: str = "baseline",
         product: str | None = "enzyme") -> Run:  # fmt: skip
    return Run(
        f"{eq}:{name}", eq, name, at(start_h), at(end_h) if end_h is not None else None, kind, None, product
    )


def test_the_selection_rule_takes_closed_runs_of_the_equipment_product_kind_and_window() -> None:
    runs = [
        _run("G", 100, 150),  # in the window only when since ≤ 100
        _run("A", 0, 50),
        _run("OPEN", 200, None),  # live: not a baseline yet
        _run("TRIAL", 60, 90, kind="trial"),
        _run("OTHERP", 10, 40, product="another"),
        _run("NOP", 20, 45, product=None),
        _run("R", 0, 5, eq="R-201"),
    ]
    pick = select_baseline_runs
    assert [r.batch_id for r in pick(runs, equipment="F-101", product="enzyme")] == ["A", "G"]  # oldest first
    assert [r.batch_id for r in pick(runs, equipment="F-101")] == ["A", "OTHERP", "NOP", "G"]
    assert [r.batch_id for r in pick(runs, equipment="F-101", product="")] == ["NOP"]
    assert [r.batch_id for r in pick(runs, equipment="F-101", kind="trial")] == ["TRIAL"]
    # [since, until): a run starting exactly at `until` is out, one starting exactly at `since` is in
    assert [r.batch_id for r in pick(runs, equipment="F-101", product="enzyme", until=at(100))] == ["A"]
    assert [r.batch_id for r in pick(runs, equipment="F-101", product="enzyme", since=at(100))] == ["G"]
    assert pick(runs, equipment="F-101", product="enzyme", since=at(1), until=at(100)) == []


# -- alignment ----------------------------------------------------------------------------------------------
def test_alignment_choices_and_keys() -> None:
    assert parse_alignment(None) == ("phase_landmarks", None)
    assert parse_alignment("landmarks") == ("phase_landmarks", None)
    assert parse_alignment("landmarks: fed_batch, harvest") == ("phase_landmarks", ("fed_batch", "harvest"))
    assert parse_alignment("inoculation") == ("time_since_inoculation", ())
    assert parse_alignment("time_since_inoculation") == ("time_since_inoculation", ())
    with pytest.raises(BaselineError, match="maturity"):
        parse_alignment("maturity:o2_consumed")
    with pytest.raises(BaselineError, match="expected landmarks"):
        parse_alignment("by eye")
    landmarks = Alignment(
        axis="phase_landmarks", landmarks=("fed_batch", "harvest"), reference_h=(10.0, 44.0)
    )
    assert alignment_key(landmarks) == "phase_landmarks:fed_batch,harvest"
    assert alignment_key(Alignment()) == "time_since_inoculation"
    assert (
        alignment_key(Alignment(axis="maturity", maturity="o2_consumed", unit="mol"))
        == "maturity:o2_consumed"
    )


def _phases(start_h: float, *names_at: tuple[str, float]) -> list[Phase]:
    spans = sorted(names_at, key=lambda x: x[1])
    out = []
    for i, (name, t) in enumerate(spans):
        end = spans[i + 1][1] if i + 1 < len(spans) else None
        out.append(Phase(name, at(start_h + t), at(start_h + end) if end is not None else None))
    return out


def test_common_landmarks_are_the_phases_every_run_reached_in_order_up_to_the_harvest() -> None:
    one = _phases(
        0, ("fill", 0), ("batch", 1), ("induction", 3), ("fed_batch", 5), ("harvest", 20), ("cip", 22)
    )
    two = _phases(0, ("fill", 0), ("batch", 1), ("fed_batch", 6), ("harvest", 21), ("cip", 23))
    # induction is not in run two; cip comes after the harvest
    assert common_landmarks([one, two], "batch", "harvest") == ("fed_batch", "harvest")
    assert common_landmarks([one], "batch", "harvest") == ("induction", "fed_batch", "harvest")
    assert common_landmarks([two], "no_such_phase", "harvest") == ()


def test_the_grid_ends_one_step_before_the_median_harvest() -> None:
    # inoculation ("batch") at 1 h; harvests at 10, 11 and 12 h after inoculation: the median is 11 h
    runs = [_run(f"B{i}", 100 * i, 100 * i + 20) for i in range(3)]
    phases = [_phases(100 * i, ("batch", 1), ("harvest", 1 + 10 + i)) for i in range(3)]
    g = reference_grid(Alignment(), runs, phases, "harvest", 0.25)
    assert g[0] == 0 and g[-1] == pytest.approx(10.75) and len(g) == 44
    landmark = Alignment(axis="phase_landmarks", landmarks=("harvest",), reference_h=(11.0,))
    assert reference_grid(landmark, runs, phases, "harvest", 0.5)[-1] == pytest.approx(10.5)


# -- reading from the store ---------------------------------------------------------------------------------
def test_bucket_series_are_the_store_means_at_the_middle_of_their_samples(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.write(
        [Sample("T", T0 + i * MIN, float(i), BAD_SENSOR_FAILURE if i == 3 else GOOD) for i in range(10)]
    )
    s = bucket_series(store.read_buckets, "T", T0, T0 + 10 * MIN, 5 / 60)
    # minutes 0–4 without the bad sample at 3: (0 + 1 + 2 + 4) / 4 = 1.75, middle of 0 and 4 = 2 min;
    # minutes 5–9: mean 7 at 7 min
    assert s.values.tolist() == [1.75, 7.0]
    assert s.ts.tolist() == [int((T0 + 2 * MIN).timestamp() * 1e6), int((T0 + 7 * MIN).timestamp() * 1e6)]
    assert s.status.tolist() == [GOOD, GOOD]
    store.close()


def _linear_run(store: SqliteStore, tag: str, start_h: float, hours: float, value=lambda h: h) -> None:  # type: ignore[no-untyped-def]
    """One sample per 5 min of `value(hours since start_h)`."""
    n = int(hours * 12) + 1
    store.write([Sample(tag, at(start_h + i / 12), float(value(i / 12)), GOOD) for i in range(n)])


def test_a_run_on_the_grid_by_inoculation_and_by_landmarks(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    _linear_run(store, "F-101.temperature", 0, 12)  # value = hours since the run's start
    run = _run("B1", 0, 12)
    phases = _phases(0, ("fill", 0), ("batch", 1), ("fed_batch", 5), ("harvest", 11))
    g = np.arange(0, 8.01, 0.25)
    by_inoc = run_on_grid(store.read_buckets, run, phases, ["F-101.temperature"], Alignment(), g)
    # inoculation at 1 h: the value at aligned time t is 1 + t
    np.testing.assert_allclose(by_inoc["F-101.temperature"].values, 1 + g, atol=1e-9)
    # landmarks: fed_batch at 4 h after inoculation (reference 2 h), harvest at 10 h (reference 8 h): aligned
    # t ≤ 2 is own time 2t, after it own time 4 + (t − 2); the value is 1 + own time
    marks = Alignment(axis="phase_landmarks", landmarks=("fed_batch", "harvest"), reference_h=(2.0, 8.0))
    by_marks = run_on_grid(store.read_buckets, run, phases, ["F-101.temperature"], marks, g)
    expected = np.where(g <= 2, 1 + 2 * g, 1 + 4 + (g - 2))
    np.testing.assert_allclose(by_marks["F-101.temperature"].values, expected, atol=1e-9)
    # a live run seen up to 3.5 h after its start (the sample at 3.5 h included): nothing beyond it
    live = _run("L1", 0, None)
    seen = run_on_grid(
        store.read_buckets,
        live,
        phases[:3],
        ["F-101.temperature"],
        Alignment(),
        g,
        until=at(3.5) + timedelta(microseconds=1),
    )
    covered = np.isfinite(seen["F-101.temperature"].values)
    assert g[covered].max() == pytest.approx(2.5)  # own time 3.5 h = aligned 2.5 h
    store.close()


# -- building ---------------------------------------------------------------------------------------------
def _catalog_runs(
    tmp_path: Path, n: int, product: str = "demo enzyme"
) -> tuple[SqliteStore, Catalog, list[Run]]:
    store = SqliteStore(tmp_path / "b.db")
    catalog = Catalog(tmp_path / "b.db")
    runs = []
    for i in range(n):
        start = 30 * i
        run = catalog.create_run(
            "F-101", f"B{i}", at(start), at(start + 20), kind="baseline", product=product
        )
        catalog.set_phases(
            run.id, _phases(start, ("fill", 0), ("batch", 1), ("fed_batch", 6), ("harvest", 16))
        )
        _linear_run(store, "F-101.temperature", start, 20, value=lambda h, i=i: 30 + 0.1 * i + 0.01 * h)
        runs.append(run)
    return store, catalog, runs


def test_building_refuses_too_few_runs_and_builds_no_model_below_five(tmp_path: Path) -> None:
    config = livesim.site_config()
    store, catalog, runs = _catalog_runs(tmp_path, 4)

    def build(rs, **kw):  # type: ignore[no-untyped-def]
        return build_references(
            config,
            store.read_buckets,
            catalog.phases,
            equipment="F-101",
            runs=rs,
            tags=["F-101.temperature"],
            **kw,
        )

    with pytest.raises(BaselineError, match=r"2 baseline run\(s\) of F-101 .*at least 3 and an MSPC model 5"):
        build(runs[:2])
    built = build(runs, alignment="inoculation")
    assert [e.tag for e in built.envelopes] == ["F-101.temperature"]
    (env,) = built.envelopes
    assert env.runs == tuple(r.id for r in runs) and env.product == "demo enzyme" and env.unit == "degC"
    # runs of 20 h with inoculation at 1 h and harvest at 16 h: 15 h, so 0 … 14.75 h
    assert built.grid[-1] == pytest.approx(14.75)
    # at aligned 0 the runs read 30.01, 30.11, 30.21, 30.31: mean 30.16
    assert env.mean[0] == pytest.approx(30.16, abs=1e-9)
    assert built.model is None and built.refused == (
        "no MSPC model for F-101: 4 baseline run(s); it needs 5",
    )
    assert built.alignment == Alignment(inoculation_phase="batch")
    landmarks = build(runs[:3])
    assert landmarks.alignment.landmarks == ("fed_batch", "harvest")
    assert landmarks.alignment.reference_h == (5.0, 15.0)
    with pytest.raises(BaselineError, match="not a tag of F-101"):
        build_references(
            config, store.read_buckets, catalog.phases, equipment="F-101", runs=runs, tags=["nope"]
        )
    with pytest.raises(BaselineError, match="must be closed"):
        build([*runs[:3], Run("F-101:L", "F-101", "L", at(500), None)])
    with pytest.raises(BaselineError, match="different products"):
        build([*runs[:3], _run("X", 400, 420, product="other")])
    store.close()
    catalog.close()


# -- one alarm from stored data ---------------------------------------------------------------------------
def test_an_excursion_above_the_band_from_stored_data(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    # 10 everywhere except 13 from 1.0 h to before 2.0 h after the start (= inoculation); one sample per 5 min
    _linear_run(store, "F-101.ph", 0, 4, value=lambda h: 13.0 if 1.0 <= h < 2.0 - 1e-9 else 10.0)
    g = np.arange(0, 4.01, 0.25)
    ones = np.ones(len(g))
    env = Envelope(
        "F-101", "enzyme", "F-101.ph", "pH", Alignment(), g, 10 * ones, 9 * ones, 11 * ones,
        np.full(len(g), 10), tuple(f"B{i}" for i in range(10)), 0.01, T0,
    )  # fmt: skip
    refs = LiveReferences("F-101", "enzyme", "time_since_inoculation", (env,), None)
    run = _run("L1", 0, None)
    (obs,) = evaluate_run(run, [Phase("batch", at(0), None)], store.read_buckets, refs, until=at(4.01))
    # grid points 1.0, 1.25, 1.5, 1.75 h read 13 (outside the 99 % band [9, 11], the envelope's own α = 0.01);
    # the third of them (1.5 h) raises it; 2.0, 2.25, 2.5 h are back inside: it ended at 2.0 h
    assert (obs.tag, obs.variable, obs.kind, obs.direction) == ("F-101.ph", "F-101.ph", "envelope", "above")
    assert (obs.start, obs.raised, obs.last, obs.end) == (at(1.0), at(1.5), at(1.75), at(2.0))
    assert (obs.start_t, obs.raised_t, obs.axis_unit) == (1.0, 1.5, "h")
    assert (obs.size, obs.peak, obs.size_unit, obs.size_relative) == (2.0, 2.0, "pH", 2.0)
    assert obs.key == "envelope|F-101.ph|above|1.000000" and obs.state == "closed"
    # seen only up to 1.6 h: raised, still on
    (on,) = evaluate_run(run, [Phase("batch", at(0), None)], store.read_buckets, refs, until=at(1.6))
    assert (on.raised, on.last, on.end, on.state, on.key) == (at(1.5), at(1.5), None, "open", obs.key)
    store.close()


# -- reconciling -------------------------------------------------------------------------------------------
def _obs(
    key: str, start_h: float, last_h: float, end_h: float | None = None, tag: str = "F-101.ph"
) -> AlarmObservation:
    return AlarmObservation(
        "F-101:L1", key, "F-101", tag, tag, "envelope", "below", at(start_h), at(start_h + 0.5), at(last_h),
        at(end_h) if end_h is not None else None, start_h, start_h + 0.5, "h", 1.0, 1.0, "pH",
    )  # fmt: skip


def _stored(alarm_id: int, obs: AlarmObservation) -> Alarm:
    return Alarm(
        alarm_id, obs.run_id, obs.key, obs.equipment, obs.tag, obs.variable, obs.kind, obs.direction,
        obs.start, obs.raised, obs.last, obs.end, obs.start_t, obs.raised_t, obs.axis_unit, obs.size,
        obs.peak, obs.size_unit, None, None, obs.state, None, None, None, {}, T0, T0,
    )  # fmt: skip


def test_reconcile_updates_by_key_or_overlap_inserts_new_and_closes_what_is_gone() -> None:
    same = _obs("a", 10, 11)
    moved_before = _obs("b", 20, 21)
    moved_now = _obs("b2", 20.25, 21.5)  # re-aligned: its start moved by one 15 min point
    gone = _obs("c", 30, 30.5)
    closed_before = _obs("d", 40, 40.5, 41)
    stored = [_stored(1, same), _stored(2, moved_before), _stored(3, gone), _stored(4, closed_before)]
    plan = reconcile(stored, [same, moved_now, _obs("e", 50, 50.5)], timedelta(hours=0.5))
    assert plan.updates == {2: moved_now}  # 1 is unchanged: nothing to write
    assert [o.key for o in plan.inserts] == ["e"]
    assert plan.closes == {3: (at(30.5), "no longer found when the run was evaluated again")}
    # an alarm that goes on is updated; the same excursion far away in time is a new one
    later = _obs("a", 10, 12)
    plan = reconcile([_stored(1, same)], [later, _obs("a2", 15, 16)], timedelta(hours=0.5))
    assert plan.updates == {1: later} and [o.key for o in plan.inserts] == ["a2"] and not plan.closes
    # another tag never matches
    other = _obs("z", 10, 11, tag="F-101.temperature")
    assert [o.key for o in reconcile([_stored(1, same)], [same, other], timedelta(hours=1)).inserts] == ["z"]
    assert not reconcile([_stored(1, same)], [same], timedelta(hours=1))


# -- the service's part ----------------------------------------------------------------------------------
def test_references_are_built_automatically_once_from_five_closed_baseline_runs(tmp_path: Path) -> None:
    from processing.live_alarms import AlarmMonitor, load_references
    from storage.references import References

    config = livesim.site_config()
    store, catalog, runs = _catalog_runs(tmp_path, 5)
    catalog.update_run(runs[4].id, kind="other")  # four baseline runs: not enough for a model, nothing built
    monitor = AlarmMonitor(config, store, catalog, interval_s=0)
    refs = References(catalog.db)
    assert monitor.auto_build() == [] and refs.stamp("F-101", "demo enzyme") == (0, 0, 0)
    assert load_references(refs, "F-101", "demo enzyme") is None
    catalog.update_run(runs[4].id, kind="baseline")
    assert monitor.auto_build() == [("F-101", "demo enzyme")]
    model = refs.model("F-101", "demo enzyme", docs=False)
    assert (
        model is not None
        and model.runs == tuple(r.id for r in runs)
        and model.computed_by == "processing (automatic)"
    )
    # only the temperature has data here: the other nine tags have no envelope and are not in the model
    assert [e.tag for e in refs.envelopes(docs=False)] == ["F-101.temperature"]
    assert model.variables == ("F-101.temperature",)
    live = load_references(refs, "F-101", "demo enzyme")
    assert live is not None and live.alignment == model.alignment and live.model is not None
    assert [e.tag for e in live.envelopes] == ["F-101.temperature"]
    assert monitor.auto_build() == []  # stored now: never rebuilt by itself
    refs.delete("F-101", "demo enzyme")
    assert monitor.auto_build() == []  # the same runs were tried already
    off = AlarmMonitor(config, store, catalog, interval_s=0, auto_build=False)
    off.on_pass([], set())
    assert refs.stamp("F-101", "demo enzyme") == (0, 0, 0)
    store.close()
    catalog.close()


def _excursion_site(path: Path, until_h: float) -> tuple[SqliteStore, Catalog, Run]:
    """The excursion above (13 from 1.0 h to 2.0 h, band [9, 11]) stored up to until_h, its envelope stored,
    and its run open in the catalog."""
    from storage.references import References, StoredEnvelope

    store = SqliteStore(path)
    catalog = Catalog(path)
    n = int(until_h * 12) + 1
    store.write([Sample("F-101.ph", at(i / 12), 13.0 if 12 <= i < 24 else 10.0, GOOD) for i in range(n)])
    g = np.arange(0, 4.01, 0.25)
    ones = np.ones(len(g))
    env = Envelope(
        "F-101", "demo enzyme", "F-101.ph", "pH", Alignment(), g, 10 * ones, 9 * ones, 11 * ones,
        np.full(len(g), 10), tuple(f"B{i}" for i in range(10)), 0.01, T0,
    )  # fmt: skip
    stored = StoredEnvelope(
        "F-101", "demo enzyme", "F-101.ph", "time_since_inoculation", "pH", env.runs, len(g), T0, "test",
        env.to_json(),
    )  # fmt: skip
    References(catalog.db).save([stored])
    run = catalog.create_run("F-101", "L1", at(0), None, product="demo enzyme", origin="live")
    catalog.set_phases(run.id, [Phase("batch", at(0), None)])
    return store, catalog, run


def test_an_alarm_still_on_when_its_run_ends_is_closed_with_it(tmp_path: Path) -> None:
    from processing.live_alarms import AlarmMonitor

    config = livesim.site_config()
    # seen live up to 1.6 h: raised and open; the run then ends at 1.8 h, still outside: closed at the end
    store, catalog, run = _excursion_site(tmp_path / "a.db", 1.6)
    monitor = AlarmMonitor(config, store, catalog, interval_s=0, auto_build=False)
    (alarm_id,) = monitor.evaluate(run)
    alarms = Alarms(catalog.db)
    alarm = alarms.alarm(alarm_id)
    assert alarm is not None and (alarm.state, alarm.raised, alarm.end) == ("open", at(1.5), None)
    store.write([Sample("F-101.ph", at(i / 12), 13.0, GOOD) for i in range(20, 22)])  # 1.67 h, 1.75 h
    catalog.close_run(run.id, at(1.8))
    closed = catalog.run(run.id)
    assert closed is not None
    monitor.on_pass([closed], {run.id})
    alarm = alarms.alarm(alarm_id)
    assert alarm is not None and (alarm.state, alarm.last, alarm.end) == ("closed", at(1.75), at(1.8))
    assert alarm.detail["closed"] == "the run ended" and len(alarms.alarms()) == 1
    store.close()
    catalog.close()
    # a run first judged when it has ended (the service was down while it ran): stored closed at once
    store, catalog, run = _excursion_site(tmp_path / "b.db", 1.75)
    catalog.close_run(run.id, at(1.8))
    closed = catalog.run(run.id)
    assert closed is not None
    (alarm_id,) = AlarmMonitor(config, store, catalog, interval_s=0, auto_build=False).evaluate(closed)
    alarm = Alarms(catalog.db).alarm(alarm_id)
    assert alarm is not None and (alarm.state, alarm.end, alarm.detail["closed"]) == (
        "closed",
        at(1.8),
        "the run ended",
    )
    store.close()
    catalog.close()
