"""Extraction into the EmbeddingStore: round-trip, resume after a crash, shard + merge, bad images, CLI."""
from __future__ import annotations

import hashlib
import logging

import h5py
import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from timm.data import create_transform

from dermstack.cli import cli
from dermstack.data.images import load_image
from dermstack.errors import DataError
from dermstack.extract import EmbeddingStore, ExtractSettings, create_backbone, extract_embeddings, merge_stores
from dermstack.extract.store import GroupWriter
from extract_fixtures import TEST_MODEL, lesion_like, make_table

SIZE = 64


def settings(w, **kw) -> ExtractSettings:
    return ExtractSettings(**({"image_size": SIZE, "batch_size": 4, "workers": 0, "precision": "fp32",
                               "weights": {TEST_MODEL: str(w)}} | kw))


def test_roundtrip_matches_timm_preprocessing_and_records_provenance(tmp_path, table, test_weights):
    out = tmp_path / "emb.h5"
    rep = extract_embeddings(table, [TEST_MODEL], out, settings(test_weights))
    assert rep.backbones[0].embedded == len(table) and not rep.backbones[0].failed
    store = EmbeddingStore(out)
    assert store.backbones() == [TEST_MODEL] and store.is_complete(TEST_MODEL)
    ids = table.df["image_id"].to_list()
    order = list(reversed(ids))[::2] + ids[:3]  # any order, repeats allowed
    got = store.read(TEST_MODEL, order)
    assert got.dtype == np.float32 and got.shape == (len(order), 256)
    # reference: timm's own eval transform + the model in fp32, one image at a time
    bb = create_backbone(TEST_MODEL, test_weights, SIZE)
    tf = create_transform(**{k: tuple(v) if isinstance(v, list) else v for k, v in bb.data_config.items()})
    refs = dict(zip(ids, table.df["image_ref"].to_list()))
    with torch.no_grad():
        want = np.stack([bb.model(tf(load_image(refs[i]))[None])[0].numpy() for i in order])
    scale = np.abs(want).mean()
    assert np.abs(got - want).mean() < 0.01 * scale, "stored features differ from timm preprocessing + model"
    assert not np.allclose(got[0], got[1])
    info = store.info(TEST_MODEL)
    assert info["timm_name"] == TEST_MODEL and info["image_size"] == SIZE and info["tta"] == []
    assert info["weights_sha256"] == hashlib.sha256(test_weights.read_bytes()).hexdigest()
    assert info["data_config"]["input_size"] == [3, SIZE, SIZE] and info["dermstack_version"]
    assert info["pretrained_cfg"]["architecture"] == TEST_MODEL
    with pytest.raises(DataError, match="NOPE"):
        store.read(TEST_MODEL, ids[:2] + ["NOPE"])


