"""Mask R-CNN plumbing: detection transform vs torchvision, registry entries, `kerasseg convert`.

The torchvision side comes from committed fixtures made by the scripts beside them
(`tests/fixtures/maskrcnn/make_*_reference.py`), so no torch is needed here.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import kerasseg
from kerasseg.cli import main as cli_main
from kerasseg.models.maskrcnn.transform import DetectionTransform

FIXTURES = Path(__file__).parent / "fixtures" / "maskrcnn"

from make_transform_reference import SIZES, images  # noqa: E402
from reference_weights import make_state_dict  # noqa: E402


def test_transform_matches_torchvision_for_a_mixed_size_batch():
    reference = np.load(FIXTURES / "transform_reference.npz")
    batch = np.zeros((len(SIZES), max(h for h, _ in SIZES), max(w for _, w in SIZES), 3))
    for i, image in enumerate(images()):
        batch[i, : image.shape[0], : image.shape[1]] = image
    transform = DetectionTransform(int(reference["min_size"]), int(reference["max_size"]))
    out, resized = transform(batch.astype("float32"), np.array(SIZES, np.int32))
    np.testing.assert_array_equal(resized, reference["image_sizes"])
    assert out.shape == reference["batch"].shape  # padded to multiples of 32
    # Bilinear resizes of N(0, 1)-scale values; the reference measured ~3e-5 for TF vs torch.
    np.testing.assert_allclose(out, reference["batch"], atol=1e-4)


def test_transform_rejects_bad_sizes():
    with pytest.raises(ValueError, match="`max_size` .* must be >= `min_size`"):
        DetectionTransform(800, 600)
    with pytest.raises(ValueError, match="`min_size` must be a positive integer"):
        DetectionTransform(0, 600)


def test_instance_models_are_registered():
    names = {row["name"]: row for row in kerasseg.list_models(task="instance")}
    assert set(names) == {
        "maskrcnn_resnet18_fpn",
        "maskrcnn_resnet18_fpn_v2",
        "maskrcnn_resnet50_fpn",
        "maskrcnn_resnet50_fpn_v2",
        "maskrcnn_resnet101_fpn",
        "maskrcnn_resnet18_isbi2012",  # the shipped preset
        "maskrcnn_resnet50_fpn_coco",  # torchvision's checkpoints, converted on first use
        "maskrcnn_resnet50_fpn_v2_coco",
    }
    assert names["maskrcnn_resnet50_fpn"]["num_classes"] == 91
    with pytest.raises(TypeError, match=r"does not take the argument\(s\) \['backbone'\]"):
        kerasseg.load("maskrcnn_resnet50_fpn", backbone="resnet18")


@pytest.fixture(scope="module")
def resnet18_state_dict():
    shapes = json.loads((FIXTURES / "maskrcnn_resnet18_fpn_3_keys.json").read_text())
    return make_state_dict({k: tuple(v) for k, v in shapes.items()}, seed=5)


def test_cli_convert_writes_weights_that_load(resnet18_state_dict, tmp_path, capsys):
    source = tmp_path / "maskrcnn.npz"
    np.savez(source, **resnet18_state_dict)
    target = tmp_path / "out" / "maskrcnn.weights.h5"
    argv = ["convert", str(source), "--model", "maskrcnn_resnet18_fpn", "--out", str(target)]
    assert cli_main(argv) == 0
    assert "(3 classes)" in capsys.readouterr().out
    model = kerasseg.load("maskrcnn_resnet18_fpn", num_classes=3, weights=str(target))
    detector = model.get_layer("detector")
    # fc6: torch (1024, 256*7*7) in NCHW flatten order -> Keras (7*7*256, 1024) in NHWC order.
    fc6 = resnet18_state_dict["roi_heads.box_head.fc6.weight"]
    expected = fc6.reshape(1024, 256, 7, 7).transpose(2, 3, 1, 0).reshape(-1, 1024)
    np.testing.assert_array_equal(detector.box_head.fc6.kernel.numpy(), expected)
    # ConvTranspose2d (in, out, kh, kw) -> Conv2DTranspose (kh, kw, out, in).
    deconv = resnet18_state_dict["roi_heads.mask_predictor.conv5_mask.weight"]
    np.testing.assert_array_equal(
        detector.mask_predictor.conv5_mask.kernel.numpy(), deconv.transpose(2, 3, 1, 0)
    )
    cls = resnet18_state_dict["rpn.head.cls_logits.weight"]
    np.testing.assert_array_equal(
        detector.rpn_head.cls_logits.kernel.numpy(), cls.transpose(2, 3, 1, 0)
    )


def test_convert_refuses_state_dicts_that_do_not_fit(resnet18_state_dict, tmp_path, capsys):
    from kerasseg.convert.torchvision import maskrcnn_weights

    model = kerasseg.load("maskrcnn_resnet18_fpn", num_classes=3, min_size=64, max_size=96)
    missing = dict(resnet18_state_dict)
    del missing["roi_heads.mask_head.2.0.weight"]
    with pytest.raises(ValueError, match=r"roi_heads\.mask_head\.2\.0\.weight"):
        maskrcnn_weights(missing, model)
    no_rpn = dict(resnet18_state_dict)
    del no_rpn["rpn.head.bbox_pred.bias"]
    with pytest.raises(ValueError, match=r"rpn\.head\.bbox_pred\.bias"):
        maskrcnn_weights(no_rpn, model)
    extra = {**resnet18_state_dict, "roi_heads.box_head.fc8.weight": np.zeros((2, 2))}
    with pytest.raises(ValueError, match=r"match no weight of the model \(1\): .*fc8"):
        maskrcnn_weights(extra, model)
    foreign = {**resnet18_state_dict, "head.weight": np.zeros(2)}
    with pytest.raises(ValueError, match=r"keys outside .* head\.weight"):
        maskrcnn_weights(foreign, model)
    other = kerasseg.load("maskrcnn_resnet18_fpn", num_classes=5, min_size=64, max_size=96)
    with pytest.raises(ValueError, match="for 3 classes but the model has 5"):
        maskrcnn_weights(resnet18_state_dict, other)
    source = tmp_path / "bad.npz"
    np.savez(source, **missing)
    argv = ["convert", str(source), "--model", "maskrcnn_resnet18_fpn", "--out"]
    assert cli_main(argv + [str(tmp_path / "x.weights.h5")]) == 2
    assert "roi_heads.mask_head.2.0.weight" in capsys.readouterr().err
    assert cli_main(["convert", str(source), "--model", "unet", "--out", "x.weights.h5"]) == 2


def test_legacy_key_spellings_load_identically(resnet18_state_dict):
    from kerasseg.convert.torchvision import maskrcnn_weights

    legacy = {}
    for key, value in resnet18_state_dict.items():
        key = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for k in range(4):
            key = key.replace(
                f"roi_heads.mask_head.{k}.0.", f"roi_heads.mask_head.mask_fcn{k + 1}."
            )
        for block in ("inner_blocks", "layer_blocks"):
            for i in range(4):
                key = key.replace(f"fpn.{block}.{i}.0.", f"fpn.{block}.{i}.")
        legacy[key] = value
    assert legacy.keys() != resnet18_state_dict.keys()
    current = kerasseg.load("maskrcnn_resnet18_fpn", num_classes=3, min_size=64, max_size=96)
    old = kerasseg.load("maskrcnn_resnet18_fpn", num_classes=3, min_size=64, max_size=96)
    maskrcnn_weights(resnet18_state_dict, current)
    maskrcnn_weights(legacy, old)
    for a, b in zip(current.weights, old.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.fixture(scope="module")
def small_model():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    return kerasseg.load(
        "maskrcnn_resnet18_fpn", num_classes=3, min_size=64, max_size=96, detections_per_image=3
    )


def test_bad_detection_inputs_get_clear_errors(small_model):
    import tensorflow as tf

    image = np.random.default_rng(0).integers(0, 256, (1, 50, 60, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"RGB batch \(batch, height, width, 3\)"):
        small_model(image[..., :1])
    with pytest.raises(ValueError, match=r"RGB batch"):
        small_model(image[0])
    with pytest.raises(ValueError, match="must not be empty"):
        small_model(np.zeros((1, 0, 60, 3), np.float32))
    with pytest.raises(TypeError, match="numeric dtype"):
        small_model(image.astype(bool))
    for sizes in ([[0, 10]], [[51, 60]], [[50.0, 60.0]]):
        with pytest.raises(ValueError, match="`image_sizes` must hold integers from 1"):
            small_model({"images": image, "image_sizes": np.array(sizes)})
    with pytest.raises(ValueError, match=r"`image_sizes` must have shape \(batch, 2\)"):
        small_model({"images": image, "image_sizes": np.array([50, 60])})
    with pytest.raises(ValueError, match=r"got the keys \['extra', 'images'\]"):
        small_model({"images": image, "extra": image})
    # Inside a compiled predict the values are checked in the graph.
    with pytest.raises(tf.errors.InvalidArgumentError, match="`image_sizes` must lie in"):
        small_model.predict({"images": image, "image_sizes": np.array([[51, 60]])}, verbose=0)


def test_detections_are_capped_and_padded(small_model):
    images = np.random.default_rng(1).integers(0, 256, (2, 50, 60, 3)).astype("float32")
    out = small_model(images)  # a bare batch: every image fills it
    assert out["boxes"].shape == (2, 3, 4) and out["masks"].shape == (2, 3, 28, 28)
    # Random weights give far more than 3 candidates above the 0.05 score threshold.
    np.testing.assert_array_equal(out["num_detections"], [3, 3])
    scores = np.asarray(out["scores"])
    assert (np.diff(scores, axis=1) <= 0).all()  # by decreasing score
    boxes = np.asarray(out["boxes"])
    # Clipped to the resized image, rescaled by float32 ratios as torchvision does.
    assert (boxes[..., :2] >= 0).all() and (boxes[..., 2:] <= [50 + 1e-3, 60 + 1e-3]).all()
    sizes = np.array([[50, 60], [30, 40]], np.int32)
    mixed = small_model({"images": images, "image_sizes": sizes})
    assert (np.asarray(mixed["boxes"])[1, :, 2:] <= [30 + 1e-3, 40 + 1e-3]).all()


def test_predict_takes_a_bare_batch_and_mixed_precision_works(small_model):
    import keras

    images = np.random.default_rng(2).integers(0, 256, (1, 50, 60, 3)).astype("float32")
    out = small_model.predict(images, verbose=0)
    again = small_model.predict({"images": images}, verbose=0)
    np.testing.assert_array_equal(out["boxes"], again["boxes"])
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = kerasseg.load(
            "maskrcnn_resnet18_fpn", num_classes=3, min_size=64, max_size=96, detections_per_image=3
        )
    finally:
        keras.config.set_dtype_policy("float32")
    mixed.set_weights(small_model.get_weights())
    low = mixed.predict(images, verbose=0)
    assert low["boxes"].dtype == np.float32 and low["masks"].dtype == np.float32
    assert low["masks"].shape == (1, 3, 28, 28) and int(low["num_detections"][0]) == 3
