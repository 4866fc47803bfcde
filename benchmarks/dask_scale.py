"""Benchmark: cross-validation jobs on a Dask cluster of real processes vs this process, and torchrun extraction.

    flock /tmp/dermstack-heavy.lock .venv/bin/python benchmarks/dask_scale.py [--rows N] [--smoke]

1. Boosters: 401,059 synthetic lesions (the inputs of benchmarks/boosting_scale.py, cached in
   /tmp/dermstack-bench/boosting-<rows>/), 5 folds x LightGBM/XGBoost/CatBoost x 1 seed, first in one
   process (`LocalJobs`), then on a cluster the script starts: `dask scheduler` + `dask worker` x
   ``--workers`` (one process, one thread each), the fold x seed jobs as tasks (`DaskJobs`), the
   workers reading the features file by path. Prints each side's wall time and peak RSS (the
   client's, each worker's), the ratio, whether the scores agree, and the wall time projected for
   4 and 16 workers from the measured per-job seconds (longest-job-first onto N workers, the
   libraries one after another as the run does).
2. Extraction: ``torchrun --standalone --nproc_per_node P dermstack extract run`` on the first
   ``--images`` HAM10000 dev images with P = 1 and 2 (CPU, gloo), img/s of the whole command.
``--smoke``: 2,000 lesions, 20 trees, 8 images at 64 px, for the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dermstack.testing import shared_data_dir, smoke_work

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boosting_scale import GROUPS, KINDS, build_inputs, load  # noqa: E402  (same cached synthetic inputs)
from features_scale import CACHE_ROOT  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HAM = (shared_data_dir() or REPO.parent / "shared" / "data") / "ham10000-dev"


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def env() -> dict:
    """This checkout's dermstack for every process the script starts."""
    return os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}


def tool(name: str) -> str:
    """An executable of this venv (dask, torchrun, dermstack)."""
    return str(Path(sys.executable).with_name(name))


