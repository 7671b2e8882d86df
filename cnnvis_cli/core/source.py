"""Stream decoded, model-sized images in batches, decoding ahead within a memory budget.

A producer thread reads each file, learns its pixel count from the header, reserves that image's
memory in a :class:`MemoryBudget`, and hands the decoding to a small thread pool; batches come out
in input order. The budget counts every decoded image until the pipeline *releases* it (after its
outputs are written), so eight 10,000 x 10,000 PNGs are decoded one or two at a time, not all at
once. When the budget is short, the producer emits the batch it holds early (a method pads short
batches), so the consumer can finish work and free memory: the pipeline never waits on itself.
An image larger than the whole budget is admitted alone.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from cnnvis_cli.core.decode import (
    DEFAULT_MAX_FILE_SIZE,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    decode_bytes,
    header_size,
    read_bytes,
    sniff_format,
    to_model_tensor,
)
from cnnvis_cli.core.discover import InputItem
from cnnvis_cli.errors import InputError

DEFAULT_MEMORY_BUDGET = 2 * 2**30
BYTES_PER_PIXEL = 16  # decoded RGB (3) + the overlay's float map, colour and blend (~13)
UNKNOWN_SIZE_PIXELS = 4_000_000  # cost assumed for a header without a readable size


class MemoryBudget:
    """Bytes of decoded images in flight, at most ``limit`` (one oversized image alone)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._condition = threading.Condition()

    def try_acquire(self, amount: int) -> bool:
        with self._condition:
            if self.used and self.used + amount > self.limit:
                return False
            self._take(amount)
            return True

    def acquire(self, amount: int, stop: threading.Event) -> bool:
        """Wait for room; False when ``stop`` is set first."""
        with self._condition:
            while self.used and self.used + amount > self.limit:
                if stop.is_set():
                    return False
                self._condition.wait(timeout=0.1)
            self._take(amount)
            return True

    def release(self, amount: int) -> None:
        with self._condition:
            self.used -= amount
            self._condition.notify_all()

    def _take(self, amount: int) -> None:
        self.used += amount
        self.peak = max(self.peak, self.used)


@dataclass
class LoadedImage:
    """A decoded input: the original (for overlays) and its model-sized raw tensor.

    Call :meth:`release` once its outputs are written: it drops the pixels and returns their
    memory to the budget.
    """

    item: InputItem
    original: np.ndarray  # H x W x 3 uint8 RGB, the image's own resolution
    tensor: np.ndarray  # h x w x c float32, raw 0..255, resized to the model input
    notes: list[str] = field(default_factory=list)
    cost: int = 0
    budget: MemoryBudget | None = None

    def release(self) -> None:
        self.original = self.tensor = np.empty((0, 0, 3), np.uint8)  # let the pixels go
        if self.budget is not None and self.cost:
            self.budget.release(self.cost)
            self.cost = 0


Loaded = LoadedImage | InputError


def image_cost(data: bytes) -> int:
    """Bytes an image will hold while it is decoded, rendered and written."""
    try:
        size = header_size(data, sniff_format(data))
    except InputError:
        size = None
    pixels = size[0] * size[1] if size else UNKNOWN_SIZE_PIXELS
    return len(data) + pixels * BYTES_PER_PIXEL


class ImageSource:
    """Decoded, resized images in batches of at most ``batch_size``, in input order.

    Failed inputs are yielded as ``(item, InputError)`` pairs. Memory stays bounded by
    ``memory_budget`` (bytes of decoded images not yet released) and ``prefetch`` batches.
    """

    def __init__(
        self,
        items: list[InputItem],
        *,
        size: tuple[int, int] | None,
        channels: int,
        batch_size: int,
        workers: int = 2,
        prefetch: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_side: int = DEFAULT_MAX_SIDE,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        if batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        self.items = items
        self.size = size
        self.channels = channels
        self.batch_size = batch_size
        self.workers = workers
        self.prefetch = prefetch
        self.max_pixels = max_pixels
        self.max_side = max_side
        self.max_file_size = max_file_size
        self.budget = MemoryBudget(memory_budget)

    def _decode(self, item: InputItem, data: bytes, cost: int) -> Loaded:
        try:
            decoded = decode_bytes(data, max_pixels=self.max_pixels)
            del data
            tensor = to_model_tensor(decoded.rgb, self.size, self.channels, self.max_side)
            return LoadedImage(item, decoded.rgb, tensor, decoded.notes, cost, self.budget)
        except InputError as exc:
            self.budget.release(cost)
            return exc
        except (cv2.error, MemoryError, ValueError) as exc:
            self.budget.release(cost)
            return InputError(f"cannot decode the image ({type(exc).__name__}: {exc})")

    @staticmethod
    def _failed(error: InputError) -> Future:
        future: Future = Future()
        future.set_result(error)
        return future

    def _produce(self, pool: ThreadPoolExecutor, out: queue.Queue, stop: threading.Event) -> None:
        batch: list[tuple[InputItem, Future]] = []

        def emit() -> None:
            nonlocal batch
            if batch:
                while not stop.is_set():
                    try:
                        out.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                batch = []

        try:
            for item in self.items:
                if stop.is_set():
                    return
                if len(batch) == self.batch_size:
                    emit()
                try:
                    data = read_bytes(item.path, self.max_file_size)
                except InputError as exc:
                    batch.append((item, self._failed(exc)))
                    continue
                cost = image_cost(data)
                if not self.budget.try_acquire(cost):
                    emit()  # let the pipeline finish what it holds
                    if not self.budget.acquire(cost, stop):
                        return
                batch.append((item, pool.submit(self._decode, item, data, cost)))
                del data
            emit()
        finally:
            out.put(None)

    def batches(self) -> Iterator[list[tuple[InputItem, Loaded]]]:
        """Yield lists of at most ``batch_size`` (item, loaded-or-error) pairs, in input order."""
        out: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode") as pool:
            producer = threading.Thread(
                target=self._produce, args=(pool, out, stop), name="read", daemon=True
            )
            producer.start()
            try:
                while (batch := out.get()) is not None:
                    yield [(item, future.result()) for item, future in batch]
            finally:
                stop.set()
                while producer.is_alive():  # unblock a producer waiting to put
                    with contextlib.suppress(queue.Empty):
                        out.get(timeout=0.1)
                producer.join()
