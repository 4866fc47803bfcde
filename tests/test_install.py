"""dermstack as users install it: the wheel carries the package data, installs offline from a
wheelhouse folder beside the user's own torch (which it leaves alone), and runs from outside the
source tree; the dependency lower bounds are the ones constraints-lower.txt pins.

The fresh environment shares the test environment's installed dependencies through a path entry
(a ``.pth`` line), as a Kaggle image's site-packages is shared: such an entry adds the folder to
``sys.path`` without running the ``.pth`` files inside it, so the editable install of this checkout
stays inactive there, and the smoke run checks that no module came from the checkout.
"""
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dermstack"

#: run inside the fresh environment from a folder outside the checkout: a tiny run through the CLI,
#: the Python API on it (load, metrics, oof, fit again, predict a pandas DataFrame, submit, explain),
#: then where every loaded module came from
SMOKE = """
import importlib.resources, json, sys
from pathlib import Path
import polars as pl
import dermstack as ds
from dermstack.cli import cli
cli.main(["run", sys.argv[1], "--out", sys.argv[2]], standalone_mode=False)
run = ds.load(sys.argv[2])
rows = run.oof["image_id"].head(3).to_list()
assert run.metrics["task"] == "binary" and run.oof.height > 0
assert ds.fit(sys.argv[1], out=sys.argv[2]).metrics["oof"] == run.metrics["oof"]  # the CLI's run, every stage current
test = pl.read_parquet(Path(sys.argv[2]) / "lesions.parquet").filter(pl.col("split") == "test").drop("image_id")
scores = run.predict(test.to_pandas())
assert scores.height == test.height and "calibrated" in scores.columns
assert run.submit("submission.csv", format="isic2024", predictions=scores).read_text().startswith("isic_id,target")
why = run.explain(rows[0])
assert abs(why.base + why.contributions["contribution"].sum() - why.score) < 1e-6
demo = (importlib.resources.files("dermstack") / "configs" / "demo.toml").read_text()
files = [str(getattr(m, "__file__", None) or "") for m in list(sys.modules.values())]
print(json.dumps({"files": files, "demo": "[data]" in demo}))
"""

CONFIG = """
[data]
format = "synthetic-isic2024"
lesions = 120
test_lesions = 8
positive_rate = 0.1
image_size = 16

[cv]
n_splits = 3

[[models]]
kind = "lightgbm"
params = { n_estimators = 20 }
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (found,) = out.glob("dermstack-*.whl")
    return found


def test_wheel_carries_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert "dermstack/configs/demo.toml" in data and "dermstack/data/synth_marginals.json" in data
    assert not [d for d in data if d not in names], "package data missing from the wheel"
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]


def fresh_env(where: Path) -> Path:
    """A new venv whose ``sys.path`` also holds this environment's installed dependencies (a folder of
    links to its site-packages entries), but not this checkout's editable dermstack."""
    shared = where.parent / "shared-site-packages"
    shared.mkdir()
    for folder in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]):
        for entry in Path(folder).iterdir():
            if not entry.name.lower().startswith(("dermstack", "__editable__")) and entry.suffix != ".pth":
                (shared / entry.name).symlink_to(entry)
    venv.create(where, with_pip=False)
    py = where / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "shared_dependencies.pth").write_text(f"{shared}\n")
    return py


