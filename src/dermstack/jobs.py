"""Where the fold x seed fits of :func:`dermstack.crossfit.cross_fit` run: in this process one after
another or side by side in threads (:class:`LocalJobs`), or each a task on a Dask cluster
(:class:`DaskJobs`). A fit that can go to a cluster reads its inputs through :class:`Lazy` values,
which a worker builds again from the run directory's files.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from dermstack.cluster import WORKER_WAIT, dask_client, quiet_distributed
from dermstack.errors import DataError, DermstackError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldJob:
    """One fit: fold ``fold``'s training rows ``train`` and validation rows ``valid`` (indices into the
    task's rows), for seed ``seed`` (``seed_index`` in the model's seed list)."""

    fold: int
    seed: int
    seed_index: int
    train: np.ndarray
    valid: np.ndarray


#: fit(job) -> (scores of job.valid, scores of the test rows or None, record); scores (rows,) or (rows, C)
FitFn = Callable[[FoldJob], tuple[np.ndarray, np.ndarray | None, dict]]


class Lazy:
    """A fit's input, built on first use by ``make()``. It pickles as ``make`` alone, so a Dask worker
    builds it again from the files ``make`` reads (the run directory, on storage every worker
    shares) instead of receiving the client's copy; ``key`` shares one build between the jobs a
    worker process runs."""

    _shared: OrderedDict = OrderedDict()  # key -> value, the last few in this process

    def __init__(self, make: Callable[[], object], key: str | None = None, value=None):
        self.make, self.key, self._value = make, key, value

    def get(self):
        if self._value is None:
            if self.key is not None and self.key in Lazy._shared:
                self._value = Lazy._shared[self.key]
            else:
                self._value = self.make()
                if self.key is not None:
                    Lazy._shared[self.key] = self._value
                    while len(Lazy._shared) > 4:
                        Lazy._shared.popitem(last=False)
        return self._value

    def __getstate__(self) -> dict:
        return {"make": self.make, "key": self.key, "_value": None}


class SharedLock:
    """A lock for what the fits running side by side in a process share (:class:`LocalJobs`); it pickles
    as a new lock, so a fit callback that holds one can still travel to a Dask worker."""

    def __init__(self):
        self._lock = threading.Lock()

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._lock = threading.Lock()


def file_input(value, path: str | Path | None, read: Callable[[Path], object]) -> Lazy:
    """``value`` in this process; on a Dask worker ``read(path)`` (shared by the worker's jobs while the
    file is unchanged). Without a path the value itself travels with each job."""
    if path is None:
        return Lazy(partial(_itself, value), value=value)
    path = Path(path).resolve()  # a worker's working directory is not this one's
    stat = path.stat()
    return Lazy(partial(_read_shared, read, path), key=f"{path}:{stat.st_mtime_ns}:{stat.st_size}", value=value)


def _read_shared(read: Callable[[Path], object], path: Path):
    """``read(path)`` on a worker, which must see the client's file at the same path."""
    if not path.exists():
        try:
            from distributed import get_worker

            where = f"the Dask worker {get_worker().address}"
        except (ImportError, ValueError):
            where = "this process"
        raise DataError(f"not found on {where}, although the client read it there: the run directory must be on "
                        "storage every Dask worker shares, at the same path", file=str(path))
    return read(path)


def _itself(value):
    return value


_fit_thread = threading.local()


def job_threads() -> int | None:
    """The cores one fit may use while :class:`LocalJobs` runs fits side by side in this process, else None."""
    return getattr(_fit_thread, "threads", None)


@dataclass
class LocalJobs:
    """The fold x seed jobs in this process: one after another, or ``parallel`` at a time in threads,
    each fit with its share of the cores (:func:`job_threads`). Side by side suits fits whose library
    leaves the GIL while it trains (the boosters): on a few thousand rows a library's own threads wait
    on each other, separate fits do not."""

    parallel: int = 1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def describe(self) -> dict:
        return {"executor": "local"} | ({"parallel": self.parallel} if self.parallel > 1 else {})

    def run(self, fit: FitFn, jobs: list[FoldJob]) -> Iterator[tuple[FoldJob, tuple, float, str]]:
        if self.parallel < 2 or len(jobs) < 2:
            for job in jobs:
                yield job, *_timed(fit, job), "local"
            return
        share = max(1, available_cores() // self.parallel)

        def one(job: FoldJob) -> tuple[tuple, float]:
            _fit_thread.threads = share
            try:
                return _timed(fit, job)
            finally:
                del _fit_thread.threads

        pool = ThreadPoolExecutor(min(self.parallel, len(jobs)), thread_name_prefix="dermstack-fit")
        interrupted = False
        try:
            futures = {pool.submit(one, job): job for job in jobs}
            for done in as_completed(futures):
                yield futures[done], *done.result(), "local"
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:  # on an error the jobs not started are dropped; a running fit ends first, unless on Ctrl-C
            pool.shutdown(wait=not interrupted, cancel_futures=True)


def process_pool(workers: int, **kw):
    """A ``concurrent.futures`` pool of ``workers`` fresh processes (``kw``: ``initializer``, ``initargs``) for
    per-image work. loky's (joblib's) processes, unlike the standard library's ``spawn``, do not run the
    caller's ``__main__`` script again: ``ds.fit`` works from a script without an ``if __name__ == "__main__":``
    guard, where each spawned worker would start the same run again."""
    from joblib.externals.loky import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, **kw)


