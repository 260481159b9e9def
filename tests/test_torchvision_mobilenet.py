"""torchvision's MobileNetV3-Large (dilated) and LR-ASPP: parameter counts, parity, converter.

torchvision (test extra `parity`) builds `lraspp_mobilenet_v3_large` and
`deeplabv3_mobilenet_v3_large` with seeded random weights, random batch-norm weights and
running statistics, saves their state dicts with `torch.save`, and runs them on CamVid
frames; `kerasseg.convert.torch_pickle` reads the files back without torch and the
converters load them into the Keras models. torchvision's native ops crash when loaded
into a process that already holds TensorFlow, so torchvision runs once, in a child
process (`TORCHVISION_SCRIPT`), and the tests that need it skip when it is not installed.
"""

import json

import keras
import numpy as np
import pytest
from conftest import argmax_agreement, randomise_batch_norm, relative_error, run_torch_script
from PIL import Image

import kerasseg
from kerasseg.convert.torchvision import load_state_dict, torchvision_param_count
from kerasseg.convert.torchvision_mobilenet import lraspp_weights, mobilenet_v3_backbone_weights
from kerasseg.models.base import SegmentationModel
from kerasseg.models.lraspp import lraspp_torchvision
from kerasseg.models.mobilenet_v3 import mobilenet_v3_large_features
from kerasseg.models.resize import ResizeShorterSide, shorter_side_size
from kerasseg.preprocessing import IMAGENET_MEAN, IMAGENET_STD

LRASPP_NUM_PARAMS = 3_221_538  # LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
DEEPLABV3_NUM_PARAMS = 11_029_328  # DeepLabV3_MobileNet_V3_Large_Weights, with aux_classifier
SIZES = {"small": (120, 160), "odd": (97, 131)}
# ResizeShorterSide cases: (crop height, crop width, shorter side): down-sampling by up to
# 7x (antialias matters), up-sampling, portrait, square, and the size already right.
RESIZE_CASES = ((360, 480, 50), (97, 131, 40), (97, 131, 150), (131, 97, 60), (64, 64, 33))
RESIZE_CASES += ((97, 131, 97),)

TORCHVISION_SCRIPT = """
import json
import sys

import torch_reference
from torch_reference import nhwc

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.models.segmentation import (
    DeepLabV3_MobileNet_V3_Large_Weights,
    LRASPP_MobileNet_V3_Large_Weights,
    deeplabv3_mobilenet_v3_large,
    deeplabv3_resnet50,
    lraspp_mobilenet_v3_large,
)
from torchvision.models import mobilenet_v3_large
from torchvision.transforms.functional import resize

work = sys.argv[1]
cases = json.loads(sys.argv[2])
inputs = np.load(f"{work}/inputs.npz")
generator = torch.Generator().manual_seed(0)


def randomise(model):
    return torch_reference.randomise(model, generator, conv_bias=0.1)


torch.manual_seed(0)
lraspp = randomise(lraspp_mobilenet_v3_large(weights=None, weights_backbone=None))
deeplab = randomise(
    deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=True)
)
torch.save(lraspp.state_dict(), f"{work}/lraspp.pth")
torch.save(deeplab.state_dict(), f"{work}/deeplabv3.pth")
classification = randomise(mobilenet_v3_large(weights=None))
torch.save(classification.state_dict(), f"{work}/mobilenet_v3_large.pth")
with torch.device("meta"):  # keys and shapes only
    resnet = deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=True)
with open(f"{work}/resnet_shapes.json", "w") as file:
    json.dump({key: list(value.shape) for key, value in resnet.state_dict().items()}, file)

out = {
    "lraspp_params": sum(p.numel() for p in lraspp.parameters()),
    "lraspp_num_params": LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1.meta[
        "num_params"
    ],
    "deeplabv3_params": sum(p.numel() for p in deeplab.parameters()),
    "deeplabv3_num_params": DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1.meta[
        "num_params"
    ],
    "deeplabv3_backbone_params": sum(p.numel() for p in deeplab.backbone.parameters()),
}
with torch.no_grad():
    for name in ("small", "odd"):
        x = torch.from_numpy(inputs[name].transpose(0, 3, 1, 2))
        features = lraspp.backbone(x)
        out[f"{name}_low"], out[f"{name}_high"] = nhwc(features["low"]), nhwc(features["high"])
        out[f"{name}_out"] = nhwc(lraspp(x)["out"])
        features = deeplab.backbone(x)
        out[f"{name}_deeplabv3_out"] = nhwc(features["out"])
        out[f"{name}_deeplabv3_aux"] = nhwc(features["aux"])
        out[f"{name}_classification_low"] = nhwc(classification.features[:5](x))
        out[f"{name}_classification_high"] = nhwc(classification.features(x))

    # The preset transform (resize to shorter side 520, antialias, normalise), the model,
    # and the logits resized back to the frame's size.
    preset = LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1.transforms()
    frame = torch.from_numpy(inputs["frame"].transpose(2, 0, 1).copy())
    for kind, image in (("uint8", frame), ("float", frame.float() / 255)):
        logits = lraspp(preset(image)[None])["out"]
        back = F.interpolate(logits, size=frame.shape[1:], mode="bilinear", align_corners=False)
        out[f"preset_{kind}"] = nhwc(back)

    for i, (height, width, size) in enumerate(cases):
        crop = torch.from_numpy(inputs["frame"][:height, :width].transpose(2, 0, 1).copy())
        out[f"resize_float_{i}"] = nhwc(resize(crop.float()[None] / 255, [size], antialias=True))
        out[f"resize_uint8_{i}"] = nhwc(resize(crop[None], [size], antialias=True))
np.savez(f"{work}/torchvision.npz", **out)
"""


