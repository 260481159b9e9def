"""torchvision's DeepLabV3 and FCN (ResNet-50/101, MobileNetV3-Large) in Keras, against torchvision.

torchvision (test extra `parity`) builds `deeplabv3_resnet50`, `fcn_resnet50`,
`fcn_resnet101` and `deeplabv3_mobilenet_v3_large` with the auxiliary head, seeded random
weights and random batch-norm weights and running statistics, saves their state dicts with
`torch.save` and runs them on a CamVid frame (the ResNets at two sizes, one odd; the
MobileNet at one); it also runs its preset transform (`weights.transforms()`) and pipeline,
and reads its `*_Weights` metadata (parameter counts, URLs, figures) for the presets.
`kerasseg.convert.torch_pickle` reads the files back without torch and `semantic_weights`
loads them into the Keras models. torchvision's native ops crash when loaded into a process
that already holds TensorFlow, so torchvision runs once, in a child process
(`TORCHVISION_SCRIPT`), and the tests that need it skip when it is not installed.

Parity tolerance: max |ours - torchvision| / max |torchvision| per output below 1e-4
(measured here: about 3e-6 on the ResNets, 1e-6 on the MobileNet), argmax agreement above
99.9 %.
"""

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import argmax_agreement, relative_error, run_torch_script
from PIL import Image

import kerasseg
from kerasseg.convert.torchvision import load_state_dict, torchvision_param_count
from kerasseg.convert.torchvision_semantic import (
    semantic_architecture,
    semantic_num_classes,
    semantic_weights,
)
from kerasseg.models.base import SegmentationModel
from kerasseg.models.torchvision_semantic import deeplabv3_torchvision, fcn_torchvision
from kerasseg.preprocessing import IMAGENET_MEAN, IMAGENET_STD

RTOL = 1e-4
BUILDERS = {"deeplabv3": deeplabv3_torchvision, "fcn": fcn_torchvision}
ENUMS = {
    ("deeplabv3", "resnet50"): "DeepLabV3_ResNet50_Weights",
    ("deeplabv3", "resnet101"): "DeepLabV3_ResNet101_Weights",
    ("deeplabv3", "mobilenet_v3_large"): "DeepLabV3_MobileNet_V3_Large_Weights",
    ("fcn", "resnet50"): "FCN_ResNet50_Weights",
    ("fcn", "resnet101"): "FCN_ResNet101_Weights",
}
SIZES = {"small": (120, 160), "odd": (97, 131)}
# (family, backbone) -> the SIZES it runs at: ResNet-50 for both families, ResNet-101 for
# one, and the MobileNet (whose backbone alone tests/test_torchvision_mobilenet.py also
# checks) at one size.
PARITY_CASES = {
    ("deeplabv3", "resnet50"): ("small", "odd"),
    ("fcn", "resnet50"): ("small", "odd"),
    ("fcn", "resnet101"): ("small", "odd"),
    ("deeplabv3", "mobilenet_v3_large"): ("small",),
}
PIPELINE_SIZE = 64  # the pipeline test's shorter side (torchvision's preset: 520)
MASKRCNN_KEYS = Path(__file__).parent / "fixtures" / "maskrcnn" / "backbone_resnet50_keys.json"

TORCHVISION_SCRIPT = """
import json
import sys

import torch_reference
from torch_reference import nhwc

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.models import segmentation

work = sys.argv[1]
cases, enums, pipeline_size = json.loads(sys.argv[2])
inputs = np.load(f"{work}/inputs.npz")
generator = torch.Generator().manual_seed(1)


def randomise(model):
    return torch_reference.randomise(model, generator, conv_bias=0.2)


out = {}
for enum in enums:
    weights = getattr(segmentation, enum).COCO_WITH_VOC_LABELS_V1
    out[f"num_params/{enum}"] = weights.meta["num_params"]
    out[f"url/{enum}"] = weights.url
    figures = weights.meta["_metrics"]["COCO-val2017-VOC-labels"]
    out[f"metrics/{enum}"] = [figures["miou"], figures["pixel_acc"]]
torch.manual_seed(0)
with torch.no_grad():
    for family, backbone, sizes in cases:
        name = f"{family}_{backbone}"
        builder = getattr(segmentation, name)
        model = randomise(builder(weights=None, weights_backbone=None, aux_loss=True))
        out[f"params/{name}"] = sum(p.numel() for p in model.parameters())
        torch.save(model.state_dict(), f"{work}/{name}.pth")
        for size in sizes:
            result = model(torch.from_numpy(inputs[size].transpose(0, 3, 1, 2)))
            out[f"{name}/{size}/out"] = nhwc(result["out"])
            out[f"{name}/{size}/aux"] = nhwc(result["aux"])
        if name != "deeplabv3_resnet50":
            continue
        # The preset pipeline at a small shorter side: transform, model, logits resized
        # back to the frame's size.
        weights = segmentation.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1
        transform = weights.transforms(resize_size=pipeline_size)
        frame = torch.from_numpy(inputs["frame"].transpose(2, 0, 1).copy())
        for kind, image in (("uint8", frame), ("float", frame.float() / 255)):
            logits = model(transform(image)[None])["out"]
            back = F.interpolate(logits, size=frame.shape[1:], mode="bilinear", align_corners=False)
            out[f"pipeline/{kind}"] = nhwc(back)
        # The preset transform itself, at its 520.
        preset = weights.transforms()
        for key in ("frame", "mosaic", "portrait"):
            image = torch.from_numpy(inputs[key].transpose(2, 0, 1).copy())
            out[f"preset/{key}/uint8"] = nhwc(preset(image)[None])
            out[f"preset/{key}/float"] = nhwc(preset(image.float() / 255)[None])
np.savez(f"{work}/torchvision.npz", **out)
"""


