"""processing/energy.py: trapezoid energy on hand-computed cases. Every expected number is worked out in the
comment beside it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biopilot.samples import BAD_NO_COMMUNICATION, BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE
from processing.energy import (
    DEFAULT_GAP_FACTOR,
    co2_equivalent_kg,
    energy_from_totalizer,
    energy_kwh,
    gap_limits_h,
    integrate_trapezoid,
    nominal_interval_h,
    specific_consumption,
)


def arrays(t: list[float], p: list[float], status: list[int] | None = None) -> tuple[np.ndarray, ...]:
    return np.array(t, float), np.array(p, float), np.array(status or [GOOD] * len(t), np.int64)


def test_constant_power() -> None:
    # 10 kW held for 2 h, sampled every 0.5 h: 10 kW · 2 h = 20 kWh; every interval covered.
    e = energy_kwh(*arrays([0.0, 0.5, 1.0, 1.5, 2.0], [10.0] * 5))
    assert e.value == pytest.approx(20.0)
    assert e.covered_h == pytest.approx(2.0)
    assert e.span_h == pytest.approx(2.0)
    assert e.coverage == pytest.approx(1.0)
    assert not e.uncertain


def test_linear_ramp() -> None:
    # 0 → 6 kW linearly over 3 h, sampled hourly (0, 2, 4, 6 kW): the trapezoid is exact for a line,
    # area of the triangle = ½ · 3 h · 6 kW = 9 kWh.
    e = energy_kwh(*arrays([0.0, 1.0, 2.0, 3.0], [0.0, 2.0, 4.0, 6.0]))
    assert e.value == pytest.approx(9.0)
    assert e.coverage == pytest.approx(1.0)


def test_trapezoid_of_uneven_samples() -> None:
    # Intervals: [0, 1] h at 2 → 4 kW: ½(2+4)·1 = 3 kWh; [1, 1.5] h at 4 → 0 kW: ½(4+0)·0.5 = 1 kWh.
    # Total 4 kWh over 1.5 h covered.
    e = energy_kwh(*arrays([0.0, 1.0, 1.5], [2.0, 4.0, 0.0]), max_gap_h=1.0)
    assert e.value == pytest.approx(4.0)
    assert e.covered_h == pytest.approx(1.5)


def test_a_gap_longer_than_max_gap_is_not_bridged() -> None:
    # Samples at 0, 1, 2 h, then nothing until 5, 6 h; 10 kW throughout; max_gap_h = 1.5 h.
    # Integrated intervals: [0,1], [1,2], [5,6] → 3 h · 10 kW = 30 kWh. The 3 h interval [2,5] is a gap
    # (bridging it would add 30 kWh). Coverage = 3 h covered / 6 h span = 0.5.
    e = energy_kwh(*arrays([0.0, 1.0, 2.0, 5.0, 6.0], [10.0] * 5), max_gap_h=1.5)
    assert e.value == pytest.approx(30.0)
    assert e.covered_h == pytest.approx(3.0)
    assert e.span_h == pytest.approx(6.0)
    assert e.coverage == pytest.approx(0.5)


def test_an_interval_equal_to_max_gap_is_integrated() -> None:
    # One interval of exactly max_gap_h = 1 h at 4 kW: 4 kWh, coverage 1.
    e = energy_kwh(*arrays([0.0, 1.0], [4.0, 4.0]), max_gap_h=1.0)
    assert e.value == pytest.approx(4.0)
    assert e.coverage == pytest.approx(1.0)


def test_default_max_gap_is_a_multiple_of_the_median_interval() -> None:
    # Steps 0.1 h ×10, then one of 1 h: median step 0.1 h, so the default max gap is 5 · 0.1 = 0.5 h and the
    # 1 h step is a gap. 6 kW constant: covered 10 · 0.1 = 1 h → 6 kWh; span 2 h → coverage 0.5.
    t = [round(0.1 * i, 10) for i in range(11)] + [2.0]
    assert nominal_interval_h(np.array(t)) == pytest.approx(0.1)
    assert DEFAULT_GAP_FACTOR == 5.0
    e = energy_kwh(*arrays(t, [6.0] * len(t)))
    assert e.value == pytest.approx(6.0)
    assert e.covered_h == pytest.approx(1.0)
    assert e.coverage == pytest.approx(0.5)


def test_a_bad_sample_breaks_both_intervals_it_touches() -> None:
    # Hourly samples 0..4 h at 10 kW; the one at 2 h is bad (its value 999 must not count at all).
    # Usable intervals: [0,1], [3,4] → 2 h · 10 kW = 20 kWh; [1,2] and [2,3] touch the bad sample.
    # Coverage = 2 h / 4 h = 0.5.
    e = energy_kwh(
        *arrays(
            [0.0, 1.0, 2.0, 3.0, 4.0],
            [10.0, 10.0, 999.0, 10.0, 10.0],
            [GOOD, GOOD, BAD_SENSOR_FAILURE, GOOD, GOOD],
        ),
        max_gap_h=2.0,
    )
    assert e.value == pytest.approx(20.0)
    assert e.covered_h == pytest.approx(2.0)
    assert e.coverage == pytest.approx(0.5)


def test_any_bad_severity_is_unusable_not_only_known_codes() -> None:
    # 0x80AB0000 is not a named code, but its top bits say bad. Samples 0, 1, 2 h at 5 kW, the middle one bad:
    # both intervals touch it → 0 kWh, coverage 0.
    e = energy_kwh(*arrays([0.0, 1.0, 2.0], [5.0, 5.0, 5.0], [GOOD, 0x80AB0000, GOOD]), max_gap_h=2.0)
    assert e.value == 0.0
    assert e.coverage == 0.0
    e = energy_kwh(
        *arrays([0.0, 1.0, 2.0], [5.0, 5.0, 5.0], [GOOD, BAD_NO_COMMUNICATION, GOOD]), max_gap_h=2.0
    )
    assert e.value == 0.0


def test_nan_breaks_the_intervals_it_touches() -> None:
    # Hourly 0..3 h at 8 kW, NaN at 1 h: usable interval only [2,3] → 8 kWh; coverage 1 h / 3 h.
    e = energy_kwh(*arrays([0.0, 1.0, 2.0, 3.0], [8.0, math.nan, 8.0, 8.0]), max_gap_h=2.0)
    assert e.value == pytest.approx(8.0)
    assert e.covered_h == pytest.approx(1.0)
    assert e.coverage == pytest.approx(1 / 3)
    assert math.isfinite(e.value)


def test_uncertain_samples_count_and_set_the_flag() -> None:
    # Hourly 0..2 h at 3 kW, the sample at 1 h uncertain: it is used (2 h · 3 kW = 6 kWh) and flagged.
    e = energy_kwh(*arrays([0.0, 1.0, 2.0], [3.0] * 3, [GOOD, UNCERTAIN_LAST_USABLE_VALUE, GOOD]))
    assert e.value == pytest.approx(6.0)
    assert e.coverage == pytest.approx(1.0)
    assert e.uncertain


def test_an_uncertain_sample_that_entered_no_interval_does_not_flag() -> None:
    # The uncertain sample at 3 h sits after a 2 h gap (max_gap_h 1.5 h) and is the last one: no interval
    # that was integrated touches it. Integrated: [0,1] at 3 kW → 3 kWh.
    e = energy_kwh(
        *arrays([0.0, 1.0, 3.0], [3.0] * 3, [GOOD, GOOD, UNCERTAIN_LAST_USABLE_VALUE]), max_gap_h=1.5
    )
    assert e.value == pytest.approx(3.0)
    assert not e.uncertain


def test_fewer_than_two_samples_is_zero() -> None:
    for t in ([], [1.0]):
        e = energy_kwh(*arrays(t, [5.0] * len(t)))
        assert (e.value, e.covered_h, e.span_h, e.uncertain) == (0.0, 0.0, 0.0, False)
        assert e.coverage == 0.0


def test_repeated_timestamps_add_nothing() -> None:
    # Two samples at 1 h (a duplicate): the zero-length interval adds nothing;
    # [0,1] and [1,2] at 2 kW → 4 kWh.
    e = energy_kwh(*arrays([0.0, 1.0, 1.0, 2.0], [2.0] * 4), max_gap_h=1.0)
    assert e.value == pytest.approx(4.0)
    assert e.covered_h == pytest.approx(2.0)


def test_integrate_trapezoid_is_unit_agnostic() -> None:
    # The same integral for any signal: 2 L/h for 3 h = 6 L.
    assert integrate_trapezoid(*arrays([0.0, 3.0], [2.0, 2.0])).value == pytest.approx(6.0)


# -- totalizers and intensities -------------------------------------------------------------------------
def test_totalizer_difference() -> None:
    # 100 → 130 → 175 kWh: 75 kWh over 2 h
    r = energy_from_totalizer(*arrays([0.0, 1.0, 2.0], [100.0, 130.0, 175.0]))
    assert r.value == pytest.approx(75.0)
    assert (r.covered_h, r.rollovers, r.resets) == (2.0, 0, 0)


def test_totalizer_rollover() -> None:
    # 9990 → 9998 → (wraps at 10000) 5 → 20: 8 + (10000 − 9998 + 5) + 15 = 30 kWh
    r = energy_from_totalizer(*arrays([0.0, 1.0, 2.0, 3.0], [9990.0, 9998.0, 5.0, 20.0]), rollover=10000.0)
    assert r.value == pytest.approx(30.0)
    assert (r.rollovers, r.resets) == (1, 0)


def test_totalizer_reset_without_rollover_counts_from_zero() -> None:
    # 500 → 520, reset, 3 → 10: 20 + 3 + 7 = 30 kWh, one reset
    r = energy_from_totalizer(*arrays([0.0, 1.0, 2.0, 3.0], [500.0, 520.0, 3.0, 10.0]))
    assert r.value == pytest.approx(30.0)
    assert (r.rollovers, r.resets) == (0, 1)


def test_totalizer_skips_bad_readings_and_counts_across_gaps() -> None:
    # 0, 10, [bad 99999], 30 kWh, then nothing until 10 h: 50. The counter kept counting: 50 kWh, covered 10 h
    r = energy_from_totalizer(
        *arrays(
            [0.0, 1.0, 2.0, 3.0, 10.0],
            [0.0, 10.0, 99999.0, 30.0, 50.0],
            [GOOD, GOOD, BAD_SENSOR_FAILURE, GOOD, GOOD],
        )
    )
    assert r.value == pytest.approx(50.0)
    assert r.covered_h == pytest.approx(10.0)
    assert energy_from_totalizer(*arrays([0.0], [5.0])).value == 0.0


def test_specific_consumption_and_co2e() -> None:
    # 1200 kWh for 40 kg: 30 kWh/kg; no product: undefined
    assert specific_consumption(1200.0, 40.0) == pytest.approx(30.0)
    assert math.isnan(specific_consumption(1200.0, 0.0))
    # 1000 kWh · 0.2 + 500 kg steam · 0.25 = 325 kg CO2e; water has no factor and adds nothing
    assert co2_equivalent_kg(
        {"electricity": 1000.0, "steam": 500.0, "water": 3.0}, {"electricity": 0.2, "steam": 0.25}
    ) == pytest.approx(325.0)


def test_a_change_of_sampling_rate_is_not_a_gap() -> None:
    # 1 h of readings every 0.1 h, then 10 h every 1 h (history at one rate, live at another), 3 kW: the
    # 1 h intervals have 1 h intervals after them → limit 5 h → every interval counts: 11 h · 3 = 33 kWh.
    t = [round(0.1 * i, 10) for i in range(11)] + [1.0 + i for i in range(1, 11)]
    limits = gap_limits_h(np.array(t))
    assert limits[:4] == pytest.approx([0.5] * 4) and limits[10:] == pytest.approx([5.0] * 10)
    e = energy_kwh(*arrays(t, [3.0] * len(t)))
    assert e.value == pytest.approx(33.0)
    assert e.coverage == pytest.approx(1.0)
    # a silence between regular readings is a gap: 0.1 h × 10, 1 h, 0.1 h × 10 → the 1 h is not bridged
    t = [round(0.1 * i, 10) for i in range(11)] + [round(2.0 + 0.1 * i, 10) for i in range(11)]
    assert gap_limits_h(np.array(t))[10] == pytest.approx(0.5)
    e = energy_kwh(*arrays(t, [3.0] * len(t)))
    assert e.value == pytest.approx(6.0)  # 2 h of 0.1 h intervals
    assert e.covered_h == pytest.approx(2.0)


def test_gap_limits_equal_the_nanmedian_definition_at_every_length() -> None:
    # The fast path (a plain median for windows without padding) against the definition computed directly:
    # nanmedian of the `window` intervals before and after each interval, for series shorter and longer
    # than the windows, with rate changes and a silence.
    rng = np.random.default_rng(5)

    def reference(t: np.ndarray, factor: float = 5.0, window: int = 10) -> np.ndarray:
        dt = np.diff(t)
        out = []
        for i in range(len(dt)):
            before, after = dt[max(i - window, 0) : i], dt[i + 1 : i + 1 + window]
            sides = [float(np.median(x)) for x in (before, after) if len(x)]
            out.append(factor * (max(sides) if sides else dt[i]))
        return np.array(out)

    for n in [*range(1, 25), 200]:
        dt = np.where(rng.random(n) < 0.5, 0.1, 1.0) * rng.uniform(0.9, 1.1, n)
        dt[rng.integers(0, n)] *= 30  # a silence
        t = np.r_[0.0, np.cumsum(dt)]
        assert gap_limits_h(t) == pytest.approx(reference(t), rel=1e-12), n


def test_the_window_medians_are_numpy_median_bit_for_bit() -> None:
    # processing.energy._window_medians (scipy.ndimage.rank_filter) against np.median of every window
    # (numpy's sliding_window_view), for widths 1–16 and a wide one, series shorter than, as long as and
    # longer than the window, with ties and integers among the values
    from processing.energy import _window_medians

    rng = np.random.default_rng(11)
    for w in [*range(1, 17), 21]:
        for n in (w - 1, w, w + 1, 500):
            x = rng.normal(size=n)
            x[::5] = np.round(x[::5])  # ties
            expected = np.median(np.lib.stride_tricks.sliding_window_view(x, w), axis=1) if n >= w else []
            assert np.array_equal(_window_medians(x, w), expected), (w, n)