def _normalise(image):
    return ((image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype("float32")


@pytest.fixture(scope="module")
def frame(data_dir):
    """A CamVid validation frame, (360, 480, 3) uint8."""
    path = sorted((data_dir / "camvid" / "val").glob("*.png"))[0]
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def inputs(frame):
    """The frame resized (PIL bilinear) to each of `SIZES`, ImageNet-normalised, batch 1."""
    resized = {
        name: np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR), "float32")
        for name, (h, w) in SIZES.items()
    }
    return {name: _normalise(image)[None] for name, image in resized.items()}


@pytest.fixture(scope="module")
def torchvision_run(frame, inputs, tmp_path_factory):
    """torchvision's state dicts (.pth), keys and outputs, from one child process."""
    work = tmp_path_factory.mktemp("torchvision_mobilenet")
    np.savez(work / "inputs.npz", frame=frame, **inputs)
    return work, run_torch_script(TORCHVISION_SCRIPT, work, json.dumps(RESIZE_CASES))


@pytest.fixture(scope="module")
def converted(torchvision_run):
    """The Keras LR-ASPP with the torchvision model's weights."""
    work, _ = torchvision_run
    model = lraspp_torchvision()
    lraspp_weights(load_state_dict(work / "lraspp.pth"), model)
    return model


def test_parameter_counts_are_torchvisions(torchvision_run):
    _, theirs = torchvision_run
    assert int(theirs["lraspp_num_params"]) == int(theirs["lraspp_params"]) == LRASPP_NUM_PARAMS
    assert torchvision_param_count(lraspp_torchvision()) == LRASPP_NUM_PARAMS
    assert int(theirs["deeplabv3_num_params"]) == DEEPLABV3_NUM_PARAMS
    assert int(theirs["deeplabv3_params"]) == DEEPLABV3_NUM_PARAMS
    backbone = torchvision_param_count(mobilenet_v3_large_features())
    assert backbone == int(theirs["deeplabv3_backbone_params"]) == 2_971_952


@pytest.mark.parametrize("size", list(SIZES))
def test_lraspp_matches_torchvision(converted, torchvision_run, inputs, size, record_property):
    _, theirs = torchvision_run
    features = converted.get_layer("backbone")(inputs[size])
    for key in ("low", "high"):
        ours = keras.ops.convert_to_numpy(features[key])
        assert ours.shape == theirs[f"{size}_{key}"].shape
        assert relative_error(ours, theirs[f"{size}_{key}"]) <= 1e-4, key
    ours = keras.ops.convert_to_numpy(converted(inputs[size]))
    reference = theirs[f"{size}_out"]
    assert ours.shape == reference.shape == (1, *SIZES[size], 21)
    relative, agreement = relative_error(ours, reference), argmax_agreement(ours, reference)
    record_property("relative_difference", relative)
    record_property("argmax_agreement", agreement)
    print(f"lraspp {size}: relative difference {relative:.2e}, argmax agreement {agreement:.5f}")
    assert relative <= 1e-4
    assert agreement >= 0.999