# -- 1. boosters ---------------------------------------------------------------------------
def child_cv(work: Path, kinds: list[str], address: str | None, params: dict) -> dict:
    """One side of the comparison in its own process (its peak RSS is its own)."""
    from dermstack.boosting import cross_validate
    from dermstack.config import ModelConfig
    from dermstack.jobs import connect_jobs

    t0 = time.perf_counter()
    features, task, plan = load(work)
    out = {"rows": len(task.image_ids), "load_s": time.perf_counter() - t0, "models": {}}
    with connect_jobs(address) as jobs:
        for kind in kinds:
            t = time.perf_counter()
            model = ModelConfig(kind=kind, seeds=[0], features=GROUPS, params=params)
            res = cross_validate(features, task, plan, model, work / ("models-dask" if address else "models-local"), executor=jobs)
            out["models"][kind] = {"seconds": time.perf_counter() - t, "pauc": res.metrics["pauc_tpr80"],
                                   "job_seconds": list(res.metrics["executor"]["job_seconds"].values()),
                                   "workers": sorted(set(res.metrics["executor"].get("workers", {}).values())),
                                   "oof": res.oof.frame.sort("image_id")["score"].to_list()[:2000]}
        if address:
            out["worker_peak_gib"] = jobs.client.run(peak_gib)
    out["total_s"] = time.perf_counter() - t0
    out["peak_gib"] = peak_gib()
    return out


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], check=True, stdout=subprocess.PIPE, text=True, env=env())
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start_cluster(tmp: Path, n_workers: int) -> tuple[str, list[subprocess.Popen]]:
    """`dask scheduler` and ``n_workers`` `dask worker` processes (1 thread each) on 127.0.0.1."""
    sched_file = tmp / "scheduler.json"
    log = open(tmp / "cluster.log", "w")
    procs = [subprocess.Popen([tool("dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], stdout=log, stderr=log, env=env())]
    deadline = time.time() + 60
    while not sched_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    for i in range(n_workers):
        procs.append(subprocess.Popen([tool("dask"), "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                                       "--nworkers", "1", "--memory-limit", "0", "--no-dashboard", "--name", f"w{i}",
                                       "--local-directory", str(tmp / f"w{i}")], stdout=log, stderr=log, env=env()))
    address = json.loads(sched_file.read_text())["address"]
    from distributed import Client

    with Client(address, timeout="60s") as c:
        c.wait_for_workers(n_workers, timeout=120)
    return address, procs


def lpt_makespan(seconds: list[float], workers: int) -> float:
    """Wall time of jobs placed longest first onto the least loaded of ``workers``."""
    loads = [0.0] * workers
    for s in sorted(seconds, reverse=True):
        loads[loads.index(min(loads))] += s
    return max(loads)


def boosters(rows: int, kinds: list[str], n_workers: int, params: dict, smoke: bool = False) -> None:
    """The boosters' CV locally and on the cluster; ``smoke``: in a fresh folder that is removed afterwards,
    on boosting_scale's smoke layout (positives in every fold), not the cached full-size inputs."""
    work = smoke_work("dask") if smoke else CACHE_ROOT / f"boosting-{rows}"
    work.mkdir(parents=True, exist_ok=True)
    build_inputs(work, rows, work / "layout" if smoke else None)
    extra = ["--params", json.dumps(params)]
    local = run_child("--child", "--work", str(work), "--kinds", ",".join(kinds), *extra)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        address, procs = start_cluster(Path(d), n_workers)
        start_s = time.perf_counter() - t
        try:
            dask = run_child("--child", "--work", str(work), "--kinds", ",".join(kinds), "--address", address, *extra)
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                p.wait(30)
    print(f"{local['rows']:,} synthetic lesions, 5 folds x {', '.join(kinds)} x 1 seed, {len(GROUPS)} feature groups")
    print(f"  local (one process):         {local['total_s']:7.1f} s, peak RSS {local['peak_gib']:.2f} GiB")
    worker_rss = ", ".join(f"{v:.2f}" for v in dask["worker_peak_gib"].values())
    print(f"  dask ({n_workers} workers x 1 thread): {dask['total_s']:7.1f} s (+ {start_s:.1f} s starting the cluster), "
          f"peak RSS client {dask['peak_gib']:.2f} GiB, workers {worker_rss} GiB")
    print(f"  ratio local / dask wall: {local['total_s'] / dask['total_s']:.2f}")
    for kind in kinds:
        lm, dm = local["models"][kind], dask["models"][kind]
        same = max(abs(a - b) for a, b in zip(lm["oof"], dm["oof"]))
        print(f"  {kind:9s} local {lm['seconds']:6.1f} s, dask {dm['seconds']:6.1f} s on {len(dm['workers'])} workers, "
              f"OOF pAUC {lm['pauc']:.4f} / {dm['pauc']:.4f}, max |score difference| {same:.1e}")
    jobs = {k: dask["models"][k]["job_seconds"] for k in kinds}
    fixed = dask["load_s"]
    for n in (n_workers, 4, 16):
        wall = fixed + sum(lpt_makespan(s, n) for s in jobs.values())
        print(f"  projected wall with {n:2d} workers: {wall:7.1f} s (reading inputs {fixed:.1f} s + jobs longest-first; "
              f"measured per-job seconds, no scheduling overhead)")


# -- 2. torchrun extraction ----------------------------------------------------------------
def extraction(n_images: int, image_size: int | None) -> None:
    from dermstack.data.readers import ingest

    table, _ = ingest("ham10000", HAM)
    with tempfile.TemporaryDirectory() as d:
        lesions = table.__class__(table.df.head(n_images), table.meta).write(Path(d) / "lesions.parquet")
        for nproc in (1, 2):
            out = Path(d) / f"emb{nproc}.h5"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", tool("dermstack"),
                   "extract", "run", str(lesions), "--backbone", "efficientnet_lite0", "--out", str(out)]
            if image_size:
                cmd += ["--image-size", str(image_size)]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, env=env() | {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - t
            print(f"torchrun extraction, {nproc} process(es), {n_images} HAM10000 images, efficientnet_lite0"
                  f"{f' at {image_size} px' if image_size else ''}: {wall:.1f} s, {n_images / wall:.1f} img/s (whole command)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=401_059)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--images", type=int, default=512, help="HAM10000 dev images for the torchrun extraction (0: skip)")
    ap.add_argument("--smoke", action="store_true", help="2,000 lesions, 20 trees, 8 images at 64 px (seconds)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    if args.child:
        print(json.dumps(child_cv(args.work, kinds, args.address, json.loads(args.params))))
        return
    if args.smoke:
        args.rows, args.images = 2_000, 8
    boosters(args.rows, kinds, args.workers, {"n_estimators": 20, "threads": 1} if args.smoke else {}, args.smoke)
    if args.images:
        extraction(args.images, 64 if args.smoke else None)


if __name__ == "__main__":
    main()
