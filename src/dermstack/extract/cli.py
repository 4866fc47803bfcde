"""`dermstack extract`: embed a LesionTable's images with frozen timm backbones; merge shard stores."""
from __future__ import annotations

from pathlib import Path

import click

from dermstack.atomic import out_file
from dermstack.config.limits import option


def _weights(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in pairs:
        name, sep, file = p.partition("=")
        if not sep or not name or not file:
            raise click.BadParameter(f"expected NAME=FILE, got {p!r}", param_hint="--weights")
        out[name] = file
    return out


@click.group()
def extract() -> None:
    """Embed images with frozen timm backbones into an HDF5 EmbeddingStore."""


@extract.command("run")
@click.argument("lesions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--backbone", "backbones", multiple=True, default=["efficientnet_lite0"], show_default=True,
              help="timm model name (repeat for several).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, callback=out_file,
              help="EmbeddingStore (.h5) to write or resume.")
@click.option("--image-size", type=option("ImageSide", 8), default=None, help="Input side in pixels (default: the model's own).")
@click.option("--batch-size", type=option("Batch"), default=None, help="Images per forward pass (default: 8 on CPU, 64 on a GPU).")
@click.option("--streams", type=option("Threads"), default=None,
              help="Model replicas running side by side in threads (default: one per core up to 4 on CPU, 1 on a GPU).")
@click.option("--threads", type=option("Threads"), default=None, help="torch threads per stream on CPU (default: cores / streams).")
@click.option("--workers", type=option("Processes", 0), default=None,
              help="DataLoader processes decoding images (default: 0 on CPU, where the streams decode, else up to 8).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N] | mps")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto", show_default=True)
@click.option("--tta", multiple=True, type=click.Choice(["hflip", "vflip"]), help="Average over flipped copies too.")
@click.option("--weights", "weights", multiple=True, metavar="NAME=FILE", help="Local .pth/.safetensors for a backbone.")
@click.option("--shard", default=None, metavar="I/N", help="Embed every N-th image starting at the I-th (0-based).")
@click.option("--strict", is_flag=True, help="Stop at the first missing or corrupt image instead of recording it.")
@click.option("--retry-failed", is_flag=True, help="Try again the images an earlier run recorded as failed.")
@click.option("--replace-changed", is_flag=True,
              help="Embed again a backbone OUT holds from other settings (size, weights, TTA) instead of refusing.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None, callback=out_file,
              help="JSON report (default: OUT with .report.json).")
def run_command(lesions: Path, backbones: tuple[str, ...], out: Path, image_size: int | None, batch_size: int | None,
                streams: int | None, threads: int | None, workers: int | None, device: str, precision: str, tta: tuple[str, ...],
                weights: tuple[str, ...], shard: str | None, strict: bool, retry_failed: bool, replace_changed: bool,
                report_path: Path | None) -> None:
    """Embed every image of the LesionTable LESIONS (parquet) into OUT; a rerun resumes."""
    from dermstack.data.table import LesionTable
    from dermstack.extract.runner import extract_embeddings
    from dermstack.extract.settings import ExtractSettings, parse_shard

    settings = ExtractSettings(image_size=image_size, batch_size=batch_size, workers=workers, streams=streams, device=device,
                               precision=precision, tta=list(tta), weights=_weights(weights), threads=threads,
                               retry_failed=retry_failed)
    report = extract_embeddings(LesionTable.read(lesions), list(backbones), out, settings,
                                shard=parse_shard(shard) if shard else None, strict=strict, replace_changed=replace_changed)
    report.write_json(report_path or Path(report.out).with_suffix(".report.json"))
    click.echo(report.summary())


@extract.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def merge_command(shards: tuple[Path, ...], out: Path) -> None:
    """Join complete shard stores (from --shard or torchrun) into one EmbeddingStore OUT."""
    from dermstack.extract.store import merge_stores

    counts = merge_stores(list(shards), out)
    click.echo(f"merged {len(shards)} stores into {out}: " + ", ".join(f"{k} {v} images" for k, v in counts.items()))


@extract.command("info")
@click.argument("store", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def info_command(store: Path) -> None:
    """Show the backbones in an EmbeddingStore, their counts, failures and settings."""
    from dermstack.extract.store import EmbeddingStore

    s = EmbeddingStore(store)
    for b in s.backbones():
        i = s.info(b)
        click.echo(f"{b}: {i['n_written']} images x {i['recipe']['num_features']}, {i['n_failed']} failed, "
                   f"{'complete' if i['complete'] else 'INCOMPLETE'}; {i['timm_name']} {i['image_size']}px, "
                   f"tta={i['tta']}, {i['precision']}, weights {i['weights_source']} sha256 {i['weights_sha256'][:12]}")


@extract.command("backbones")
def backbones_command() -> None:
    """Suggested backbones (any timm model name works) and where their weights come from."""
    from dermstack.extract.registry import SUGGESTED

    for name, note in SUGGESTED.items():
        click.echo(f"{name:45s} {note}")
