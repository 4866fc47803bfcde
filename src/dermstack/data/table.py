"""LesionTable: the one canonical table every reader produces and every stage consumes.

One row per sample the classifier scores (an image; for MILK10k a lesion with its
dermoscopic and clinical image). Stored as parquet with the schema version and the
table's own description (dataset, classes, feature and categorical columns) in the
file metadata.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import polars as pl

from dermstack.errors import ConfigError, DataError, did_you_mean
from dermstack.parquet_io import read_described, write_described

SCHEMA_VERSION = 1
META_KEY = b"dermstack.lesion_table"

#: Columns every LesionTable has, with their polars types.
CORE_COLUMNS: dict[str, pl.DataType] = {
    "image_id": pl.String,
    "lesion_id": pl.String,
    "patient_id": pl.String,
    "split": pl.String,
    "target": pl.Int8,
    "label": pl.String,
    "image_ref": pl.String,
    "mask_ref": pl.String,
    "image_type": pl.String,
}
SPLITS = ("train", "test")
#: Prefix of the one-hot class columns of multi-label data (``y_MEL``, ``y_NV`` ...).
CLASS_PREFIX = "y_"

#: Columns that describe the label or how it was obtained. They never become features.
LABEL_PROVENANCE_PATTERNS = [
    r"^dx$", r"^dx_type$", r"^diagnosis.*", r"^iddx_.*", r"^benign_malignant$", r"^diagnosis_confirm_type$",
    r"^concomitant_biopsy$", r"^melanocytic$", r"^mel_.*", r"^nevus_type$", r"^malignant$", r"^disease$",
    r"^clinical_diagnosis$", r"^target$", r"^label$", r"^y_.*", r"^supplement.*", r"^lesion_id$",
    r"^tbp_lv_dnn_lesion_confidence$",
]
#: Identifiers and bookkeeping, not lesion descriptors.
ADMIN_COLUMNS = {
    "image_id", "patient_id", "split", "image_ref", "mask_ref", "isic_id", "attribution", "copyright_license",
    "image_manipulation", "pixels_x", "pixels_y", "acquisition_day", "ddi_id", "ddi_file", "image_ref_clinical",
}


#: ``image_ref`` is a row's primary image; each ``image_ref_<view>`` column one more image of it
#: (MILK10k: ``image_ref_clinical``, the close-up beside the dermoscopic image)
VIEW_PREFIX = "image_ref_"


#: a view's name becomes part of an embedding's key, an HDF5 group and feature names: a plain word
VIEW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


def image_views(df: pl.DataFrame, source: str | None = None) -> dict[str, str]:
    """View -> image column of every image of a row: ``""`` -> ``image_ref``, then ``<view>`` ->
    ``image_ref_<view>`` for each further image column. A view name that is not a plain word (empty,
    as in a column ``image_ref_``, or with ``/``, ``.`` ...) is a DataError naming the column."""
    extra = {c[len(VIEW_PREFIX):]: c for c in df.columns if c.startswith(VIEW_PREFIX) and df.schema[c] == pl.String}
    for view, column in extra.items():
        if not VIEW_NAME.fullmatch(view):
            raise DataError(f"an image column names its view after {VIEW_PREFIX!r} (image_ref_clinical: the clinical "
                            f"close-up); {view!r} is not a view name (letters, digits, _ and -, at most 40): rename "
                            "or drop the column", file=source, column=column)
    return {"": "image_ref", **extra}


#: joins a backbone and a view in an embedding's key (dermstack.extract.store)
VIEW_SEP = "@"


def view_key(backbone: str, view: str = "") -> str:
    """The key of a backbone's embeddings of one view (the backbone alone for the primary image)."""
    return f"{backbone}{VIEW_SEP}{view}" if view else backbone


#: the SHA-256 of a row's primary image bytes, recorded at ingest (dermstack.data.readers.content)
HASH_COLUMN = "image_sha256"


