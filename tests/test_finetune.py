"""Fine-tuning to other classes: `kerasseg.load(name, num_classes=N)` keeps every weight that
fits and starts only the class-count-dependent layers afresh, for presets, weight files of
any architecture, and Mask R-CNN (as torchvision's fine-tuning tutorial replaces its box and
mask predictors)."""

import json

import keras
import numpy as np
import pytest
from conftest import instance_elements

import kerasseg
from kerasseg import cli
from kerasseg.cli.train import _weights_banner
from kerasseg.data.instance_pipeline import instance_dataset

# CamVid ids -> road and pavement / car / everything else; void (11) stays ignored.
CAMVID_3 = {**{i: 0 for i in range(11)}, 3: 1, 4: 1, 8: 2, 11: 11}


def _split(model, reference, fresh_layers):
    """Assert that `model` has `reference`'s arrays except in `fresh_layers`; returns the
    paths of the fresh arrays."""
    fresh = []
    assert len(model.weights) == len(reference.weights)
    for mine, theirs in zip(model.weights, reference.weights, strict=True):
        if mine.path.rsplit("/", 1)[0] in fresh_layers:
            fresh.append(mine.path)
            assert mine.shape != theirs.shape, mine.path
        else:
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
    return fresh


def test_camvid_preset_to_three_classes_keeps_all_but_the_head(data_dir):
    preset = kerasseg.load("unet_camvid")
    tuned = kerasseg.load("unet_camvid", num_classes=3)
    report = tuned.weights_report
    assert tuned.output_shape[-1] == 3 and report.reinitialized == ("head",)
    assert (report.loaded, report.total, report.source_classes) == (98, 100, 11)
    assert _split(tuned, preset, {"head"}) == ["head/kernel", "head/bias"]
    # A short fit on the 3-class remap of CamVid lowers the loss.
    data, _ = kerasseg.datasets.camvid(
        data_dir / "camvid", subset="train", batch_size=2, class_map=CAMVID_3, num_classes=3,
        image_size=(96, 128), shuffle=True, seed=0,
    )  # fmt: skip
    batches = data.take(2).cache()
    tuned.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=kerasseg.training.loss_from_spec(
            "ce", num_classes=3, from_logits=False, ignore_label=11
        ),  # fmt: skip
    )
    before = tuned.evaluate(batches, verbose=0)
    tuned.fit(batches.repeat(), steps_per_epoch=12, epochs=1, verbose=0)
    after = tuned.evaluate(batches, verbose=0)
    assert after < 0.7 * before, (before, after)


def test_weights_files_of_other_class_counts_for_encoder_decoders(tmp_path):
    source = kerasseg.load("linknet", encoder="mobilenet_v2", num_classes=5)
    source.save(tmp_path / "five.keras")
    tuned = kerasseg.load(
        "linknet", encoder="mobilenet_v2", num_classes=2, encoder_freeze=True,
        weights=tmp_path / "five.keras",
    )  # fmt: skip
    heads = set(tuned.weights_report.reinitialized)
    assert tuned.weights_report.source_classes == 5 and len(heads) == 1
    _split(tuned, source, heads)
    encoder = tuned.get_layer("encoder")
    assert not encoder.trainable and all(not w.trainable for w in encoder.weights)
    # SegFormer: a 150-class (ADE20K-sized) head to 3 classes, from a .weights.h5 file.
    ade = kerasseg.load("segformer", variant="b0", num_classes=150)
    ade.save_weights(tmp_path / "ade.weights.h5")
    tuned = kerasseg.load(
        "segformer", variant="b0", num_classes=3, weights=tmp_path / "ade.weights.h5"
    )
    assert tuned.weights_report.source_classes == 150
    fresh = _split(tuned, ade, set(tuned.weights_report.reinitialized))
    assert len(fresh) == 2  # the classifier's kernel and bias
    # Without num_classes the file must fit as it is.
    with pytest.raises(ValueError, match="does not fit"):
        kerasseg.load("segformer", variant="b0", weights=tmp_path / "ade.weights.h5")


def _two_class_toys():
    """Bright rectangles (class 1) and dark ones (class 2) on noise, two images."""
    rng = np.random.default_rng(0)
    elements = []
    for count in (1, 2):
        image = rng.uniform(60, 120, (80, 96, 3)).astype("float32")
        masks = np.zeros((count, 80, 96), "uint8")
        boxes = np.zeros((count, 4), "float32")
        for k in range(count):
            y, x = 8 + 36 * k, 10 + 40 * k
            masks[k, y : y + 28, x : x + 24] = 1
            image[y : y + 28, x : x + 24] = 230 if k == 0 else 10
            boxes[k] = [y, x, y + 28, x + 24]
        classes = np.arange(1, count + 1, dtype="int32")
        elements.append((image, {"boxes": boxes, "class_ids": classes, "masks": masks}))
    return instance_elements(elements)


