"""Evaluation, prediction and the `kerasseg train / evaluate / predict` commands on real data."""

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from skimage import measure

import kerasseg
from kerasseg import cli
from kerasseg.evaluation import evaluate, write_report
from kerasseg.inference import (
    cell_instances,
    predict_file,
    predict_image,
    predict_instances,
    task_of,
)
from kerasseg.models.maskrcnn.postprocess import paste_masks
from kerasseg.palette import generic_palette

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "unet", "--model-arg", "base_filters=4", "--model-arg", "depth=2"]
TINY_SIGMOID = [*TINY, "--model-arg", 'activation="sigmoid"']
MASKRCNN = ["--model", "maskrcnn_resnet18_fpn", "--model-arg", "num_classes=2"]


def _identity(x):
    return x


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _cli(args):
    return [sys.executable, "-m", "kerasseg.cli", *args]


def _history(path):
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _isbi_train_args(data_dir, out, epochs):
    return [
        "train",
        *TINY_SIGMOID,
        "--dataset",
        "isbi2012",
        "--data-root",
        str(data_dir / "isbi2012-membrane"),
        "--out",
        str(out),
        "--input-size",
        "64",
        "64",
        "--augment",
        "flip",
        "--epochs",
        str(epochs),
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "2",
    ]


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_matches_sklearn_on_camvid(data_dir, tmp_path):
    from sklearn.metrics import accuracy_score, f1_score, jaccard_score

    names = sorted(p.name for p in (data_dir / "camvid" / "valannot").glob("*.png"))[:3]
    truth = np.stack(
        [np.asarray(Image.open(data_dir / "camvid" / "valannot" / n)) for n in names]
    ).astype(np.int32)
    truth[truth == 10] = 11  # bicyclist becomes void: a class absent from truth and prediction
    rng = np.random.default_rng(0)
    predicted = np.where(truth == 11, rng.integers(0, 10, truth.shape), truth)
    changed = rng.random(truth.shape) < 0.1
    predicted[changed] = rng.integers(0, 10, int(changed.sum()))
    probabilities = np.eye(11, dtype=np.float32)[predicted]
    masks = truth[..., None]
    batches = [(probabilities[:2], masks[:2]), (probabilities[2:], masks[2:])]
    class_names = list(kerasseg.datasets.CAMVID.class_names)
    results = evaluate(_identity, batches, num_classes=11, class_names=class_names, ignore_label=11)

    valid = truth != 11
    y_true, y_pred = truth[valid], predicted[valid]
    present = sorted(set(y_true) | set(y_pred))
    assert results["images"] == 3
    overall = results["overall"]
    assert overall["pixel_accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-6)
    assert overall["mean_iou"] == pytest.approx(
        jaccard_score(y_true, y_pred, average="macro"), abs=1e-6
    )
    assert overall["mean_dice"] == pytest.approx(
        f1_score(y_true, y_pred, average="macro"), abs=1e-6
    )
    iou = jaccard_score(y_true, y_pred, labels=present, average=None)
    dice = f1_score(y_true, y_pred, labels=present, average=None)
    counts = np.bincount(y_true, minlength=11)
    for k, label in enumerate(present):
        scores = results["per_class"][class_names[label]]
        assert scores["iou"] == pytest.approx(iou[k], abs=1e-6)
        assert scores["dice"] == pytest.approx(dice[k], abs=1e-6)
    for label, name in enumerate(class_names):
        assert results["per_class"][name]["pixels"] == counts[label]
    assert results["per_class"]["bicyclist"] == {"iou": None, "dice": None, "pixels": 0}

    json_path, markdown_path = write_report(results, tmp_path / "camvid.val")
    assert json_path.name == "camvid.val.json" and markdown_path.name == "camvid.val.md"
    assert json.loads(json_path.read_text()) == results
    markdown = markdown_path.read_text()
    assert "| class | IoU | Dice | pixels |" in markdown
    assert f"| road | {results['per_class']['road']['iou']:.4f} |" in markdown
    assert "| bicyclist | n/a | n/a | 0 |" in markdown


def test_evaluate_instance_metrics_match_skimage_on_isbi(data_dir):
    from skimage.measure import label
    from skimage.metrics import adapted_rand_error

    folder = data_dir / "isbi2012-membrane" / "train" / "label"
    truth = np.stack([np.asarray(Image.open(folder / f"{i}.png")) for i in (20, 21)]) // 255
    truth = truth.astype(np.int32)
    predicted = truth.copy()
    predicted[:, 200:204, :] = 1  # erase a band of membrane: merges cells
    rng = np.random.default_rng(1)
    flips = rng.random(truth.shape) < 0.01
    predicted[flips] = 1 - predicted[flips]
    probabilities = (0.2 + 0.6 * predicted[..., None]).astype(np.float32)
    results = evaluate(_identity, [(probabilities, truth)], num_classes=2, instance_metrics=True)
    expected = np.mean(
        [
            1 - adapted_rand_error(label(t, connectivity=1), label(p, connectivity=1))[0]
            for t, p in zip(truth, predicted, strict=True)
        ]
    )
    assert results["overall"]["v_rand"] == pytest.approx(expected, abs=1e-5)
    assert 0 < results["overall"]["v_info"] < 1
    assert results["overall"]["pixel_accuracy"] == pytest.approx(
        (truth == predicted).mean(), abs=1e-6
    )
    perfect = evaluate(
        _identity,
        [(truth[..., None].astype(np.float32), truth)],
        num_classes=2,
        class_names=["membrane", "cell interior"],
        instance_metrics=True,
    )
    assert perfect["overall"]["v_rand"] == pytest.approx(1.0)
    assert perfect["overall"]["v_info"] == pytest.approx(1.0)
    assert perfect["per_class"]["membrane"]["iou"] == 1.0
    # Cells from the seeded watershed (every pixel assigned), against scikit-image's.
    from skimage.segmentation import watershed

    flooded = evaluate(
        _identity,
        [(probabilities, truth)],
        num_classes=2,
        instance_metrics=True,
        watershed_seeds=0.7,
    )
    expected = np.mean(
        [
            1
            - adapted_rand_error(
                label(t, connectivity=1),
                watershed(1 - p[..., 0], label(p[..., 0] > 0.7, connectivity=1), connectivity=1),
            )[0]
            for t, p in zip(truth, probabilities, strict=True)
        ]
    )
    assert flooded["overall"]["v_rand"] == pytest.approx(expected, abs=0.01)
    with pytest.raises(ValueError, match="instance_metrics"):
        evaluate(_identity, [(probabilities, truth)], num_classes=2, watershed_seeds=0.7)


# ----------------------------------------------------------------------------- predict


def test_predict_file_writes_label_png_and_overlay(data_dir, tmp_path):
    stored = np.asarray(Image.open(data_dir / "isbi2012-membrane" / "test" / "00.png"))
    source = tmp_path / "slice.png"  # 250 x 301: not a multiple of the model's divisor 4
    Image.fromarray(stored[:250, :301]).save(source)
    model = kerasseg.load(
        "unet",
        base_filters=4,
        depth=2,
        input_shape=(None, None, 1),
        activation="sigmoid",
        include_preprocessing=True,
    )
    labels = predict_file(model, source, tmp_path / "out" / "labels.png", overlay_path=None)
    written = np.asarray(Image.open(tmp_path / "out" / "labels.png"))
    expected, probabilities = predict_image(model, stored[:250, :301].astype(np.float32))
    assert written.shape == (250, 301) and written.dtype == np.uint8
    assert set(np.unique(written)) <= {0, 255}
    np.testing.assert_array_equal(written, expected * 255)
    np.testing.assert_array_equal(labels, expected)
    assert probabilities.shape == (250, 301, 1)
    np.testing.assert_array_equal(expected, probabilities[..., 0] > 0.5)
    # Instance labels: the 4-connected regions of class 1 as scikit-image numbers them, or
    # the seeded watershed, which labels every pixel.
    predict_file(model, source, tmp_path / "a.png", instances_path=tmp_path / "cells.png")
    cells = np.asarray(Image.open(tmp_path / "cells.png"))
    np.testing.assert_array_equal(cells, measure.label(expected == 1, connectivity=1))
    seeds = float(np.quantile(probabilities, 0.99))
    predict_file(
        model, source, tmp_path / "b.png", instances_path=tmp_path / "ws.png", watershed_seeds=seeds
    )
    with pytest.raises(ValueError, match="instances_path"):
        predict_file(model, source, tmp_path / "c.png", watershed_seeds=seeds)
    flooded = np.asarray(Image.open(tmp_path / "ws.png"))
    assert flooded.dtype == np.uint16 and flooded.min() >= 1
    np.testing.assert_array_equal(
        flooded, cell_instances(probabilities[None], watershed_seeds=seeds)[0]
    )

    logits_model = kerasseg.load(
        "unet", num_classes=3, base_filters=4, depth=2, input_shape=(None, None, 1)
    )
    predict_file(
        logits_model, source, tmp_path / "multi.png", overlay_path=tmp_path / "overlay.png"
    )
    multi = np.asarray(Image.open(tmp_path / "multi.png"))
    expected, probabilities = predict_image(logits_model, stored[:250, :301])
    np.testing.assert_array_equal(multi, expected)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)  # softmax of logits
    overlay = np.asarray(Image.open(tmp_path / "overlay.png"))
    assert overlay.shape[0] > 250 and overlay.shape[1:] == (301, 3)  # the legend strip below
    assert overlay.dtype == np.uint8 and Image.open(tmp_path / "multi.png").mode == "P"
    colours = generic_palette(3).colours.astype(np.float32)  # class 0 coloured too
    blended = 0.55 * stored[:250, :301, None].astype(np.float32) + 0.45 * colours[multi]
    np.testing.assert_allclose(overlay[:250], np.round(blended), atol=1)


