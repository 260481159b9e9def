"""The "resnet18" / "resnet34" encoders against torchvision, and their ImageNet weights path.

torchvision (test extra `parity`) builds `resnet18` and `resnet34` with seeded random
weights and random batch-norm weights and running statistics, saves their state dicts with
`torch.save`, normalises a CamVid frame with its `IMAGENET1K_V1` preset's mean and std and
returns what segmentation_models.pytorch's ResNet encoder taps (the ReLU after `bn1`, then
layer1..layer4), with its parameter counts and its `*_Weights` metadata. torchvision's
native ops crash when loaded into a process that already holds TensorFlow, so torchvision
runs once, in a child process (`TORCHVISION_SCRIPT`), and the tests skip when it is not
installed. The `.pth` files go through `kerasseg.convert.encoder_weights` (no torch), and,
served from 127.0.0.1 under torchvision's URL shape, through the whole
`encoder_weights="imagenet"` path (download, verify, convert, cache, offline).

Parity tolerance: max |ours - torchvision| / max |torchvision| per feature below 1e-4.
"""

import dataclasses
import hashlib

import keras
import numpy as np
import pytest
from conftest import LocalFileServer, run_torch_script
from PIL import Image

import kerasseg
import kerasseg.convert.encoder_weights  # noqa: F401 (registers the ImageNet weights)
from kerasseg import public_weights
from kerasseg.convert.encoder_weights import resnet_encoder_converter, resnet_encoder_weights
from kerasseg.convert.presets import hub_hash_prefix
from kerasseg.convert.torchvision import load_state_dict, torchvision_param_count
from kerasseg.models import encoders
from kerasseg.models.encoders import (
    ENCODERS,
    build_encoder,
    encoder_network,
    register_encoder_weights,
)
from kerasseg.preprocessing import ImagePreprocessing

DEPTHS = (18, 34)
SIZE = (128, 160)
RTOL = 1e-4
# torchvision's parameter counts without the 512 x 1000 classifier (`fc`, 513,000).
ENCODER_PARAMS = {18: 11_689_512 - 513_000, 34: 21_797_672 - 513_000}
TAPS = ("relu", "layer1", "layer2", "layer3", "layer4")

TORCHVISION_SCRIPT = """
import sys

from torch_reference import nhwc, randomise

import numpy as np
import torch
from torchvision import models

work = sys.argv[1]
frame = torch.from_numpy(np.load(f"{work}/frame.npy").transpose(2, 0, 1).copy())[None]
generator = torch.Generator().manual_seed(0)
out = {}


for depth in (18, 34):
    torch.manual_seed(depth)
    model = randomise(getattr(models, f"resnet{depth}")(weights=None), generator)
    torch.save(model.state_dict(), f"{work}/resnet{depth}.pth")
    weights = getattr(models, f"ResNet{depth}_Weights").IMAGENET1K_V1
    preset = weights.transforms()
    x = (frame / 255 - torch.tensor(preset.mean)[:, None, None]) / torch.tensor(
        preset.std
    )[:, None, None]
    with torch.no_grad():  # segmentation_models.pytorch's ResNetEncoder.forward
        x = model.relu(model.bn1(model.conv1(x)))
        out[f"resnet{depth}_relu"] = nhwc(x)
        x = model.maxpool(x)
        for stage in range(1, 5):
            x = getattr(model, f"layer{stage}")(x)
            out[f"resnet{depth}_layer{stage}"] = nhwc(x)
    out[f"resnet{depth}_params"] = sum(p.numel() for p in model.parameters())
    out[f"resnet{depth}_encoder_params"] = sum(
        p.numel() for name, p in model.named_parameters() if not name.startswith("fc.")
    )
    out[f"resnet{depth}_num_params"] = weights.meta["num_params"]
    out[f"resnet{depth}_url"] = weights.url
    out[f"resnet{depth}_acc1"] = weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    out[f"resnet{depth}_acc5"] = weights.meta["_metrics"]["ImageNet-1K"]["acc@5"]
np.savez(f"{work}/torchvision.npz", **out)
"""


def _relative(ours, theirs):
    """max |ours - theirs| / max |theirs|."""
    ours = keras.ops.convert_to_numpy(ours)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def frame(data_dir):
    """A CamVid validation frame resized (PIL bilinear) to `SIZE`, float32 0..255, batch 1."""
    path = sorted((data_dir / "camvid" / "val").glob("*.png"))[0]
    image = Image.open(path).convert("RGB").resize(SIZE[::-1], Image.BILINEAR)
    return np.asarray(image, "float32")[None]


