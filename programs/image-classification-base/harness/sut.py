"""LoadGen's query sample library and one system under test per scenario, built for low overhead."""
# - SingleStream runs inline on LoadGen's issue thread: no queue, no thread hop.
# - Offline splits its one big query into batches of ``max_batch`` run by ONE worker thread (the
#   runtime's intra-op threads already use every core) and completes each batch as it finishes.
# - Server and MultiStream go through a queue with dynamic batching: the worker takes everything
#   waiting, up to ``max_batch``, and completes it with one QuerySamplesComplete call.
#
# The response of a sample is its predicted class as a float32 (4 bytes), as in the reference. The
# buffer a response points to stays referenced until QuerySamplesComplete returns. LoadGen is driven
# through ConstructFastSUT (plain int lists instead of one Python object per sample).
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Sequence

import mlperf_loadgen as lg
import numpy as np

from .backends import Backend
from .dataset import Dataset
from .preprocess import CropCache, normalise

log = logging.getLogger(__name__)

RESPONSE_BYTES = 4


class SampleLibrary:
    """The QSL: loads uint8 crops from the cache into RAM and prepares float32 inputs for the backend.

    Loaded samples live in one array; ``slot[index]`` is a sample's row in it (-1 when not loaded).
    Backends that do not need inputs (null) get the crops loaded but no float32 copies.
    """

    def __init__(
        self, dataset: Dataset, cache: CropCache, *, profile: str, layout: str, needs_input: bool = True,
    ) -> None:
        self.dataset = dataset
        self.cache = cache
        self.profile = profile
        self.layout = layout
        self.needs_input = needs_input
        self.total = len(dataset)
        self.slot = np.full(self.total, -1, dtype=np.int64)
        self.inputs: np.ndarray | None = None
        self.crops: np.ndarray | None = None
        self.loads = 0
        self._gather_buffer: np.ndarray | None = None

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of one model input (C, H, W) or (H, W, C)."""
        side = self.cache.params.size
        return (3, side, side) if self.layout == "NCHW" else (side, side, 3)

    def construct(self, performance_count: int) -> int:
        """Create the LoadGen QSL handle (destroy it with ``lg.DestroyQSL``)."""
        return lg.ConstructQSL(self.total, min(performance_count, self.total), self.load, self.unload)

    def load(self, indices: Sequence[int]) -> None:
        """LoadGen callback: bring these samples (duplicates allowed) into RAM."""
        wanted = np.unique(np.asarray(indices, dtype=np.int64))
        new = wanted[self.slot[wanted] < 0]
        if len(new) == 0:
            return
        crops = self.cache.load_many(self.dataset.samples[i] for i in new)
        first = 0 if self.crops is None else len(self.crops)
        if self.needs_input:
            prepared = normalise(crops, self.profile, self.layout)
            self.inputs = prepared if self.inputs is None else np.concatenate([self.inputs, prepared])
        self.crops = crops if self.crops is None else np.concatenate([self.crops, crops])
        self.slot[new] = np.arange(first, first + len(new))
        self.loads += 1
        log.debug("loaded %d samples", len(new))

    def unload(self, indices: Sequence[int]) -> None:
        """LoadGen callback: drop the loaded samples (LoadGen unloads whole sets)."""
        self.slot.fill(-1)
        self.inputs = None
        self.crops = None
        self._gather_buffer = None

    def gather(self, indices: Sequence[int]) -> np.ndarray:
        """Model input for these sample indices: a view for one sample, a reused buffer for a batch.

        For backends without inputs, the indices themselves. The returned batch is valid until the
        next call (one worker thread calls it).
        """
        if not self.needs_input:
            return np.asarray(indices, dtype=np.int64)
        inputs = self.inputs
        if inputs is None:
            raise RuntimeError("LoadGen issued a query before loading samples")
        if len(indices) == 1:
            row = self.slot[indices[0]]
            if row < 0:
                raise RuntimeError(f"LoadGen issued sample {indices[0]}, which is not loaded")
            return inputs[row:row + 1]
        rows = self.slot[np.asarray(indices, dtype=np.int64)]
        if rows.min() < 0:
            raise RuntimeError("LoadGen issued samples that are not loaded")
        buffer = self._gather_buffer
        if buffer is None or len(buffer) < len(rows):
            buffer = self._gather_buffer = np.empty((max(len(rows), 1), *inputs.shape[1:]), dtype=inputs.dtype)
        out = buffer[:len(rows)]
        np.take(inputs, rows, axis=0, out=out)
        return out


class SystemUnderTest:
    """Shared machinery: run a batch through the backend and complete its samples in one call."""

    scenario = "base"

    def __init__(self, backend: Backend, qsl: SampleLibrary, *, max_batch: int) -> None:
        self.backend = backend
        self.qsl = qsl
        self.max_batch = max(1, max_batch)
        self.error: BaseException | None = None
        self.completed = 0
        self.batches = 0
        self.backend_seconds = 0.0  # time inside backend.predict: the rest is harness + LoadGen
        self._responses = np.zeros(self.max_batch, dtype=np.float32)
        self._address = self._responses.ctypes.data
        self.handle = lg.ConstructFastSUT(self.issue_queries, self.flush_queries)

    def issue_queries(self, ids: list[int], indices: list[int]) -> None:
        """LoadGen callback; ``ids`` are response ids, ``indices`` QSL sample indices."""
        raise NotImplementedError

    def flush_queries(self) -> None:
        """LoadGen callback at the end of a test: nothing is held back, so nothing to flush."""

    def start(self) -> None:
        """Start worker threads, if the scenario has any."""

    def stop(self) -> None:
        """Stop worker threads after LoadGen returned."""

    def close(self) -> None:
        """Destroy the LoadGen SUT handle."""
        lg.DestroyFastSUT(self.handle)

    def run_batch(self, ids: Sequence[int], indices: Sequence[int]) -> None:
        """Predict the samples and complete them; a failure completes them empty and is kept in ``error``.

        Responses point into one preallocated float32 buffer: a single thread runs batches, and
        LoadGen copies what it logs before QuerySamplesComplete returns, so the next batch may reuse it.
        """
        count = len(ids)
        try:
            batch = self.qsl.gather(indices)
            started = time.perf_counter()
            predictions = self.backend.predict(batch)
            self.backend_seconds += time.perf_counter() - started
            if len(predictions) != count:
                raise RuntimeError(f"backend returned {len(predictions)} predictions for {count} samples")
            self._responses[:count] = predictions
        except Exception as exc:  # must complete anyway, or LoadGen waits forever
            if self.error is None:
                self.error = exc
                log.error("inference failed: %s", exc)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])
            return
        address = self._address
        response = lg.QuerySampleResponse
        lg.QuerySamplesComplete(
            [response(i, a, RESPONSE_BYTES) for i, a in zip(ids, range(address, address + RESPONSE_BYTES * count,
                                                                      RESPONSE_BYTES))]
        )
        self.completed += count
        self.batches += 1


class SingleStreamSUT(SystemUnderTest):
    """Inline on LoadGen's issue thread: predict and complete before returning."""

    scenario = "SingleStream"

    def issue_queries(self, ids: list[int], indices: list[int]) -> None:
        if len(ids) != 1:
            for start in range(0, len(ids), self.max_batch):
                self.run_batch(ids[start:start + self.max_batch], indices[start:start + self.max_batch])
            return
        try:
            batch = self.qsl.gather(indices)
            started = time.perf_counter()
            self._responses[0] = self.backend.predict(batch)[0]
            self.backend_seconds += time.perf_counter() - started
        except Exception as exc:
            if self.error is None:
                self.error = exc
                log.error("inference failed: %s", exc)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(ids[0], 0, 0)])
            return
        lg.QuerySamplesComplete([lg.QuerySampleResponse(ids[0], self._address, RESPONSE_BYTES)])
        self.completed += 1
        self.batches += 1