@pytest.fixture(scope="module")
def frame(data_dir):
    """The first CamVid validation frame, (360, 480, 3) uint8."""
    path = sorted((data_dir / "camvid" / "val").glob("*.png"))[0]
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def inputs(frame):
    """The frame resized (PIL bilinear) to each of `SIZES`, ImageNet-normalised, batch 1."""
    normalised = {}
    for name, (height, width) in SIZES.items():
        image = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
        image = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        normalised[name] = image[None].astype("float32")
    return normalised


@pytest.fixture(scope="module")
def front_images(frame):
    """Images for the preset transform: the frame (enlarged to 520 x 693), a 720 x 960
    mosaic of it (shrunk to 520 x 693) and a portrait 720 x 533 crop (to 702 x 520)."""
    mosaic = np.concatenate([np.concatenate([frame, frame], 1)] * 2, 0)
    return {"frame": frame, "mosaic": mosaic, "portrait": np.ascontiguousarray(mosaic[:, :533])}


@pytest.fixture(scope="module")
def torchvision_run(frame, inputs, front_images, tmp_path_factory):
    """torchvision's state dicts (.pth) and outputs, from one child process."""
    work = tmp_path_factory.mktemp("torchvision_semantic")
    np.savez(work / "inputs.npz", **inputs, **front_images)
    cases = [[*case, sizes] for case, sizes in PARITY_CASES.items()]
    arguments = json.dumps([cases, sorted(ENUMS.values()), PIPELINE_SIZE])
    return work, run_torch_script(TORCHVISION_SCRIPT, work, arguments)


@pytest.fixture(scope="module")
def keras_models():
    """Keras models with the auxiliary output, built once: {(family, backbone): model}."""
    built = {}

    def get(family, backbone):
        if (family, backbone) not in built:
            built[family, backbone] = BUILDERS[family](backbone=backbone, aux_loss=True)
        return built[family, backbone]

    return get


def _state_dict(torchvision_run, family, backbone):
    work, _ = torchvision_run
    return load_state_dict(work / f"{family}_{backbone}.pth")


@pytest.mark.parametrize("family, backbone", sorted(ENUMS))
def test_parameter_counts_equal_torchvision(torchvision_run, keras_models, family, backbone):
    _, theirs = torchvision_run
    expected = int(theirs[f"num_params/{ENUMS[family, backbone]}"])
    if (family, backbone) in PARITY_CASES:
        assert int(theirs[f"params/{family}_{backbone}"]) == expected
    model = keras_models(family, backbone)
    assert torchvision_param_count(model) == expected
    assert model.name == f"{family}_{backbone}" and set(model.output) == {"output", "aux"}


