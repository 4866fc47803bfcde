"""benchmarks/dask_scale.py --smoke: a real `dask scheduler` + 2 `dask worker` processes against one
process (same scores), and torchrun extraction with 1 and 2 processes, end to end."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the heavy tests: `make test` runs them, `make test-fast` does not

REPO = Path(__file__).resolve().parents[1]


def test_dask_scale_smoke(shared_data):
    env = os.environ | {"PYTHONPATH": str(REPO / "src"), "DERMSTACK_SHARED_DATA": str(shared_data)}
    if not Path(sys.executable).with_name("dask").exists():
        pytest.skip("the dask command is not installed beside this Python")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dask_scale.py"), "--smoke", "--kinds", "lightgbm,xgboost"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "dask (2 workers x 1 thread)" in text and "workers" in text and "ratio local / dask wall" in text
    assert text.count("max |score difference| 0.0e+00") == 2  # the cluster's scores are the local ones
    assert "projected wall with  4 workers" in text and "projected wall with 16 workers" in text
    assert "torchrun extraction, 1 process(es)" in text and "torchrun extraction, 2 process(es)" in text
