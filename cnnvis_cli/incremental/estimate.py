"""Cost of incremental occlusion before running it: multiply-accumulates, incremental vs naive.

Krypton (SIGMOD 2019, section 3.3) bounds the speed-up by the ratio of the operations actually
recomputed to those of a full forward pass. Per position and per layer we count

* naive: the layer's MACs on the full map (``rules.full_macs``);
* incremental: the layer's MACs per output position times the area of the window computed
  (the fixed, batch-wide window size), or the full count for steps computed on full maps
  (after the first unsupported layer, or where the window would cover more than the threshold
  of the map); global average pooling costs two window sums; cached steps cost nothing.

``flop_ratio = incremental / naive``. ``ideal_ratio`` counts instead the exact changed region of
each position (smaller near the borders, where windows are clipped, and for favourable stride
alignments), averaged over the positions, with no step replaced by full maps: what an engine
with per-position window sizes would compute (Krypton's theoretical ratio). The gap between the
two is the price of one fixed window size per batch and of the threshold.

The real speed-up differs from ``1 / flop_ratio``: windows are small, so convolutions run
less efficiently and every layer pays for gathering its input patch; but the naive passes also
spend much of their time in memory-bound layers on large early maps (batch normalization,
activations, padding, depthwise convolutions), which the windows avoid. Measured on the 2-core
CPU (``benchmarks/bench_incremental.py``, 224 x 224, patch 16, stride 8): VGG16 ratio 0.15 ->
7.6x faster, MobileNetV2 0.54 -> 4-6x, ResNet50 0.53 -> 2.2x, the trained demo model 0.59 -> 3x,
and break-even for squeeze-excite nets: EfficientNetB0 0.96 -> 0.99x, a small SE net (64 x 64)
0.84 -> 1.05x. ``PAYOFF_RATIO`` = 0.75 sits between: ``Estimate.pays_off`` (the decision for
``--incremental auto``) is ``flop_ratio <= 0.75``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.incremental import rules as R
from cnnvis_cli.incremental.errors import UnsupportedModel
from cnnvis_cli.incremental.schedule import DEFAULT_THRESHOLD, Schedule, build_schedule

PAYOFF_RATIO = 0.75


@dataclass(frozen=True)
class LayerCost:
    path: str
    class_name: str
    mode: str  # cached | identity | pointwise | window | gap | dense
    window: tuple[int, int] | None  # output window (rows, cols) for windowed steps
    full_macs: int
    incremental_macs: int
    reason: str = ""


@dataclass(frozen=True)
class Estimate:
    """What incremental occlusion would compute, relative to naive occlusion.

    ``first_unsupported``: (path, class) of the first layer without a window rule that depends
    on the occluded input, or None. ``full_from``: (path, class, reason) of the first step run
    on full maps (the end of the incremental part), or None.
    """

    patch: int
    stride: int | None
    positions: int | None
    tau: float | None
    naive_macs: int
    incremental_macs: int
    flop_ratio: float
    ideal_ratio: float
    first_unsupported: tuple[str, str] | None
    full_from: tuple[str, str, str] | None
    pays_off: bool
    payoff_ratio: float
    layers: tuple[LayerCost, ...]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest (without the per-layer rows)."""
        return {
            "patch": self.patch,
            "stride": self.stride,
            "positions": self.positions,
            "tau": self.tau,
            "naive_macs": self.naive_macs,
            "incremental_macs": self.incremental_macs,
            "flop_ratio": round(self.flop_ratio, 4),
            "ideal_ratio": round(self.ideal_ratio, 4),
            "first_unsupported": list(self.first_unsupported) if self.first_unsupported else None,
            "full_from": list(self.full_from) if self.full_from else None,
            "pays_off": self.pays_off,
        }


