"""The query layer's run-review reads per viewer, on the isolation site (tests/processing/queries/site.py)
with a stored envelope of F-101.temperature and an alarm on several runs: alarms of the runs a viewer may
see (none for a partner), acknowledging (an operator of the equipment or an admin; audit log), stored
envelopes (the baseline run ids cut for startups and partners), aligned series (never a baseline run for a
startup)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from biopilot.config import load_config
from processing.alignment import Alignment
from processing.envelope import golden_envelope
from processing.queries import Forbidden, Query, open_query
from storage import Catalog, SqliteStore
from storage.alarms import AlarmObservation, Alarms
from storage.references import References, StoredEnvelope
from tests.processing.queries.site import CONFIG, build, hour

ALARMED = ["F-101:A-1", "F-101:BL-1", "F-101:B-1", "F-101:X-1", "R-201:X-1"]
BASELINE = ["F-101:BL-1", "F-101:BL-2", "F-101:BL-3"]
# two grid points, three baseline runs: mean 2 and 3, s = 1; t(0.975, 2) = 4.302653 (scipy.stats.t.ppf,
# also the printed tables); half-width 4.302653 · 1 · √(1 + 1/3) = 4.968275
HALF_WIDTH = 4.968275


def add_references_and_alarms(data: Path) -> None:
    """Store the envelope of F-101.temperature (from BASELINE) and an open alarm on each run of ALARMED."""
    catalog = Catalog(data / "biopilot.db")
    env = golden_envelope(
        np.array([0.0, 1.0]),
        np.array([[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]]),
        BASELINE,
        equipment="F-101",
        product="",
        tag="F-101.temperature",
        unit="degC",
        alignment=Alignment(),
    )
    stored = StoredEnvelope(
        "F-101", "", env.tag, env.alignment.axis, "degC", env.runs, 2, env.computed, "t", env.to_json()
    )
    References(catalog.db).save([stored])
    Alarms(catalog.db).apply(inserts=[_observation(r, i) for i, r in enumerate(ALARMED)], now=hour(160))
    catalog.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("review-queries")
    build(data)
    add_references_and_alarms(data)
    return data


def _observation(run_id: str, i: int) -> AlarmObservation:
    eq = run_id.split(":")[0]
    when = hour(160 - i)
    return AlarmObservation(
        run_id,
        f"k{i}",
        eq,
        f"{eq}.temperature",
        None,
        "envelope",
        "above",
        when,
        when,
        when,
        None,
        1.0,
        1.0,
        "h",
        0.5,
        0.7,
        "degC",
    )


@pytest.fixture()
def q(site: Path) -> Iterator:  # type: ignore[type-arg]
    config = load_config(CONFIG)
    catalog = Catalog(site / "biopilot.db")
    store = SqliteStore(site / "biopilot.db", read_only=True)

    def as_(user: str) -> Query:
        viewer = catalog.user(user).viewer  # type: ignore[union-attr]
        return open_query(viewer, config, catalog, store)

    yield as_
    catalog.close()
    store.close()


@pytest.mark.parametrize(
    ("user", "runs"),
    [
        ("root", set(ALARMED)),
        ("olga", {"R-201:X-1"}),  # operator of R-201
        ("ann", {"F-101:A-1"}),  # startup acme: its trial's runs, no baseline run
        ("bob", {"F-101:B-1"}),
        ("pat", set()),  # a partner: no alarms (no series either)
    ],
)
def test_alarms_are_those_of_the_runs_the_viewer_may_see(q, user: str, runs: set[str]) -> None:  # type: ignore[no-untyped-def]
    query = q(user)
    assert {a.run_id for a in query.alarms()} == runs
    for run_id in ALARMED:  # asking by run: the same answer, a forbidden run reads as no alarms
        assert bool(query.alarms(run_id=run_id)) == (run_id in runs)


def test_only_an_operator_of_the_equipment_or_an_admin_acknowledges(q, site: Path) -> None:  # type: ignore[no-untyped-def]
    alarms = {a.run_id: a for a in q("root").alarms()}
    for user, run_id in [("ann", "F-101:A-1"), ("pat", "F-101:A-1"), ("olga", "F-101:X-1")]:
        with pytest.raises(Forbidden):
            q(user).acknowledge_alarm(alarms[run_id].id)
    acked = q("olga").acknowledge_alarm(alarms["R-201:X-1"].id, "checked the bowl")
    assert acked.ack_by == "olga" and acked.ack_at is not None and acked.ack_comment == "checked the bowl"
    catalog = Catalog(site / "biopilot.db")
    try:
        entries = [e for e in catalog.audit.entries(actor="olga") if e.action == "alarm.ack"]
    finally:
        catalog.close()
    assert [(e.target, e.why) for e in entries] == [(str(acked.id), "checked the bowl")]
    assert q("ann").alarms(run_id="F-101:A-1")[0].ack_by is None  # refused: nothing written


@pytest.mark.parametrize(
    ("user", "run_id", "sees_ids"),
    [
        ("root", "F-101:A-1", True),
        ("ann", "F-101:A-1", False),
        ("bob", "F-101:B-1", False),
        ("pat", "F-101:A-1", False),
    ],
)
def test_envelopes_are_aggregates_for_startups_and_partners(
    q, user: str, run_id: str, sees_ids: bool
) -> None:  # type: ignore[no-untyped-def]
    (env,) = q(user).envelopes(run_id)
    assert np.allclose(env.mean, [2.0, 3.0])
    assert np.allclose(env.lower, [2.0 - HALF_WIDTH, 3.0 - HALF_WIDTH], atol=1e-6)
    assert np.allclose(env.upper, [2.0 + HALF_WIDTH, 3.0 + HALF_WIDTH], atol=1e-6)
    assert list(env.n) == [3, 3]
    assert env.runs == (tuple(BASELINE) if sees_ids else ())


def test_envelopes_of_a_run_the_viewer_may_not_see_read_as_absent(q) -> None:  # type: ignore[no-untyped-def]
    assert q("bob").envelopes("F-101:A-1") == []
    assert q("ann").envelopes("F-101:BL-1") == []
    assert q("olga").envelopes("F-101:A-1") == []


def test_aligned_series_of_baseline_runs_only_for_admin_and_operators(q) -> None:  # type: ignore[no-untyped-def]
    a = Alignment()
    tag = "F-101.temperature"
    assert q("ann").aligned("F-101:BL-1", tag, a) is None
    assert q("bob").aligned("F-101:A-1", tag, a) is None
    assert q("pat").aligned("F-101:A-1", tag, a) is None  # a partner sees no series
    assert q("ann").aligned("F-101:A-1", "R-201.turbidity", a) is None  # not the run's equipment
    root = q("root").aligned("F-101:BL-1", tag, a)
    ann = q("ann").aligned("F-101:A-1", tag, a, points=40)
    assert root is not None and ann is not None
    # no phases: inoculation is the run's start (flagged); A-1 lasts 20 h, samples every 10 min
    assert "assumed:inoculation=run_start" in ann.flags
    assert float(np.nanmin(ann.t)) >= 0.0 and float(np.nanmax(ann.t)) <= 20.0
    assert len(ann) <= 41  # read as bucket means, not the 121 raw samples
    assert np.all(np.isfinite(ann.values))
    warp = q("ann").warp("F-101:A-1", a)
    assert warp is not None
    assert float(warp.forward(np.array([float((hour(72) + timedelta(hours=2)).timestamp() * 1e6)]))[0]) == (
        pytest.approx(2.0)
    )
    assert q("bob").warp("F-101:A-1", a) is None
