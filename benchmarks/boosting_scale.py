"""Benchmark: the boosting stage on 401,059 synthetic ISIC 2024 lesions.

    flock /tmp/dermstack-heavy.lock .venv/bin/python benchmarks/boosting_scale.py [--rows N] [--kinds lightgbm,xgboost,catboost] [--smoke]

Features: every group but image (metadata, engineered, patient, and a 32-d PCA of random 128-d
"embeddings", as in benchmarks/features_scale.py), built once and cached in
/tmp/dermstack-bench/boosting-<rows>/ with the 5-fold patient-grouped FoldPlan, rebuilt whenever
dermstack's source changes (``built_by.txt``). Each measurement runs
in its own process so that its peak RSS is its own:
  1. cv: `cross_validate` of each library, 5 folds x 1 seed, default sampling (ISIC 2024 winners:
     positives over-sampled to 0.3% of negatives, negatives under-sampled to 100 per positive; early
     stopping watches the validation positives and 100 negatives per positive);
  2. rows: fold 0 of each library fitted twice through the same adapters, with the default
     sampling and on every training row, for the speed-up of the sampling.
``--params '{"xgboost": {"max_bin": 64}}'`` lays params over each library's defaults in the CV;
``--oof DIR`` keeps each library's OOF scores there, and ``--against DIR`` pairs this CV's with
those (a patient bootstrap of the pAUC and ROC-AUC differences, 1,000 resamples): what a faster
default would cost, on the same folds.
``--per-round '{"max_bin": 63}' ...`` replaces both: fold 0 of each library with one thread, set-up
seconds and milliseconds per round with the defaults and with each set of params given.
Prints total seconds, peak RSS, the OOF pAUC (0..0.2; random = 0.02) and the ratios to the budget
(5 min, 8 GiB on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dermstack.testing import SMOKE_HELP, smoke_work  # noqa: E402
from features_scale import CACHE_ROOT, RandomStore, cached, code_key, peak_gib, prepare, stamp  # noqa: E402  (same cached synthetic layout)

BUDGET_S, BUDGET_GIB = 300.0, 8.0
GROUPS = ["metadata", "engineered", "patient", "embedding"]
KINDS = ["lightgbm", "xgboost", "catboost"]


def build_inputs(work: Path, rows: int, layout: Path | None = None) -> None:
    """lesions.parquet, features.parquet and folds.parquet in ``work`` (made once for this code)."""
    key = code_key()
    if cached(work, key):  # stamped only once every file is written
        return
    from dermstack.config import FeaturesConfig
    from dermstack.data.folds import FoldPlan
    from dermstack.data.table import LesionTable
    from dermstack.features.build import build_features

    # a smoke layout (given) needs positives in every fold at a thousand rows
    lesions = prepare(layout, rows, work, positive_rate=0.03) if layout else prepare(CACHE_ROOT / f"isic2024-{rows}", rows, work)
    table = LesionTable.read(lesions)
    t = time.perf_counter()
    build_features(table, FeaturesConfig(image=False), RandomStore(len(table))).write(work / "features.parquet")
    FoldPlan.make(table, n_splits=5, seed=42, task="binary").write(work / "folds.parquet")
    stamp(work, key)
    print(f"built features and folds in {time.perf_counter() - t:.0f} s", file=sys.stderr)


def load(work: Path, features: bool = True):
    """(the FeatureSet, or None without ``features``; the binary task; the FoldPlan) of ``work``."""
    from dermstack.data.folds import FoldPlan
    from dermstack.data.table import LesionTable
    from dermstack.features.featureset import FeatureSet
    from dermstack.task import TaskSpec

    table = LesionTable.read(work / "lesions.parquet")
    fs = FeatureSet.read(work / "features.parquet") if features else None
    return fs, TaskSpec.from_table(table, "binary"), FoldPlan.read(work / "folds.parquet")


def child_cv(work: Path, kinds: list[str], params: dict, per_kind: dict, oof: Path | None) -> dict:
    from dermstack.boosting import cross_validate
    from dermstack.config import ModelConfig

    t0 = time.perf_counter()
    features, task, plan = load(work)
    t_load = time.perf_counter() - t0
    out = {"rows": len(task.image_ids), "positives": int(task.y.sum()), "features": len(features.columns(GROUPS)),
           "load_s": t_load, "models": {}}
    for kind in kinds:
        t = time.perf_counter()
        config = ModelConfig(kind=kind, seeds=[0], features=GROUPS, params={**params, **per_kind.get(kind, {})})
        res = cross_validate(features, task, plan, config, work / "models")
        if oof:
            oof.mkdir(parents=True, exist_ok=True)
            res.oof.frame.write_parquet(oof / f"{kind}.parquet")
        out["models"][kind] = {"seconds": time.perf_counter() - t, "pauc": res.metrics["pauc_tpr80"],
                               "roc_auc": res.metrics["roc_auc"], "ci95": res.metrics["ci95"]["pauc_tpr80"],
                               "fit_rows": res.metrics["fit_rows"][0], "best_iteration": res.metrics["best_iteration"]}
    out["total_s"] = time.perf_counter() - t0
    out["peak_gib"] = peak_gib()
    return out


def paired(work: Path, kinds: list[str], oof: Path, against: Path) -> dict:
    """Each library's OOF pAUC and ROC-AUC in ``oof`` minus those in ``against``, paired by patient."""
    import polars as pl

    from dermstack.clinical.bootstrap import paired_bootstrap

    _, task, plan = load(work, features=False)
    rows = pl.DataFrame({"image_id": task.image_ids})
    patient = rows.join(plan.folds.select("image_id", "group"), on="image_id", how="left")["group"].to_numpy()

    def scores(d: Path, kind: str):
        frame = pl.read_parquet(d / f"{kind}.parquet").group_by("image_id").agg(pl.col("score").mean())
        return rows.join(frame, on="image_id", how="left")["score"].to_numpy()

    out = {}
    for kind in kinds:
        if (against / f"{kind}.parquet").exists():
            now, before = scores(oof, kind), scores(against, kind)
            out[kind] = {m: paired_bootstrap(task.y, now, before, patient, m, n_boot=1000) for m in ("pauc_tpr80", "roc_auc")}
    return out


