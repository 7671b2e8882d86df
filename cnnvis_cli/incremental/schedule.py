"""Window geometry for one patch size: which step runs how, and where every window lies.

For a patch of side ``p`` at corner ``(y, x)`` the model input changes on rows ``[y, y + p)``
and columns ``[x, x + p)``. Rows and columns are independent, so all geometry is computed per
axis, for every possible corner value at once (``c = 0 .. size - p``): numpy tables indexed by
the corner, computed once per patch size and baked into the traced computation, where a batch of
positions looks its rows up with one ``gather``.

For each value (a tensor of the plan) carried as a window we keep, per axis and corner, the
*changed region* ``[lo, hi]`` (outputs whose receptive field meets the change; see
``rules.py`` for the formula, and Krypton, SIGMOD 2019, section 3.2) and the *window*
``[start, start + size)`` actually computed. The size is fixed for a patch size — the maximum
of ``hi - lo + 1`` over all corners, i.e. over all stride alignments — so that every batch has
the same shapes; the start is ``min(lo, extent - size)``, which keeps the window inside the map
and still covers the changed region (in particular for cnnvis' last row/column of corners at
``size - p``). Values inside the window but outside the changed region are recomputed from
unchanged inputs, so they equal the cached ones.

A step whose output window would cover more than ``threshold`` of its map is cheaper on the full
map; it and everything downstream of it run on full maps with the windows pasted in.

Approximate mode (Krypton's projective-field threshold, section 4.1): with ``tau`` in (0, 1]
each layer's window side is capped at ``ceil(tau * extent)``, centred on the changed region;
the changes outside the capped window are dropped (their values are taken from the cache), and
the next layer's changed region is computed from the capped one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnvis_cli.incremental import rules as R
from cnnvis_cli.incremental.graph import Plan, Step

CACHED = "cached"  # does not depend on the occluded input
WINDOWED = "windowed"  # cached map + a window per position
FULL = "full"  # one full tensor per position (a batch)

DEFAULT_THRESHOLD = 0.8


@dataclass(frozen=True)
class AxisWindows:
    """Windows along one axis, per corner value: changed ``[lo, hi]``, window ``start``."""

    extent: int
    size: int
    start: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


@dataclass(frozen=True)
class Windows:
    rows: AxisWindows
    cols: AxisWindows

    @property
    def area(self) -> int:
        return self.rows.size * self.cols.size

    @property
    def fraction(self) -> float:
        return self.area / (self.rows.extent * self.cols.extent)


@dataclass(frozen=True)
class GatherAxis:
    """How one operand's input patch is read along one axis, per corner value.

    ``cache`` (m, length): padded-map coordinate of each patch row; ``window`` (m, length):
    the row of the operand's own window holding it, valid where ``inside``.
    """

    length: int
    padded: int
    cache: np.ndarray
    window: np.ndarray | None
    inside: np.ndarray | None
    source_size: int = 0

    @property
    def all_inside(self) -> bool:
        return self.inside is not None and bool(self.inside.all())


@dataclass(frozen=True, eq=False)
class Gather:
    """One operand of a window step: where its patch comes from."""

    operand: R.Operand
    key: tuple[Any, ...]  # cache key of the padded map (flattened to (Hp Wp, C))
    windowed: bool  # the operand value is carried as a window (else: cache only)
    rows: GatherAxis
    cols: GatherAxis

    @property
    def needs_cache(self) -> bool:
        """Some patch element lies outside the operand's window (read from the cache)."""
        return not (self.windowed and self.rows.all_inside and self.cols.all_inside)

    @property
    def identity(self) -> bool:
        """The patch is exactly the operand's window (no gather needed)."""
        if not self.windowed:
            return False
        for axis in (self.rows, self.cols):
            if not axis.all_inside:
                return False
            if axis.source_size != axis.length:
                return False
            if not (axis.window == np.arange(axis.length)[None, :]).all():
                return False
        return True


@dataclass(eq=False)
class StepMode:
    step: Step
    rule: R.Rule
    mode: str  # cached | identity | pointwise | window | gap | dense
    reason: str = ""
    windows: Windows | None = None  # the output's windows (identity, pointwise, window)
    gathers: list[Gather] = field(default_factory=list)
    input_windows: Windows | None = None  # gap: the input's windows


