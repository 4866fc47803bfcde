"""Concurrent model streams: replicas of one frozen model in threads, fed batches, results in arrival order.

torch releases the GIL inside every operator and PIL while decoding and resizing, so threads run
the model (and decode) in parallel while sharing one copy of the weights. The caller's thread
stays free to write the results.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from dermstack.extract.dataset import ImageDataset, collate

Batch = dict  # collate(): {"index", "images", "failed"}


class InlineBatches:
    """Consecutive batches of a dataset, decoded by whichever stream asks for the next one."""

    def __init__(self, dataset: ImageDataset, batch_size: int):
        self.dataset, self.batch_size = dataset, batch_size
        self._starts = iter(range(0, len(dataset), batch_size))
        self._lock = threading.Lock()

    def next(self) -> Batch | None:
        with self._lock:
            start = next(self._starts, None)
        if start is None:
            return None
        return collate([self.dataset[i] for i in range(start, min(start + self.batch_size, len(self.dataset)))])


class LoaderBatches:
    """Batches decoded ahead by a DataLoader's worker processes, handed out one at a time."""

    def __init__(self, loader: DataLoader):
        self._it = iter(loader)
        self._lock = threading.Lock()

    def next(self) -> Batch | None:
        with self._lock:
            return next(self._it, None)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to ``n`` for the block (None: unchanged), then restored."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_DONE = object()


def run_streams(source: InlineBatches | LoaderBatches, embed: Callable[[torch.Tensor], np.ndarray], streams: int,
                threads: int | None = None) -> Iterator[tuple[Batch, np.ndarray | None]]:
    """Yield ``(batch, features)`` (features None for a batch with no good image) as the ``streams``
    threads finish them; an exception in a stream is raised here. Leaving the loop early stops them."""
    out: queue.Queue = queue.Queue(maxsize=2 * streams)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            if threads:
                torch.set_num_threads(threads)  # this thread's OpenMP team
            while not stop.is_set():
                batch = source.next()
                if batch is None:
                    break
                feats = embed(batch["images"]) if batch["images"] is not None else None
                if not put((batch, feats)):
                    return
        except BaseException as e:  # handed to the caller's thread
            put(e)
            return
        put(_DONE)

    with torch_threads(threads):
        pool = [threading.Thread(target=work, name=f"dermstack-stream-{k}", daemon=True) for k in range(streams)]
        for t in pool:
            t.start()
        try:
            running = streams
            while running:
                item = out.get()
                if item is _DONE:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()
            for t in pool:
                t.join()