@pytest.fixture(scope="module")
def torchvision_run(frame, tmp_path_factory):
    """(work folder with resnet{18,34}.pth, torchvision's features and metadata)."""
    work = tmp_path_factory.mktemp("torchvision_encoders")
    np.save(work / "frame.npy", frame[0])
    return work, run_torch_script(TORCHVISION_SCRIPT, work)


@pytest.fixture(scope="module")
def converted(torchvision_run, tmp_path_factory):
    """{depth: the `.weights.h5` written by the registered converter from torchvision's .pth}."""
    work, _ = torchvision_run
    out = tmp_path_factory.mktemp("converted")
    paths = {}
    for depth in DEPTHS:
        paths[depth] = out / f"resnet{depth}.weights.h5"
        resnet_encoder_converter(f"resnet{depth}")(work / f"resnet{depth}.pth", paths[depth])
    return paths


def _assert_features_match(encoder, frame, theirs, depth):
    spec = ENCODERS[f"resnet{depth}"]
    features = encoder(ImagePreprocessing(spec.preprocessing)(frame))
    assert len(features) == len(TAPS)
    for feature, tap in zip(features, TAPS, strict=True):
        reference = theirs[f"resnet{depth}_{tap}"]
        assert tuple(feature.shape) == reference.shape, tap
        relative = _relative(feature, reference)
        print(f"resnet{depth} {tap}: relative difference {relative:.2e}")
        assert relative <= RTOL, (depth, tap, relative)


@pytest.mark.parametrize("depth", DEPTHS)
def test_features_equal_torchvision(converted, torchvision_run, frame, depth):
    _, theirs = torchvision_run
    encoder, present = build_encoder(f"resnet{depth}", (None, None, 3), converted[depth])
    assert present == [True] * 5
    _assert_features_match(encoder, frame, theirs, depth)


@pytest.mark.parametrize("depth", DEPTHS)
def test_parameter_count_is_torchvisions_without_fc(torchvision_run, depth):
    _, theirs = torchvision_run
    assert int(theirs[f"resnet{depth}_num_params"]) == int(theirs[f"resnet{depth}_params"])
    expected = int(theirs[f"resnet{depth}_encoder_params"])
    assert expected == ENCODER_PARAMS[depth]
    encoder, _ = build_encoder(f"resnet{depth}")
    assert torchvision_param_count(encoder) == expected


@pytest.mark.parametrize("depth", DEPTHS)
def test_registered_weights_are_torchvisions(torchvision_run, depth):
    _, theirs = torchvision_run
    info = encoders.ENCODER_WEIGHTS[f"resnet{depth}"]
    assert info.url == str(theirs[f"resnet{depth}_url"])
    assert info.sha256_prefix == {18: "f37072fd", 34: "b627a593"}[depth]
    assert info.metrics == {
        "acc@1": float(theirs[f"resnet{depth}_acc1"]),
        "acc@5": float(theirs[f"resnet{depth}_acc5"]),
    }


def test_converter_uses_every_key_but_fc_and_refuses_other_networks(torchvision_run):
    work, _ = torchvision_run
    state_dict = load_state_dict(work / "resnet18.pth")
    network = encoder_network("resnet18")
    consumed = resnet_encoder_weights(state_dict, network)
    assert consumed == {key for key in state_dict if not key.startswith("fc.")}
    before = [w.numpy() for w in network.weights]
    resnet34 = load_state_dict(work / "resnet34.pth")
    with pytest.raises(ValueError, match=r"unexpected keys \(\d+\): layer1\.2\.bn1\.bias"):
        resnet_encoder_weights(resnet34, network)
    with pytest.raises(ValueError, match=r"missing keys .*layer1\.2\.conv1\.weight"):
        resnet_encoder_weights(state_dict, encoder_network("resnet34"))
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): head\.weight"):
        resnet_encoder_weights({**state_dict, "head.weight": np.zeros(3, "float32")}, network)
    with pytest.raises(TypeError, match="`state_dict` must be a dict"):
        resnet_encoder_weights(list(state_dict.items()), network)
    after = [w.numpy() for w in network.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_decoders_build_and_predict():
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    for architecture, encoder in (("unet", "resnet34"), ("fpn", "resnet18")):
        model = kerasseg.load(architecture, encoder=encoder, encoder_weights=None, num_classes=3)
        assert model.predict(images, verbose=0).shape == (1, 64, 96, 3)
        assert kerasseg.preprocessing_layer(architecture, encoder=encoder).mode == "torch"


def test_one_channel_input_with_converted_weights(converted, torchvision_run):
    work, _ = torchvision_run
    rgb, _ = build_encoder("resnet18", (None, None, 3), weights=converted[18])
    grey, _ = build_encoder("resnet18", (None, None, 1), weights=converted[18])
    kernel = load_state_dict(work / "resnet18.pth")["conv1.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_allclose(
        grey.get_layer("conv1").kernel.numpy(), kernel.sum(axis=2, keepdims=True), rtol=1e-6
    )
    z = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 1)).astype("float32")
    for a, b in zip(grey(z), rgb(np.repeat(z, 3, axis=-1)), strict=True):
        assert _relative(a, keras.ops.convert_to_numpy(b)) <= 1e-5
    model = kerasseg.load(
        "unet",
        encoder="resnet18",
        encoder_weights=str(converted[18]),
        input_shape=(None, None, 1),
        num_classes=2,
    )
    assert model.predict(z * 255, verbose=0).shape == (1, 64, 64, 2)
    encoder = model.get_layer("encoder")
    np.testing.assert_array_equal(
        encoder.get_layer("conv1").kernel.numpy(), grey.get_layer("conv1").kernel.numpy()
    )


