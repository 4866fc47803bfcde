"""`dermstack run` and `dermstack demo`: the pipeline (:mod:`dermstack.pipeline`) with its
``[cv] repeats`` child runs (:mod:`dermstack.repeats`), and what the command prints.
:func:`fit_run` is the one way in, for these commands and for :func:`dermstack.fit`."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import click

from dermstack.clinical_report import submitted_model, summary_lines
from dermstack.config import RunConfig
from dermstack.data.table import LesionTable
from dermstack.errors import ConfigError
from dermstack.pipeline import Pipeline
from dermstack.repeats import repeat_cv

PACKAGE_CONFIGS = Path(__file__).parent / "configs"


class Run(Pipeline):
    """One pipeline run into ``run_dir``, and its ``[cv] repeats`` on new fold seeds."""

    def repeat(self, table: LesionTable, store, features) -> list[dict]:
        return repeat_cv(self, table, store, features)


#: what :func:`fit_run` takes as a config: a TOML file, its parsed tables, or a checked RunConfig
ConfigLike = str | os.PathLike | Mapping | RunConfig


def read_config(config: ConfigLike) -> tuple[RunConfig, Path | None]:
    """(the RunConfig, its TOML file: messages name it, and a relative ``[data] path`` is also looked up in its folder)."""
    if isinstance(config, RunConfig):
        return config, None
    if isinstance(config, Mapping):
        return RunConfig.from_dict(dict(config)), None
    if isinstance(config, (str, os.PathLike)):
        return RunConfig.from_toml(config), Path(config)
    raise ConfigError(f"config: give a TOML file's path, a dict of its tables or a RunConfig, not {type(config).__name__}")


def fit_run(config: ConfigLike, out: str | Path, force: bool = False, dask_address: str | None = None) -> dict:
    """Run the pipeline of ``config`` into the run directory ``out`` and return its ``metrics.json``;
    stages whose inputs are unchanged since a previous run into ``out`` are skipped unless ``force``.
    ``dask_address`` overrides ``[cv] dask_address``. The caller's config is never changed."""
    cfg, config_file = read_config(config)
    if dask_address:
        cfg = dataclasses.replace(cfg, cv=dataclasses.replace(cfg.cv, dask_address=dask_address))
    return Run(cfg, out, force=force, config_file=config_file).execute()


def print_metrics(metrics: dict) -> None:
    click.echo(f"task {metrics['task']}: {metrics['n_train']} training rows, {metrics['n_test']} test rows")
    for name, m in {**metrics["models"], f"final ({metrics['oof_model']})": metrics["oof"]}.items():
        shown = ", ".join(f"{k}={v:.4f}" for k, v in m.items()
                          if isinstance(v, float) and k != "seconds" and not k.endswith(("_lo", "_hi")))
        took = f" ({m['seconds']:.1f} s)" if isinstance(m.get("seconds"), (int, float)) else ""
        click.echo(f"  {name}: {shown}{took}")
    ens, cal = metrics.get("ensemble") or {}, metrics.get("calibration") or {}
    if ens.get("why"):
        click.echo(f"  ensemble: {ens['chosen']}, {ens['why']}")
    if cal:
        b, a = cal["before"], cal["after"]
        click.echo(f"  calibration ({cal['method']}, {cal['chosen_by']}): Brier {b['brier']:.4f} -> {a['brier']:.4f}, "
                   f"ECE {b['ece']:.4f} -> {a['ece']:.4f} ({cal['bins']}); submitted: {submitted_model(metrics)}")
    for line in summary_lines(metrics) + [f"note: {n}" for n in metrics.get("notes", [])]:
        click.echo(f"  {line}")


#: what the closing line names, where the run wrote it: the outputs a user opens, in the order to open them
SHOWN_OUTPUTS = ("metrics.json", "oof.parquet", "submission.csv", "report/index.html", "models/")


def closing_line(out: Path) -> str:
    """``results in OUT/ (...)``: those of :data:`SHOWN_OUTPUTS` the run left there (a submission only with test
    rows, the report only when ``[report] enabled``)."""
    written = [name for name in SHOWN_OUTPUTS if (Path(out) / name).exists()]
    return f"results in {out}/" + (f" ({', '.join(written)})" if written else "")


def header_comment(path: Path) -> list[str]:
    """The comment lines a config file opens with, without their ``#``."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        out.append(line[1:].strip())
    return out


@click.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run directory.")
@click.option("--force", is_flag=True, help="Re-run every stage even when its inputs are unchanged.")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Dask scheduler for the fold x seed jobs (overrides [cv] dask_address; default $DERMSTACK_DASK_ADDRESS).")
def run_command(config: Path, out: Path, force: bool, dask_address: str | None) -> None:
    """Run the pipeline described by CONFIG (TOML) into the run directory OUT."""
    print_metrics(fit_run(config, out, force=force, dask_address=dask_address))
    click.echo(closing_line(out))


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Another config instead of the embedded demo config.")
def demo_command(out: Path, config: Path | None) -> None:
    """End-to-end demo on synthetic ISIC 2024 data with the embedded default config."""
    config = config or PACKAGE_CONFIGS / "demo.toml"
    click.echo(f"dermstack demo: config {config}, run directory {out}", err=True)
    for line in header_comment(config):  # the demo config says there what it trimmed for time
        click.echo(f"  {line}", err=True)
    print_metrics(fit_run(config, out))
    click.echo(closing_line(out))
