"""Computing a prediction's dask graph: on this machine (threads, progress, cancel, memory
bounded by the chunk size) or on a Dask distributed cluster (the ``[cluster]`` extra)."""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import torch
from dask.callbacks import Callback

from .errors import CssdError
from .progress import Progress

BATCH_PER_THREAD = 4  # chunks computed per scheduler call and thread (see Runner.store)
SCHEDULER_TIMEOUT = "30s"  # how long to try to reach a --scheduler
CLUSTER_IN_FLIGHT = 4  # blocks submitted to a cluster at a time, per worker thread


class _DaskProgress(Callback):
    """Forwards finished chunk tasks of the local scheduler to a Progress; cancels on request."""

    def __init__(self, progress: Progress, name: str) -> None:
        super().__init__()
        self.progress, self.name = progress, name

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        # a chunk's task: named after the block function, alone or fused with its neighbours
        # in the graph (astype-getitem-...-predict_block-store-map)
        if isinstance(key, tuple) and isinstance(key[0], str) and self.name in key[0]:
            self.progress.advance(1)
        self.progress.check("prediction")


class Runner:
    """Stores lazy arrays into writer targets, locally or on the cluster at ``scheduler``.

    ``task_name`` is the name of the block function (its tasks are counted for progress);
    ``device`` is the local torch device (None for a cluster run).
    """

    def __init__(self, progress: Progress, task_name: str, device: torch.device | None,
                 scheduler: str | None = None, threads: int | None = None,
                 model_file: tuple[str, bytes] | None = None) -> None:
        self.progress, self.task_name, self.device, self.scheduler = progress, task_name, device, scheduler
        self.threads = threads  # None: from the device (see _workers); 1: blocks written in a fixed order
        self.model_file = model_file  # a cluster run's model file (sha256, bytes), see workers.ModelFile

    def steps(self, chunks: int, layers: int) -> int:
        """Progress steps of a run of ``chunks`` chunks and ``layers`` output layers: a chunk
        task locally (its layers are computed together), a block per layer on a cluster."""
        return chunks * (layers if self.scheduler else 1)

    def store(self, sources: Sequence[dsa.Array], targets: Sequence[Any],
              skip: Callable[[int, int], bool] | None = None) -> None:
        """Compute ``sources`` (same chunking in y, x) and write each block into its target;
        ``skip(row, col)`` (locally) leaves out the chunks starting there (a resumed run's)."""
        if self.scheduler:
            self._cluster_store(sources, targets)
        else:
            self._local_store(sources, targets, skip)

    def _workers(self) -> int:
        """Dask threads: as set, else one per core on a CPU, two (one reading, one computing) on a GPU."""
        if self.threads is not None:
            return self.threads
        return max(1, os.cpu_count() or 1) if self.device is None or self.device.type == "cpu" else 2

    def _local_store(self, sources: Sequence[dsa.Array], targets: Sequence[Any],
                     skip: Callable[[int, int], bool] | None = None) -> None:
        """A few chunks at a time (a run of chunks along one row, four per thread): the
        scheduler never reads ahead of that run, so memory is bounded by the chunk size and
        the number of threads, whatever the scene size."""
        workers = self._workers()
        rows, cols = sources[0].chunks[-2:]
        run = min(len(cols), BATCH_PER_THREAD * workers)
        row_bounds, col_bounds = np.cumsum((0,) + rows), np.cumsum((0,) + cols)
        # CPU: one torch thread per dask thread, so chunks run side by side without
        # oversubscribing the cores; reading and writing overlap with compute.
        threads = torch.get_num_threads()
        if self.device is not None and self.device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        # our own pool, so that no chunk outlives the run: when one fails or the run is
        # cancelled, dask raises at once, and the chunks still running in other threads would
        # go on writing into outputs that are being closed and deleted
        pool = ThreadPoolExecutor(workers, thread_name_prefix="cssd-chunk")
        try:
            with dask.config.set(scheduler="threads", pool=pool), _DaskProgress(self.progress, self.task_name):
                for i in range(len(rows)):
                    r0, r1 = int(row_bounds[i]), int(row_bounds[i + 1])
                    for first, last in _runs([skip is None or not skip(r0, int(col_bounds[j]))
                                              for j in range(len(cols))], run, self.progress):
                        c0, c1 = int(col_bounds[first]), int(col_bounds[last])
                        part = [s[..., r0:r1, c0:c1] for s in sources]
                        regions = [(slice(None),) * (s.ndim - 2) + (slice(r0, r1), slice(c0, c1)) for s in sources]
                        dask.compute(dsa.store(part, list(targets), regions=regions, lock=False, compute=False))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)

    def _client(self) -> Any:
        try:
            from distributed import Client
        except ImportError as exc:
            raise CssdError(f"--scheduler {self.scheduler}: a cluster run needs the 'distributed' package, which is "
                            "not installed; install it with: pip install 'cssd-geo[cluster]'") from exc
        try:
            return Client(self.scheduler, timeout=SCHEDULER_TIMEOUT)
        except OSError as exc:
            raise CssdError(f"--scheduler {self.scheduler}: cannot reach the Dask scheduler ({exc}); "
                            "check the address and that the cluster is running") from exc

    def _cluster_store(self, sources: Sequence[dsa.Array], targets: Sequence[Any]) -> None:
        """Blocks are computed on the workers; each finished block comes back and is written
        here. At most CLUSTER_IN_FLIGHT blocks per worker thread are submitted at a time (the
        next when one comes back), so the client's and the scheduler's memory do not grow with
        the scene. A worker lost mid-run costs its blocks' time: the scheduler runs them again."""
        with self._client() as client:
            from distributed import as_completed  # importable: _client has checked the [cluster] extra

            self.progress.message(f"running on {self.scheduler}; Dask dashboard: {client.dashboard_link}")
            if self.model_file is not None:
                from .workers import ModelFile  # imports distributed, which the check above found

                client.register_plugin(ModelFile(*self.model_file))
            pending = iter(_blocks(sources, targets))
            threads = sum(client.nthreads().values()) or 1
            where: dict[str, Place] = {}

            def submit(count: int) -> list[Any]:
                futures = []
                for block, place in itertools.islice(pending, count):
                    future = client.compute(block, optimize_graph=False)  # fused keys would clash across calls
                    where[future.key] = place
                    futures.append(future)
                return futures

            running = as_completed(submit(CLUSTER_IN_FLIGHT * threads))
            for future in running:
                self.progress.check("prediction")
                target, key = where.pop(future.key)
                target[key] = future.result()
                future.release()
                self.progress.advance(1)
                for more in submit(1):
                    running.add(more)


def _runs(wanted: Sequence[bool], length: int, progress: Progress) -> Iterator[tuple[int, int]]:
    """Runs [first, last) of consecutive wanted chunks, at most ``length`` long; each chunk
    not wanted counts as done for the progress."""
    first = None
    for j, want in enumerate([*wanted, False]):
        if first is not None and (not want or j - first == length):
            yield first, j
            first = None
        if want and first is None:
            first = j
        elif not want and j < len(wanted):
            progress.advance(1)


Place = tuple[Any, tuple[slice, ...]]  # a target and the slices of it that a block fills


def _blocks(sources: Sequence[dsa.Array], targets: Sequence[Any]) -> Iterator[tuple[dsa.Array, Place]]:
    """Each block of each source with where it goes: (target, (slices of the target))."""
    for source, target in zip(sources, targets, strict=True):
        bounds = [np.cumsum((0,) + c) for c in source.chunks]
        for index in np.ndindex(*source.numblocks):
            yield source.blocks[index], (target, tuple(slice(int(b[i]), int(b[i + 1]))
                                                       for b, i in zip(bounds, index, strict=True)))
