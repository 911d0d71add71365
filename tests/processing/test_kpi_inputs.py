"""processing/kpi/inputs.py: tags read with the same timestamps share one Clock, whose hours, gap limits and
windows are computed once; what a shared clock hands out is what each signal would compute on its own
(processing.energy.gap_limits_h, processing.signals.align), so no KPI changes by the sharing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from biopilot.config import parse_config
from biopilot.records import Run, SeriesData
from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE, to_us
from processing.energy import gap_limits_h
from processing.kpi.inputs import RunData
from processing.signals import align

T0 = datetime(2024, 5, 1, tzinfo=UTC)
CONFIG = """
[site]
name = "clock"
[opcua.servers.p]
endpoint = "opc.tcp://127.0.0.1:4840/"
[[equipment]]
id = "F-1"
kind = "fermenter"
""" + "\n".join(
    f'[[tags]]\nname = "F-1.p{i}"\nequipment = "F-1"\nrole = "power"\nunit = "kW"\n'
    f'source = {{ protocol = "opcua", server = "p", node_id = "ns=2;i={i}" }}'
    for i in range(3)
)


def run_data() -> RunData:
    # p0 and p1: every 10 s for 2 h with a silence of 10 min (the same timestamps); p2: every 7 s, with a
    # bad and an uncertain sample
    base = to_us(T0) + np.arange(0, 7200, 10, dtype=np.int64) * 1_000_000
    base = base[(base < to_us(T0) + 3000e6) | (base >= to_us(T0) + 3600e6)]
    other = to_us(T0) + np.arange(0, 7200, 7, dtype=np.int64) * 1_000_000
    status = np.full(len(other), GOOD, np.int64)
    status[100], status[200] = BAD_SENSOR_FAILURE, UNCERTAIN_LAST_USABLE_VALUE
    good = np.zeros(len(base), np.int64)
    series = {
        "F-1.p0": SeriesData("F-1.p0", base.copy(), np.linspace(1, 2, len(base)), good),
        "F-1.p1": SeriesData("F-1.p1", base.copy(), np.linspace(3, 1, len(base)), good),
        "F-1.p2": SeriesData("F-1.p2", other, np.sin(np.arange(len(other)) / 50.0), status),
    }

    def read(name: str, start: datetime, end: datetime) -> SeriesData:
        return series[name]

    config = parse_config(CONFIG, "clock.toml")
    end = T0 + timedelta(hours=2)
    return RunData(config, Run("F-1:B", "F-1", "B", T0, end), end, read)


def test_tags_with_the_same_timestamps_share_one_clock_and_its_gap_limits() -> None:
    data = run_data()
    p0, p1, p2 = (data.quantity(data.config.tag(f"F-1.p{i}"), "kW") for i in range(3))
    assert p0.clock is p1.clock and p0.t is p1.t
    assert p2.clock is not p0.clock
    for s in (p0, p1, p2):
        # the clock's limits are gap_limits_h of the signal's own times, bit for bit
        assert np.array_equal(s.gap_limits, gap_limits_h(s.t.copy()))
    assert p0.gap_limits is p1.gap_limits  # computed once
    assert p0.gap_limits.max() < 600 / 3600  # the 10-min silence is a gap (limit 5 × 10 s)


def test_windows_of_one_clock_share_a_clock_and_equal_a_plain_window() -> None:
    data = run_data()
    p0, p1, p2 = (data.quantity(data.config.tag(f"F-1.p{i}"), "kW") for i in range(3))
    w0, w1, w2 = (s.window(0.5, 1.5) for s in (p0, p1, p2))
    assert w0.clock is w1.clock and w0.clock is not p0.clock
    for s, w in [(p0, w0), (p1, w1), (p2, w2)]:
        keep = (s.t >= 0.5) & (s.t <= 1.5)
        assert np.array_equal(w.t, s.t[keep]) and np.array_equal(w.v, s.v[keep])
        assert np.array_equal(w.status, s.status[keep])
        assert np.array_equal(w.gap_limits, gap_limits_h(s.t[keep]))


def test_signal_at_equals_align_computing_its_own_gap_limits() -> None:
    data = run_data()
    p0, p2 = (data.quantity(data.config.tag(f"F-1.p{i}"), "kW") for i in (0, 2))
    targets = np.linspace(-0.1, 2.1, 997)
    for s in (p0, p2):  # every sample usable; a bad sample (limits of the usable samples' times)
        for t in (targets, p0.t, p2.t):
            a, b = s.at(t), align(t, s.t, s.v, s.status)
            assert np.array_equal(a.values, b.values, equal_nan=True)
            assert np.array_equal(a.uncertain, b.uncertain)


def test_align_on_its_own_times_takes_the_samples_as_the_general_path_does() -> None:
    # the shortcut (targets = the usable samples' times) against the general path, target by target, with
    # duplicate timestamps (the last sample of a time wins), a bad and an uncertain sample
    t = np.array([0.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 9.0])
    v = np.array([1.0, 2.0, 5.0, 3.0, 4.0, 6.0, np.nan, 7.0])
    status = np.array([GOOD, GOOD, GOOD, BAD_SENSOR_FAILURE, UNCERTAIN_LAST_USABLE_VALUE, GOOD, GOOD, GOOD])
    own = np.array([0.0, 1.0, 1.0, 3.0, 3.0, 9.0])  # the usable samples' times (2 h bad, 4 h NaN)
    fast = align(own, t, v, status)
    one_by_one = [align(np.array([x]), t, v, status) for x in own]
    assert np.array_equal(fast.values, [a.values[0] for a in one_by_one])
    assert np.array_equal(fast.uncertain, [a.uncertain[0] for a in one_by_one])
    assert fast.values.tolist() == [1.0, 5.0, 5.0, 6.0, 6.0, 7.0]  # hand-read: each time's last sample