@dataclass(eq=False)
class Schedule:
    plan: Plan
    height: int
    width: int
    patch: int
    tau: float | None
    threshold: float
    modes: list[StepMode]
    states: dict[int, str]
    windows: dict[int, Windows]

    def incremental_steps(self) -> int:
        return sum(m.mode in ("identity", "pointwise", "window", "gap") for m in self.modes)

    def first_unsupported(self) -> StepMode | None:
        for m in self.modes:
            if m.rule.kind == R.UNSUPPORTED and m.mode != "cached":
                return m
        return None

    def first_full(self) -> StepMode | None:
        """The first step computed on full maps (where the incremental part falls back)."""
        for m in self.modes:
            if m.mode == "dense" and m.rule.kind != R.HEAD:
                return m
        return None

    def cache_keys(self) -> set[tuple[Any, ...]]:
        """Every cached tensor the traced computation reads."""
        keys: set[tuple[Any, ...]] = set()
        for m in self.modes:
            if m.mode == "window":
                keys.update(g.key for g in m.gathers if g.needs_cache)
            elif m.mode == "gap":
                keys.add(("plain", m.step.inputs[0]))
                keys.add(("total", m.step.inputs[0]))
            elif m.mode == "dense":
                keys.update(
                    ("plain", v) for v in m.step.inputs if self.states[v] in (CACHED, WINDOWED)
                )
        if self.states[self.plan.output] in (CACHED, WINDOWED):
            keys.add(("plain", self.plan.output))
        return keys


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -((-a) // b)


def _input_axis(extent: int, patch: int) -> AxisWindows:
    corners = np.arange(extent - patch + 1, dtype=np.int64)
    return AxisWindows(extent, patch, corners, corners, corners + patch - 1)


def _reach(win: AxisWindows, axis: R.Axis, extent: int) -> tuple[np.ndarray, np.ndarray]:
    """Outputs reached by the changed region ``[lo, hi]`` of an input (empty: lo > hi)."""
    a = win.lo + axis.pad_before
    b = win.hi + axis.pad_before
    lo = np.maximum(_ceil_div(a - axis.kernel + 1, axis.stride), 0)
    hi = np.minimum(b // axis.stride, extent - 1)
    empty = (win.lo > win.hi) | (lo > hi)
    return np.where(empty, extent, lo), np.where(empty, -1, hi)


def _output_axis(
    sources: list[tuple[AxisWindows, R.Axis]], extent: int, count: int, tau: float | None
) -> AxisWindows:
    lo = np.full(count, extent, dtype=np.int64)
    hi = np.full(count, -1, dtype=np.int64)
    for win, axis in sources:
        a, b = _reach(win, axis, extent)
        lo, hi = np.minimum(lo, a), np.maximum(hi, b)
    changed = lo <= hi
    size = int((hi - lo + 1)[changed].max()) if changed.any() else 1
    if tau is not None:
        cap = max(1, math.ceil(tau * extent))
        if size > cap:
            size = cap
            wide = changed & (hi - lo + 1 > cap)
            centre = (lo + hi) // 2
            capped = np.clip(centre - (cap - 1) // 2, 0, extent - cap)
            lo = np.where(wide, capped, lo)
            hi = np.where(wide, capped + cap - 1, hi)
    start = np.where(changed, np.clip(np.minimum(lo, extent - size), 0, None), 0)
    return AxisWindows(extent, size, start, lo, hi)


def _gather_axis(
    out: AxisWindows, axis: R.Axis, extent_in: int, source: AxisWindows | None
) -> GatherAxis:
    length = (out.size - 1) * axis.stride + axis.kernel
    padded = extent_in + axis.pad_before + axis.pad_after
    q = out.start[:, None] * axis.stride + np.arange(length)[None, :]
    if q.min() < 0 or q.max() >= padded:
        raise AssertionError(f"window read outside the padded map ({q.min()}..{q.max()})")
    if source is None:
        return GatherAxis(length, padded, q.astype(np.int32), None, None)
    u = q - axis.pad_before - source.start[:, None]
    inside = (u >= 0) & (u < source.size)
    window = np.clip(u, 0, source.size - 1)
    return GatherAxis(
        length, padded, q.astype(np.int32), window.astype(np.int32), inside, source.size
    )


def build_schedule(
    plan: Plan,
    patch: int,
    *,
    tau: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    rules: list[R.Rule] | None = None,
) -> Schedule:
    """Decide each step's mode and compute all windows for patches of side ``patch``."""
    source = plan.values[plan.input]
    height, width = int(source.shape[1]), int(source.shape[2])
    if not 1 <= patch <= min(height, width):
        raise ValueError(f"patch {patch} does not fit the {height}x{width} input")
    if tau is not None and not 0 < tau <= 1:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    rules = rules if rules is not None else [R.rule_for(s, plan) for s in plan.steps]
    counts = (height - patch + 1, width - patch + 1)
    states: dict[int, str] = {plan.input: WINDOWED}
    windows: dict[int, Windows] = {
        plan.input: Windows(_input_axis(height, patch), _input_axis(width, patch))
    }
    modes: list[StepMode] = []
    for step, rule in zip(plan.steps, rules, strict=True):
        ins = [states[v] for v in step.inputs]
        mode = _decide(step, rule, ins, plan, windows, counts, tau, threshold)
        modes.append(mode)
        if mode.mode == "cached":
            out_state = CACHED
        elif mode.mode in ("identity", "pointwise", "window"):
            out_state = WINDOWED
            for v in step.outputs:
                windows[v] = mode.windows
        else:
            out_state = FULL
        for v in step.outputs:
            states[v] = out_state
    return Schedule(plan, height, width, patch, tau, threshold, modes, states, windows)


def _decide(
    step: Step,
    rule: R.Rule,
    ins: list[str],
    plan: Plan,
    windows: dict[int, Windows],
    counts: tuple[int, int],
    tau: float | None,
    threshold: float,
) -> StepMode:
    if all(s == CACHED for s in ins):
        return StepMode(step, rule, "cached")
    if rule.kind in (R.UNSUPPORTED, R.DENSE, R.HEAD):
        return StepMode(step, rule, "dense", rule.reason)
    if FULL in ins:
        return StepMode(step, rule, "dense", "an input is already a full map")
    if rule.kind in (R.IDENTITY, R.POINTWISE):
        return StepMode(step, rule, rule.kind, windows=windows[step.inputs[0]])
    if rule.kind == R.GAP:
        return StepMode(step, rule, "gap", input_windows=windows[step.inputs[0]])
    out = plan.values[step.outputs[0]]
    extents = (int(out.shape[1]), int(out.shape[2]))
    axes = []
    for i in range(2):
        sources = []
        for operand in rule.operands:
            if operand.value is not None and operand.value in windows:
                win = windows[operand.value]
                axis = operand.rows if i == 0 else operand.cols
                sources.append(((win.rows, win.cols)[i], axis))
        axes.append(_output_axis(sources, extents[i], counts[i], tau))
    result = Windows(axes[0], axes[1])
    if result.fraction > threshold:
        reason = f"window covers {100 * result.fraction:.0f}% of the map (> {100 * threshold:.0f}%)"
        return StepMode(step, rule, "dense", reason)
    gathers = []
    for k, operand in enumerate(rule.operands):
        src = windows.get(operand.value) if operand.value is not None else None
        if operand.value is not None:
            shape = plan.values[operand.value].shape
            extents_in = (int(shape[1]), int(shape[2]))
            key = (
                "padded",
                operand.value,
                operand.rows.pad_before,
                operand.rows.pad_after,
                operand.cols.pad_before,
                operand.cols.pad_after,
                operand.pad_value,
            )
        else:
            extents_in = extents
            key = ("constant", step.index, k)
        rows = _gather_axis(result.rows, operand.rows, extents_in[0], src.rows if src else None)
        cols = _gather_axis(result.cols, operand.cols, extents_in[1], src.cols if src else None)
        gathers.append(Gather(operand, key, src is not None, rows, cols))
    return StepMode(step, rule, "window", windows=result, gathers=gathers)
