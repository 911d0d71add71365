"""dashboard.charts.waterfall_figure: the bars of a chain with a missing middle step (values by hand)."""

from __future__ import annotations

import pytest

from dashboard.charts import waterfall_figure
from dashboard.data import YieldChain, YieldStep


def test_a_missing_step_drops_to_zero_and_the_chain_restarts_at_the_next_feed() -> None:
    chain = YieldChain(
        "F-101:B1",
        8.0,
        10.0,  # kg harvested
        [
            YieldStep("R-201:B1", "R-201", 10.0, 9.0, 0.9, 0.9, ()),  # in = harvest: no transfer bar
            YieldStep("R-202:B1", "R-202", 9.0, None, None, None, ("missing_input:R-202.conc",)),
            YieldStep("R-203:B1", "R-203", 8.0, 6.0, 0.75, None, ()),
        ],
        None,  # a step is missing: the purified product is unknown
    )
    w = waterfall_figure(chain).data[0]
    assert list(w.x) == [
        "harvest",
        "R-201 (90.0%)",
        "R-202: missing",
        "into R-203",
        "R-203 (75.0%)",
    ]
    # harvest 10; R-201 loses 1 → 9; R-202 missing: back to 0 (absolute), never carried on at 100 %;
    # R-203's feed 8 kg starts a new level (absolute), its step loses 2 → 6; no purified-product bar
    assert list(w.measure) == ["absolute", "relative", "absolute", "absolute", "relative"]
    assert list(w.y) == pytest.approx([10.0, -1.0, 0.0, 8.0, -2.0])
    assert w.text[2] == "missing"


def test_a_complete_chain_ends_with_the_purified_product() -> None:
    chain = YieldChain(
        "F-101:B1", 8.0, 10.0, [YieldStep("R-201:B1", "R-201", 9.5, 9.0, 9.0 / 9.5, 0.9, ())], 9.0
    )
    w = waterfall_figure(chain).data[0]
    # 10 harvested, 9.5 reached the centrifuge (−0.5 transfer), 9.0 out (−0.5), purified 9.0
    assert list(w.x) == ["harvest", "into R-201", "R-201 (94.7%)", "purified product"]
    assert list(w.y) == pytest.approx([10.0, -0.5, -0.5, 9.0])
    assert list(w.measure) == ["absolute", "relative", "relative", "absolute"]