def fold0(work: Path):
    """(features' pandas matrix, categorical columns, task, fold 0's training rows, its validation rows)."""
    from dermstack.boosting.base import FeatureMatrix
    from dermstack.crossfit import align_rows

    features, task, plan = load(work)
    df = align_rows(features.df, task.image_ids)
    matrix = FeatureMatrix.fit(df, features.columns(GROUPS), features.categorical)
    _, tr, va = next(iter(plan.splits(task.image_ids)))
    return matrix.to_pandas(df), matrix.categorical, task, tr, va


def child_rows(work: Path, kinds: list[str], params: dict) -> dict:
    """Fold 0 of each library: seconds with the default sampling and on every training row."""
    from dermstack.boosting.defaults import DEFAULT_SAMPLING, resolve_params
    from dermstack.boosting.registry import create_adapter
    from dermstack.boosting.sampling import SamplingConfig, resample, stopping_rows
    from dermstack.metrics import pauc_tpr80

    X, categorical, task, tr, va = fold0(work)
    out = {}
    for kind in kinds:
        fit_params = resolve_params(kind, "binary", params)
        for label, sampling in (("sampled", SamplingConfig.from_dict(DEFAULT_SAMPLING, "binary")), ("all_rows", None)):
            idx, stop = resample(tr, task.y, sampling, seed=0), stopping_rows(va, task.y, sampling, seed=0)
            t = time.perf_counter()
            a = create_adapter(kind, "binary", task.classes, fit_params, 0, categorical)
            a.fit(X.iloc[idx], task.y[idx], X.iloc[stop], task.y[stop])
            out[f"{kind}_{label}"] = {"seconds": time.perf_counter() - t, "rows": len(idx), "best_iteration": a.best_iteration,
                                      "pauc_fold0": pauc_tpr80(task.y[va], a.predict_proba(X.iloc[va]))}
    out["peak_gib"] = peak_gib()
    return out


