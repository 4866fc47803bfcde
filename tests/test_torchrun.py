"""torchrun jobs on CPU (gloo), launched as a user would: extraction by 2 ranks equals one process,
a failed rank is named on every rank and a rerun resumes from the stores written; a CNN trained by
2 ranks (DDP) is saved once, like a one-process run, and scores like it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dermstack import distributed
from dermstack.cnn.train import cross_validate_cnn
from dermstack.errors import ConfigError
from dermstack.extract import EmbeddingStore, ExtractSettings, extract_embeddings
from dermstack.extract.runner import rank_path
from ensembles_toy import setup, tiny_cnn
from extract_fixtures import TEST_MODEL, make_table

pytestmark = pytest.mark.slow  # the heavy tests: `make test` runs them, `make test-fast` does not

SRC = Path(__file__).resolve().parents[1] / "src"


def torchrun(args: list[str], nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N dermstack ARGS`` with this checkout's dermstack."""
    entry = Path(sys.executable).with_name("dermstack")
    program = [str(entry)] if entry.exists() else ["-m", "dermstack.cli"]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
                        "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *program, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_torchrun_extraction_equals_one_process_and_a_failed_rank_is_named(tmp_path, images, test_weights):
    ids, refs = images
    late = tmp_path / "late.jpg"  # the 4th image (rank 1's 2nd) is not there yet: rank 1 fails under --strict
    refs = refs[:3] + [str(late)] + refs[4:]
    lesions = make_table(ids, refs).write(tmp_path / "lesions.parquet")
    out = tmp_path / "emb.h5"
    args = ["extract", "run", str(lesions), "--backbone", TEST_MODEL, "--weights", f"{TEST_MODEL}={test_weights}",
            "--out", str(out), "--image-size", "64", "--batch-size", "2", "--streams", "1", "--precision", "fp32", "--strict"]

    failed = torchrun(args)
    assert failed.returncode != 0 and not out.exists()
    assert "failed on torchrun rank 1" in failed.stderr and "run the same command again to resume" in failed.stderr
    assert EmbeddingStore(rank_path(out, (0, 2))).is_complete(TEST_MODEL)  # rank 0 finished its share

    shutil.copy(images[1][3], late)
    done = torchrun(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "7 already done" in done.stdout  # rank 0 resumed (its share is 7 of the 14 images)

    one = tmp_path / "one.h5"
    extract_embeddings(make_table(ids, refs), [TEST_MODEL], one,
                       ExtractSettings(image_size=64, batch_size=2, streams=1, workers=0, precision="fp32",
                                       weights={TEST_MODEL: str(test_weights)}))
    a, b = EmbeddingStore(one), EmbeddingStore(out)
    assert sorted(b.image_ids(TEST_MODEL)) == sorted(ids) and b.is_complete(TEST_MODEL)
    np.testing.assert_allclose(b.read(TEST_MODEL, ids), a.read(TEST_MODEL, ids), rtol=1e-5, atol=1e-5)
    assert b.info(TEST_MODEL)["recipe"] == a.info(TEST_MODEL)["recipe"]


def test_ranks_that_disagree_are_refused(monkeypatch):
    world = distributed.World(0, 2, 0)
    monkeypatch.setattr(distributed, "gather", lambda value, w, what: [value, value | {"out": "b.h5"}])
    with pytest.raises(ConfigError, match=r"disagree on the job \(out: rank 0 'a.h5', rank 1 'b.h5'\)"):
        distributed.agree(world, "the job", {"out": "a.h5", "backbones": ["x"]})


def test_torchrun_cnn_trains_one_model_across_two_ranks(tmp_path):
    torch.set_num_threads(1)
    table, task, plan = setup(tmp_path / "img", "binary", n=90)
    lesions, folds = table.write(tmp_path / "lesions.parquet"), plan.write(tmp_path / "folds.parquet")
    model = tiny_cnn(epochs=4, samples_per_epoch=192)
    one = cross_validate_cnn(table, task, plan, model, tmp_path / "one", progress=False)

    params = [a for k, v in model.params.items() for a in ("--param", f"{k}={json.dumps(v)}")]
    done = torchrun(["ensembles", "cnn", str(lesions), "--folds", str(folds), "--out", str(tmp_path / "two"),
                     "--backbone", model.backbone, "--epochs", "4", "--image-size", "32", *params])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("roc_auc=") == 1  # rank 0 reports
    two = json.loads((tmp_path / "two" / "cnn" / "model.json").read_text())
    assert two["world_size"] == 2 and json.loads((tmp_path / "one" / "cnn" / "model.json").read_text())["world_size"] == 1
    assert sorted(p.name for p in (tmp_path / "two" / "cnn").iterdir()) == sorted(p.name for p in (tmp_path / "one" / "cnn").iterdir())
    auc_two = json.loads((tmp_path / "two" / "cnn" / "metrics.json").read_text())["roc_auc"]
    assert auc_two > 0.75 and abs(auc_two - one.metrics["roc_auc"]) < 0.1, (auc_two, one.metrics["roc_auc"])