def test_registration_checks_its_arguments(monkeypatch):
    monkeypatch.setattr(encoders, "ENCODER_WEIGHTS", dict(encoders.ENCODER_WEIGHTS))
    with pytest.raises(ValueError, match=r"`name`: encoder 'resnet50' is a keras.applications"):
        register_encoder_weights("resnet50", encoders.ENCODER_WEIGHTS["resnet18"])
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet19'"):
        register_encoder_weights("resnet19", None)
    with pytest.raises(TypeError, match=r"`weights` must be a .*PublicWeights or None; got str"):
        register_encoder_weights("resnet18", "https://example.org/resnet18.pth")
    register_encoder_weights("resnet18", None)
    with pytest.raises(ValueError, match=r"no ImageNet checkpoint is registered for encoder"):
        build_encoder("resnet18", weights="imagenet")


@pytest.fixture
def served_resnet18(torchvision_run, tmp_path, monkeypatch):
    """torchvision's resnet18 .pth served as /models/resnet18-<sha256 prefix>.pth, and
    registered as the encoder's ImageNet weights in place of the published address."""
    work, _ = torchvision_run
    data = (work / "resnet18.pth").read_bytes()
    path = f"/models/resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    root = tmp_path / "served"
    (root / "models").mkdir(parents=True)
    (root / path.lstrip("/")).write_bytes(data)
    server = LocalFileServer(root)
    monkeypatch.setenv("KERASSEG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(public_weights.OFFLINE_VARIABLE, raising=False)
    monkeypatch.setattr(encoders, "ENCODER_WEIGHTS", dict(encoders.ENCODER_WEIGHTS))
    url = server.url + path
    published = encoders.ENCODER_WEIGHTS["resnet18"]
    info = dataclasses.replace(published, url=url, sha256_prefix=hub_hash_prefix(url))
    register_encoder_weights("resnet18", info)
    yield server, path, info
    server.httpd.shutdown()


def test_imagenet_weights_download_convert_cache(served_resnet18, torchvision_run, frame):
    server, path, info = served_resnet18
    _, theirs = torchvision_run
    assert info.sha256_prefix == path.rsplit("-", 1)[1].split(".")[0]
    model = kerasseg.load("unet", encoder="resnet18", encoder_weights="imagenet", num_classes=2)
    assert server.hits[path] == 1
    assert info.converted_path.is_file() and info.original_path.is_file()
    _assert_features_match(model.get_layer("encoder"), frame, theirs, 18)
    again = kerasseg.load("fpn", encoder="resnet18", encoder_weights="imagenet", num_classes=2)
    assert server.hits[path] == 1, "the second load reads the cache"
    _assert_features_match(again.get_layer("encoder"), frame, theirs, 18)


def test_imagenet_weights_offline_says_what_to_do(served_resnet18, monkeypatch):
    server, path, info = served_resnet18
    monkeypatch.setenv(public_weights.OFFLINE_VARIABLE, "1")
    with pytest.raises(OSError) as caught:
        kerasseg.load("unet", encoder="resnet18", encoder_weights="imagenet")
    message = str(caught.value)
    assert message.startswith(
        "`encoder_weights='imagenet'`: the ImageNet weights of encoder 'resnet18' are not "
        "available. KERASSEG_OFFLINE is set"
    )
    assert str(info.original_path) in message and str(info.converted_path.parent) in message
    assert path not in server.hits
