"""The ``mlp`` kind beside the linear probe on the same inputs (full lite0 embeddings + table
features, the same grouped folds): OOF metrics and fit time of each model stage.

  .venv/bin/python benchmarks/mlp_vs_probe.py [--data ../shared/data] [--out runs/mlp_vs_probe]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

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
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = args.out / "config.toml"
    cfg.write_text(CONFIG.format(data=args.data.resolve()))
    run = args.out / "run"
    subprocess.run([sys.executable, "-m", "dermstack.cli", "run", str(cfg), "--out", str(run)], check=True)
    metrics = json.loads((run / "metrics.json").read_text())
    print(f"{'model':10} {'pauc_tpr80':>10} {'roc_auc':>8} {'brier':>7} {'fit s':>7}")
    for name, m in metrics["models"].items():
        seconds = json.loads((run / "stages" / f"model-{name}.json").read_text()).get("seconds")
        print(f"{name:10} {m['pauc_tpr80']:>10.4f} {m['roc_auc']:>8.4f} {m.get('brier', float('nan')):>7.4f} {seconds:>7.1f}")


if __name__ == "__main__":
    main()
