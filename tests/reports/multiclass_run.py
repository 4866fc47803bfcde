"""Small finished multiclass and multi-label run directories for the report tests, made by the run
orchestration itself (``dermstack.run.Run`` with a RunConfig read from TOML): folds, features,
LightGBM/XGBoost/CatBoost cross-validation, the mean ensemble and the run's outputs. Only the
ingest stage is replaced: the LesionTable is made with numpy, with one planted signal feature per class."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from dermstack.config import RunConfig
from dermstack.data.table import LesionTable, TableMeta, finalize_frame
from dermstack.run import Run

CLASSES = ["A", "B", "C"]
#: multi-label only: a class whose positives are one patient's lesions, so the fold holding that patient
#: trains on no positive of it (the boosting stage stores a constant score instead of a booster)
RARE = "D"
#: class -> the metadata feature that carries its signal (the other numeric features are noise)
SIGNAL = {"A": "clin_size_long_diam_mm", "B": "age_approx", "C": "color_contrast"}
NOISE = ["noise_0", "noise_1"]
CATEGORICAL = ["sex", "anatom_site_general"]
SITES = ["head/neck", "upper extremity", "lower extremity", "posterior torso", "anterior torso"]
N_PATIENTS, PER_PATIENT, N_TEST = 100, 4, 12
LIBRARIES = ["lightgbm", "xgboost", "catboost"]

CONFIG = """
[data]
# PreparedRun replaces the ingest stage by the signal table; the format and path only have to be given
format = "isic2024"
path = "."
task = "{task}"

[cv]
n_splits = 3
seed = 1

[extract]
backbones = []

[features]
metadata = true
engineered = false
patient = false
image = false
embedding = false

[[models]]
kind = "lightgbm"
params = {{ n_estimators = 60, early_stopping_rounds = 15, threads = 1, num_leaves = 7, min_data_in_leaf = 10 }}

[[models]]
kind = "xgboost"
params = {{ n_estimators = 60, early_stopping_rounds = 15, threads = 1, max_depth = 3, learning_rate = 0.1 }}

[[models]]
kind = "catboost"
params = {{ n_estimators = 60, early_stopping_rounds = 15, threads = 1, depth = 3, learning_rate = 0.1 }}

[ensemble]
method = "mean"
"""


def signal_table(task: str, seed: int = 0) -> LesionTable:
    """Lesions of 100 patients (plus test rows): multiclass ``label`` is the argmax of 2.5 x each class's
    standardised signal feature plus Gumbel noise; multi-label ``y_<class>`` is that logit plus
    logistic noise above 1.5, plus the rare class ``D`` (patient IP_0000's lesions, no signal). ``C`` is
    the table's positive class (the one single-class plots show)."""
    rng = np.random.default_rng(seed)
    n = N_PATIENTS * PER_PATIENT + N_TEST
    z = rng.normal(size=(n, len(CLASSES)))
    logit = 2.5 * z
    cols: dict[str, object] = {
        "image_id": [f"ISIC_{i:07d}" for i in range(n)],
        "patient_id": [f"IP_{i // PER_PATIENT:04d}" for i in range(n)],
        "split": ["test" if i >= n - N_TEST else "train" for i in range(n)],
        "image_type": rng.choice(["TBP tile: close-up", "dermoscopic"], n),
        "skin_tone": rng.choice([12, 34, 56], n),
        "clin_size_long_diam_mm": 5.0 + 2.0 * z[:, 0],
        "age_approx": 55.0 + 12.0 * z[:, 1],
        "color_contrast": z[:, 2],
        "sex": rng.choice(["male", "female"], n),
        "anatom_site_general": rng.choice(SITES, n),
        **{name: rng.normal(size=n) for name in NOISE},
    }
    train = np.array(cols["split"]) == "train"
    if task == "multiclass":
        label = np.array(CLASSES)[(logit + rng.gumbel(size=logit.shape)).argmax(axis=1)]
        cols["label"] = np.where(train, label, None)
    elif task == "multilabel":
        onehot = (logit + rng.logistic(size=logit.shape) > 1.5).astype(np.int8)
        cols.update({f"y_{c}": onehot[:, k] for k, c in enumerate(CLASSES)})
        cols[f"y_{RARE}"] = (np.arange(n) < PER_PATIENT).astype(np.int8)
    else:
        raise ValueError(task)
    features = [*SIGNAL.values(), *NOISE, *CATEGORICAL]
    classes = CLASSES + ([RARE] if task == "multilabel" else [])
    meta = TableMeta("numpy-made", classes=classes, feature_columns=features, categorical_columns=CATEGORICAL,
                     positive_classes=["C"])
    return LesionTable(finalize_frame(pl.DataFrame(cols)), meta)


class PreparedRun(Run):
    """The run orchestration with the ingest stage replaced by a ready LesionTable."""

    def __init__(self, cfg: RunConfig, run_dir: Path, table: LesionTable):
        super().__init__(cfg, run_dir)
        self.table = table

    def ingest(self) -> LesionTable:
        self.table.write(self.paths.lesions)
        return LesionTable.read(self.paths.lesions)


def build_run(root: Path, task: str) -> Path:
    """Write the TOML config, run every stage into ``root/run`` and return the run directory."""
    config = root / f"{task}.toml"
    config.write_text(CONFIG.format(task=task))
    run_dir = root / "run"
    PreparedRun(RunConfig.from_toml(config), run_dir, signal_table(task)).execute()
    return run_dir
