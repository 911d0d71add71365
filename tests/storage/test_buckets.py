"""storage/buckets.py: the downsampling arithmetic, against values computed by hand (in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from storage.buckets import (
    BAD,
    Partials,
    aligned,
    bucket_width,
    coarsen,
    combine,
    from_points,
    in_spans,
    span_index,
    split_free,
    to_buckets,
)

S = 1_000_000  # µs per second


def test_from_points_groups_by_bucket_and_leaves_out_bad_and_missing_values() -> None:
    # buckets of 10 s from t0 = 0: points at 1, 4, 9 | 12 (bad), 15 (NaN) | 31, 39
    ts = np.array([1, 4, 9, 12, 15, 31, 39]) * S
    v = np.array([2.0, 8.0, 5.0, 100.0, np.nan, -1.0, 3.0])
    st = np.array([0, 0, 0, BAD, 0, 0, 0x40000000])  # the last is uncertain: it counts
    p = from_points(ts, v, st, 0, 10 * S)
    # bucket 0: min 2, max 8, sum 15, count 3, first 1 s, last 9 s; bucket 1: nothing usable;
    # bucket 3: min −1, max 3, sum 2, count 2, first 31 s, last 39 s
    assert p.k.tolist() == [0, 3]
    assert (p.min.tolist(), p.max.tolist(), p.sum.tolist(), p.count.tolist()) == (
        [2, -1],
        [8, 3],
        [15, 2],
        [3, 2],
    )
    assert (p.t_first.tolist(), p.t_last.tolist()) == ([1 * S, 31 * S], [9 * S, 39 * S])
    text = from_points(ts[:2], np.array(["a", 1.5], dtype=object), st[:2], 0, 10 * S)
    assert (text.count.tolist(), text.sum.tolist()) == ([1], [1.5])  # a text sample is not a number


def test_combine_and_coarsen_are_exact() -> None:
    a = Partials(
        *(np.array(x) for x in ([0, 2], [1, 20], [5, 25], [1.0, 7.0], [4.0, 9.0], [5.0, 16.0], [2, 2]))
    )
    b = Partials(
        *(np.array(x) for x in ([2, 1], [21, 11], [29, 19], [0.5, 3.0], [8.0, 3.0], [8.5, 3.0], [2, 1]))
    )
    c = combine([a, b])
    # bucket 2 from both: min(7, 0.5) = 0.5, max(9, 8) = 9, sum 16 + 8.5 = 24.5, count 4, first 20, last 29
    assert c.k.tolist() == [0, 1, 2]
    assert (c.min.tolist(), c.max.tolist(), c.sum.tolist(), c.count.tolist()) == (
        [1.0, 3.0, 0.5],
        [4.0, 3.0, 9.0],
        [5.0, 3.0, 24.5],
        [2, 1, 4],
    )
    assert (c.t_first.tolist(), c.t_last.tolist()) == ([1, 11, 20], [5, 19, 29])
    # coarsening by 2: buckets 0+1 → 0 (min 1, max 4, sum 8, count 3), bucket 2 → 1
    d = coarsen(c, 2)
    assert (d.k.tolist(), d.min.tolist(), d.max.tolist(), d.sum.tolist(), d.count.tolist()) == (
        [0, 1],
        [1.0, 0.5],
        [4.0, 9.0],
        [8.0, 24.5],
        [3, 4],
    )
    b2 = to_buckets("x", d, 100, 10)
    assert (b2.start.tolist(), b2.mean.tolist()) == ([100, 110], [8 / 3, 24.5 / 4])


def test_bucket_width_rounds_up_and_refuses_no_buckets() -> None:
    assert bucket_width(0, 100, 3) == 34  # ceil(100 / 3)
    assert bucket_width(0, 1, 10) == 1  # at least 1 µs
    with pytest.raises(ValueError):
        bucket_width(0, 100, 0)


def test_spans_masks_and_indexes() -> None:
    t = np.array([0, 5, 10, 15, 20, 25, 30])
    lo, hi = np.array([5, 20]), np.array([11, 21])  # [5, 11) and [20, 21): 5, 10 and 20
    assert in_spans(t, lo, hi).tolist() == [False, True, True, False, True, False, False]
    assert span_index(t, lo, hi).tolist() == [1, 2, 4]
    assert span_index(t, np.array([100]), np.array([200])).tolist() == []
    assert in_spans(t, np.array([], np.int64), np.array([], np.int64)).tolist() == [False] * 7


def test_split_free_buckets() -> None:
    cuts = np.array([10, 20])
    # samples 1..9: none crossed; 5..15: crosses 10; 10..19: starts on a cut, not crossed; 19..20: crosses 20
    assert split_free(np.array([1, 5, 10, 19]), np.array([9, 15, 19, 20]), cuts).tolist() == [
        True,
        False,
        True,
        False,
    ]


def test_aligned_requests_fall_on_rollup_edges() -> None:
    # 7 days from 08:00:13.5 in 1,000 buckets: 604.8 s wanted → the widest rollup ≤ 60.48 s is 60 s → width
    # 660 s (604.8 rounded up to a multiple of 60), start back to 08:00:00; the span is then 604,813.5 s,
    # 604,813.5 / 660 = 916.4 → 917 buckets.
    start = 1_704_096_013_500_000  # 2024-01-01T08:00:13.5Z
    end = start + 7 * 86400 * S
    a, b, n = aligned(start, end, 1000)
    assert (a, (b - a) // n, n) == (start - 13_500_000, 660 * S, 917)
    assert bucket_width(a, b, n) == 660 * S and b >= end
    assert aligned(0, 50 * S, 10) == (0, 50 * S, 10)  # 5 s buckets: finer than any rollup, unchanged
    assert aligned(0, 3600 * S, 60) == (0, 3600 * S, 60)  # 1 min buckets from 0: already aligned
    # 10 h in 1 h buckets from 7 s past the hour: rollup 60 s (≤ 360 s), width stays 3,600 s, start back to 0;
    # the span is then 36,007 s: 11 buckets, to 39,600 s
    assert aligned(7 * S, 7 * S + 36_000 * S, 10) == (0, 39_600 * S, 11)
