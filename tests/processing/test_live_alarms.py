"""The processing service's live deviation alarms on simulated runs written into a real store as they happen
(tests/processing/livesim.py): ten baseline runs, then a live run whose feed pump stops for 2 h at 30 h after
its fill, then a normal live run.

What is expected comes from part A's figures (README "Runs against the baseline",
benchmarks/baseline_seeds.py, 20 seeds, 10 baseline runs per model): the feed fault raised an online MSPC
alarm in 20/20 seeds, a median 0.6 h after it started, and its top contributor was the feed rate in 20/20;
with the 3-consecutive-points rule on a 15 min grid no alarm can come sooner than 0.5 h after the first point
outside, so we allow up to 1 h. A normal run raised no online MSPC alarm in 215/220 runs and no envelope alarm
on any of the ten tags in 200/220: seed 1's normal live run is one of the quiet ones (checked here, not
assumed).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from biopilot.samples import to_us
from processing.baseline import AUTO_BY
from processing.service import Processing
from storage import Catalog, SqliteStore
from storage.alarms import Alarms
from storage.references import References
from tests.processing import livesim

SEED = 1
H = timedelta(hours=1)
MAX_DELAY = 1.0 * H


def test_a_live_feed_fault_raises_alarms_naming_the_feed_and_a_normal_run_none(tmp_path: Path) -> None:
    plant = livesim.plant(SEED, 10, 2, [livesim.feed_fault(11, at_h=30.0, duration_h=2.0)])
    store = SqliteStore(tmp_path / "plant.db")
    catalog = Catalog(tmp_path / "plant.db")
    feed = livesim.Feed(plant, store)
    proc = Processing(livesim.site_config(), store, catalog, provisional_interval_s=0)
    alarms = Alarms(catalog.db)
    l01, fault = plant.start("L01"), plant.fault_start("L01")

    # the history, and the first live run 8 h in: the baseline runs are marked by their batch ids, and the
    # service builds the references itself (none were stored, and there are ≥ 5 closed baseline runs)
    feed.until(l01 + 8 * H)
    proc.process_once()
    runs = catalog.runs("F-101")
    assert sorted(r.batch_id[-3:] for r in runs if r.kind == "baseline") == [
        f"B{i:02d}" for i in range(1, 11)
    ]
    live = livesim.run_of(runs, "L01")
    assert (live.kind, live.end) == ("other", None)
    refs = References(catalog.db)
    model = refs.model("F-101", "demo enzyme", docs=False)
    assert model is not None and model.computed_by == AUTO_BY and len(model.runs) == 10
    assert len(refs.envelopes("F-101", "demo enzyme", alignment=model.alignment, docs=False)) == 10
    assert model.alignment == "phase_landmarks:fed_batch,harvest"

    # live until the fault: every 2 h of plant time, nothing is raised
    t = l01 + 8 * H
    while t + 2 * H < fault:
        t += 2 * H
        feed.until(t)
        proc.process_once()
    assert alarms.alarms() == [], [(a.tag, a.raised) for a in alarms.alarms()]

    # from the fault on, a pass every 15 min of plant time
    acked = None
    while t < fault + 3 * H:
        t += 0.25 * H
        feed.until(t)
        proc.process_once()
        mine = alarms.alarms(run_id=live.id)
        if mine and acked is None:
            acked = alarms.acknowledge(mine[-1].id, "operator", t, "feed pump checked").id
    raised = alarms.alarms(run_id=live.id)
    assert raised, "the feed fault raised no alarm"
    first = min(a.raised for a in raised)
    assert fault < first <= fault + MAX_DELAY, f"first alarm {(first - fault) / H:.2f} h after the fault"
    (mspc,) = [a for a in raised if a.kind == "mspc" and a.raised == first]
    assert (mspc.tag, mspc.variable) == ("mspc:SPE", livesim.FEED_TAG)
    assert mspc.size > 1 and mspc.size_unit == "x limit"
    (feed_alarm,) = [a for a in raised if a.tag == livesim.FEED_TAG]
    assert feed_alarm.direction == "below" and feed_alarm.raised <= fault + MAX_DELAY
    assert (
        feed_alarm.start <= fault + 0.25 * H
    )  # the first grid point outside is the first one after the stop
    assert feed_alarm.size_unit == "L/h" and feed_alarm.size > 0
    # each excursion is stored once, and the one acknowledged while it went on keeps its acknowledgement
    assert len({(a.tag, a.direction, a.start) for a in raised}) == len(raised)
    assert len({a.key for a in raised}) == len(raised)
    held = alarms.alarm(acked) if acked is not None else None
    assert held is not None and held.ack_by == "operator" and held.updated > held.ack_at  # type: ignore[operator]
    # the pump restarted 2 h after it stopped: the feed is back inside its envelope, that alarm is closed
    feed_alarm = alarms.alarm(feed_alarm.id)
    assert feed_alarm is not None and feed_alarm.state == "closed"
    assert feed_alarm.end is not None and fault + 2 * H < feed_alarm.end <= fault + 3 * H

    # the run ends: every alarm of it is closed
    end = plant.spans[plant.batch("L01")][1]
    while to_us(t) <= end + 3_600_000_000:
        t += 4 * H
        feed.until(t)
        proc.process_once()
    assert livesim.run_of(catalog.runs("F-101"), "L01").end is not None
    assert alarms.alarms(run_id=live.id, open_only=True) == []
    before = len(alarms.alarms())

    # the next live run is a normal one: no alarm from its fill to its end
    end2 = plant.spans[plant.batch("L02")][1]
    while to_us(t) <= end2 + 3_600_000_000:
        t += 4 * H
        feed.until(t)
        proc.process_once()
    l02 = livesim.run_of(catalog.runs("F-101"), "L02")
    assert l02.end is not None
    assert alarms.alarms(run_id=l02.id) == [], [
        (a.tag, a.direction, a.raised) for a in alarms.alarms(run_id=l02.id)
    ]
    assert len(alarms.alarms()) == before
    assert proc.alarm_monitor.evaluations > 0
    catalog.close()
    store.close()
