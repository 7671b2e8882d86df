"""Run incremental occlusion: cache one full pass, then recompute only windows per position.

Krypton (Nakandala, Kumar & Papakonstantinou, SIGMOD 2019, sections 3.2-3.4), on TensorFlow:

1. ``prepare``: one forward pass of the unoccluded (preprocessed) image through the plan,
   keeping every layer's output (the cache), plus padded copies of the maps that windows read
   with a halo (zero padding, or -inf before max pooling) and float64 totals for global average
   pooling.
2. ``outputs``: for a batch of ``n`` corners the occluded input differs from the image only on
   the ``p x p`` patch, filled from the baseline. Each layer recomputes a fixed-size window per
   position: its input patch is one ``gather`` from the operand's new window where it has one,
   and from the cached padded map elsewhere (``tf.where``); the layer's own weights then run
   'valid' on the patch. The window sizes and index tables depend only on the patch size
   (``schedule.py``), so the whole chain for one batch is ONE ``tf.function``, traced once per
   (patch size, batch size) and reused for every batch and every prepared image; the cache is
   passed in as tensors. From the first step on full maps on (an unsupported layer, or a
   window that would cover most of its map), windows are pasted into copies of the cached map
   (``tf.tensor_scatter_nd_update``) and the remaining layers run as Keras runs them.

Memory: the cache plus one batch of windows (and, after a fall-back, one batch of full maps),
independent of the number of positions.

The engine is not thread-safe: ``prepare`` replaces the cache that ``outputs`` reads. Use one
engine per thread (the traced functions are per engine).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnvis_cli.incremental import rules as R
from cnnvis_cli.incremental.errors import UnsupportedModel
from cnnvis_cli.incremental.estimate import Estimate, estimate_schedule
from cnnvis_cli.incremental.graph import Plan, build_plan
from cnnvis_cli.incremental.schedule import (
    CACHED,
    DEFAULT_THRESHOLD,
    FULL,
    WINDOWED,
    Gather,
    Schedule,
    StepMode,
    build_schedule,
)


def _tf() -> Any:
    from cnnvis_cli.core.tf import tf_and_keras

    return tf_and_keras()[0]


def concrete_plan(model: Any, input_shape: tuple[int, ...], output_index: int = 0) -> Plan:
    """The plan of ``model`` with every value's shape known for (h, w, c) inputs.

    Static models keep the shapes Keras inferred; a model with a dynamic input size gets them
    from one forward pass of zeros.
    """
    plan = build_plan(model, output_index)
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    declared = plan.values[plan.input].shape[1:]
    if any(d is not None and d != s for d, s in zip(declared, shape, strict=True)):
        raise ValueError(f"input_shape {shape} does not match the model input {declared}")
    if plan.static:
        return plan
    tf = _tf()
    zeros = tf.zeros((1, *shape), dtype=plan.values[plan.input].dtype)
    return plan.with_shapes(plan.run(zeros))


@dataclass(eq=False)
class _Program:
    """The traced computation for one patch size."""

    schedule: Schedule
    estimate: Estimate
    functions: dict[int, Any] = field(default_factory=dict)  # batch size -> tf.function
    caches: dict[tuple[Any, ...], Any] | None = None
    generation: int = -1


class IncrementalOcclusion:
    """Occlusion outputs by incremental inference (exact, or approximate with ``tau``).

    Args:
        model: a Keras 3 model (functional, Sequential, nested backbones); not modified.
        input_shape: (h, w, c) of the model input.
        output_index: which model output to return.
        batch_size: positions computed per traced call.
        tau: None for exact inference; in (0, 1] caps every window side at ``tau`` of its map
            (Krypton's projective-field threshold; approximate).
        threshold: a window covering more than this fraction of its map is computed on the
            full map from there on.

    Raises ``UnsupportedModel`` if nothing can be computed incrementally.
    """

    def __init__(
        self,
        model: Any,
        input_shape: tuple[int, int, int],
        output_index: int = 0,
        batch_size: int = 64,
        tau: float | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.input_shape = tuple(int(d) for d in input_shape)
        self.output_index = int(output_index)
        self.batch_size = int(batch_size)
        self.tau = tau
        self.threshold = threshold
        self.plan = concrete_plan(model, self.input_shape, self.output_index)
        self.rules = [R.rule_for(step, self.plan) for step in self.plan.steps]
        self._programs: dict[int, _Program] = {}
        self._last: _Program | None = None
        self._values: dict[int, Any] | None = None
        self._baseline: Any = None
        self._generation = 0
        self.traces = 0  # how many times a batch computation was traced
        self._check_supported()

    def _check_supported(self) -> None:
        """Raise ``UnsupportedModel`` when even a one-pixel patch has no incremental step."""
        schedule = self._program(1).schedule
        if schedule.incremental_steps() == 0:
            first = next(m for m in schedule.modes if m.mode == "dense")
            raise UnsupportedModel(first.step.path, first.step.class_name, first.reason)

    # -- geometry -------------------------------------------------------------------------------

    def _program(self, patch: int) -> _Program:
        program = self._programs.get(patch)
        if program is None:
            schedule = build_schedule(
                self.plan, patch, tau=self.tau, threshold=self.threshold, rules=self.rules
            )
            program = _Program(schedule, estimate_schedule(schedule))
            self._programs[patch] = program
        return program

    def estimate_for(self, patch: int, stride: int | None = None) -> Estimate:
        """The cost estimate for patches of side ``patch`` (and, for the count, ``stride``)."""
        program = self._program(int(patch))
        if stride is None:
            return program.estimate
        return estimate_schedule(program.schedule, stride)

    @property
    def estimate(self) -> Estimate | None:
        """The estimate of the geometry last used by ``outputs`` (None before the first call)."""
        return None if self._last is None else self._last.estimate

    # -- cache --------------------------------------------------------------------------------

    def prepare(self, image_pre: np.ndarray, baseline_pre: np.ndarray) -> np.ndarray:
        """Cache the full pass of one image; returns the unoccluded output (units,) float32.

        ``image_pre`` and ``baseline_pre`` are (h, w, c) arrays in model-input space.
        """
        tf = _tf()
        dtype = self.plan.values[self.plan.input].dtype
        image = np.asarray(image_pre, dtype=np.float32)
        baseline = np.asarray(baseline_pre, dtype=np.float32)
        for name, array in (("image", image), ("baseline", baseline)):
            if array.shape != self.input_shape:
                raise ValueError(f"{name} has shape {array.shape}, expected {self.input_shape}")
        self._values = self.plan.run(tf.constant(image[None], dtype=dtype))
        self._baseline = tf.constant(baseline, dtype=dtype)
        self._generation += 1
        out = self._values[self.plan.output]
        return np.asarray(tf.cast(out, tf.float32))[0]

    def _caches(self, program: _Program) -> dict[tuple[Any, ...], Any]:
        if self._values is None:
            raise RuntimeError("call prepare(image, baseline) before outputs()")
        if program.generation == self._generation and program.caches is not None:
            return program.caches
        tf = _tf()
        caches = {}
        constants = {
            ("constant", m.step.index, k): g.operand
            for m in program.schedule.modes
            for k, g in enumerate(m.gathers)
            if g.operand.value is None
        }
        for key in sorted(program.schedule.cache_keys(), key=repr):
            if key[0] == "plain":
                caches[key] = self._values[key[1]]
            elif key[0] == "total":
                caches[key] = tf.reduce_sum(tf.cast(self._values[key[1]], tf.float64), (1, 2))
            elif key[0] == "padded":
                _, vid, top, bottom, left, right, fill = key
                caches[key] = _padded_flat(self._values[vid], top, bottom, left, right, fill)
            else:  # a constant map of a rule
                array = constants[key].constant()
                caches[key] = tf.reshape(tf.constant(array), (-1, array.shape[-1]))
        program.caches, program.generation = caches, self._generation
        return caches

    # -- batches ------------------------------------------------------------------------------

    def outputs(self, corners: np.ndarray, patch: int) -> np.ndarray:
        """Model outputs (n, units) float32 for the image occluded at each corner (y, x).

        Equal to ``model(occluded copies)[output_index]`` within float32 noise (exact mode).
        """
        tf = _tf()
        corners = np.asarray(corners, dtype=np.int64).reshape(-1, 2)
        patch = int(patch)
        height, width = self.input_shape[:2]
        if len(corners) == 0:
            return np.zeros((0, *self._output_units()), dtype=np.float32)
        if (corners < 0).any() or (corners[:, 0] > height - patch).any():
            raise ValueError("corners must satisfy 0 <= y <= h - patch and 0 <= x <= w - patch")
        if (corners[:, 1] > width - patch).any():
            raise ValueError("corners must satisfy 0 <= y <= h - patch and 0 <= x <= w - patch")
        program = self._program(patch)
        self._last = program
        caches = self._caches(program)
        total = len(corners)
        # fewer positions than a batch: the next power of two (at most 2x padding, and at most
        # log2(batch_size) extra traces for the short calls of drill-down)
        n = min(self.batch_size, 1 << (total - 1).bit_length())
        function = program.functions.get(n)
        if function is None:
            function = tf.function(
                self._make_batch(program, n), autograph=False, reduce_retracing=False
            )
            program.functions[n] = function
        results = []
        for start in range(0, total, n):
            index = np.arange(start, start + n) % total  # pad the last batch by wrapping
            chunk = corners[index].astype(np.int32)
            out = function(
                tf.constant(chunk[:, 0]), tf.constant(chunk[:, 1]), self._baseline, caches
            )
            results.append(np.asarray(out)[: min(n, total - start)])
        return np.concatenate(results).astype(np.float32, copy=False)

    def profile(self, corners: np.ndarray, patch: int) -> list[dict[str, Any]]:
        """Run one batch (the first ``batch_size`` corners) eagerly, timing every step.

        Returns one row per step: path, class, mode, and the seconds spent assembling its
        inputs (gathers, pastes) and computing it. Eager execution adds per-op overhead, so
        the sum exceeds the traced time; use it for proportions.
        """
        tf = _tf()
        corners = np.asarray(corners, dtype=np.int32).reshape(-1, 2)[: self.batch_size]
        program = self._program(int(patch))
        caches = self._caches(program)
        batch = _Batch(
            program.schedule,
            len(corners),
            tf.constant(corners[:, 0]),
            tf.constant(corners[:, 1]),
            self._baseline,
            caches,
            timings=[],
        )
        batch.run()
        return batch.timings

    def _output_units(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.plan.values[self.plan.output].shape[1:])

    def _make_batch(self, program: _Program, n: int) -> Any:
        def batch(ys: Any, xs: Any, baseline: Any, caches: dict[Any, Any]) -> Any:
            self.traces += 1  # Python side effect: runs only while tracing
            return _Batch(program.schedule, n, ys, xs, baseline, caches).run()

        return batch


class _Clock:
    """Lap times of eager work (``split`` waits for its tensors); a no-op while tracing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.laps: list[float] = []
        self._last = time.perf_counter()

    def split(self, result: Any) -> Any:
        if self.enabled:
            for tensor in result if isinstance(result, list) else [result]:
                getattr(tensor, "numpy", lambda: None)()
            now = time.perf_counter()
            self.laps.append(now - self._last)
            self._last = now
        return result


def _padded_flat(value: Any, top: int, bottom: int, left: int, right: int, fill: float) -> Any:
    """(1, H, W, C) -> (Hp Wp, C): padded with ``fill`` (negative amounts crop)."""
    tf = _tf()
    height, width = int(value.shape[1]), int(value.shape[2])
    value = value[
        :, max(0, -top) : height - max(0, -bottom), max(0, -left) : width - max(0, -right)
    ]
    pads = [[0, 0], [max(0, top), max(0, bottom)], [max(0, left), max(0, right)], [0, 0]]
    if any(p for pair in pads for p in pair):
        value = tf.pad(value, pads, constant_values=tf.cast(fill, value.dtype))
    return tf.reshape(value, (-1, value.shape[-1]))


class _Batch:
    """The body of the traced computation for one batch of corners (graph construction)."""

    def __init__(
        self,
        schedule: Schedule,
        n: int,
        ys: Any,
        xs: Any,
        baseline: Any,
        caches: dict,
        timings: list[dict[str, Any]] | None = None,
    ) -> None:
        self.timings = timings
        self.tf = _tf()
        self.s = schedule
        self.plan = schedule.plan
        self.n = n
        self.ys, self.xs = ys, xs
        self.baseline = baseline
        self.caches = caches
        self.env: dict[int, Any] = {}
        self._full: dict[int, Any] = {}

    def _rows(self, table: np.ndarray) -> Any:
        """Look the batch's row corners up in a per-corner table."""
        return self.tf.gather(self.tf.constant(table), self.ys)

    def _cols(self, table: np.ndarray) -> Any:
        return self.tf.gather(self.tf.constant(table), self.xs)

    def run(self) -> Any:
        tf = self.tf
        patch = self.s.patch
        height, width = self.s.height, self.s.width
        channels = int(self.baseline.shape[-1])
        offsets = tf.range(patch, dtype=tf.int32)
        rows = self.ys[:, None] + offsets[None, :]
        cols = self.xs[:, None] + offsets[None, :]
        flat = tf.reshape(self.baseline, (height * width, channels))
        self.env[self.plan.input] = tf.gather(flat, rows[:, :, None] * width + cols[:, None, :])
        for mode in self.s.modes:
            self._step(mode)
        out = self._materialize(self.plan.output)
        return tf.cast(out, tf.float32)

    def _step(self, m: StepMode) -> None:
        step = m.step
        if m.mode == "cached":
            return
        clock = _Clock(self.timings is not None)
        if m.mode == "identity":
            self.env[step.outputs[0]] = self.env[step.inputs[0]]
        elif m.mode == "pointwise":
            self.env[step.outputs[0]] = clock.split(step.apply([self.env[step.inputs[0]]])[0])
        elif m.mode == "window":
            patches = clock.split([self._patch(g) for g in m.gathers])
            self.env[step.outputs[0]] = clock.split(m.rule.compute(patches))
        elif m.mode == "gap":
            self.env[step.outputs[0]] = clock.split(self._gap(m))
        else:
            inputs = clock.split([self._materialize(v) for v in step.inputs])
            outs = clock.split(step.apply(inputs))
            for vid, out in zip(step.outputs, outs, strict=True):
                self.env[vid] = out
        if self.timings is not None:
            laps = clock.laps
            gather, compute = (laps[0], laps[1]) if len(laps) == 2 else (0.0, sum(laps))
            self.timings.append(
                {
                    "path": step.path,
                    "class": step.class_name,
                    "mode": m.mode,
                    "gather_s": gather,
                    "compute_s": compute,
                }
            )

    def _patch(self, g: Gather) -> Any:
        tf = self.tf
        vid = g.operand.value
        if g.identity:
            return self.env[vid]
        from_window = None
        if g.windowed:
            window = self.env[vid]
            wh, ww = int(window.shape[1]), int(window.shape[2])
            r = self._rows(g.rows.window)
            c = self._cols(g.cols.window)
            base = tf.range(self.n, dtype=tf.int32)[:, None, None] * (wh * ww)
            index = base + r[:, :, None] * ww + c[:, None, :]
            flat = tf.reshape(window, (-1, int(window.shape[-1])))
            from_window = tf.gather(flat, index)
            if not g.needs_cache:
                return from_window
        q_rows = self._rows(g.rows.cache)
        q_cols = self._cols(g.cols.cache)
        from_cache = tf.gather(
            self.caches[g.key], q_rows[:, :, None] * g.cols.padded + q_cols[:, None, :]
        )
        if from_window is None:  # a cached value or a constant map of the rule
            return from_cache
        inside = self._rows(g.rows.inside)[:, :, None] & self._cols(g.cols.inside)[:, None, :]
        return tf.where(inside[..., None], from_window, tf.cast(from_cache, from_window.dtype))

    def _starts(self, vid: int) -> tuple[Any, Any, int, int]:
        win = self.s.windows[vid]
        return (
            self._rows(win.rows.start.astype(np.int32)),
            self._cols(win.cols.start.astype(np.int32)),
            win.rows.size,
            win.cols.size,
        )

    def _gap(self, m: StepMode) -> Any:
        tf = self.tf
        vid = m.step.inputs[0]
        window = self.env[vid]
        value = self.plan.values[vid]
        height, width, channels = (int(d) for d in value.shape[1:])
        r0, c0, wh, ww = self._starts(vid)
        rows = r0[:, None] + tf.range(wh, dtype=tf.int32)[None, :]
        cols = c0[:, None] + tf.range(ww, dtype=tf.int32)[None, :]
        cached = tf.reshape(self.caches[("plain", vid)], (height * width, channels))
        old = tf.gather(cached, rows[:, :, None] * width + cols[:, None, :])
        new_sum = tf.reduce_sum(tf.cast(window, tf.float64), (1, 2))
        old_sum = tf.reduce_sum(tf.cast(old, tf.float64), (1, 2))
        mean = (self.caches[("total", vid)] - old_sum + new_sum) / float(height * width)
        out = tf.cast(mean, m.step.op.compute_dtype)
        if getattr(m.step.op, "keepdims", False):
            out = tf.reshape(out, (-1, 1, 1, channels))
        return out

    def _materialize(self, vid: int) -> Any:
        """The value as a full batch (n, ...): pasted windows, broadcast cache, or as is."""
        tf = self.tf
        state = self.s.states[vid]
        if state == FULL:
            return self.env[vid]
        if vid in self._full:
            return self._full[vid]
        cached = self.caches[("plain", vid)]
        tiled = tf.tile(cached, [self.n] + [1] * (len(cached.shape) - 1))
        if state == CACHED:
            result = tiled
        else:
            assert state == WINDOWED
            window = self.env[vid]
            r0, c0, wh, ww = self._starts(vid)
            rows = r0[:, None] + tf.range(wh, dtype=tf.int32)[None, :]
            cols = c0[:, None] + tf.range(ww, dtype=tf.int32)[None, :]
            shape = (self.n, wh, ww)
            index = tf.stack(
                [
                    tf.broadcast_to(tf.range(self.n, dtype=tf.int32)[:, None, None], shape),
                    tf.broadcast_to(rows[:, :, None], shape),
                    tf.broadcast_to(cols[:, None, :], shape),
                ],
                axis=-1,
            )
            result = tf.tensor_scatter_nd_update(tiled, index, tf.cast(window, tiled.dtype))
        self._full[vid] = result
        return result
