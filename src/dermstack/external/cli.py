"""`dermstack evaluate RUN_DIR DATA --out DIR`: the thin command over :func:`dermstack.external.evaluate_run`."""
from __future__ import annotations

from pathlib import Path

import click

from dermstack.data.audit import NEAR_THRESHOLD
from dermstack.data.readers import READERS


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for evaluation.json, evaluation.html, predictions.parquet, lesions.parquet.")
@click.option("--format", "fmt", type=click.Choice(list(READERS)), default=None,
              help="DATA's format (default: told from its files; a .parquet is a LesionTable).")
@click.option("--keep-overlap", is_flag=True, help="Score rows found in the run's training data too, flagged, instead of leaving them out.")
@click.option("--allow-missing-features", is_flag=True, help="Score even when DATA lacks feature columns the run used (listed).")
@click.option("--near-threshold", type=click.FloatRange(0, 1), default=NEAR_THRESHOLD, show_default=True,
              help="Cosine similarity at or above which two images are near-duplicates.")
@click.option("--strict", is_flag=True, help="Turn every row the reader skips into an error.")
def evaluate_command(run_dir: Path, data: Path, out: Path, fmt: str | None, keep_overlap: bool, allow_missing_features: bool,
                     near_threshold: float, strict: bool) -> None:
    """Score the labelled DATA with RUN_DIR's saved models (nothing retrained) and measure them there:
    each model beside its out-of-fold figure, calibration, the run's operating points, subgroups,
    after an audit that leaves the run's own training images out."""
    from dermstack.external.evaluate import evaluate_run
    from dermstack.external.page import ci_text, gap_sentence, num_text, overlap_sentence
    from dermstack.outputs.predict import CLI_ALLOW_MISSING

    e = evaluate_run(run_dir, data, out, fmt=fmt, keep_overlap=keep_overlap, allow_missing_features=allow_missing_features,
                     near_threshold=near_threshold, strict=strict, allow_missing_option=CLI_ALLOW_MISSING)
    r = e["rows"]
    click.echo(f"{r['read']} rows read, {r['scored']} evaluated, {r['excluded_overlap']} left out as overlap, "
               f"{r['skipped']} skipped")
    click.echo(overlap_sentence(e))
    click.echo(f"final model {e['final']}: {gap_sentence(e)}")
    for op in e["operating_points"]:
        if "sensitivity" in op:
            click.echo(f"  {op['rule']} (threshold {op['threshold']:.4g}; {'held' if op['held'] else 'did not hold'} here): "
                       f"sensitivity {ci_text(op['sensitivity'])} here, {num_text(op['promised'].get('sensitivity'))} out of "
                       f"fold; specificity {ci_text(op['specificity'])} here, {num_text(op['promised'].get('specificity'))} out of fold")
    for note in e["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"evaluation: {Path(out) / 'evaluation.json'}, {Path(out) / 'evaluation.html'}")