def hash_column(view: str = "") -> str:
    """The digest column of a view's image: ``image_sha256`` for ``image_ref``, ``image_sha256_<view>`` else."""
    return f"{HASH_COLUMN}_{view}" if view else HASH_COLUMN


def split_key(key: str) -> tuple[str, str]:
    """(backbone, view) of an embedding key."""
    backbone, _, view = key.partition(VIEW_SEP)
    return backbone, view


def is_admin(column: str) -> bool:
    """True for identifiers and bookkeeping: ids, file references, image digests (never features)."""
    return column in ADMIN_COLUMNS or column.startswith((VIEW_PREFIX, HASH_COLUMN))


def is_label_provenance(column: str) -> bool:
    """True for columns that encode the label or how it was obtained (never features)."""
    return any(re.match(p, column.lower()) for p in LABEL_PROVENANCE_PATTERNS)


def h5_ref(h5_path: str | Path, key: str) -> str:
    """The ``image_ref`` of an image stored as JPEG bytes under ``key`` in an HDF5 file."""
    return f"{Path(h5_path).resolve()}::{key}"


def parse_image_ref(ref: str) -> tuple[str, str | None]:
    """Split an ``image_ref`` into (file, HDF5 key or None for a plain image file)."""
    if "::" in ref:
        path, key = ref.rsplit("::", 1)
        return path, key
    return ref, None


@dataclass
class TableMeta:
    """What a table is, stored with it."""

    dataset: str
    classes: list[str] = field(default_factory=list)
    feature_columns: list[str] = field(default_factory=list)
    categorical_columns: list[str] = field(default_factory=list)
    positive_classes: list[str] = field(default_factory=list)
    source: str = ""
    schema_version: int = SCHEMA_VERSION