def child_rounds(work: Path, kinds: list[str], params: dict, variants: list[dict], rounds: int) -> dict:
    """Fold 0 of each library, one thread, the default sampling, a fixed number of rounds (no early
    stopping), with the default parameters and each variant: the set-up seconds (a 1-round fit) and the
    milliseconds per further round."""
    from dermstack.boosting.defaults import DEFAULT_SAMPLING, fold_size, resolve_params
    from dermstack.boosting.registry import create_adapter
    from dermstack.boosting.sampling import SamplingConfig, resample, stopping_rows

    X, categorical, task, tr, va = fold0(work)
    sampling = SamplingConfig.from_dict(DEFAULT_SAMPLING, "binary")
    idx, va = resample(tr, task.y, sampling, seed=0), stopping_rows(va, task.y, sampling, seed=0)
    rows, minority = fold_size("binary", task.y[idx])
    out = {}
    for kind in kinds:
        for variant in [{}, *variants]:
            seconds = []
            for n in (1, rounds):
                p = resolve_params(kind, "binary", {**params, **variant, "n_estimators": n, "early_stopping_rounds": n}, rows, minority)
                a = create_adapter(kind, "binary", task.classes, p, 0, categorical, threads=1)
                t = time.perf_counter()
                a.fit(X.iloc[idx], task.y[idx], X.iloc[va], task.y[va])
                seconds.append(time.perf_counter() - t)
            out[f"{kind} {json.dumps(variant) if variant else 'defaults'}"] = {
                "setup_s": seconds[0], "ms_per_round": 1000 * (seconds[1] - seconds[0]) / (rounds - 1), "rows": len(idx)}
    return out


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=401_059)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--skip-rows", action="store_true", help="skip the every-row comparison")
    ap.add_argument("--n-estimators", type=int, default=None, help="at most this many boosting rounds (default: the defaults')")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    ap.add_argument("--per-round", nargs="*", metavar="JSON", default=None,
                    help="instead of the CV: fold 0 of each library, one thread, --rounds rounds, with the defaults and "
                         "each JSON object of params given: set-up seconds and ms per round (what a faster default would change)")
    ap.add_argument("--rounds", type=int, default=60, help="rounds of each --per-round fit")
    ap.add_argument("--params", type=json.loads, default={}, metavar="JSON",
                    help='params laid over each library\'s defaults in the CV, e.g. \'{"xgboost": {"max_bin": 64}}\'')
    ap.add_argument("--oof", type=Path, metavar="DIR", help="write each library's OOF scores to DIR/<library>.parquet")
    ap.add_argument("--against", type=Path, metavar="DIR",
                    help="pair this CV's OOF pAUC and ROC-AUC with those an earlier --oof wrote to DIR")
    ap.add_argument("--child", choices=["cv", "rows", "rounds"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    if args.child:
        params = {"n_estimators": args.n_estimators} if args.n_estimators else {}
        if args.child == "rounds":
            print(json.dumps(child_rounds(args.work, kinds, params, [json.loads(v) for v in args.per_round or []], args.rounds)))
        elif args.child == "cv":
            print(json.dumps(child_cv(args.work, kinds, params, args.params, args.oof)))
        else:
            print(json.dumps(child_rows(args.work, kinds, params)))
        return
    if args.smoke:
        args.rows, args.n_estimators = 600, 20
    capped = ("--n-estimators", str(args.n_estimators)) if args.n_estimators else ()
    work = smoke_work("boosting") if args.smoke else CACHE_ROOT / f"boosting-{args.rows}"
    work.mkdir(parents=True, exist_ok=True)
    build_inputs(work, args.rows, work / "layout" if args.smoke else None)
    if args.per_round is not None:
        rounds = 5 if args.smoke else args.rounds
        res = run_child("--child", "rounds", "--work", str(work), "--kinds", args.kinds, "--rounds", str(rounds),
                        "--per-round", *args.per_round)
        print(f"fold 0 of {args.rows:,} synthetic lesions, default sampling, one thread, {rounds} rounds:")
        base = {}
        for label, m in res.items():
            kind = label.split(" ", 1)[0]
            base.setdefault(kind, m["ms_per_round"])
            print(f"  {label:40s} set-up {m['setup_s']:5.1f} s, {m['ms_per_round']:6.1f} ms per round "
                  f"({m['ms_per_round'] / base[kind]:.2f} of the defaults'), {m['rows']:,} rows")
        return
    if args.against and not args.oof:
        args.oof = work / "oof-latest"  # the scores to pair must be written somewhere
    if args.against and args.oof.resolve() == args.against.resolve():
        ap.error("--oof and --against name the same folder: this CV would overwrite the scores it is paired with")
    kept = ("--params", json.dumps(args.params)) + (("--oof", str(args.oof.resolve())) if args.oof else ())
    cv = run_child("--child", "cv", "--work", str(work), "--kinds", args.kinds, *capped, *kept)
    print(f"boosting on {cv['rows']:,} synthetic lesions ({cv['positives']} positives), {cv['features']} features "
          f"({', '.join(GROUPS)}), 5 folds x {len(kinds)} libraries x 1 seed, default sampling:")
    for kind, m in cv["models"].items():
        print(f"  {kind:9s} {m['seconds']:6.1f} s  OOF pAUC {m['pauc']:.4f} (95% CI {m['ci95'][0]:.4f}-{m['ci95'][1]:.4f}), "
              f"ROC-AUC {m['roc_auc']:.4f}, {m['fit_rows']:,} rows per fit, best iterations {m['best_iteration']}")
    print(f"  total {cv['total_s']:.1f} s (reading inputs {cv['load_s']:.1f} s), peak RSS {cv['peak_gib']:.2f} GiB")
    print(f"  ratio to budget: time {cv['total_s'] / BUDGET_S:.2f} of {BUDGET_S:.0f} s, "
          f"memory {cv['peak_gib'] / BUDGET_GIB:.2f} of {BUDGET_GIB:.0f} GiB")
    if args.against:
        print(f"paired with {args.against} (this CV minus that one, 95% CI over 1,000 patient resamples):")
        pairs = paired(work, kinds, args.oof, args.against)
        for kind in sorted(set(kinds) - set(pairs)):
            print(f"  {kind:9s} no scores of it in {args.against}")
        for kind, by_metric in pairs.items():
            print(f"  {kind:9s} " + "; ".join(f"{m} {r['value_b']:.4f} -> {r['value_a']:.4f}, {r['diff']:+.4f} "
                                             f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" for m, r in by_metric.items()))
    if args.skip_rows:
        return
    rows = run_child("--child", "rows", "--work", str(work), "--kinds", args.kinds, *capped)
    total_s = sum(rows[f"{k}_sampled"]["seconds"] for k in kinds)
    total_all = sum(rows[f"{k}_all_rows"]["seconds"] for k in kinds)
    print("fold 0, default sampling vs every training row:")
    for k in kinds:
        s, a = rows[f"{k}_sampled"], rows[f"{k}_all_rows"]
        print(f"  {k:9s} sampled {s['seconds']:6.1f} s ({s['rows']:,} rows, pAUC {s['pauc_fold0']:.4f}) | every row "
              f"{a['seconds']:6.1f} s ({a['rows']:,} rows, pAUC {a['pauc_fold0']:.4f}) | speed-up {a['seconds'] / s['seconds']:.1f}x")
    print(f"  all libraries: speed-up of the default sampling {total_all / total_s:.1f}x (peak RSS {rows['peak_gib']:.2f} GiB)")


if __name__ == "__main__":
    main()
