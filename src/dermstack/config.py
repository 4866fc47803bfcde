"""Run configuration: typed dataclasses read from TOML; an unknown key is an error, not ignored."""
from __future__ import annotations

import copy
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dermstack.errors import ConfigError

TASKS = ("binary", "multiclass", "multilabel")


@dataclass
class DataConfig:
    format: str = "synthetic-isic2024"
    path: str | None = None
    task: str = "binary"
    #: binary: "malignant" or one diagnosis code vs the rest
    target: str = "malignant"
    #: synthetic-isic2024 only
    lesions: int = 20_000
    test_lesions: int = 100
    positive_rate: float = 0.001
    image_size: int = 64
    seed: int = 0
    strict: bool = False


@dataclass
class CVConfig:
    n_splits: int = 5
    seed: int = 42
    #: Dask scheduler address: train the boosters through lightgbm.dask / xgboost.dask
    #: (default: $DERMSTACK_DASK_ADDRESS, else in this process)
    dask_address: str | None = None


#: test-time augmentations an extraction may average over
TTA_MODES = ("hflip", "vflip")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class ExtractSettings:
    """How to embed (``dermstack.extract``). ``image_size=None`` uses the model's default; ``weights``
    maps backbone -> local file. ``None`` for batch_size, workers, streams and threads means "what is
    fastest on the device" (dermstack.extract.settings.resolve_parallelism; benchmarks/extract_throughput.py)."""

    image_size: int | None = None
    #: images per forward pass (per stream); None: 8 on CPU, 64 on a GPU
    batch_size: int | None = None
    #: DataLoader processes decoding images; None: 0 on CPU (each stream decodes its own batches), else up to 8
    workers: int | None = None
    #: model replicas run side by side in threads, sharing the weights; None: one per core up to 4 on CPU, 1 on a GPU
    streams: int | None = None
    #: torch threads per stream on CPU; None: cores / streams
    threads: int | None = None
    device: str = "auto"
    precision: str = "auto"
    tta: list[str] = field(default_factory=list)
    weights: dict[str, str] = field(default_factory=dict)
    #: retry images recorded as failed by an earlier run
    retry_failed: bool = False

    def __post_init__(self) -> None:
        bad = [t for t in self.tta if t not in TTA_MODES]
        if bad:
            raise ConfigError(f"unknown TTA {bad}; known: {list(TTA_MODES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device.split(":")[0] not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES} (cuda:N allowed), got {self.device!r}")
        for name, low in (("batch_size", 1), ("workers", 0), ("streams", 1), ("threads", 1), ("image_size", 8)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"[extract] {name} must be >= {low}, got {value}")

    @classmethod
    def from_config(cls, cfg: "ExtractSettings") -> "ExtractSettings":
        """The settings part of an ``[extract]`` section (an ExtractConfig)."""
        return cls(**{f.name: copy.copy(getattr(cfg, f.name)) for f in dataclasses.fields(cls)})


@dataclass
class ExtractConfig(ExtractSettings):
    """``[extract]``: the backbones to embed with, how (ExtractSettings), and the PCA the run joins."""

    backbones: list[str] = field(default_factory=list)
    pca_components: int = 32


@dataclass
class FeaturesConfig:
    metadata: bool = True
    engineered: bool = True
    patient: bool = True
    image: bool = False
    embedding: bool = True
    segmentation: str = "auto"  # auto (given mask, else automatic) | mask | automatic
    #: drop a metadata column whose missingness alone separates the classes (ROC-AUC of is-null)
    missingness_leak_auc: float = 0.65
    workers: int = 2


@dataclass
class ModelConfig:
    kind: str = "lightgbm"
    name: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    params: dict[str, Any] = field(default_factory=dict)
    features: list[str] | None = None
    sampling: dict[str, float] = field(default_factory=dict)
    #: cnn only
    backbone: str | None = None
    epochs: int | None = None
    image_size: int | None = None

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass
class EnsembleConfig:
    method: str = "auto"  # auto (one model: itself; several: mean) | mean | stack | rank
    models: list[str] | None = None
    #: with a CNN among the models: also train every booster with the CNN score as a feature group
    #: (leak-free, via CNNs trained without each pair of folds) and add those as base models
    cnn_feature: bool = True


@dataclass
class ReportConfig:
    enabled: bool = False
    shap_sample: int = 2000


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    models: list[ModelConfig] = field(default_factory=lambda: [ModelConfig()])
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "RunConfig":
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(sections))
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {unknown}; known: {sorted(sections)}")
        kwargs: dict[str, Any] = {}
        for name, value in raw.items():
            if name == "models":
                if not isinstance(value, list):
                    raise ConfigError(f"{source}: 'models' must be an array of tables ([[models]])")
                kwargs[name] = [_build(ModelConfig, v, f"{source} [[models]] #{i + 1}") for i, v in enumerate(value)]
            else:
                kwargs[name] = _build(_section_type(name), value, f"{source} [{name}]")
        cfg = cls(**kwargs)
        cfg.check(source)
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
        return cls.from_dict(raw, str(path))

    def check(self, source: str = "config") -> None:
        if self.data.task not in TASKS:
            raise ConfigError(f"{source}: [data] task must be one of {TASKS}, got {self.data.task!r}")
        if self.cv.n_splits < 2:
            raise ConfigError(f"{source}: [cv] n_splits must be at least 2")
        names = [m.label for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{source}: two [[models]] share the name {dup}; give each a distinct `name`")

    def to_dict(self) -> dict:
        return _drop_none(dataclasses.asdict(self))


def _section_type(name: str) -> type:
    return {
        "data": DataConfig, "cv": CVConfig, "extract": ExtractConfig, "features": FeaturesConfig,
        "ensemble": EnsembleConfig, "report": ReportConfig,
    }[name]


def _build(kind: type, value: Any, where: str):
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    return kind(**value)


def _drop_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_none(v) for v in x]
    return x
