"""The overlap audit: each kind of evidence on hand-made tables, `data audit` across datasets, and
planted near-duplicates (JPEG quality 70, resized by 0.9, cropped by 5 %) of real HAM10000 images
found by `dermstack evaluate` with the default backbone and threshold, among distinct real images
and other images of a training lesion, which must not be."""
from __future__ import annotations

import csv
import json
import random
import shutil

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from dermstack.cli import cli
from dermstack.data.audit import NEAR_THRESHOLD, AuditRows, audit_datasets, find_pairs, strongest
from dermstack.data.readers.content import image_digests
from dermstack.external import evaluate_run
from dermstack.testing import tiny_copy
from external_fixtures import MODELS, NEAR_COPIES, ham_sections, plant


def rows(**columns) -> pl.DataFrame:
    return pl.DataFrame(columns)


def test_each_kind_of_evidence_and_its_id_space():
    train = rows(image_id=["ISIC_1", "ISIC_2", "ISIC_3", "ISIC_4"], lesion_id=["IL_1", "IL_2", "IL_3", "IL_4"],
                 patient_id=["IP_1", "IP_2", "IP_3", "IP_4"], image_sha256=["h1", "h2", "h3", "h4"])
    new = rows(image_id=["ISIC_1", "ISIC_9", "ISIC_8", "ISIC_7", "ISIC_6"], lesion_id=[None, None, "IL_3", None, None],
               patient_id=[None, None, None, "IP_4", None], image_sha256=["x", "h2", "y", "z", "w"])
    a, b = AuditRows("new", "isic-archive", new), AuditRows("train", "isic2024", train)
    pairs, checked = find_pairs(a, b)
    top = strongest(pairs)
    got = dict(zip(new["image_id"].gather(top["a"]).to_list(), top["how"].to_list()))
    assert got == {"ISIC_1": "id", "ISIC_9": "hash", "ISIC_8": "lesion", "ISIC_7": "patient"}
    assert checked["near"] != True  # noqa: E712  (no embeddings: says why)
    # HAM10000 lesion ids (HAM_...) are not ISIC lesion ids: equal strings are not the same lesion
    ham = AuditRows("ham", "ham10000", train.with_columns(pl.lit("L").alias("lesion_id")))
    arch = AuditRows("arch", "isic-archive", new.with_columns(pl.lit("L").alias("lesion_id")))
    pairs, checked = find_pairs(arch, ham)
    assert "lesion" not in pairs["how"].to_list() and "share a lesion id space" in checked["lesion"]
    # a MILK10k row (a lesion) holds two ISIC images: either one is the same image
    milk = AuditRows("milk", "milk10k", rows(image_id=["IL_5"], lesion_id=["IL_5"], isic_id_derm=["ISIC_5"], isic_id_clin=["ISIC_2"]))
    assert find_pairs(milk, b)[0]["how"].to_list() == ["id"]


def test_near_duplicates_by_cosine_centred_on_the_reference():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20, 16)).astype(np.float32)
    copy = ref[[3, 7]] + rng.normal(scale=0.05, size=(2, 16)).astype(np.float32)
    other = rng.normal(size=(5, 16)).astype(np.float32)
    emb = np.vstack([copy, other, np.full((1, 16), np.nan, np.float32)])  # the last image was not embedded
    new = AuditRows("new", "x", rows(image_id=[f"n{i}" for i in range(8)]), emb)
    train = AuditRows("train", "y", rows(image_id=[f"t{i}" for i in range(20)]), ref)
    pairs, checked = find_pairs(new, train, threshold=0.9)
    assert checked["near"] is True
    assert pairs.select("a", "b", "how").rows() == [(0, 3, "near"), (1, 7, "near")]
    assert (pairs["similarity"] > 0.9).all()


def test_look_alike_pictures_are_not_near_duplicates_but_a_copy_among_them_is():
    # synthetic crops or uniform tiles: groups of look-alike pictures, each with many neighbours past
    # the threshold and none standing out; a re-encoded copy does
    rng = np.random.default_rng(1)
    alike = (np.repeat(rng.normal(size=(20, 64)), 15, axis=0) + rng.normal(scale=0.25, size=(300, 64))).astype(np.float32)
    rows_ = AuditRows("synth", "x", rows(image_id=[f"s{i}" for i in range(301)]),
                      np.vstack([alike, alike[[42]] + rng.normal(scale=0.02, size=(1, 64)).astype(np.float32)]))
    center = np.nanmean(rows_.embeddings, axis=0)
    u = rows_.unit_vectors(center)
    sims = u[:300] @ u[:300].T
    np.fill_diagonal(sims, -1)
    assert (sims.max(axis=1) >= NEAR_THRESHOLD).mean() > 0.5  # the threshold alone would flag most rows
    pairs, _ = find_pairs(rows_)
    assert pairs.select("a", "b", "how").rows() == [(42, 300, "near")]