def available_cores() -> int:
    """Cores this process may use; under torchrun, its share of them (LOCAL_WORLD_SIZE processes per node)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def _timed(fit: FitFn, job: FoldJob) -> tuple[tuple, float]:
    t0 = time.perf_counter()
    out = fit(job)
    return out, time.perf_counter() - t0


def _on_worker(job: FoldJob, fit: FitFn) -> tuple[tuple | DermstackError, float, str]:
    """One job on a Dask worker; bad input is returned, not raised, as it fails alike on every retry."""
    from distributed import get_worker

    try:
        return *_timed(fit, job), get_worker().address
    except DermstackError as e:
        return e, 0.0, get_worker().address


@dataclass
class DaskJobs:
    """Each fold x seed job a task on the Dask cluster of ``client``. A job whose worker dies is run
    again on another worker (Dask's ``allowed-failures``), one that raises is retried ``retries``
    times (not for a DermstackError); a lost scheduler is a DataError naming its address, and so is a
    cluster left without a worker for ``worker_wait`` seconds (said as soon as it is seen)."""

    client: object
    retries: int = 1
    worker_wait: float = 120.0
    address: str = field(init=False)

    def __post_init__(self):
        self.address = self.client.scheduler.address

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        with quiet_distributed():
            self.client.close()

    def describe(self) -> dict:
        return {"executor": "dask", "scheduler": self.address}

    def run(self, fit: FitFn, jobs: list[FoldJob]) -> Iterator[tuple[FoldJob, tuple, float, str]]:
        from distributed import wait
        from distributed.scheduler import KilledWorker

        futures = self.client.map(partial(_on_worker, fit=fit), jobs, retries=self.retries, pure=False)
        job_of = {f.key: j for f, j in zip(futures, jobs)}
        pending, idle_since = list(futures), None
        try:
            with quiet_distributed():
                while pending:
                    try:
                        with self.client.as_current():
                            finished, not_done = wait(pending, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
                    except TimeoutError:
                        if self.client.status != "running":
                            raise
                        idle_since = self._without_workers(idle_since)
                        continue
                    idle_since, pending = None, list(not_done)
                    for future in finished:
                        out, seconds, worker = future.result()
                        if isinstance(out, DermstackError):
                            raise out
                        yield job_of[future.key], out, seconds, worker
        except KilledWorker as e:
            raise DataError(f"a fold x seed job killed every Dask worker it ran on ({e}): see the workers' logs") from None
        except (OSError, TimeoutError, CancelledError) as e:
            if self.client.status == "running" and not isinstance(e, CancelledError):
                raise  # the job's own error
            why = (str(e).splitlines() or [""])[0]
            raise DataError(f"lost the Dask scheduler at {self.address} ({type(e).__name__}: {why}); "
                            f"{KEPT}") from None
        finally:
            with quiet_distributed():
                self.client.cancel(futures)

    def _without_workers(self, since: float | None) -> float | None:
        """None while the cluster has a worker; else since when it has had none (said the first time),
        and a DataError once that is longer than ``worker_wait``."""
        if self.client.nthreads():
            return None
        now = time.monotonic()
        if since is None:
            log.warning("the Dask scheduler at %s has no workers now: the jobs wait for one, up to %g s ([cv] dask_wait)",
                        self.address, self.worker_wait)
            return now
        if now - since > self.worker_wait:
            raise DataError(f"the Dask scheduler at {self.address} has had no workers for {self.worker_wait:g} s "
                            f"([cv] dask_wait); start workers (`dask worker {self.address}`), then run again: {KEPT}")
        return since


#: how often a job loop looks at the cluster while no job finishes
POLL_SECONDS = 1.0
#: what a run keeps when the cluster goes
KEPT = "the models finished so far are kept: run again to resume"
#: Environment variable with the scheduler address (``tcp://host:8786``) used when none is configured.
DASK_ADDRESS_ENV = "DERMSTACK_DASK_ADDRESS"


def connect_jobs(address: str | None, timeout: str | None = None, worker_wait: float = WORKER_WAIT) -> DaskJobs | LocalJobs:
    """The executor for a scheduler ``address`` (else ``$DERMSTACK_DASK_ADDRESS``; neither: this process),
    connected by :func:`dask_client`."""
    address = address or os.environ.get(DASK_ADDRESS_ENV)
    if not address:
        return LocalJobs()
    return DaskJobs(dask_client(address, timeout, worker_wait), worker_wait=worker_wait)