class _WorkerSUT(SystemUnderTest):
    """A SUT whose batches run on one worker thread (the runtime's own threads use the cores)."""

    def __init__(self, backend: Backend, qsl: SampleLibrary, *, max_batch: int) -> None:
        super().__init__(backend, qsl, max_batch=max_batch)
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name=f"{self.scenario.lower()}-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    def _work(self) -> None:
        raise NotImplementedError


class OfflineSUT(_WorkerSUT):
    """One worker thread runs the big query batch by batch, completing each batch as it finishes."""

    scenario = "Offline"

    def __init__(self, backend: Backend, qsl: SampleLibrary, *, max_batch: int) -> None:
        super().__init__(backend, qsl, max_batch=max_batch)
        self._queries: collections.deque = collections.deque()

    def issue_queries(self, ids: list[int], indices: list[int]) -> None:
        with self._wake:
            self._queries.append((ids, indices))
            self._wake.notify()

    def _work(self) -> None:
        step = self.max_batch
        while True:
            with self._wake:
                while not self._queries and not self._stopping:
                    self._wake.wait()
                if not self._queries:
                    return
                ids, indices = self._queries.popleft()
            for start in range(0, len(ids), step):
                self.run_batch(ids[start:start + step], indices[start:start + step])


class QueueSUT(_WorkerSUT):
    """Server and MultiStream: a queue with dynamic batching (everything waiting, up to max_batch)."""

    def __init__(self, backend: Backend, qsl: SampleLibrary, *, max_batch: int, scenario: str) -> None:
        self.scenario = scenario
        super().__init__(backend, qsl, max_batch=max_batch)
        self._pending: collections.deque = collections.deque()
        self._idle = False

    def issue_queries(self, ids: list[int], indices: list[int]) -> None:
        self._pending.extend(zip(ids, indices))
        if self._idle:  # a busy worker looks at the queue again before it sleeps: no need to wake it
            with self._wake:
                self._wake.notify()

    def _work(self) -> None:
        pending = self._pending
        take = pending.popleft
        limit = self.max_batch
        while True:
            if not pending:
                with self._wake:
                    # announce the sleep BEFORE the last look at the queue, so that an issue racing
                    # with it either is seen here or sees _idle and wakes us
                    self._idle = True
                    while not pending:
                        if self._stopping:
                            return
                        self._wake.wait()
                    self._idle = False
            count = min(len(pending), limit)
            ids, indices = zip(*[take() for _ in range(count)])
            self.run_batch(ids, indices)


def create_sut(scenario: str, backend: Backend, qsl: SampleLibrary, *, max_batch: int) -> SystemUnderTest:
    """The system under test for ``scenario`` (SingleStream, MultiStream, Server or Offline)."""
    if scenario == "SingleStream":
        return SingleStreamSUT(backend, qsl, max_batch=max_batch)
    if scenario == "Offline":
        return OfflineSUT(backend, qsl, max_batch=max_batch)
    if scenario in ("Server", "MultiStream"):
        return QueueSUT(backend, qsl, max_batch=max_batch, scenario=scenario)
    raise ValueError(f"unknown scenario {scenario!r}")
