"""`dermstack report RUN_DIR --out DIR` writes the HTML report; `dermstack report explain RUN_DIR --id X` one lesion;
`dermstack compare RUN_A RUN_B --out DIR` pairs runs (:mod:`dermstack.reports.compare`)."""
from __future__ import annotations

from pathlib import Path

import click

from dermstack.clinical_report import N_BOOT
from dermstack.config.limits import option


class ReportGroup(click.Group):
    """``report RUN_DIR ...`` runs the ``build`` subcommand; ``report explain ...`` (or ``build``) as named."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["build", *args]
        return super().resolve_command(ctx, args)


@click.group(cls=ReportGroup)
def report() -> None:
    """Reports of a finished run: `dermstack report RUN_DIR --out DIR` (HTML with SHAP, curves,
    subgroups) and `dermstack report explain RUN_DIR --id ISIC_...` (one lesion)."""


@report.command("build")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report directory [default: RUN_DIR/report].")
@click.option("--shap-sample", type=click.IntRange(min=0),
              help="Rows explained per model: all positives plus a fold-stratified sample of negatives (0: every row) "
                   "[default: the run's [report] shap_sample, 2000 unless set].")
@click.option("--n-boot", type=option("Resamples"), default=200, show_default=True,
              help="Bootstrap resamples for confidence intervals.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Threshold of the first confusion matrix.")
@click.option("--specificity", type=click.FloatRange(0, 1), default=0.95, show_default=True,
              help="Fixed specificity for recall and the subgroup operating point.")
def build_command(run_dir: Path, out: Path | None, shap_sample: int | None, n_boot: int, threshold: float, specificity: float) -> None:
    """Write RUN_DIR's self-contained HTML report and the numbers behind it (also: `dermstack report RUN_DIR`)."""
    from dermstack.reports.build import ReportSettings, build_report

    settings = ReportSettings.for_run(run_dir, shap_sample, n_boot=n_boot, threshold=threshold, specificity=specificity)
    click.echo(f"report: {build_report(run_dir, out or run_dir / 'report', settings=settings)}")


@report.command("explain")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--id", "image_id", required=True, help="image_id of the lesion (e.g. ISIC_0012345).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Directory for the page [default: RUN_DIR/report].")
def explain_command(run_dir: Path, image_id: str, out: Path | None) -> None:
    """One lesion: SHAP waterfall per booster model, its image and mask, its patient's other lesions."""
    from dermstack.reports.explain import explain_lesion

    click.echo(f"explanation: {explain_lesion(run_dir, image_id, out or run_dir / 'report')}")


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for compare.json and compare.html.")
@click.option("--model", "models", multiple=True,
              help="Model to compare instead of the final one: once (every run) or once per run, in order.")
@click.option("--n-boot", type=option("Resamples"), default=N_BOOT, show_default=True, help="Patient resamples of the paired bootstrap.")
def compare_command(runs: tuple[Path, ...], out: Path, models: tuple[str, ...], n_boot: int) -> None:
    """Pair the final models of RUNS (the first is the reference) on the same rows and folds: differences
    in the primary metric and ROC-AUC with 95% CIs and p-values, overall and per subgroup. RUNS may
    instead be `dermstack evaluate` folders of the same external data: paired on the rows all scored."""
    from dermstack.reports.compare import COMPARE_FILES, compare, comparison_sentence

    result = compare(list(runs), out, list(models), n_boot)
    for c in result["comparisons"]:
        click.echo(comparison_sentence(c, result))
    click.echo(f"compare: {out / COMPARE_FILES[0]}, {out / COMPARE_FILES[1]}")