@pytest.mark.slow
def test_maskrcnn_preset_gets_new_box_and_mask_predictors():
    small = dict(min_size=64, max_size=96, rpn_pre_nms_top_n=200, rpn_post_nms_top_n=200)
    preset = kerasseg.load("maskrcnn_resnet18_isbi2012", **small)
    tuned = kerasseg.load("maskrcnn_resnet18_isbi2012", num_classes=3, **small)
    report = tuned.weights_report
    assert report.source_classes == 2
    fresh = _split(tuned, preset, set(report.reinitialized))
    # torchvision's FastRCNNPredictor (class scores, 4 box deltas per class) and the mask
    # predictor's last convolution: kernel and bias each.
    assert len(report.reinitialized) == 3 and len(fresh) == 6, fresh
    shapes = sorted(tuple(w.shape) for w in tuned.weights if w.path in fresh)
    assert shapes == sorted([(3,), (12,), (3,), (256, 3), (256, 12), (1, 1, 256, 3)]), shapes
    dataset = instance_dataset(_two_class_toys(), max_instances=2, batch_size=2).cache()
    tuned.compile(optimizer=keras.optimizers.Adam(3e-4))
    before = tuned.evaluate(dataset, verbose=0, return_dict=True)
    tuned.fit(dataset, epochs=3, verbose=0)
    after = tuned.evaluate(dataset, verbose=0, return_dict=True)
    assert after["loss"] < 0.7 * before["loss"], (before, after)


def test_cli_fine_tunes_a_preset_and_says_where_weights_come_from(data_dir, tmp_path, capsys):
    """`kerasseg train --model unet_camvid --num-classes 3` on CamVid files remapped to 3
    classes, and --encoder-weights with a file for an encoder U-Net."""
    from PIL import Image

    camvid = data_dir / "camvid"
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    lookup = np.array([CAMVID_3[i] for i in range(12)], np.uint8)
    for path in sorted((camvid / "train").glob("*.png"))[:4]:
        (images / path.name).write_bytes(path.read_bytes())
        annotation = np.asarray(Image.open(camvid / "trainannot" / path.name))
        Image.fromarray(lookup[annotation]).save(masks / path.name)
    common = ["--images", str(images), "--masks", str(masks), "--ignore-label", "11",
              "--input-size", "64", "64", "--epochs", "1", "--steps-per-epoch", "1",
              "--batch-size", "2"]  # fmt: skip
    out = tmp_path / "tuned"
    assert cli.main(["train", "--model", "unet_camvid", *common, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "values {0: " in err and "weights: 98 of 100 weight arrays from unet_camvid" in err
    assert "re-initialised for the new class count (11 in the file): head" in err
    run = json.loads((out / "run.json").read_text())
    assert run["model_arguments"]["num_classes"] == 3
    assert keras.saving.load_model(out / "final.keras").output_shape[-1] == 3

    encoder = keras.applications.MobileNetV2(weights=None, include_top=False)
    encoder.save_weights(tmp_path / "mobilenet.weights.h5")
    unet = ["--model", "unet", "--model-arg", "encoder=mobilenet_v2",
            "--model-arg", "decoder_filters=[16,8,8,8,8]"]  # fmt: skip
    out = tmp_path / "unet"
    weights = str(tmp_path / "mobilenet.weights.h5")
    argv = ["train", *unet, *common, "--encoder-weights", weights, "--out", str(out)]
    assert cli.main(argv) == 0
    assert f"weights: encoder mobilenet_v2: the file {weights}; decoder and head: random" in (
        capsys.readouterr().err
    )
    entry = kerasseg.get_entry("unet")
    assert _weights_banner(entry, {"encoder": "mobilenet_v2"}, object()) == (
        "weights: encoder mobilenet_v2: random initialisation (--encoder-weights imagenet starts "
        "from ImageNet); decoder and head: random initialisation"
    )
    kernel = encoder.get_layer("Conv1").kernel.numpy()
    trained = keras.saving.load_model(out / "best.keras", compile=False)
    # One step of Adam moves each weight by at most about the learning rate.
    started = [w for w in trained.weights if w.path.endswith("Conv1/kernel")]
    assert len(started) == 1 and np.abs(started[0].numpy() - kernel).max() < 2e-3
    assert cli.main(["train", "--model", "unet", *common, "--encoder-weights", "imagenet",
                     "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "encoder_weights" in capsys.readouterr().err