def test_within_one_dataset_identical_files_and_near_duplicates_under_other_lesions(tmp_path):
    for name, data in {"a.jpg": b"\xff\xd8\xffA\xff\xd9", "b.jpg": b"\xff\xd8\xffA\xff\xd9", "c.jpg": b"\xff\xd8\xffC\xff\xd9"}.items():
        (tmp_path / name).write_bytes(data)
    digests = image_digests([str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.jpg")] + [None])
    assert digests[0] == digests[1] != digests[2] and digests[3] is None
    emb = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0.99, 0.01, 0]], np.float32)
    one = AuditRows("one", "x", rows(image_id=["a", "b", "c", "d"], lesion_id=["L1", "L2", "L3", "L1"], image_sha256=digests), emb)
    other = AuditRows("two", "x", rows(image_id=["z"], lesion_id=["L9"], image_sha256=[digests[2]]), emb[2:3])
    pairs, summary = audit_datasets([one, other], threshold=0.95)
    found = {(r["dataset"], r["image_id"], r["other_dataset"], r["other_image_id"], r["how"]) for r in pairs.iter_rows(named=True)}
    assert ("one", "a", "one", "b", "hash") in found  # identical files under two lesions
    assert ("one", "b", "one", "d", "near") in found  # a near-duplicate under another lesion
    assert ("one", "a", "one", "d", "near") not in found  # the same lesion: the FoldPlan already groups them
    assert ("one", "c", "two", "z", "hash") in found
    assert summary["within"]["one"]["near_same_lesion_or_patient"] == 1


def test_data_audit_command_names_both_ids(ham_data, archive, tmp_path):
    res = CliRunner().invoke(cli, ["data", "audit", str(ham_data), str(archive[0]), "--backbone", "none",
                                   "--out", str(tmp_path / "audit")])
    assert res.exit_code == 0, res.output
    pairs = pl.read_parquet(tmp_path / "audit" / "audit.parquet")
    across = pairs.filter(pl.col("dataset") != pl.col("other_dataset"))
    assert set(across.select("other_image_id", "how").iter_rows()) == {("ISIC_9000001", "hash"), ("ISIC_0000005", "id")}
    within = pairs.filter((pl.col("dataset") == "ham") & (pl.col("other_dataset") == "ham"))
    assert within.height and set(within["how"]) == {"hash"}  # the planted repeats of the training data
    summary = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert "no backbone" in summary["within"]["ham"]["checked"]["near"]
    assert "rows of the first found in the second" in res.output and (tmp_path / "audit" / "audit.csv").exists()


# -- planted near-duplicates of real images --------------------------------------------------------

@pytest.fixture(scope="module")
def real(shared_data, tiny, tmp_path_factory):
    """A run (default backbone) on a few real HAM10000 lesions, one image of a two-image lesion held
    back; an ISIC-archive export of planted copies of its training images, the held-back image and
    real images of other lesions."""
    root = tmp_path_factory.mktemp("real")
    ham = tiny_copy("ham10000", shared_data / "ham10000-dev", root / "ham", per_class=10, max_px=200)
    meta = pl.read_csv(ham / "HAM10000_metadata.csv")
    twice = meta.group_by("lesion_id").len().filter(pl.col("len") > 1)["lesion_id"].sort()[0]
    held = meta.filter(pl.col("lesion_id") == twice)["image_id"].sort()[-1]
    meta.filter(pl.col("image_id") != held).write_csv(ham / "HAM10000_metadata.csv")
    export = root / "export"
    export.mkdir()
    shutil.move(next((ham / "images").glob(f"{held}.*")), export / f"{held}.jpg")
    for mask in (ham / "masks").glob(f"{held}_*"):
        mask.unlink()
    run = tiny.run(MODELS, **ham_sections(ham, {"backbones": ["efficientnet_lite0"]}))
    train = sorted(meta.filter(pl.col("image_id") != held)["image_id"].to_list())
    copies, prng = {}, random.Random(0)
    for k, (image_id, kind) in enumerate({"ISIC_9000001": "hash", **NEAR_COPIES}.items()):
        src = train[2 + 5 * k]
        plant(kind, ham / "images" / f"{src}.jpg", export / f"{image_id}.jpg", prng)
        copies[image_id] = (kind, src)
    everyone = sorted(pl.read_csv(shared_data / "ham10000-dev" / "HAM10000_metadata.csv")
                      .filter(~pl.col("lesion_id").is_in(meta["lesion_id"].implode()))["image_id"].to_list())
    others = random.Random(1).sample(everyone, 10)
    for image_id in others:
        shutil.copyfile(shared_data / "ham10000-dev" / "images" / f"{image_id}.jpg", export / f"{image_id}.jpg")
    with open(export / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["isic_id", "diagnosis_1", "diagnosis_3"])
        for k, image_id in enumerate([*copies, held, *others]):
            w.writerow([image_id, *(("Malignant", "Melanoma, NOS") if k % 3 == 0 else ("Benign", "Nevus"))])
    return run, export, copies, held


def test_planted_copies_of_real_images_are_found_and_distinct_images_are_not(real, tmp_path):
    run, export, copies, held = real
    e = evaluate_run(run, export, tmp_path / "ev", allow_missing_features=True)
    found = {o["image_id"]: (o["how"], o["train_image_id"]) for o in e["overlap"]}
    want = {image_id: ("hash" if kind == "hash" else "near", src) for image_id, (kind, src) in copies.items()}
    assert found == want, e["overlap"]  # nothing else: not the other image of a training lesion, nor other lesions
    assert held not in found
    near = [o["similarity"] for o in e["overlap"] if o["how"] == "near"]
    assert min(near) >= e["audit"]["near_threshold"] and e["audit"]["backbone"] == "efficientnet_lite0"
    assert e["rows"]["excluded_overlap"] == len(copies) and e["rows"]["scored"] == 11