class _FixedDetector:
    """Stands in for a Mask R-CNN: the same four detections (by decreasing score) and one
    padding row whatever the image, full 28x28 masks."""

    output = {"boxes": None, "scores": None, "masks": None, "num_detections": None}
    boxes = np.array([[2, 2, 12, 12], [6, 6, 16, 16], [20, 2, 28, 10], [20, 20, 28, 28]], "f4")
    scores = np.array([0.95, 0.9, 0.6, 0.3], "f4")

    def __init__(self):
        self.calls = []

    def predict(self, inputs, verbose=0):
        self.calls.append(inputs)

        def pad(rows):  # one padding row past num_detections, then the batch axis
            return np.concatenate([rows, np.zeros_like(rows[:1])])[None]

        return {
            "boxes": pad(self.boxes),
            "scores": pad(self.scores),
            "classes": pad(np.ones(4, "i4")),
            "masks": pad(np.ones((4, 28, 28), "f4")),
            "num_detections": np.array([4], "i4"),
        }


def test_predict_instances_paints_the_best_detection_on_top(tmp_path):
    detector = _FixedDetector()
    assert task_of(detector) == "instance" and task_of(kerasseg.load("otsu")) == "semantic"
    grey = np.arange(32 * 30, dtype=np.uint8).reshape(32, 30)
    labels, detections = predict_instances(detector, grey, min_score=0.5)
    sent = detector.calls[0]
    assert sent["images"].shape == (1, 32, 30, 3)  # grey repeated to RGB
    np.testing.assert_array_equal(sent["images"][0, ..., 2], grey)
    np.testing.assert_array_equal(sent["image_sizes"], [[32, 30]])
    assert len(detections["scores"]) == 4  # all of them returned; the map keeps 3
    pasted = np.asarray(paste_masks(np.ones((4, 28, 28), "f4"), detector.boxes, 32, 30)) > 0.5
    expected = np.zeros((32, 30), np.int32)
    for rank in (2, 1, 0):  # the 0.3 detection is below min_score
        expected[pasted[rank]] = rank + 1
    np.testing.assert_array_equal(labels, expected)
    assert labels[10, 10] == 1 and labels[14, 14] == 2 and labels[24, 6] == 3
    assert labels[24, 24] == 0
    everything, _ = predict_instances(detector, grey, min_score=0.0)
    assert everything[24, 24] == 4
    for bad in (dict(min_score=1.5), dict(mask_threshold=-0.1), dict(min_score=True)):
        with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
            predict_instances(detector, grey, **bad)
    with pytest.raises(ValueError, match="`image` must have shape"):
        predict_instances(detector, np.zeros((4, 4, 2)))

    source = tmp_path / "grey.png"
    Image.fromarray(grey).save(source)
    written = predict_file(
        detector, source, tmp_path / "cells.png", overlay_path=tmp_path / "o.png", min_score=0.5
    )
    stored = np.asarray(Image.open(tmp_path / "cells.png"))
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(stored, expected)
    np.testing.assert_array_equal(written, expected)
    assert np.asarray(Image.open(tmp_path / "o.png")).shape == (32, 30, 3)
    with pytest.raises(ValueError, match="drop `instances_path`"):
        predict_file(detector, source, tmp_path / "x.png", instances_path=tmp_path / "y.png")


