"""`dermstack data`: ingest a published dataset into a LesionTable, synthesise ISIC 2024 data, make folds."""
from __future__ import annotations

from pathlib import Path

import click

from dermstack.atomic import out_file, parquet_out
from dermstack.config import MAX_SEED
from dermstack.config.limits import option
from dermstack.taskkind import TaskKind


@click.group()
def data() -> None:
    """Read datasets into the LesionTable format, synthesise data, plan folds."""


@data.command("ingest")
@click.argument("format", type=click.Choice(["isic2024", "isic-archive", "ham10000", "milk10k", "ddi", "ph2"]))
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, callback=parquet_out, help="LesionTable parquet to write.")
@click.option("--strict", is_flag=True, help="Turn every skipped row or missing image into an error.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), callback=out_file, help="Write the ingest report as JSON here.")
@click.option("--encoding", default=None, help="Encoding of the CSV files when not UTF-8, e.g. cp1252 or latin-1.")
def ingest_command(format: str, path: Path, out: Path, strict: bool, report_path: Path | None, encoding: str | None) -> None:
    """Read FORMAT data at PATH into a LesionTable and print what was read, kept and skipped."""
    from dermstack.data.readers import ingest

    table, report = ingest(format, path, strict=strict, encoding=encoding)
    table.write(out)
    report.write_json(report_path or out.with_suffix(".report.json"))
    click.echo(report.summary())
    click.echo(f"wrote {len(table)} rows to {out}")


@data.command("synth")
@click.option("--lesions", type=option("Lesions"), default=20_000, show_default=True, help="Training lesions.")
@click.option("--test-lesions", type=option("Lesions", 0), default=100, show_default=True)
@click.option("--image-size", type=option("ImageSide", 8), default=64, show_default=True, help="Side of the square JPEG crops.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--positive-rate", type=click.FloatRange(0, 1), default=0.001, show_default=True, help="Share of malignant lesions.")
@click.option("--workers", type=option("Processes"), default=None, help="Image rendering processes (default: all cores).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the Kaggle layout.")
def synth_command(lesions: int, test_lesions: int, image_size: int, seed: int, positive_rate: float,
                  workers: int | None, out: Path) -> None:
    """Write a synthetic ISIC 2024 dataset in the Kaggle layout (metadata CSVs + HDF5 JPEG crops)."""
    from dermstack.data.synth import synthesize_isic2024

    summary = synthesize_isic2024(out, lesions=lesions, test_lesions=test_lesions, image_size=image_size, seed=seed,
                                  positive_rate=positive_rate, workers=workers)
    click.echo(str(summary))


@data.command("folds")
@click.argument("lesions", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, callback=parquet_out)
@click.option("--n-splits", type=option("Folds", 2), default=5, show_default=True)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=42, show_default=True)
@click.option("--task", type=click.Choice(TaskKind.KINDS), default="binary", show_default=True)
@click.option("--from", "source", type=click.Path(path_type=Path), default=None,
              help="A published split (CSV/parquet: fold keyed by image_id, lesion_id or patient_id), as [cv] folds.")
@click.option("--group", default=None, metavar="COLUMN",
              help="Keep every value of COLUMN (a site: attribution, dataset) in one fold too, as [cv] group.")
@click.option("--leave-one-group-out", is_flag=True, help="One fold per --group value, as [cv] leave_one_group_out.")
def folds_command(lesions: Path, out: Path, n_splits: int, seed: int, task: str, source: Path | None, group: str | None,
                  leave_one_group_out: bool) -> None:
    """Make the patient-grouped stratified FoldPlan every model of a run shares (or read it --from a file)."""
    from dermstack.data.folds import FoldPlan
    from dermstack.data.table import LesionTable

    if leave_one_group_out and (not group or source):
        raise click.UsageError("--leave-one-group-out needs --group and makes its own folds (not with --from)")
    table = LesionTable.read(lesions)
    plan = (FoldPlan.from_file(table, source, group=group) if source else
            FoldPlan.make(table, n_splits=n_splits, seed=seed, task=task, group=group, leave_one_group_out=leave_one_group_out))
    plan.write(out)
    origin = f" from {source}" if source else ""
    by = plan.group_column + (f" and {group} ({plan.grouping['groups']} groups"
                              + (", one held out per fold)" if leave_one_group_out else ")") if group else "")
    click.echo(f"{plan.folds.height} training rows in {plan.n_splits} folds{origin} grouped by {by}: {out}")