def test_resume_after_crash_equals_clean_pass(tmp_path, table, test_weights, monkeypatch):
    clean = tmp_path / "clean.h5"
    extract_embeddings(table, [TEST_MODEL], clean, settings(test_weights))
    out = tmp_path / "crashed.h5"
    real_commit, calls = GroupWriter.commit, []

    def crash_on_third(self):
        calls.append(self.n_pending)
        if len(calls) == 3:  # a kill in the middle of a commit: rows resized and written, count not moved on
            for name in ("features", "image_id"):
                self.g[name].resize(self.n + self.n_pending, axis=0)
            self.g["features"][self.n:] = 99.0
            self.f.flush()
            raise KeyboardInterrupt
        real_commit(self)

    monkeypatch.setattr(GroupWriter, "COMMIT_ROWS", 4)  # one commit per batch of 4
    monkeypatch.setattr(GroupWriter, "commit", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        extract_embeddings(table, [TEST_MODEL], out, settings(test_weights, streams=1))
    monkeypatch.setattr(GroupWriter, "commit", real_commit)
    store = EmbeddingStore(out)
    assert not store.is_complete(TEST_MODEL)
    assert len(store.image_ids(TEST_MODEL)) == 8
    ids = table.df["image_id"].to_list()
    with pytest.raises(DataError, match="interrupted"):
        store.read(TEST_MODEL, ids)
    rep = extract_embeddings(table, [TEST_MODEL], out, settings(test_weights))
    assert (rep.backbones[0].already_done, rep.backbones[0].embedded) == (8, len(ids) - 8)
    assert store.is_complete(TEST_MODEL)
    np.testing.assert_allclose(store.read(TEST_MODEL, ids), EmbeddingStore(clean).read(TEST_MODEL, ids), atol=1e-3)
    # same inputs and settings again: nothing to do, nothing written
    before = out.read_bytes()
    rep = extract_embeddings(table, [TEST_MODEL], out, settings(test_weights))
    assert rep.backbones[0].embedded == 0 and out.read_bytes() == before


def test_an_image_changed_since_it_was_embedded_is_embedded_again_in_place(tmp_path, test_weights):
    """A resumed extraction goes by image id; an image whose bytes changed under the same id (a
    re-exported file, a corrected crop) must not keep its old embedding. Its digest from ingest
    tells: that row is embedded again where it is, and the rest is left as it was."""
    from dermstack.data.readers.content import image_digests

    rng = np.random.default_rng(1)
    refs = []
    for i in range(6):
        Image.fromarray(lesion_like(rng)).save(tmp_path / f"IMG_{i}.png")
        refs.append(str(tmp_path / f"IMG_{i}.png"))
    ids = [f"IMG_{i}" for i in range(6)]

    def table():
        t = make_table(ids, refs)
        t.df = t.df.with_columns(pl.Series("image_sha256", image_digests(refs)))
        return t

    out, fresh = tmp_path / "emb.h5", tmp_path / "fresh.h5"
    extract_embeddings(table(), [TEST_MODEL], out, settings(test_weights))
    before = EmbeddingStore(out).read(TEST_MODEL, ids)
    Image.fromarray(lesion_like(rng)).save(refs[2])  # a new image under the same id
    report = extract_embeddings(table(), [TEST_MODEL], out, settings(test_weights))
    rep = report.backbones[0]
    assert (rep.changed, rep.embedded, rep.already_done) == (1, 1, 5)
    assert "1 embedded, 0 failed" in report.summary() and "1 of these had changed since an earlier run" in report.summary()
    extract_embeddings(table(), [TEST_MODEL], fresh, settings(test_weights))
    store = EmbeddingStore(out)
    assert sorted(store.image_ids(TEST_MODEL)) == ids  # in place: no second row for IMG_2
    after, want = store.read(TEST_MODEL, ids), EmbeddingStore(fresh).read(TEST_MODEL, ids)
    np.testing.assert_allclose(after, want, atol=1e-3)
    assert not np.allclose(after[2], before[2]) and np.array_equal(np.delete(after, 2, 0), np.delete(before, 2, 0))
    # an image that failed, then repaired under the same id: tried again
    (tmp_path / "IMG_4.png").write_bytes(b"not an image")
    rep = extract_embeddings(table(), [TEST_MODEL], out, settings(test_weights)).backbones[0]
    assert (rep.changed, rep.embedded, len(rep.failed)) == (1, 0, 1) and EmbeddingStore(out).failed(TEST_MODEL).keys() == {"IMG_4"}
    assert sorted(EmbeddingStore(out).image_ids(TEST_MODEL)) == ids[:4] + ids[5:]  # its old embedding is gone
    np.testing.assert_array_equal(EmbeddingStore(out).read(TEST_MODEL, ids[:4] + ids[5:]), np.delete(after, 4, 0))
    Image.fromarray(lesion_like(rng)).save(refs[4])
    rep = extract_embeddings(table(), [TEST_MODEL], out, settings(test_weights)).backbones[0]
    assert (rep.changed, rep.embedded, rep.failed) == (1, 1, []) and not EmbeddingStore(out).failed(TEST_MODEL)
    # a store made before digests were kept: its rows' images are unknown, so nothing is embedded again
    with h5py.File(out, "a") as f:
        del f[TEST_MODEL]["image_sha256"]
    Image.fromarray(lesion_like(rng)).save(refs[3])
    rep = extract_embeddings(table(), [TEST_MODEL], out, settings(test_weights)).backbones[0]
    assert (rep.changed, rep.embedded) == (0, 0)


def test_streams_and_decode_workers_give_the_same_store(tmp_path, table, test_weights):
    """Two model streams decoding their own batches, and one stream fed by a DataLoader worker,
    embed every image exactly once with the same numbers; torch's thread count is restored."""
    ids = table.df["image_id"].to_list()
    threads = torch.get_num_threads()
    runs = {}
    for name, kw in {"one": {"streams": 1}, "two": {"streams": 2, "threads": 1}, "loader": {"streams": 1, "workers": 1}}.items():
        out = tmp_path / f"{name}.h5"
        rep = extract_embeddings(table, [TEST_MODEL], out, settings(test_weights, batch_size=3, **kw))
        assert rep.backbones[0].embedded == len(ids) and sorted(EmbeddingStore(out).image_ids(TEST_MODEL)) == sorted(ids)
        runs[name] = EmbeddingStore(out).read(TEST_MODEL, ids)
        assert torch.get_num_threads() == threads
    np.testing.assert_allclose(runs["two"], runs["one"], atol=1e-3)
    np.testing.assert_allclose(runs["loader"], runs["one"], atol=1e-3)


def test_an_error_in_a_stream_reaches_the_caller(tmp_path, table, test_weights, monkeypatch):
    from dermstack.extract import runner

    def broken(self, images):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(runner.Embedder, "__call__", broken)
    with pytest.raises(RuntimeError, match="model exploded"):
        extract_embeddings(table, [TEST_MODEL], tmp_path / "e.h5", settings(test_weights, streams=2))
    assert not EmbeddingStore(tmp_path / "e.h5").is_complete(TEST_MODEL)


def test_new_images_are_appended_and_changed_settings_refused(tmp_path, images, test_weights):
    ids, refs = images
    out = tmp_path / "e.h5"
    extract_embeddings(make_table(ids[:6], refs[:6]), [TEST_MODEL], out, settings(test_weights))
    rep = extract_embeddings(make_table(ids, refs), [TEST_MODEL], out, settings(test_weights))
    assert (rep.backbones[0].already_done, rep.backbones[0].embedded) == (6, len(ids) - 6)
    assert sorted(EmbeddingStore(out).image_ids(TEST_MODEL)) == sorted(ids)
    with pytest.raises(DataError, match="data_config"):
        extract_embeddings(make_table(ids, refs), [TEST_MODEL], out, settings(test_weights, image_size=96))
    with pytest.raises(DataError, match="tta"):
        extract_embeddings(make_table(ids, refs), [TEST_MODEL], out, settings(test_weights, tta=["hflip"]))


def test_shards_merged_equal_one_pass(tmp_path, table, test_weights):
    one = tmp_path / "one.h5"
    extract_embeddings(table, [TEST_MODEL], one, settings(test_weights))
    parts = [tmp_path / f"s{i}.h5" for i in range(3)]
    for i, p in enumerate(parts):
        rep = extract_embeddings(table, [TEST_MODEL], p, settings(test_weights), shard=(i, 3))
        assert rep.backbones[0].images == len(range(i, len(table), 3))
    merged = tmp_path / "merged.h5"
    assert merge_stores(parts, merged) == {TEST_MODEL: len(table)}
    ids = table.df["image_id"].to_list()
    a, b = EmbeddingStore(one), EmbeddingStore(merged)
    assert sorted(b.image_ids(TEST_MODEL)) == sorted(ids) and b.is_complete(TEST_MODEL)
    np.testing.assert_allclose(b.read(TEST_MODEL, ids), a.read(TEST_MODEL, ids), atol=1e-3)
    assert b.info(TEST_MODEL)["recipe"] == a.info(TEST_MODEL)["recipe"]
    with pytest.raises(DataError, match="more than one shard"):
        merge_stores([parts[0], parts[0]], tmp_path / "dup.h5")


def test_bad_images_recorded_and_job_goes_on(tmp_path, images, test_weights):
    ids, refs = images
    good = Image.open(refs[0])
    trunc = tmp_path / "truncated.jpg"
    trunc.write_bytes(open(refs[0], "rb").read()[:300])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a jpeg")
    h5 = refs[-1].split("::")[0]
    bad = {"TRUNC": str(trunc), "JUNK": str(junk), "GONE": str(tmp_path / "gone.jpg"), "NOKEY": f"{h5}::NOKEY", "NOREF": None}
    t = make_table(ids[:3] + list(bad), refs[:3] + list(bad.values()))
    out = tmp_path / "e.h5"
    rep = extract_embeddings(t, [TEST_MODEL], out, settings(test_weights))
    failed = EmbeddingStore(out).failed(TEST_MODEL)
    assert set(failed) == set(bad) and {x["image_id"] for x in rep.backbones[0].failed} == set(bad)
    assert "decode" in failed["TRUNC"] and "decode" in failed["JUNK"] and "read" in failed["GONE"]
    assert "NOKEY" in failed["NOKEY"] and failed["NOREF"] == "no image_ref"
    assert EmbeddingStore(out).read(TEST_MODEL, ids[:3]).shape == (3, 256) and good.size[0] > 0
    with pytest.raises(DataError, match="failed to embed"):
        EmbeddingStore(out).read(TEST_MODEL, ["TRUNC"])
    threads = torch.get_num_threads()
    with pytest.raises(DataError, match="strict") as err:
        extract_embeddings(t, [TEST_MODEL], tmp_path / "s.h5", settings(test_weights, streams=2, threads=1), strict=True)
    # the streams stopped when the error left the loop, not when its traceback (kept in err) is freed
    assert torch.get_num_threads() == threads and err.value.column == "image_ref"
    with pytest.raises(DataError, match="empty"):
        extract_embeddings(t.__class__(t.df.head(0), t.meta), [TEST_MODEL], tmp_path / "x.h5", settings(test_weights))


def test_hflip_tta_is_mean_of_image_and_mirror(tmp_path, test_weights):
    rng = np.random.default_rng(3)
    arr = lesion_like(rng, 90, 90)
    p, q = tmp_path / "a.png", tmp_path / "a_mirror.png"
    Image.fromarray(arr).save(p)
    Image.fromarray(arr[:, ::-1]).save(q)
    t = make_table(["A", "M"], [str(p), str(q)])
    plain, tta = tmp_path / "plain.h5", tmp_path / "tta.h5"
    extract_embeddings(t, [TEST_MODEL], plain, settings(test_weights))
    extract_embeddings(t, [TEST_MODEL], tta, settings(test_weights, tta=["hflip"]))
    a, m = EmbeddingStore(plain).read(TEST_MODEL, ["A", "M"])
    got = EmbeddingStore(tta).read(TEST_MODEL, ["A"])[0]
    np.testing.assert_allclose(got, (a + m) / 2, atol=2e-3)
    assert not np.allclose(a, m, atol=2e-3)


def test_cli_run_info_merge(tmp_path, table, test_weights):
    lesions = tmp_path / "lesions.parquet"
    table.write(lesions)
    runner = CliRunner()
    common = ["extract", "run", str(lesions), "--backbone", TEST_MODEL, "--weights", f"{TEST_MODEL}={test_weights}",
              "--image-size", str(SIZE), "--workers", "1", "--batch-size", "4", "--precision", "fp32"]
    for i in range(2):
        r = runner.invoke(cli, common + ["--out", str(tmp_path / f"s{i}.h5"), "--shard", f"{i}/2"])
        assert r.exit_code == 0, r.output
        assert "embedded" in r.output and (tmp_path / f"s{i}.report.json").exists()
    r = runner.invoke(cli, ["extract", "merge", str(tmp_path / "s0.h5"), str(tmp_path / "s1.h5"), "--out", str(tmp_path / "m.h5")])
    assert r.exit_code == 0 and f"{TEST_MODEL} {len(table)} images" in r.output
    r = runner.invoke(cli, ["extract", "info", str(tmp_path / "m.h5")])
    assert r.exit_code == 0 and "complete" in r.output and "INCOMPLETE" not in r.output
    r = runner.invoke(cli, common + ["--out", str(tmp_path / "x.h5"), "--shard", "2/2"])
    assert r.exit_code == 2 and "0 <= i < n" in r.output
    # the same store at another size: refused, naming the flag that embeds it again
    other = [a if a != str(SIZE) else "48" for a in common] + ["--out", str(tmp_path / "m.h5")]
    r = runner.invoke(cli, other)
    assert r.exit_code == 2 and "made with other settings" in r.output and "--replace-changed" in r.output, r.output
    r = runner.invoke(cli, other + ["--replace-changed"])
    assert r.exit_code == 0 and f"{len(table)} embedded" in r.output, r.output
    assert EmbeddingStore(tmp_path / "m.h5").info(TEST_MODEL)["data_config"]["input_size"] == [3, 48, 48]


def test_store_file_layout(tmp_path, table, test_weights):
    """Two backbones share one file; features are float16, chunked and resizable."""
    out = tmp_path / "e.h5"
    extract_embeddings(table, [TEST_MODEL, "test_vit"], out,
                       settings(test_weights, weights={TEST_MODEL: str(test_weights), "test_vit": str(_vit_weights(tmp_path))}))
    assert EmbeddingStore(out).backbones() == [TEST_MODEL, "test_vit"]
    with h5py.File(out, "r") as f:
        ds = f[TEST_MODEL]["features"]
        assert ds.dtype == np.float16 and ds.chunks is not None and ds.maxshape == (None, 256)
        assert f["test_vit"]["features"].shape == (len(table), 64)


def _vit_weights(tmp_path):
    import timm

    torch.manual_seed(1)
    p = tmp_path / "vit.pth"
    torch.save(timm.create_model("test_vit").state_dict(), p)
    return p


def test_real_isic2024_hdf5_crops_and_ham10000_jpegs(tmp_path, shared_data, test_weights):
    """Real data: the Kaggle ISIC 2024 HDF5 (JPEG bytes) via its reader, and HAM10000 JPEG files."""
    from dermstack.data.readers import ingest

    t, _ = ingest("isic2024", shared_data / "isic2024-sample")
    ham = sorted((shared_data / "ham10000-dev" / "images").glob("*.jpg"))[:4]
    both = make_table(t.df["image_id"].to_list() + [p.stem for p in ham], t.df["image_ref"].to_list() + [str(p) for p in ham])
    out = tmp_path / "real.h5"
    rep = extract_embeddings(both, [TEST_MODEL], out, settings(test_weights, workers=1))
    assert rep.backbones[0].embedded == len(both) and not rep.backbones[0].failed
    feats = EmbeddingStore(out).read(TEST_MODEL, both.df["image_id"].to_list())
    assert np.isfinite(feats).all() and len({f.tobytes() for f in feats}) == len(both)


def test_folded_backbone_embeds_as_built_and_the_store_says_so(tmp_path, table, monkeypatch):
    """Real ImageNet statistics (efficientnet_lite0's package weights, TF "same" padding): the network
    extraction runs (BatchNorm folded, border padding) stores the embeddings the network as built
    stores, to float16 rounding."""
    from dermstack.extract import runner

    s = ExtractSettings(image_size=96, batch_size=4, workers=0, precision="fp32")
    ids = table.df["image_id"].to_list()
    extract_embeddings(table, ["efficientnet_lite0"], tmp_path / "folded.h5", s)
    monkeypatch.setattr(runner, "frozen_network", lambda model, example: (model, 0))
    extract_embeddings(table, ["efficientnet_lite0"], tmp_path / "built.h5", s)
    folded, built = EmbeddingStore(tmp_path / "folded.h5"), EmbeddingStore(tmp_path / "built.h5")
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in create_backbone("efficientnet_lite0").model.modules())
    assert folded.info("efficientnet_lite0")["batchnorm_folded"] == norms > 40
    assert built.info("efficientnet_lite0")["batchnorm_folded"] == 0
    got, want = folded.read("efficientnet_lite0", ids), built.read("efficientnet_lite0", ids)
    assert np.abs(got - want).max() <= 2e-3 * np.abs(want).max()  # a float16 step at most
    assert (got != want).mean() < 0.02 and np.abs(got - want).mean() < 1e-4 * np.abs(want).mean()


def test_many_failed_images_are_counted_in_one_line_not_one_each(tmp_path, test_weights, caplog):
    from dermstack.extract.runner import FAILED_LOGGED

    gone = [f"GONE{i}" for i in range(FAILED_LOGGED + 7)]
    t = make_table(gone, [str(tmp_path / f"{i}.jpg") for i in gone])
    with caplog.at_level(logging.WARNING, logger="dermstack.extract.runner"):
        rep = extract_embeddings(t, [TEST_MODEL], tmp_path / "e.h5", settings(test_weights))
    assert len(rep.backbones[0].failed) == len(gone)  # the report still lists every one
    lines = [r.getMessage() for r in caplog.records]
    assert sum("not embedded:" in m for m in lines) == FAILED_LOGGED, lines
    assert any(f"{len(gone)} images not embedded in all (7 more than the above)" in m for m in lines), lines

