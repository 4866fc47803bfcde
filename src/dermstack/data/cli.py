"""`dermstack data`: ingest a published dataset into a LesionTable, synthesise ISIC 2024 data, make folds."""
from __future__ import annotations

from pathlib import Path

import click
import polars as pl

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


#: what `data audit` writes into its --out folder
AUDIT_FILES = ("audit.parquet", "audit.csv", "audit.json", "embeddings", "embeddings/*.h5")


@data.command("audit")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmts", multiple=True, type=click.Choice(["isic2024", "isic-archive", "ham10000", "milk10k", "ddi", "ph2"]),
              help="Format of DATA (once for all, or once per DATA; default: told from the files; a .parquet is a LesionTable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for audit.parquet / audit.csv (one row per pair, both image ids) and audit.json (counts).")
@click.option("--backbone", default="efficientnet_lite0", show_default=True,
              help="Backbone whose embeddings find near-duplicates ('none': identical files and ids only).")
@click.option("--image-size", type=click.IntRange(min=16), default=None, help="Embedding input size (default: the backbone's).")
@click.option("--near-threshold", type=click.FloatRange(0, 1), default=None,
              help="Cosine similarity at or above which two images are near-duplicates (default: the measured one).")
def audit_command(paths: tuple[Path, ...], fmts: tuple[str, ...], out: Path, backbone: str, image_size: int | None,
                  near_threshold: float | None) -> None:
    """Find the same image twice within DATA and across DATA2 ...: identical files, near-duplicates
    under other lesion or patient ids (which a grouped FoldPlan cannot see), and rows of one dataset
    in another (image, lesion and patient ids where the formats share them)."""
    from dermstack.atomic import write_csv, write_json, write_parquet
    from dermstack.data.audit import NEAR_THRESHOLD, AuditRows, audit_datasets, read_embeddings
    from dermstack.rundir import claim_dir

    if fmts and len(fmts) not in (1, len(paths)):
        raise click.UsageError(f"--format is given {len(fmts)} times for {len(paths)} datasets: once for all, or once per DATA")
    folder = claim_dir(out, "audit folder", owned=AUDIT_FILES)
    folder.mkdir(parents=True, exist_ok=True)
    sides, names = [], []
    for k, path in enumerate(paths):
        fmt = (fmts[k] if len(fmts) > 1 else fmts[0]) if fmts else None
        table, dataset = _audit_table(path, fmt)
        name = path.name if [p.name for p in paths].count(path.name) == 1 else f"{path.name}#{k + 1}"
        emb = None
        if backbone != "none" and table.df["image_ref"].null_count() < table.df.height:
            from dermstack.extract import EmbeddingStore, ExtractSettings, extract_embeddings

            h5 = folder / "embeddings" / f"{name}.h5"
            extract_embeddings(table, [backbone], h5, ExtractSettings(image_size=image_size))
            emb = read_embeddings(EmbeddingStore(h5), backbone, table.df["image_id"].to_list())
        sides.append(AuditRows.from_table(table, dataset, name, emb))
        names.append(name)
    pairs, summary = audit_datasets(sides, near_threshold or NEAR_THRESHOLD)
    summary |= {"backbone": None if backbone == "none" else backbone, "sources": dict(zip(names, map(str, paths)))}
    write_parquet(folder / "audit.parquet", pairs)
    write_csv(folder / "audit.csv", pairs.with_columns(pl.col("also").list.join(",")))
    write_json(folder / "audit.json", summary)
    for name, s in summary["within"].items():
        click.echo(f"{name}: {sum(s['counts'].values())} pairs within ({_shown(s['counts'])}); "
                   f"{s['near_same_lesion_or_patient']} near-duplicates of one lesion or patient not listed"
                   + "".join(f"; {k} not checked: {v}" for k, v in s["checked"].items() if v is not True))
    for name, s in summary["across"].items():
        click.echo(f"{name}: {s['rows_found']} rows of the first found in the second ({_shown(s['counts'])})")
    click.echo(f"{summary['pairs']} pairs in {folder / 'audit.parquet'} (and audit.csv); counts in {folder / 'audit.json'}")


def _shown(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} by {k}" for k, n in counts.items()) or "none"


def _audit_table(path: Path, fmt: str | None):
    """(LesionTable, id-space name) of one DATA of `data audit`."""
    from dermstack.data.readers import detect_format, ingest
    from dermstack.data.table import LesionTable
    from dermstack.errors import DataError

    if path.suffix == ".parquet" and fmt is None:
        table = LesionTable.read(path)
        return table, table.meta.dataset
    fmt = fmt or detect_format(path)
    if fmt is None:
        raise DataError("cannot tell the dataset format from the files here; give --format", file=str(path))
    table, report = ingest(fmt, path)
    click.echo(report.summary(), err=True)
    return table, fmt