def test_deeplabv3_backbone_matches_torchvision(torchvision_run, inputs):
    work, theirs = torchvision_run
    state_dict = load_state_dict(work / "deeplabv3.pth")
    backbone = mobilenet_v3_large_features()
    consumed = mobilenet_v3_backbone_weights(state_dict, backbone)
    assert consumed == {key for key in state_dict if key.startswith("backbone.")}
    for size in SIZES:
        features = backbone(inputs[size])
        # deeplabv3_mobilenet_v3_large takes "out" from features.16 and "aux" from features.4.
        for ours, key in ((features["high"], "out"), (features["low"], "aux")):
            reference = theirs[f"{size}_deeplabv3_{key}"]
            assert relative_error(keras.ops.convert_to_numpy(ours), reference) <= 1e-4, (size, key)


def test_undilated_features_match_the_classification_network(torchvision_run, inputs):
    work, theirs = torchvision_run
    state_dict = load_state_dict(work / "mobilenet_v3_large.pth")
    features = mobilenet_v3_large_features(dilated=False)
    consumed = mobilenet_v3_backbone_weights(state_dict, features, prefix="features.")
    assert consumed == {key for key in state_dict if key.startswith("features.")}
    for size in SIZES:
        ours = features(inputs[size])
        for key in ("low", "high"):
            reference = theirs[f"{size}_classification_{key}"]
            assert ours[key].shape == reference.shape
            assert relative_error(keras.ops.convert_to_numpy(ours[key]), reference) <= 1e-4


@pytest.mark.parametrize("case", range(len(RESIZE_CASES)))
def test_resize_shorter_side_is_torchvisions_resize(torchvision_run, frame, case):
    _, theirs = torchvision_run
    height, width, size = RESIZE_CASES[case]
    crop = frame[None, :height, :width].astype("float32")
    layer = ResizeShorterSide(size)
    ours = keras.ops.convert_to_numpy(layer(crop / 255))
    expected = theirs[f"resize_float_{case}"]
    assert ours.shape == expected.shape
    assert layer.compute_output_shape((1, height, width, 3)) == expected.shape
    assert np.abs(ours - expected).max() <= 1e-5
    # torchvision rounds resized uint8 images back to uint8; the layer keeps floats.
    rounded = keras.ops.convert_to_numpy(layer(crop))
    assert np.abs(rounded - theirs[f"resize_uint8_{case}"]).max() <= 0.5 + 1e-3


def test_shorter_side_size_unknown_sizes_match_known():
    for height, width in ((97, 131), (131, 97), (64, 64), (1, 1000), (360, 480)):
        expected = shorter_side_size(height, width, 520)
        assert expected == (
            (int(520 * height / width), 520)
            if width <= height
            else (520, int(520 * width / height))
        )
        traced = shorter_side_size(keras.ops.array(height), keras.ops.array(width), 520)
        assert tuple(int(keras.ops.convert_to_numpy(v)) for v in traced) == expected


@pytest.mark.parametrize("kind", ["float", "uint8"])
def test_resize_shorter_side_matches_the_preset_transform(
    torchvision_run, frame, kind, record_property
):
    """`resize_shorter_side=520` with `include_preprocessing` on the 0..255 frame against
    torchvision's `weights.transforms()` + model + logits resized back to the frame's size.

    On a float image torchvision computes what the model does (tolerance 1e-4); on a uint8
    image its transform rounds the resized image to uint8 first (up to 0.5 grey levels), a
    difference the model does not make: there the logits agree to 1e-3 of their range
    (1.1e-4 measured) and the argmax on at least 99 % of the pixels (100 % measured).
    """
    work, theirs = torchvision_run
    model = lraspp_torchvision(include_preprocessing=True, resize_shorter_side=520)
    lraspp_weights(load_state_dict(work / "lraspp.pth"), model)
    ours = keras.ops.convert_to_numpy(model(frame[None].astype("float32")))
    reference = theirs[f"preset_{kind}"]
    assert ours.shape == reference.shape == (1, 360, 480, 21)
    relative, agreement = relative_error(ours, reference), argmax_agreement(ours, reference)
    record_property("relative_difference", relative)
    record_property("argmax_agreement", agreement)
    print(f"preset {kind}: relative difference {relative:.2e}, argmax agreement {agreement:.5f}")
    if kind == "float":
        assert relative <= 1e-4 and agreement >= 0.999
    else:
        assert relative <= 1e-3 and agreement >= 0.99