@pytest.mark.parametrize("family, backbone", PARITY_CASES)
def test_converted_weights_match_torchvision_on_a_camvid_frame(
    torchvision_run, keras_models, inputs, family, backbone, record_property
):
    _, theirs = torchvision_run
    state_dict = _state_dict(torchvision_run, family, backbone)
    assert semantic_architecture(state_dict) == (
        f"{family}_torchvision",
        {"backbone": backbone, "num_classes": 21, "aux_loss": True},
    )
    model = semantic_weights(state_dict, keras_models(family, backbone))
    for size in PARITY_CASES[family, backbone]:
        height, width = SIZES[size]
        ours = model.predict(inputs[size], verbose=0)
        for output, torch_output in (("output", "out"), ("aux", "aux")):
            reference = theirs[f"{family}_{backbone}/{size}/{torch_output}"]
            assert ours[output].shape == reference.shape == (1, height, width, 21)
            error = relative_error(ours[output], reference)
            agreement = argmax_agreement(ours[output], reference)
            record_property(f"{torch_output}_{size}", f"{error:.2e}, {agreement:.5f}")
            print(f"{family}_{backbone} {torch_output} {size}: {error:.2e}, {agreement:.5f}")
            assert error < RTOL, (output, size, error)
            assert agreement > 0.999, (output, size, agreement)


def test_mobilenet_without_aux_skips_the_aux_keys_and_normalises_inside(
    torchvision_run, inputs, record_property
):
    """DeepLabV3-MobileNetV3 with `include_preprocessing` and no auxiliary output: the
    checkpoint's aux keys are skipped, 0..255 images give torchvision's "out"."""
    _, theirs = torchvision_run
    model = deeplabv3_torchvision(backbone="mobilenet_v3_large", include_preprocessing=True)
    state_dict = _state_dict(torchvision_run, "deeplabv3", "mobilenet_v3_large")
    semantic_weights(state_dict, model)
    assert isinstance(model.get_layer("backbone"), keras.Model)
    pixels = (inputs["small"] * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255
    ours = model.predict(pixels.astype("float32"), verbose=0)
    reference = theirs["deeplabv3_mobilenet_v3_large/small/out"]
    assert not isinstance(ours, dict) and ours.shape == reference.shape == (1, *SIZES["small"], 21)
    error, agreement = relative_error(ours, reference), argmax_agreement(ours, reference)
    record_property("relative_difference", error)
    assert error < RTOL and agreement > 0.999, (error, agreement)


def test_model_front_equals_the_torchvision_preset_transform(torchvision_run, front_images):
    """`resize_shorter_side=520` and `include_preprocessing` against `weights.transforms()`:
    float tensors agree to float rounding; torchvision resizes uint8 tensors in uint8, so
    there the difference is its rounding, at most half a grey level (0.5 / 255 / 0.224 =
    0.0088 after normalisation)."""
    _, theirs = torchvision_run
    model = fcn_torchvision(include_preprocessing=True, resize_shorter_side=520)
    front = keras.Model(model.input, model.get_layer("preprocessing").output)
    sizes = {"frame": (520, 693), "mosaic": (520, 693), "portrait": (702, 520)}
    for key, image in front_images.items():
        ours = np.asarray(front(image[None].astype("float32")))
        assert ours.shape == (1, *sizes[key], 3) == theirs[f"preset/{key}/float"].shape
        assert np.abs(ours - theirs[f"preset/{key}/float"]).max() < 1e-5
        assert np.abs(ours - theirs[f"preset/{key}/uint8"]).max() < 0.009


@pytest.fixture(scope="module")
def resizing_model(torchvision_run):
    """DeepLabV3-ResNet50 without the auxiliary output, normalising and resizing inside,
    with the converted weights (the checkpoint's aux keys skipped)."""
    model = deeplabv3_torchvision(include_preprocessing=True, resize_shorter_side=PIPELINE_SIZE)
    return semantic_weights(_state_dict(torchvision_run, "deeplabv3", "resnet50"), model)


@pytest.mark.parametrize("kind", ["float", "uint8"])
def test_resize_shorter_side_matches_the_torchvision_pipeline(
    torchvision_run, resizing_model, frame, kind, record_property
):
    """The whole model on a 0..255 frame against torchvision's `weights.transforms()` (at
    shorter side 64 here), its model and a bilinear resize of the logits back to the
    frame's size. Float tensors: within RTOL. uint8 tensors, which torchvision rounds back
    to uint8 after resizing: measured 7e-4 relative, argmax agreement 99.97 %; asserted
    >= 99 %."""
    _, theirs = torchvision_run
    ours = resizing_model.predict(frame[None].astype("float32"), verbose=0)
    reference = theirs[f"pipeline/{kind}"]
    assert ours.shape == reference.shape == (1, 360, 480, 21)
    error, agreement = relative_error(ours, reference), argmax_agreement(ours, reference)
    record_property("relative_difference", error)
    record_property("argmax_agreement", agreement)
    print(f"pipeline {kind}: relative difference {error:.2e}, argmax agreement {agreement:.5f}")
    if kind == "float":
        assert error < RTOL and agreement > 0.999
    else:
        assert agreement >= 0.99


def test_saved_model_loads_and_predicts_the_same(resizing_model, frame, tmp_path):
    path = tmp_path / "deeplabv3.keras"
    resizing_model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SegmentationModel)
    assert loaded.get_layer("resize_shorter_side").size == PIPELINE_SIZE
    x = frame[None, :97, :131].astype("float32")
    expected = np.asarray(resizing_model(x, training=False))
    assert relative_error(np.asarray(loaded(x, training=False)), expected) < 1e-6


