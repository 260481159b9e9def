"""What a training run shows while it runs: `curves.png`, sample predictions per epoch (PNG
and TensorBoard), the TensorBoard command, and progress bars of long loops."""

import csv
import hashlib
import io
import math
import shutil
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import instance_elements
from PIL import Image

from kerasseg import load, samples, training, training_views, weights
from kerasseg.data import instance_dataset
from kerasseg.evaluation import evaluate
from kerasseg.inference import instance_overlay, overlay, predict_instances
from kerasseg.palette import generic_palette

ARGUMENTS = dict(
    base_filters=4, depth=2, num_classes=2, input_shape=(None, None, 1), include_preprocessing=True
)
METRICS = {"loss", "pixel_accuracy", "mean_iou", "dice"}  # `training.default_metrics` names


def _nuclei(count, first_seed):
    """Grey 64 x 64 nuclei images (values 0..255 as float32) and their 0/1 masks."""
    images, masks = [], []
    for seed in range(first_seed, first_seed + count):
        image, labels = samples.nuclei(size=64, seed=seed)
        images.append(image[..., None].astype("float32"))
        masks.append((labels > 0).astype("int32")[..., None])
    return np.stack(images), np.stack(masks)


@pytest.fixture(scope="module")
def data():
    return {"train": _nuclei(8, 0), "validation": _nuclei(4, 100)}


def _train(data, output_dir, epochs):
    train = tf.data.Dataset.from_tensor_slices(data["train"]).batch(4)
    validation = tf.data.Dataset.from_tensor_slices(data["validation"]).batch(2)
    return training.train(
        "unet",
        train,
        validation_data=validation,
        output_dir=output_dir,
        epochs=epochs,
        model_arguments=ARGUMENTS,
        verbose=2,
    )


@pytest.fixture(scope="module")
def two_epochs(data, tmp_path_factory):
    """A 2-epoch run of a tiny U-Net, with what it printed (stdout and stderr, in order)."""
    out = tmp_path_factory.mktemp("views") / "run"
    capture = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", capture)
        patch.setattr("sys.stderr", capture)
        run = _train(data, out, epochs=2)
    return run, capture.getvalue()


def _csv_rows(path):
    """history.csv read with the csv module alone: {column: [floats]}."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def _rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _check_curves(out, epochs):
    """curves.png of `out` is the drawing of the whole history.csv: one panel per metric
    with a solid training and a dashed validation curve of one colour, holding the
    file's numbers for every epoch."""
    columns = _csv_rows(out / "history.csv")
    assert columns["epoch"] == list(range(1, epochs + 1))
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    figure = training_views.write_curves(rows, out / "redrawn.png")
    axes = figure.get_axes()
    assert {a.get_title() for a in axes} == METRICS and len(axes) == len(METRICS)
    for a in axes:
        train, validation = a.get_lines()  # exactly two curves per panel
        assert train.get_linestyle() == "-" and validation.get_linestyle() == "--"
        assert train.get_color() == validation.get_color()
        name = a.get_title()
        np.testing.assert_array_equal(train.get_xdata(), columns["epoch"])
        np.testing.assert_allclose(train.get_ydata(), columns[name])
        np.testing.assert_allclose(validation.get_ydata(), columns[f"val_{name}"])
    picture = _rgb(out / "curves.png")
    width, height = figure.canvas.get_width_height()
    assert picture.shape == (height, width, 3)
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 20  # not blank
    # The run's file is this drawing of the whole history, not of one process's epochs.
    np.testing.assert_array_equal(picture, _rgb(out / "redrawn.png"))


def test_curves_png_has_one_curve_per_metric(two_epochs):
    run, _ = two_epochs
    _check_curves(run.output_dir, epochs=2)


def test_the_tensorboard_command_is_printed_at_the_start(two_epochs):
    run, printed = two_epochs
    logs = run.output_dir / "tensorboard"
    line = f"kerasseg train: to watch it: tensorboard --logdir {logs}"
    assert line in printed.splitlines()
    assert printed.index(line) < printed.index("Epoch 1/2")
    assert (logs / "train").is_dir() and (logs / "validation").is_dir()


def _panels(picture, row, size):
    """The (image, ground truth, prediction) panels of one row of a samples sheet whose
    images are `size` pixels square, enlarged 3 times (to 192: `_MIN_PANEL`), 4 px apart
    below a 24 px title band."""
    top = 24 + row * (3 * size + 4)
    band = picture[top : top + 3 * size]
    return [band[:, k * (3 * size + 4) : k * (3 * size + 4) + 3 * size] for k in range(3)]


def _enlarged(picture):
    return np.repeat(np.repeat(picture, 3, axis=0), 3, axis=1)