# ----------------------------------------------------------------------------- cli


def test_cli_arguments_and_usage_errors(data_dir, tmp_path, capsys):
    assert cli.parse_model_arguments(
        ["a=4", "b=0.5", "c=[null, null, 1]", "d=null", "e=true", "f=resnet50", 'g="x"']
    ) == {"a": 4, "b": 0.5, "c": [None, None, 1], "d": None, "e": True, "f": "resnet50", "g": "x"}
    assert cli.parse_class_map("0:0,255:1") == {0: 0, 255: 1}
    isbi = ["--dataset", "isbi2012", "--data-root", str(data_dir / "isbi2012-membrane")]
    out = ["--out", str(tmp_path / "run")]
    slice_file = str(data_dir / "isbi2012-membrane" / "test" / "00.png")
    cases = [
        (["train", "--model", "unett", *isbi, *out], "unknown model 'unett'"),
        (["train", *TINY, "--model-arg", "depth", *isbi, *out], "KEY=VALUE"),
        (["train", *TINY, "--model-arg", "colour=1", *isbi, *out], "['colour']"),
        (["train", *TINY, "--dataset", "camvid", "--data-root", "/no/such", *out], "/no/such"),
        (["train", *TINY, "--images", str(tmp_path / "none"), "--masks", "x", *out], "none"),
        (["train", *TINY, *isbi, "--augment", "flip,warp", *out], "warp"),
        (["train", *TINY, *isbi, "--input-size", "30", "30", *out], "multiples of 4"),
        (["evaluate", "--model", str(tmp_path / "no.keras"), *isbi, *out], "does not exist"),
        (["predict", *TINY, str(tmp_path / "missing.png"), *out], "missing.png"),
        (["evaluate", *TINY, *isbi, "--watershed-seeds", "1.5", *out], "--watershed-seeds"),
        (["predict", *TINY, slice_file, "--min-score", "0.3", *out], "instance models"),
        (["predict", *MASKRCNN, slice_file, "--instances", *out], "semantic models"),
        (["predict", *MASKRCNN, slice_file, "--min-score", "2", *out], "--min-score must"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        error = capsys.readouterr().err
        assert message in error and "error" in error, (argv, error)
    assert not (tmp_path / "run").exists()


def test_cli_train_evaluate_predict(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _isbi_train_args(data_dir, out, epochs=2)
    done = subprocess.run(
        _cli(argv), env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("history.csv", "best.keras", "best.json", "final.keras", "run.json"):
        assert (out / name).is_file(), name
    assert _history(out / "history.csv") == [1, 2]  # numbered as Keras prints them
    run = json.loads((out / "run.json").read_text())
    assert run["argv"] == ["kerasseg", *argv]
    assert run["model_arguments"]["input_shape"] == [None, None, 1]
    model = keras.saving.load_model(out / "best.keras")
    assert model.output_shape[-1] == 1

    isbi = ["--dataset", "isbi2012", "--data-root", str(data_dir / "isbi2012-membrane")]
    stem = tmp_path / "report" / "val"
    model_path = str(out / "best.keras")
    code = cli.main(
        ["evaluate", "--model", model_path, *isbi, "--instance-metrics", "--out", str(stem)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| cell interior |" in printed and "V_rand" in printed
    report = json.loads(stem.with_suffix(".json").read_text())
    assert report["images"] == 5 and set(report["overall"]) >= {"mean_iou", "v_rand", "v_info"}
    best = json.loads((out / "best.json").read_text())  # same images, metrics and model
    assert report["overall"]["mean_iou"] == pytest.approx(best["val_mean_iou"], abs=1e-4)
    assert report["overall"]["pixel_accuracy"] == pytest.approx(
        best["val_pixel_accuracy"], abs=1e-4
    )

    test_slice = data_dir / "isbi2012-membrane" / "test" / "00.png"
    predictions = tmp_path / "predictions"
    code = cli.main(
        ["predict", "--model", model_path, str(test_slice), "--out", str(predictions), "--overlay"]
    )
    assert code == 0
    labels = np.asarray(Image.open(predictions / "00.png"))
    assert labels.shape == (512, 512) and set(np.unique(labels)) <= {0, 255}
    expected, _ = predict_image(model, np.asarray(Image.open(test_slice)).astype(np.float32))
    np.testing.assert_array_equal(labels, expected * 255)
    overlay = np.asarray(Image.open(predictions / "00_overlay.png"))
    assert overlay.shape[0] > 512 and overlay.shape[1:] == (512, 3)  # the legend strip below


def test_cli_train_resumes_after_kill(data_dir, tmp_path):
    out = tmp_path / "run"
    argv = _cli(_isbi_train_args(data_dir, out, epochs=6))
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(argv, env=_env(), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and first.poll() is None:
            if (out / "history.csv").is_file() and len(_history(out / "history.csv")) >= 2:
                break
            time.sleep(0.1)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    rows = _history(out / "history.csv")
    assert 2 <= len(rows) < 6 and rows == list(range(1, len(rows) + 1))

    second = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming at epoch" in second.stderr
    assert _history(out / "history.csv") == [1, 2, 3, 4, 5, 6]
    started = int(re.search(r"Epoch (\d+)/6", second.stdout).group(1)) - 1
    # The checkpoint is written just after each history row, so the kill may fall between.
    assert started in (len(rows) - 1, len(rows)) and started >= 1, (rows, started)
    assert (out / "best.json").is_file() and (out / "final.keras").is_file()


MIRRORED = textwrap.dedent(
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import json, sys

    import kerasseg
    from kerasseg import training
    from kerasseg.data import JointAugment

    root, out = sys.argv[1:]
    data, _ = kerasseg.datasets.isbi2012(
        root, batch_size=2, augment=JointAugment(crop_size=(32, 32)), repeat=True, seed=0
    )
    run = training.train(
        "unet", data, output_dir=out, epochs=1, steps_per_epoch=2, strategy="mirrored",
        model_arguments=dict(base_filters=4, depth=2, activation="sigmoid",
                             input_shape=(None, None, 1), include_preprocessing=True),
        monitor="loss", verbose=0,
    )
    print("RESULT", json.dumps({
        "replicas": run.model.distribute_strategy.num_replicas_in_sync,
        "loss": float(run.history[-1]["loss"]),
    }))
    """
)


def test_train_mirrored_on_two_logical_cpus(data_dir, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(data_dir / "isbi2012-membrane"), str(tmp_path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1])
    assert result["replicas"] == 2
    assert math.isfinite(result["loss"])
    assert json.loads((tmp_path / "run.json").read_text())["replicas"] == 2