def pip_offline(*args: str) -> subprocess.CompletedProcess:
    """pip as a notebook without internet runs it: no configuration of this machine (its find-links, its caps)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_offline_install_beside_the_users_torch_runs_outside_the_checkout(wheel, tmp_path):
    # the Kaggle layout: wheels in an attached dataset folder, no index, torch already in the image
    house = tmp_path / "input" / "dermstack-wheelhouse"
    house.mkdir(parents=True)
    (house / wheel.name).write_bytes(wheel.read_bytes())
    py = fresh_env(tmp_path / "env")
    torch_before = subprocess.run([py, "-c", "import torch; print(torch.__file__, torch.__version__)"],
                                  capture_output=True, text=True, check=True).stdout
    done = pip_offline("--python", str(py), "install", "--no-index", "--find-links", str(house), "dermstack")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully installed dermstack-" in done.stdout
    assert "torch" not in done.stdout.split("Successfully installed")[1], done.stdout
    torch_after = subprocess.run([py, "-c", "import torch; print(torch.__file__, torch.__version__)"],
                                 capture_output=True, text=True, check=True).stdout
    assert torch_after == torch_before

    work = tmp_path / "work"
    work.mkdir()
    (work / "tiny.toml").write_text(CONFIG)
    run = subprocess.run([py, "-c", SMOKE, "tiny.toml", "run"], cwd=work, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["demo"], "the packaged demo config is not readable"
    from_checkout = [f for f in seen["files"] if f.startswith(str(ROOT))]
    assert not from_checkout, from_checkout[:5]
    dermstack_files = [f for f in seen["files"] if "/dermstack/" in f]
    assert dermstack_files and all(f.startswith(str(tmp_path / "env")) for f in dermstack_files)
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert metrics["oof_model"] == "lightgbm" and 0 <= metrics["oof"]["roc_auc"] <= 1

    kinds = subprocess.run([tmp_path / "env" / "bin" / "dermstack", "kinds"], cwd=work, capture_output=True, text=True, timeout=120)
    assert kinds.returncode == 0 and "lightgbm:" in kinds.stdout, kinds.stderr


def test_lower_bounds_are_the_ones_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for text in project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]:
        req = Requirement(text)
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1 and not [s for s in req.specifier if s.operator == "=="], f"{text}: a range with one lower bound"
        declared[req.name] = lower[0]
    pinned = {}
    for line in (ROOT / "constraints-lower.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name] = version
    assert pinned == declared


def test_the_lock_pins_every_dependency_in_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    lock = {Requirement(n).name.lower().replace("_", "-"): v for n, v in lock.items()}
    for text in project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]:
        req = Requirement(text)
        version = lock.get(req.name.lower())
        assert version is not None, f"{req.name} is not in constraints.txt"
        assert req.specifier.contains(version, prereleases=True), f"constraints.txt: {req.name}=={version} is outside {req}"


def test_wheelhouse_leaves_out_only_what_the_users_torch_needs():
    """scripts/wheelhouse.py walks dermstack's requirements from pip's report: torch, torchvision and
    what only they need stay out of the folder; what dermstack needs too (xgboost's NCCL) stays in."""
    spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "scripts" / "wheelhouse.py")
    wheelhouse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheelhouse)

    def dist(name: str, *requires: str) -> dict:
        return {"metadata": {"name": name, "version": "1.0", "requires_dist": list(requires)}}

    report = [
        dist("dermstack", "torch>=2.13", "torchvision>=0.28", "xgboost>=2.1", "dask[distributed]>=2024.8",
             "pytest>=8; extra == 'dev'"),
        dist("torch", "filelock", "nvidia-cublas; platform_system == 'Linux'", "triton"),
        dist("torchvision", "torch", "pillow"),
        dist("xgboost", "numpy", "nvidia-nccl-cu12; platform_system == 'Linux'"),
        dist("dask", "toolz", "distributed==1.0; extra == 'distributed'", "pandas; extra == 'dataframe'"),
        dist("distributed", "dask==1.0", "tornado"),
        *(dist(n) for n in ("filelock", "nvidia-cublas", "triton", "pillow", "numpy", "nvidia-nccl-cu12",
                            "toolz", "tornado", "pandas", "pytest")),
    ]
    items = {d["metadata"]["name"]: d for d in report}
    shared = {"xgboost", "numpy", "nvidia-nccl-cu12", "dask", "distributed", "toolz", "tornado"}
    assert wheelhouse.needed(items, wheelhouse.TORCH_STACK) == shared
    assert wheelhouse.needed(items, ()) == shared | {"torch", "torchvision", "filelock", "nvidia-cublas", "triton", "pillow"}