@dataclass
class LesionTable:
    """A polars frame with the core columns plus dataset metadata, and its description.

    Every reader makes one (a run's ``lesions.parquet``); :meth:`dermstack.FittedRun.predict` scores one.

    Examples
    --------
    >>> import dermstack as ds
    >>> table = ds.LesionTable.read("runs/tiny/lesions.parquet")
    >>> len(table), table.test.height, table.meta.dataset
    (160, 10, 'isic2024')
    """

    df: pl.DataFrame
    meta: TableMeta

    def __post_init__(self) -> None:
        self.validate()

    # -- access ---------------------------------------------------------------
    def __len__(self) -> int:
        return self.df.height

    @property
    def train(self) -> pl.DataFrame:
        return self.df.filter(pl.col("split") == "train")

    @property
    def test(self) -> pl.DataFrame:
        return self.df.filter(pl.col("split") == "test")

    @property
    def class_columns(self) -> list[str]:
        return [CLASS_PREFIX + c for c in self.meta.classes if CLASS_PREFIX + c in self.df.columns]

    # -- checks ---------------------------------------------------------------
    def validate(self) -> None:
        df = self.df
        missing = [c for c in CORE_COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"LesionTable lacks core columns {missing}")
        for c, t in CORE_COLUMNS.items():
            if df.schema[c] != t:
                raise DataError(f"LesionTable column has type {df.schema[c]}, expected {t}", column=c)
        if df["image_id"].null_count():
            raise DataError("LesionTable has rows without image_id", column="image_id")
        dup = df["image_id"].filter(df["image_id"].is_duplicated()).unique().to_list()
        if dup:
            raise DataError(f"duplicate image_id {dup[:5]}", column="image_id")
        bad = set(df["split"].unique().to_list()) - set(SPLITS)
        if bad:
            raise DataError(f"unknown split values {sorted(map(str, bad))}", column="split")
        leaky = [c for c in self.meta.feature_columns if is_label_provenance(c) or is_admin(c)]
        if leaky:
            raise DataError(f"label-provenance or id columns listed as features: {leaky}")
        absent = [c for c in self.meta.feature_columns + self.meta.categorical_columns if c not in df.columns]
        if absent:
            raise DataError(f"feature columns not in the table: {absent}")
        image_views(df, self.meta.source or None)

    @classmethod
    def from_frame(cls, frame, dataset: str, source: str = "DataFrame") -> LesionTable:
        """Lesions given as a polars or pandas DataFrame: its columns as they are (the metadata of
        ``dataset``), ``image_id`` (else ISIC's ``isic_id``) the row's id, absent core columns empty,
        every row a ``test`` row unless ``split`` says otherwise."""
        if not isinstance(frame, pl.DataFrame):
            if not hasattr(frame, "to_numpy") or not hasattr(frame, "columns"):
                raise DataError(f"not a polars or pandas DataFrame: {type(frame).__name__}", file=source)
            frame = pl.from_pandas(frame)
        if "image_id" not in frame.columns:
            if "isic_id" not in frame.columns:
                raise DataError(f"no image_id (or isic_id) column among {frame.columns[:20]}", file=source, column="image_id")
            frame = frame.with_columns(pl.col("isic_id").cast(pl.String).alias("image_id"))
        if "split" not in frame.columns:
            frame = frame.with_columns(pl.lit("test").alias("split"))
        return cls(finalize_frame(frame), TableMeta(dataset=dataset, source=source))

    def without_features(self, names: list[str]) -> LesionTable:
        """This table with the columns ``names`` kept as data but no longer features (``[data] not_features``:
        a dataset's own column that the data a run will score lacks, such as HAM10000's ``localization``
        beside the ISIC ``anatom_site_general`` of another clinic's export)."""
        if bad := [n for n in names if n not in self.meta.feature_columns]:
            raise ConfigError(f"[data] not_features = {names}: {bad[0]!r} is not a feature column of this data"
                              f"{did_you_mean(bad[0], self.meta.feature_columns)}; its feature columns: "
                              f"{', '.join(self.meta.feature_columns[:30])}")
        keep = [c for c in self.meta.feature_columns if c not in names]
        cats = [c for c in self.meta.categorical_columns if c not in names]
        return LesionTable(self.df, replace(self.meta, feature_columns=keep, categorical_columns=cats)) if names else self

    # -- io ---------------------------------------------------------------------
    def write(self, path: str | Path) -> Path:
        """Write parquet atomically with the table description in the file metadata."""
        return write_described(self.df, path, META_KEY, asdict(self.meta))

    @classmethod
    def read(cls, path: str | Path) -> LesionTable:
        df, raw = read_described(path, META_KEY, "LesionTable")
        meta = TableMeta(**raw)
        if meta.schema_version != SCHEMA_VERSION:
            raise DataError(f"LesionTable schema version {meta.schema_version}, this dermstack reads {SCHEMA_VERSION}", file=str(path))
        return cls(df, meta)


def finalize_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Add absent core columns as nulls, cast them, and put them first."""
    for c, t in CORE_COLUMNS.items():
        if c not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=t).alias(c))
    df = df.with_columns([pl.col(c).cast(t) for c, t in CORE_COLUMNS.items()])
    rest = [c for c in df.columns if c not in CORE_COLUMNS]
    return df.select(list(CORE_COLUMNS) + rest)


def default_feature_columns(df: pl.DataFrame, exclude: set[str] = frozenset()) -> tuple[list[str], list[str]]:
    """Metadata columns usable as features: everything but core, id, label and provenance columns.

    Returns (feature_columns, categorical_columns); string columns are categorical.
    """
    feats, cats = [], []
    for c, t in df.schema.items():
        if c in CORE_COLUMNS or is_admin(c) or c in exclude or is_label_provenance(c):
            continue
        if df[c].null_count() == df.height:
            continue
        if t in (pl.String, pl.Categorical, pl.Boolean):
            cats.append(c)
        elif not t.is_numeric():
            continue
        feats.append(c)
    return feats, cats
