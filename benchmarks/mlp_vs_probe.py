"""The ``mlp`` kind beside the linear probe on the same inputs (full lite0 embeddings + table
features, the same grouped folds): OOF metrics and fit time of each model stage.

  .venv/bin/python benchmarks/mlp_vs_probe.py [--data ../shared/data] [--out runs/mlp_vs_probe]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dermstack.config import RunConfig
from dermstack.run import Run
from dermstack.testing import SMOKE_HELP, smoke_dataset, smoke_work

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """[data]
format = "ham10000"
path = "{data}/ham10000-dev"

[extract]
backbones = ["efficientnet_lite0"]

[[models]]
kind = "logistic"

[[models]]
kind = "mlp"

[ensemble]
method = "none"
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "mlp_vs_probe")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    out = smoke_work("mlp_vs_probe") if args.smoke else args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(CONFIG.format(data=args.data.resolve()))
    cfg = RunConfig.from_toml(out / "config.toml")
    if args.smoke:
        cfg = smoke_dataset(cfg, out / "data")
    run = out / "run"
    Run(cfg, run).execute()
    metrics = json.loads((run / "metrics.json").read_text())
    print(f"{'model':10} {'pauc_tpr80':>10} {'roc_auc':>8} {'brier':>7} {'fit s':>7}")
    for name, m in metrics["models"].items():
        seconds = json.loads((run / "stages" / f"model-{name}.json").read_text()).get("seconds")
        print(f"{name:10} {m['pauc_tpr80']:>10.4f} {m['roc_auc']:>8.4f} {m.get('brier', float('nan')):>7.4f} {seconds:>7.1f}")


if __name__ == "__main__":
    main()