def test_samples_per_epoch_show_image_truth_and_prediction(two_epochs, data):
    run, _ = two_epochs
    out = run.output_dir
    images, masks = data["validation"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "epoch_001.png",
        "epoch_002.png",
    ]
    picture = _rgb(out / "samples" / "epoch_002.png")
    assert picture.shape == (24 + 4 * 192 + 3 * 4, 3 * 192 + 2 * 4, 3)  # 4 rows of 3 panels
    # The last epoch's samples are the final model's prediction (argmax of Keras's predict).
    predicted = run.model.predict(images, verbose=0).argmax(-1)
    # A 2-class architecture of the registry: generic colours, class 0 the background.
    palette = generic_palette(2, background=True)
    for row in range(4):
        grey = images[row, ..., 0].astype(np.uint8)
        shown, truth, prediction = _panels(picture, row, 64)
        np.testing.assert_array_equal(shown, _enlarged(np.repeat(grey[..., None], 3, -1)))
        np.testing.assert_array_equal(
            truth, _enlarged(overlay(grey, masks[row, ..., 0], palette=palette))
        )
        np.testing.assert_array_equal(
            prediction, _enlarged(overlay(grey, predicted[row], palette=palette))
        )
    # Epoch 1 drew the same images with another model's prediction.
    first = _rgb(out / "samples" / "epoch_001.png")
    np.testing.assert_array_equal(first[24:, :192], picture[24:, :192])


def test_tensorboard_holds_the_sample_pictures(two_epochs):
    run, _ = two_epochs
    folder = run.output_dir / "tensorboard" / "samples"
    found = {}
    for event_file in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                if value.tag == "samples":
                    width, height, png = value.tensor.string_val
                    found[event.step] = (int(width), int(height), tf.io.decode_png(png).numpy())
    assert sorted(found) == [0, 1]  # the steps of Keras's epoch scalars: epoch 1 is step 0
    for step, (width, height, pixels) in found.items():
        expected = _rgb(run.output_dir / "samples" / f"epoch_{step + 1:03d}.png")
        assert (height, width) == expected.shape[:2]
        np.testing.assert_array_equal(pixels[..., :3], expected)


def test_a_resumed_run_draws_all_its_epochs(two_epochs, data, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_epochs[0].output_dir, out)
    (out / "curves.png").unlink()
    run = _train(data, out, epochs=3)
    assert run.trained_epochs == 1
    _check_curves(out, epochs=3)
    assert (out / "samples" / "epoch_003.png").is_file()


def test_without_validation_data_there_are_no_samples_and_one_reason(tmp_path):
    writer, reason = training_views.sample_writer(None, None, tmp_path)
    assert writer is None and reason == "no validation data"
    pairs = tf.data.Dataset.from_tensor_slices(np.zeros((2, 8, 8, 1), "float32")).batch(1)
    writer, reason = training_views.sample_writer(None, pairs, tmp_path)
    assert writer is None and reason == "the validation data are not (images, masks) batches"


def test_normalised_images_are_stretched_and_said_so(tmp_path):
    image = np.linspace(-2.0, 2.0, 64 * 64, dtype="float32").reshape(64, 64, 1)
    mask = np.zeros((64, 64), np.int64)
    figure = training_views.sample_sheet([image], [mask], [mask], epoch=7)
    assert [t.get_text() for t in figure.texts] == [
        "image (values stretched)",
        "ground truth",
        "prediction, epoch 7",
    ]
    figure.savefig(tmp_path / "sheet.png")
    shown = _panels(_rgb(tmp_path / "sheet.png"), 0, 64)[0][::3, ::3, 0]
    assert shown.min() == 0 and shown.max() == 255  # -2 .. 2 spread over 0 .. 255
    expected = np.round((image[..., 0] + 2.0) * 255.0 / 4.0)
    np.testing.assert_allclose(shown, expected, atol=1)


# ----------------------------------------------------------------------------- progress


def test_evaluation_shows_a_bar_only_when_asked(capsys):
    masks = np.zeros((3, 2, 8, 8, 1), np.int32)
    batches = [(np.eye(2, dtype="float32")[m[..., 0]], m) for m in masks]
    evaluate(lambda x: x, batches, num_classes=2, progress=True)
    printed = capsys.readouterr().out
    assert "3/3" in printed and "batch" in printed
    evaluate(lambda x: x, batches, num_classes=2)
    assert capsys.readouterr().out == ""


def test_a_download_shows_a_bar_by_kib_and_none_when_told(tmp_path, monkeypatch, capsys):
    from test_weights import _Server  # the local HTTP server of the weights tests

    data = np.random.default_rng(0).bytes(300_000)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "w.weights.h5").write_bytes(data)
    server = _Server(tmp_path / "www")
    monkeypatch.setenv("KERASSEG_HOME", str(tmp_path / "home"))
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # urllib caches proxies in it
    info = weights.WeightsInfo(
        name="w",
        file_name="w.weights.h5",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        url=f"{server.url}/w.weights.h5",
    )
    try:
        path = weights.fetch(info)
        printed = capsys.readouterr().out
        assert path.read_bytes() == data
        assert f"kerasseg: downloading w.weights.h5 (0.3 MB) from {info.url}" in printed
        kib = math.ceil(len(data) / 1024)
        assert f"{kib}/{kib}" in printed and "KiB" in printed  # the finished bar
        assert weights.fetch(info) == path and capsys.readouterr().out == ""  # cached
        path.unlink()
        assert weights.fetch(info, progress=False) == path and path.read_bytes() == data
        assert capsys.readouterr().out == "" and server.requests == 2
    finally:
        server.close()