def test_converter_errors(converted, torchvision_run):
    work, _ = torchvision_run
    state_dict = load_state_dict(work / "lraspp.pth")
    before = [w.numpy() for w in converted.weights]

    with open(work / "resnet_shapes.json") as file:
        resnet = {k: np.zeros(shape, "float32") for k, shape in json.load(file).items()}
    with pytest.raises(ValueError, match="not a torchvision lraspp_mobilenet_v3_large"):
        lraspp_weights(resnet, converted)
    with pytest.raises(ValueError, match=r"holds no 'backbone\.0\.0\.weight'"):
        mobilenet_v3_backbone_weights(resnet, converted)

    for key in ("backbone.13.block.1.0.weight", "classifier.cbr.1.running_var"):
        incomplete = {k: v for k, v in state_dict.items() if k != key}
        with pytest.raises(ValueError, match=rf"missing keys \(1\): .*{key}"):
            lraspp_weights(incomplete, converted)

    reshaped = dict(state_dict)
    reshaped["backbone.4.block.1.0.weight"] = np.zeros((72, 1, 3, 3), "float32")
    with pytest.raises(ValueError, match=r"backbone\.4\.block\.1\.0\.weight: \(72, 1, 3, 3\)"):
        lraspp_weights(reshaped, converted)

    deeplab = load_state_dict(work / "deeplabv3.pth")
    deeplab["classifier.low_classifier.weight"] = state_dict["classifier.low_classifier.weight"]
    with pytest.raises(ValueError, match=r"unexpected keys .*aux_classifier\.0\.weight"):
        lraspp_weights(deeplab, converted)

    with pytest.raises(ValueError, match="is for 21 classes but the model has 3"):
        lraspp_weights(state_dict, lraspp_torchvision(num_classes=3))
    with pytest.raises(TypeError, match="`state_dict` must be a dict"):
        lraspp_weights(list(state_dict.items()), converted)
    with pytest.raises(ValueError, match="must be a kerasseg LR-ASPP"):
        lraspp_weights(state_dict, mobilenet_v3_large_features())

    after = [w.numpy() for w in converted.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_registered_and_checks_arguments():
    model = kerasseg.load("lraspp_torchvision", num_classes=4, input_shape=(None, None, 3))
    assert isinstance(model, SegmentationModel) and model.output.shape[-1] == 4
    with pytest.raises(ValueError, match="`resize_shorter_side` must be an integer >= 1"):
        lraspp_torchvision(resize_shorter_side=0)
    with pytest.raises(ValueError, match="`inter_channels`"):
        lraspp_torchvision(inter_channels=1.5)
    with pytest.raises(ValueError, match="`dilated` must be True or False"):
        mobilenet_v3_large_features(dilated="yes")
    undilated = mobilenet_v3_large_features(input_shape=(64, 96, 3), dilated=False)
    features = undilated(np.zeros((1, 64, 96, 3), "float32"))
    assert {k: tuple(v.shape[1:]) for k, v in features.items()} == {
        "low": (8, 12, 40),
        "high": (2, 3, 960),
    }


def test_keras_round_trip(tmp_path):
    model = lraspp_torchvision(num_classes=3, include_preprocessing=True, resize_shorter_side=40)
    randomise_batch_norm(model)
    images = np.random.default_rng(0).uniform(0, 255, (2, 50, 70, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    assert expected.shape == (2, 50, 70, 3)
    path = tmp_path / "lraspp.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SegmentationModel)
    assert loaded.get_layer("resize_shorter_side").size == 40
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-5)