def estimate_schedule(
    schedule: Schedule,
    stride: int | None = None,
    payoff_ratio: float = PAYOFF_RATIO,
) -> Estimate:
    plan = schedule.plan
    rows: list[LayerCost] = []
    naive = incremental = 0
    ys, xs = _corner_values(schedule, stride)

    for m in schedule.modes:
        rule = m.rule
        full = R.full_macs(m.step, plan, rule)
        window = None
        if m.mode == "cached":
            cost = 0
        elif m.mode == "identity":
            cost = 0
            window = (m.windows.rows.size, m.windows.cols.size)
        elif m.mode in ("pointwise", "window"):
            window = (m.windows.rows.size, m.windows.cols.size)
            cost = rule.macs * m.windows.area
        elif m.mode == "gap":
            channels = int(plan.values[m.step.inputs[0]].shape[-1])
            cost = 2 * m.input_windows.area * channels
        else:
            cost = full
        naive += full
        incremental += cost
        rows.append(LayerCost(m.step.path, m.step.class_name, m.mode, window, full, cost, m.reason))
    ratio = incremental / naive if naive else 1.0
    unsupported = schedule.first_unsupported()
    first_full = schedule.first_full()
    positions = len(ys) * len(xs) if stride is not None else None
    return Estimate(
        patch=schedule.patch,
        stride=stride,
        positions=positions,
        tau=schedule.tau,
        naive_macs=naive,
        incremental_macs=incremental,
        flop_ratio=ratio,
        ideal_ratio=_ideal(schedule, ys, xs) / naive if naive else 1.0,
        first_unsupported=(unsupported.step.path, unsupported.step.class_name)
        if unsupported
        else None,
        full_from=(first_full.step.path, first_full.step.class_name, first_full.reason)
        if first_full
        else None,
        pays_off=ratio <= payoff_ratio,
        payoff_ratio=payoff_ratio,
        layers=tuple(rows),
    )


def _ideal(schedule: Schedule, ys: np.ndarray, xs: np.ndarray) -> float:
    """MACs of exact per-position changed regions, windows never replaced by full maps."""
    if schedule.threshold < 1.0:
        rules = [m.rule for m in schedule.modes]
        schedule = build_schedule(
            schedule.plan, schedule.patch, tau=schedule.tau, threshold=1.0, rules=rules
        )

    def changed_area(windows: Any) -> float:
        extent_r = np.maximum(windows.rows.hi[ys] - windows.rows.lo[ys] + 1, 0)
        extent_c = np.maximum(windows.cols.hi[xs] - windows.cols.lo[xs] + 1, 0)
        return float(extent_r.mean() * extent_c.mean())

    total = 0.0
    for m in schedule.modes:
        if m.mode in ("pointwise", "window"):
            total += m.rule.macs * changed_area(m.windows)
        elif m.mode == "gap":
            channels = int(schedule.plan.values[m.step.inputs[0]].shape[-1])
            total += 2 * changed_area(m.input_windows) * channels
        elif m.mode == "dense":
            total += R.full_macs(m.step, schedule.plan, m.rule)
    return total


def _corner_values(schedule: Schedule, stride: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The corner values along each axis: cnnvis' grid for ``stride``, else every value."""
    if stride is None:
        return (
            np.arange(schedule.height - schedule.patch + 1),
            np.arange(schedule.width - schedule.patch + 1),
        )
    from cnnvis_cli.methods.occlusion import patch_corners

    return (
        patch_corners(schedule.height, schedule.patch, stride),
        patch_corners(schedule.width, schedule.patch, stride),
    )


def estimate(
    model: Any,
    input_shape: tuple[int, int, int],
    patch: int,
    stride: int | None = None,
    output_index: int = 0,
    *,
    tau: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> Estimate:
    """The ``Estimate`` of incremental occlusion of ``model`` on (h, w, c) inputs.

    Raises ``UnsupportedModel`` when nothing can be computed incrementally (even for this
    geometry, an estimate whose ``flop_ratio`` is 1 is returned when only larger windows fail).
    """
    from cnnvis_cli.incremental.executor import concrete_plan

    plan = concrete_plan(model, input_shape, output_index)
    schedule = build_schedule(plan, patch, tau=tau, threshold=threshold)
    if schedule.incremental_steps() == 0:
        probe = build_schedule(plan, 1, threshold=threshold)
        if probe.incremental_steps() == 0:
            first = next(m for m in probe.modes if m.mode == "dense")
            raise UnsupportedModel(first.step.path, first.step.class_name, first.reason)
    return estimate_schedule(schedule, stride)