# ----------------------------------------------------------------------------- instances

# (height, width) of the validation images and their discs (centre row, centre column,
# radius), painted in this order: instance i of an image is its disc i.
DISC_IMAGES = (
    ((64, 64), ((18, 20, 9), (40, 44, 11))),
    ((48, 64), ((14, 14, 7), (30, 34, 8), (20, 52, 6))),  # 48 rows: cropped out of 64
)
# The shipped ResNet-18 preset (the smallest Mask R-CNN of the registry, trained on ISBI
# 2012 cells) at 64 pixels: it finds the discs, so the prediction panels are not empty.
TINY_MASKRCNN = dict(min_size=64, max_size=64, rpn_pre_nms_top_n=50, rpn_post_nms_top_n=30)


def _disc_truth(size, discs):
    """int32 instance map of `discs` (ids 1..n in order) on a `size` image."""
    rows, columns = np.mgrid[: size[0], : size[1]]
    truth = np.zeros(size, np.int32)
    for index, (y, x, radius) in enumerate(discs):
        truth[(rows - y) ** 2 + (columns - x) ** 2 <= radius**2] = index + 1
    return truth


def _disc_elements():
    """(image, targets) pairs of `DISC_IMAGES`: bright discs on a dark noisy RGB image
    (whole values 0..255 as float32)."""
    rng = np.random.default_rng(3)
    elements = []
    for size, discs in DISC_IMAGES:
        truth = _disc_truth(size, discs)
        image = rng.integers(0, 60, (*size, 3)).astype("float32")
        image[truth > 0] += 150
        masks = np.stack([truth == k for k in range(1, len(discs) + 1)]).astype("uint8")
        boxes = np.array([[y - r, x - r, y + r + 1, x + r + 1] for y, x, r in discs], "float32")
        classes = np.ones(len(discs), "int32")
        elements.append((image, {"boxes": boxes, "class_ids": classes, "masks": masks}))
    return instance_elements(elements)


def test_instance_samples_show_each_instance_in_its_own_colour(tmp_path):
    """A tiny Mask R-CNN fitted 2 epochs with the run's sample writer; its sheets hold
    the discs drawn from their definition and the model's `predict_instances`."""
    # max_instances 4 and a batch of 2: padding rows, and the 48-row image padded to 64.
    dataset = instance_dataset(_disc_elements(), max_instances=4, batch_size=2).cache()
    keras.utils.set_random_seed(0)
    model = load("maskrcnn_resnet18_isbi2012", **TINY_MASKRCNN)
    model.compile(optimizer=keras.optimizers.Adam(1e-5))
    writer, reason = training_views.sample_writer(model, dataset, tmp_path)
    assert reason is None and writer.task == "instance"
    model.fit(dataset, epochs=2, callbacks=[writer], verbose=0)
    out = tmp_path / "samples"
    assert sorted(p.name for p in out.iterdir()) == ["epoch_001.png", "epoch_002.png"]
    picture = _rgb(out / "epoch_002.png")
    heights = [3 * size[0] for size, _ in DISC_IMAGES]  # 64 wide: enlarged 3 times
    assert picture.shape == (24 + sum(heights) + 4, 3 * 192 + 2 * 4, 3)
    images = [element[0].numpy() for element in _disc_elements()]
    top, found = 24, []
    for image, (size, discs), height in zip(images, DISC_IMAGES, heights, strict=True):
        band = picture[top : top + height]
        shown, truth, prediction = (band[:, k * 196 : k * 196 + 192] for k in range(3))
        rgb = image.astype(np.uint8)  # whole values 0..255: shown as they are
        np.testing.assert_array_equal(shown, _enlarged(rgb))
        expected_truth = instance_overlay(rgb, _disc_truth(size, discs))
        np.testing.assert_array_equal(truth, _enlarged(expected_truth))
        labels = predict_instances(model, image)[0]
        found.append(int(labels.max()))
        np.testing.assert_array_equal(prediction, _enlarged(instance_overlay(rgb, labels)))
        top += height + 4
    assert min(found) > 0, found  # every prediction panel shows instances
    first = _rgb(out / "epoch_001.png")
    np.testing.assert_array_equal(first[24:, :392], picture[24:, :392])  # same image, truth


def test_instance_models_without_instance_batches_have_no_samples(tmp_path):
    maskrcnn = type("Outputs", (), {"output": {"boxes": 0, "masks": 0, "num_detections": 0}})
    pairs = tf.data.Dataset.from_tensor_slices(
        (np.zeros((2, 8, 8, 1), "float32"), np.zeros((2, 8, 8, 1), "int32"))
    ).batch(1)
    writer, reason = training_views.sample_writer(maskrcnn, pairs, tmp_path)
    assert writer is None and reason == (
        "the validation data are not Mask R-CNN batches ({'images', 'image_sizes'}, "
        "{'masks', 'num_instances', ...}) of kerasseg.data.instance_dataset"
    )
    with pytest.raises(ValueError, match="`ignore_label` and `palette` are for semantic"):
        training_views.SampleWriter([], [], tmp_path, palette=generic_palette(2), task="instance")