def test_converter_refuses_state_dicts_that_do_not_fit(torchvision_run, keras_models):
    deeplab = keras_models("deeplabv3", "resnet50")
    state_dict = _state_dict(torchvision_run, "deeplabv3", "resnet50")
    before = [w.copy() for w in deeplab.get_weights()]

    fcn = _state_dict(torchvision_run, "fcn", "resnet50")
    with pytest.raises(ValueError, match="is a torchvision fcn_torchvision resnet50 state dict"):
        semantic_weights(fcn, deeplab)
    fcn101 = _state_dict(torchvision_run, "fcn", "resnet101")
    with pytest.raises(ValueError, match="fcn_torchvision on resnet50.*backbone='resnet101'"):
        semantic_weights(fcn101, keras_models("fcn", "resnet50"))

    maskrcnn = json.loads(MASKRCNN_KEYS.read_text())["keys"]
    maskrcnn = {key: np.zeros(shape, "float32") for key, shape in maskrcnn.items()}
    with pytest.raises(ValueError, match="not a torchvision DeepLabV3 / FCN state dict"):
        semantic_weights(maskrcnn, deeplab)

    key = "classifier.0.project.1.running_var"
    incomplete = {k: v for k, v in state_dict.items() if k != key}
    with pytest.raises(ValueError, match=rf"missing keys \(1\): .*{key}"):
        semantic_weights(incomplete, deeplab)

    fewer = dict(state_dict)
    for name in ("weight", "bias"):
        fewer[f"classifier.4.{name}"] = state_dict[f"classifier.4.{name}"][:5]
    assert semantic_num_classes(fewer) == 5
    with pytest.raises(ValueError, match="is for 5 classes .* has 21; build it with num_classes=5"):
        semantic_weights(fewer, deeplab)

    extra = dict(state_dict, **{"classifier.5.weight": np.ones(3, "float32")})
    with pytest.raises(ValueError, match=r"unexpected keys .*classifier\.5\.weight"):
        semantic_weights(extra, deeplab)

    reshaped = dict(state_dict)
    reshaped["classifier.0.convs.2.0.weight"] = np.zeros((256, 2048, 1, 1), "float32")
    with pytest.raises(
        ValueError, match=r"classifier\.0\.convs\.2\.0\.weight: \(256, 2048, 1, 1\)"
    ):
        semantic_weights(reshaped, deeplab)

    without_aux = {k: v for k, v in state_dict.items() if not k.startswith("aux_classifier.")}
    with pytest.raises(ValueError, match="has no 'aux_classifier.' keys; build the model with"):
        semantic_weights(without_aux, deeplab)
    with pytest.raises(TypeError, match="`state_dict` must be a dict"):
        semantic_weights(list(state_dict.items()), deeplab)

    # No refused call assigned anything.
    for old, new in zip(before, deeplab.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_converter_refuses_mobilenet_and_resnet_state_dicts_for_each_other(
    torchvision_run, keras_models
):
    mobilenet_model = keras_models("deeplabv3", "mobilenet_v3_large")
    mobilenet = _state_dict(torchvision_run, "deeplabv3", "mobilenet_v3_large")
    resnet = _state_dict(torchvision_run, "deeplabv3", "resnet50")
    before = [w.copy() for w in mobilenet_model.get_weights()]

    with pytest.raises(
        ValueError,
        match=r"is a torchvision deeplabv3_torchvision resnet50 state dict but `model` is "
        r"deeplabv3_torchvision on mobilenet_v3_large; .*backbone='resnet50'",
    ):
        semantic_weights(resnet, mobilenet_model)
    with pytest.raises(
        ValueError,
        match=r"is a torchvision deeplabv3_torchvision mobilenet_v3_large state dict but "
        r"`model` is deeplabv3_torchvision on resnet50; .*backbone='mobilenet_v3_large'",
    ):
        semantic_weights(mobilenet, keras_models("deeplabv3", "resnet50"))

    # A key of the backbone (the squeeze-and-excitation of features.4) or of the heads
    # missing, a key too many under backbone.: all named, nothing assigned.
    key = "backbone.4.block.2.fc1.bias"
    with pytest.raises(ValueError, match=rf"missing keys \(1\): .*{re.escape(key)}"):
        semantic_weights({k: v for k, v in mobilenet.items() if k != key}, mobilenet_model)
    key = "aux_classifier.1.running_mean"
    with pytest.raises(ValueError, match=rf"missing keys \(1\): .*{re.escape(key)}"):
        semantic_weights({k: v for k, v in mobilenet.items() if k != key}, mobilenet_model)
    extra = dict(mobilenet, **{"backbone.17.0.weight": np.ones((3, 960, 1, 1), "float32")})
    with pytest.raises(ValueError, match=r"unexpected keys .*backbone\.17\.0\.weight"):
        semantic_weights(extra, mobilenet_model)
    reshaped = dict(mobilenet)
    reshaped["backbone.16.0.weight"] = np.zeros((960, 112, 1, 1), "float32")
    with pytest.raises(ValueError, match=r"backbone\.16\.0\.weight: \(960, 112, 1, 1\)"):
        semantic_weights(reshaped, mobilenet_model)

    # Detection by keys: a MobileNet other than MobileNetV3-Large, an FCN head on it, and
    # a state dict without the auxiliary head for a model with it.
    small = {k: v for k, v in mobilenet.items() if not k.startswith("backbone.16.")}
    with pytest.raises(ValueError, match="no 'backbone.16.0.weight': not the MobileNetV3-Large"):
        semantic_architecture(small)
    fcn_head = {k: v for k, v in mobilenet.items() if not k.startswith("classifier.0.convs.")}
    with pytest.raises(ValueError, match="torchvision builds DeepLabV3 and LR-ASPP on MobileNetV3"):
        semantic_weights(fcn_head, mobilenet_model)
    without_aux = {k: v for k, v in mobilenet.items() if not k.startswith("aux_classifier.")}
    assert semantic_architecture(without_aux)[1]["aux_loss"] is False
    with pytest.raises(ValueError, match="has no 'aux_classifier.' keys; build the model with"):
        semantic_weights(without_aux, mobilenet_model)
    with pytest.raises(TypeError, match="`model` must be a keras.Model; got dict"):
        semantic_weights(mobilenet, {})

    for old, new in zip(before, mobilenet_model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_voc_presets_carry_torchvision_figures_and_urls(torchvision_run):
    _, theirs = torchvision_run
    for (family, backbone), enum in ENUMS.items():
        entry = kerasseg.registry.get_entry(f"{family}_{backbone}_voc")
        info = entry.weights["default"]
        assert info.url == str(theirs[f"url/{enum}"])
        miou, pixel_accuracy = theirs[f"metrics/{enum}"]
        assert info.metrics == {"miou": miou, "pixel_accuracy": pixel_accuracy}
        assert info.source == f"torchvision {enum}.COCO_WITH_VOC_LABELS_V1"
        assert entry.architecture == f"{family}_torchvision"
        assert entry.defaults["backbone"] == backbone
    entry = kerasseg.registry.get_entry("deeplabv3_mobilenet_v3_large_voc")
    assert entry.description.startswith("DeepLabV3 MobileNetV3-Large on COCO with the 20 VOC")


def test_builders_check_their_arguments():
    with pytest.raises(
        ValueError,
        match=r"`backbone` of deeplabv3_torchvision must be one of \('resnet50', 'resnet101', "
        r"'mobilenet_v3_large'\); got 'resnet18'",
    ):
        deeplabv3_torchvision(backbone="resnet18")
    with pytest.raises(ValueError, match="torchvision builds no FCN on MobileNetV3"):
        fcn_torchvision(backbone="mobilenet_v3_large")
    with pytest.raises(TypeError, match="`aux_loss` must be True or False; got 'yes'"):
        fcn_torchvision(aux_loss="yes")
    with pytest.raises(ValueError, match="`resize_shorter_side`"):
        fcn_torchvision(resize_shorter_side=0)
    with pytest.raises(ValueError, match="`input_shape`: height and width must be None or"):
        fcn_torchvision(input_shape=(0, 64, 3))
    entry = kerasseg.registry.get_entry("deeplabv3_torchvision")
    assert entry.num_classes == 21 and entry.preprocessing_for() == "torch"
    assert entry.preprocessing_for({"include_preprocessing": True}) == "none"
