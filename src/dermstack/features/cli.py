"""`dermstack features`: build the feature table of a LesionTable."""
from __future__ import annotations

from pathlib import Path

import click

from dermstack.atomic import parquet_out
from dermstack.config import SEGMENTATION_MODES, FeaturesConfig
from dermstack.config.limits import option

_DEFAULTS = FeaturesConfig()


def _group_switch(name: str, help: str):
    return click.option(f"--{name}/--no-{name}", default=getattr(_DEFAULTS, name), show_default=True, help=help)


@click.group()
def features() -> None:
    """Engineered, patient-relative, image and embedding features of a LesionTable."""


@features.command("build")
@click.argument("lesions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="EmbeddingStore (embeddings.h5).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, callback=parquet_out,
              help="FeatureSet parquet to write.")
@_group_switch("metadata", "Metadata columns of the table.")
@_group_switch("engineered", "ISIC 2024 features from the TBP measurements.")
@_group_switch("patient", "Features relative to the patient's other lesions.")
@click.option("--image", type=click.Choice(["auto", "true", "false"]), default="auto", show_default=True,
              help="Shape and colour features measured on the images; auto: when the dataset ships lesion masks.")
@_group_switch("embedding", "PCA of each backbone's embeddings (needs --embeddings).")
@click.option("--segmentation", type=click.Choice(SEGMENTATION_MODES), default=_DEFAULTS.segmentation, show_default=True,
              help="auto: the given mask, else an automatic one; mask: given masks only; automatic: always automatic.")
@click.option("--missingness-leak-auc", type=click.FloatRange(0.5, 1), default=_DEFAULTS.missingness_leak_auc, show_default=True,
              help="Drop a metadata column whose blankness alone has this ROC-AUC for the label.")
@click.option("--pca-components", type=option("Components"), default=32, show_default=True)
@click.option("--workers", type=option("Processes", 0), default=_DEFAULTS.workers, show_default=True,
              help="Processes for the image features.")
@click.option("--fitted", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A features.transform.npz to apply instead of fitting on LESIONS' training rows (features of new data).")
def build_command(lesions: Path, embeddings: Path | None, out: Path, metadata: bool, engineered: bool, patient: bool, image: str,
                  embedding: bool, segmentation: str, missingness_leak_auc: float, pca_components: int, workers: int,
                  fitted: Path | None) -> None:
    """Build the features of the LesionTable LESIONS and write them (and what was fitted) to --out."""
    from dermstack.data.table import LesionTable
    from dermstack.features.build import build_features
    from dermstack.features.transform import FeatureTransform

    cfg = FeaturesConfig(metadata=metadata, engineered=engineered, patient=patient, embedding=embedding,
                         image={"true": True, "false": False}.get(image, image),
                         segmentation=segmentation, missingness_leak_auc=missingness_leak_auc, workers=workers)
    store = None
    if embeddings is not None:
        from dermstack.extract.store import EmbeddingStore

        store = EmbeddingStore(embeddings)
    fs = build_features(LesionTable.read(lesions), cfg, store, pca_components,
                        fitted=FeatureTransform.read(fitted) if fitted else None)
    fs.write(out)
    dropped = fs.info.get("metadata", {}).get("dropped_missingness_leak", {})
    if dropped:
        click.echo(f"dropped for leaky missingness: {dropped}")
    curation = fs.info.get("curation", {})
    if curation.get("pooled"):
        click.echo(f"pooled the images of each lesion (no patient ids): {curation['pooled']}")
    for group, why in curation.get("not_built", {}).items():
        click.echo(f"{group} features not built: {why}")
    for status in ("empty_mask", "no_image", "unreadable"):
        ids = fs.info.get("image", {}).get(status, [])
        if ids:
            click.echo(f"{len(ids)} images {status.replace('_', ' ')} (image features null), e.g. {ids[:5]}")
    click.echo(f"wrote {fs.df.height} rows x {len(fs.groups)} features {fs.info['groups']} to {out}")
