"""Stored baseline references and alarms (storage/references.py, storage/alarms.py) on every catalog backend
(conftest.py: a real SQLite file, and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from biopilot.errors import StoreError
from storage.alarms import AlarmObservation, Alarms
from storage.catalog import Catalog
from storage.references import References, StoredEnvelope, StoredModel

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
KEY = "phase_landmarks:fed_batch,harvest"


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _envelope(tag: str, computed: datetime, runs: tuple[str, ...] = ("F-101:B1", "F-101:B2", "F-101:B3")):
    doc = {"format": "biopilot-envelope-1", "tag": tag, "grid": [0.0, 0.25, 0.5], "mean": [1.0, None, 2.5]}
    return StoredEnvelope("F-101", "enzyme", tag, KEY, "degC", runs, 3, computed, "alice", doc)


def _model(computed: datetime, by: str = "alice") -> StoredModel:
    doc = {"format": "biopilot-mspc-1", "loadings": [[0.1, -0.2], [0.3, 0.4]], "t2_limits": {"0.99": 12.5}}
    runs = tuple(f"F-101:B{i}" for i in range(1, 6))
    return StoredModel(
        "F-101", "enzyme", KEY, ("F-101.temperature", "F-101.ph"), runs, 2, 3, computed, by, doc
    )


def test_references_roundtrip_with_their_documents(catalog: Catalog) -> None:
    refs = References(catalog.db)
    assert refs.envelopes() == [] and refs.models() == [] and refs.model("F-101", "enzyme") is None
    assert refs.stamp("F-101", "enzyme") == (0, 0, 0)
    envs = [_envelope("F-101.temperature", at(1)), _envelope("F-101.ph", at(1))]
    refs.save(envs, _model(at(1)))
    got = refs.envelopes("F-101", "enzyme")
    assert [e.tag for e in got] == ["F-101.ph", "F-101.temperature"]  # ordered by tag
    assert got[1] == envs[0]  # every field, the document included (None stays None)
    assert got[1].doc is not None and got[1].doc["mean"] == [1.0, None, 2.5]
    model = refs.model("F-101", "enzyme")
    assert model == _model(at(1))
    summary = refs.envelopes("F-101", docs=False)
    assert all(e.doc is None for e in summary) and summary[0].runs == envs[1].runs
    assert refs.models()[0].doc is None and refs.models(docs=True)[0].doc == _model(at(1)).doc
    assert (
        refs.envelopes("F-101", "other product") == [] and refs.envelopes(tag="F-101.ph")[0].tag == "F-101.ph"
    )
    assert refs.stamp("F-101", "enzyme")[2] == 2
    assert summary[0].to_json()["computed"] == at(1).isoformat()


def test_saving_again_replaces_by_key(catalog: Catalog) -> None:
    refs = References(catalog.db)
    refs.save([_envelope("F-101.ph", at(1))], _model(at(1)))
    before = refs.stamp("F-101", "enzyme")
    newer = _envelope("F-101.ph", at(2), runs=("F-101:B4", "F-101:B5", "F-101:B6", "F-101:B7"))
    refs.save([newer], _model(at(2), by="bob"))
    (env,) = refs.envelopes()
    assert env.runs == newer.runs and env.computed == at(2)
    (model,) = refs.models()
    assert (model.computed, model.computed_by) == (at(2), "bob")
    assert refs.stamp("F-101", "enzyme") != before
    # another alignment is another envelope; the model is one per equipment + product
    other = StoredEnvelope(
        "F-101", "enzyme", "F-101.ph", "time_since_inoculation", "pH", ("a",), 3, at(3), "c", {}
    )
    refs.save([other])
    assert sorted(e.alignment for e in refs.envelopes()) == [KEY, "time_since_inoculation"]
    assert refs.delete("F-101", "enzyme") == 3
    assert refs.envelopes() == [] and refs.models() == []


def _obs(key: str = "envelope|F-101.ph|below|30.000000", **changes: object) -> AlarmObservation:
    base = {
        "run_id": "F-101:L1",
        "key": key,
        "equipment": "F-101",
        "tag": "F-101.ph",
        "variable": "F-101.ph",
        "kind": "envelope",
        "direction": "below",
        "start": at(30),
        "raised": at(30.5),
        "last": at(30.75),
        "end": None,
        "start_t": 27.5,
        "raised_t": 28.0,
        "axis_unit": "h",
        "size": 0.12,
        "peak": 0.2,
        "size_unit": "pH",
        "size_relative": 1.5,
        "peak_relative": 2.5,
        "detail": {"consecutive": 3},
    }
    base.update(changes)
    return AlarmObservation(**base)  # type: ignore[arg-type]


def test_alarms_are_numbered_updated_closed_and_kept_per_run(catalog: Catalog) -> None:
    alarms = Alarms(catalog.db)
    assert alarms.alarms() == [] and alarms.alarm(1) is None
    ids = alarms.apply(
        inserts=[
            _obs(),
            _obs("mspc|spe|27.500000", tag="mspc:SPE", kind="mspc", direction="above", size_unit="x"),
        ],
        now=at(31),
    )
    assert ids == [1, 2]
    first = alarms.alarm(1)
    assert first is not None
    assert (first.key, first.state, first.end, first.acknowledged) == (_obs().key, "open", None, False)
    assert (first.start, first.raised, first.last, first.created) == (at(30), at(30.5), at(30.75), at(31))
    assert (first.size, first.size_relative, first.peak_relative) == (0.12, 1.5, 2.5)
    assert first.detail == {"consecutive": 3}
    # it continues, then ends: the same row
    alarms.apply(updates={1: _obs(last=at(31.5), peak=0.4)}, now=at(32))
    alarms.apply(updates={1: _obs(last=at(31.5), peak=0.4, end=at(31.75))}, now=at(33))
    done = alarms.alarm(1)
    assert done is not None
    assert (done.state, done.end, done.last, done.peak, done.updated) == (
        "closed",
        at(31.75),
        at(31.5),
        0.4,
        at(33),
    )
    assert done.created == at(31)
    # closing by id keeps an end already known and says why
    alarms.apply(closes={2: (at(40), "the run ended"), 1: (at(50), "the run ended")}, now=at(40))
    spe = alarms.alarm(2)
    assert spe is not None and (spe.state, spe.end, spe.detail["closed"]) == (
        "closed",
        at(40),
        "the run ended",
    )
    done = alarms.alarm(1)
    assert done is not None and done.end == at(31.75)
    # the next alarm takes the next number; listing is newest raised first, filtered
    (three,) = alarms.apply(inserts=[_obs("k3", run_id="F-101:L2", raised=at(60), last=at(60))], now=at(60))
    assert three == 3
    assert [a.id for a in alarms.alarms()] == [3, 2, 1]  # 1 and 2 were raised together: newest number first
    assert [a.id for a in alarms.alarms(run_id="F-101:L1")] == [2, 1]
    assert [a.id for a in alarms.alarms(open_only=True)] == [3]
    assert [a.id for a in alarms.alarms(limit=1)] == [3]
    assert alarms.alarms(equipment="R-201") == []


def test_a_key_is_unique_per_run(catalog: Catalog) -> None:
    alarms = Alarms(catalog.db)
    alarms.apply(inserts=[_obs()], now=at(31))
    with pytest.raises(StoreError):
        alarms.apply(inserts=[_obs()], now=at(32))
    assert [a.id for a in alarms.alarms()] == [1]  # the failed transaction left nothing
    alarms.apply(inserts=[_obs(run_id="F-101:L2")], now=at(33))  # the same key in another run
    assert len(alarms.alarms()) == 2


def test_acknowledging_stores_who_when_and_why_once(catalog: Catalog) -> None:
    alarms = Alarms(catalog.db)
    alarms.apply(inserts=[_obs()], now=at(31))
    acked = alarms.acknowledge(1, " alice ", at(31.2), "feed pump restarted")
    assert (acked.ack_by, acked.ack_at, acked.ack_comment, acked.acknowledged) == (
        "alice",
        at(31.2),
        "feed pump restarted",
        True,
    )
    # processing keeps updating it: the acknowledgement stays
    alarms.apply(updates={1: _obs(last=at(32))}, now=at(32))
    again = alarms.alarm(1)
    assert again is not None and (again.ack_by, again.last) == ("alice", at(32))
    with pytest.raises(StoreError, match="acknowledged already by alice"):
        alarms.acknowledge(1, "bob", at(33))
    with pytest.raises(StoreError, match="no alarm 7"):
        alarms.acknowledge(7, "bob", at(33))
    with pytest.raises(StoreError, match="name"):
        alarms.acknowledge(1, "  ", at(33))
    assert again.to_json()["ack_at"] == at(31.2).isoformat()
