"""Recovery-step KPIs of a recovery run (processing.recovery): feed volume, product in and out, step
yield, mass-balance closure over a waste stream, overall yield along the upstream links, concentration
factor, purity.

A stream's product is ∫F·C dt from its flow and concentration tags; with a flow totalizer on the stream
it is the totalized volume × the flow-weighted concentration (recovery.product_from_totalizer_g), which
does not misplace flow at the edges of short phases. Flow, flow_total and concentration tags say their
stream (`stream`): a flow or total without one is the feed, a concentration without one the product.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from biopilot import units
from biopilot.config import PROTEIN_ANALYTES, TITER_ANALYTES, Role, Tag
from biopilot.records import KpiRecord
from processing import recovery
from processing.energy import Integral, energy_from_totalizer, integrate_trapezoid
from processing.kpi.inputs import Kpi, LabSeries, RunData, Signal, kpi
from processing.signals import usable

_KG = units.factor("g", "kg")


@dataclass(frozen=True)
class Total:
    """A flow totalizer [L] with the value it wraps at [L]."""

    signal: Signal
    rollover_l: float | None


@dataclass(frozen=True)
class Stream:
    flow: Signal | None  # [L/h]
    conc: Signal | None  # [g/L]
    total: Total | None


@dataclass(frozen=True)
class RecoveryInputs:
    run_h: float
    upstream_id: str | None
    feed: Stream
    product: Stream  # flow None: the feed's flow
    waste: Stream
    upstream: Mapping[str, KpiRecord]
    harvested: KpiRecord | None
    titer: LabSeries
    total_protein: LabSeries


def gather(data: RunData) -> RecoveryInputs:
    flows, concs, totals = data.tags(Role.FLOW), data.tags(Role.CONCENTRATION), data.tags(Role.FLOW_TOTAL)

    def first(tags: list[Tag], streams: tuple[str | None, ...]) -> Tag | None:
        return next((t for t in tags if t.stream in streams), None)

    def total(streams: tuple[str | None, ...]) -> Total | None:
        tag = first(totals, streams)
        if tag is None:
            return None
        rollover = (
            tag.counter_rollover * units.factor(tag.unit, "L") if tag.counter_rollover is not None else None
        )
        return Total(data.quantity(tag, "L"), rollover)

    def stream(flow: Tag | None, conc: Tag | None, streams: tuple[str | None, ...]) -> Stream:
        return Stream(
            data.liquid_flow(flow) if flow is not None else None,
            data.quantity(conc, "g/L") if conc is not None else None,
            total(streams) if flow is not None else None,
        )

    feed_flow = first(flows, (None, "feed"))
    return RecoveryInputs(
        data.run_h,
        data.run.upstream_id,
        stream(feed_flow, first(concs, ("feed",)), (None, "feed")),
        stream(first(flows, ("product",)), first(concs, (None, "product")), ("product",)),
        stream(first(flows, ("waste",)), first(concs, ("waste",)), ("waste",)),
        data.upstream,
        data.harvested,
        data.lab_series(TITER_ANALYTES),
        data.lab_series(PROTEIN_ANALYTES),
    )


def compute(inp: RecoveryInputs) -> tuple[tuple[Kpi, ...], float | None, dict[str, float]]:
    """The recovery KPIs, product out [kg] (NaN when unknown, None without a feed flow) and the coverage
    of what it rests on."""
    feed = inp.feed.flow
    if feed is None:
        return (), None, {}
    out: list[Kpi] = []
    v_feed, f_cov = _stream_volume(inp, feed, inp.feed.total)
    out.append(kpi("feed_volume", v_feed, f_cov))

    # product in: feed flow × feed concentration, or the upstream run's output (a fermenter's titer × the
    # feed volume, a recovery unit's product out)
    up_titer, up_out = inp.upstream.get("titer"), inp.upstream.get("product_out")
    if inp.feed.conc is not None:
        p_in, cov = _stream_product(inp, feed, inp.feed.conc, inp.feed.total)
        in_cov = {**f_cov, **cov}
    elif up_titer is not None and up_titer.value is not None:
        p_in = v_feed * up_titer.value
        in_cov = {**f_cov, f"upstream:{inp.upstream_id}:titer": up_titer.coverage}
    elif up_out is not None and up_out.value is not None:
        p_in = up_out.value / _KG
        in_cov = {f"upstream:{inp.upstream_id}:product_out": up_out.coverage}
    else:
        p_in, in_cov = math.nan, {**f_cov, "upstream:titer": 0.0}
    out.append(kpi("product_in", p_in * _KG, in_cov))

    # product out: product-stream flow (default: the feed flow) × product concentration
    out_flow = inp.product.flow if inp.product.flow is not None else feed
    out_total = inp.product.total
    if inp.product.conc is not None:
        p_out, out_cov = _stream_product(inp, out_flow, inp.product.conc, out_total)
    else:
        p_out, out_cov = math.nan, {"product_concentration": 0.0}
    out.append(kpi("product_out", p_out * _KG, out_cov))
    y = recovery.step_yield(p_in, p_out)
    out.append(kpi("step_yield", y, {**in_cov, **out_cov}))

    # waste stream: mass-balance closure
    if inp.waste.conc is not None:
        w_flow = inp.waste.flow if inp.waste.flow is not None else feed
        p_waste, w_cov = _stream_product(inp, w_flow, inp.waste.conc, inp.waste.total)
        closure = recovery.mass_balance_closure(p_in, [p_out, p_waste])
        flags = [] if not math.isfinite(closure) or recovery.closure_ok(closure) else ["closure_out_of_range"]
        out.append(kpi("mass_balance_closure", closure, {**in_cov, **out_cov, **w_cov}, flags))

    # overall yield from the harvest: Π step yields along the upstream links (the upstream recovery run's
    # overall yield × this step's; 1 × this step's after the fermenter), checked against product out /
    # product harvested of the fermentation at the head of the chain
    if inp.upstream:
        up_overall = inp.upstream.get("overall_yield")
        if up_overall is not None:
            prior = up_overall.value if up_overall.value is not None else math.nan
            chain_cov = {f"upstream:{inp.upstream_id}:overall_yield": up_overall.coverage}
        else:
            prior, chain_cov = 1.0, {}
        overall = prior * y
        flags = []
        harvested = inp.harvested
        if harvested is not None and harvested.value:
            check = recovery.check_overall_yield([overall], harvested.value / _KG, p_out)
            if math.isfinite(check.relative_difference) and not check.consistent:
                flags.append("overall_yield_mismatch")
        out.append(kpi("overall_yield", overall, {**in_cov, **out_cov, **chain_cov}, flags))

    if inp.product.flow is not None:
        v_out, _ = _stream_volume(inp, out_flow, out_total)
        out.append(kpi("concentration_factor", recovery.concentration_factor(v_feed, v_out), f_cov))

    # purity from lab results on this equipment: titer / total protein of the same sample
    if len(inp.total_protein):
        p, tot = inp.titer, inp.total_protein
        common = [
            (pv, tv)
            for tp, pv in zip(p.t, p.v, strict=True)
            for tt, tv in zip(tot.t, tot.v, strict=True)
            if tp == tt
        ]
        value = recovery.purity(common[-1][0], common[-1][1]) if common else math.nan
        out.append(kpi("purity", value, {"lab:purity": 1.0 if common else 0.0}))
    return tuple(out), p_out * _KG, out_cov


def _coverage(inp: RecoveryInputs, covered_h: float) -> float:
    return min(covered_h / inp.run_h, 1.0) if inp.run_h > 0 else 0.0


def _totalized(inp: RecoveryInputs, total: Total | None) -> tuple[float, dict[str, float]] | None:
    """Volume [L] a flow totalizer counted over the run, with its coverage; None without one. A decrease
    is a rollover at `counter_rollover`, else a reset to 0 (batch totalizers reset when a run starts or
    ends)."""
    if total is None:
        return None
    s = total.signal
    tot = energy_from_totalizer(s.t, s.v, s.status, total.rollover_l)
    return tot.value, {s.tag: _coverage(inp, tot.covered_h)}


def _stream_volume(inp: RecoveryInputs, flow: Signal, total: Total | None) -> tuple[float, dict[str, float]]:
    """Volume [L] of a stream: its totalizer, else ∫F dt."""
    counted = _totalized(inp, total)
    if counted is not None:
        return counted
    v = integrate_trapezoid(flow.t, flow.v, flow.status, flow.gap_limits)
    return v.value, {flow.tag: _coverage(inp, v.covered_h)}


def _stream_product(
    inp: RecoveryInputs, flow: Signal, conc: Signal, total: Total | None
) -> tuple[float, dict[str, float]]:
    """Product [g] in a stream: ∫F·C dt, or with a totalizer V × ∫F·C dt / ∫F dt."""
    fc = _flow_times_conc(flow, conc)
    cov = {flow.tag: _coverage(inp, fc.covered_h), conc.tag: _coverage(inp, fc.covered_h)}
    counted = _totalized(inp, total)
    if counted is None:
        return fc.value, cov
    volume, t_cov = counted
    f = _flow_times_conc(flow, Signal(conc.tag, conc.t, np.ones(len(conc.t)), conc.status))
    return recovery.product_from_totalizer_g(volume, fc.value, f.value), {**cov, **t_cov}


def _flow_times_conc(flow: Signal, conc: Signal) -> Integral:
    """∫ F · C dt on the flow's samples, C aligned without bridging gaps."""
    c = conc.at(flow.t)
    ok = usable(flow.v, flow.status)
    status = np.where(ok & c.covered, 0, 0x80000000).astype(np.int64)
    return integrate_trapezoid(flow.t, flow.v * np.nan_to_num(c.values), status, flow.gap_limits)
