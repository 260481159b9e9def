"""Mask R-CNN training: matching, sampling and losses against torchvision, and `model.fit`.

`tests/fixtures/maskrcnn/training_reference.npz` holds torchvision's outputs
(`make_training_reference.py`); the inputs are regenerated here from its seeds.
"""

import math
import subprocess
import sys
import textwrap

import keras
import make_training_reference as ref  # noqa: E402
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from kerasseg.data.instance_pipeline import instance_dataset
from kerasseg.models.maskrcnn import losses, targets
from kerasseg.models.maskrcnn.model import maskrcnn
from kerasseg.ops import detection as kops

FIXTURES = REPO / "tests" / "fixtures" / "maskrcnn"


@pytest.fixture(scope="module")
def data():
    return ref.inputs()


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FIXTURES / "training_reference.npz"))


# ------------------------------------------------------------------ against torchvision


@pytest.mark.parametrize(
    "name, high, low, low_quality", [("rpn", 0.7, 0.3, True), ("roi", 0.5, 0.5, False)]
)
def test_match_is_torchvisions_matcher(data, expected, name, high, low, low_quality):
    for key, out in (("iou", f"matches_{name}"), ("iou_low", f"matches_low_{name}")):
        got = targets.match(data[key], high, low, low_quality).numpy()
        np.testing.assert_array_equal(got, expected[out])


def test_match_ignores_padding_rows_and_handles_no_ground_truth():
    iou = np.array([[0.8, 0.1], [0.9, 0.95]], "float32")
    got = targets.match(iou, 0.7, 0.3, True, valid_rows=[True, False]).numpy()
    assert got.tolist() == [0, targets.BELOW_LOW]  # the padding row's 0.95 does not count
    none = targets.match(iou, 0.7, 0.3, True, valid_rows=[False, False]).numpy()
    assert none.tolist() == [targets.BELOW_LOW] * 2


def test_rpn_loss_is_torchvisions(data, expected):
    images = range(len(ref.ANCHORS))
    valid = np.concatenate([data[f"rpn_positive_{i}"] | data[f"rpn_negative_{i}"] for i in images])
    labels = np.concatenate([data[f"rpn_labels_{i}"] for i in images])
    objectness, box = losses.rpn_loss(
        np.concatenate([data[f"rpn_logits_{i}"] for i in images]),
        np.concatenate([data[f"rpn_deltas_{i}"] for i in images]),
        np.maximum(labels, 0),
        np.concatenate([data[f"rpn_targets_{i}"] for i in images]),
        valid,
    )
    np.testing.assert_allclose(objectness.numpy(), expected["rpn_objectness"], rtol=1e-5)
    np.testing.assert_allclose(box.numpy(), expected["rpn_box"], rtol=1e-5)


def test_box_head_loss_is_torchvisions_fastrcnn_loss(data, expected):
    images = range(len(ref.ROIS))
    classification, box = losses.box_head_loss(
        np.concatenate([data[f"class_logits_{i}"] for i in images]),
        np.concatenate([data[f"box_regression_{i}"] for i in images]),
        np.concatenate([data[f"box_labels_{i}"] for i in images]),
        np.concatenate([data[f"box_targets_{i}"] for i in images]),
        np.ones(sum(ref.ROIS), bool),
    )
    np.testing.assert_allclose(classification.numpy(), expected["classifier"], rtol=1e-5)
    np.testing.assert_allclose(box.numpy(), expected["box_regression"], rtol=1e-5)


def test_mask_targets_and_loss_are_torchvisions_maskrcnn_loss(data, expected):
    """RoIAlign of the matched uint8 masks (adaptive grid) + BCE on the label's channel."""
    images = range(len(ref.MASK_ROIS))
    mask_targets = np.concatenate(
        [
            kops.roi_align(
                data[f"gt_masks_{i}"][..., None],
                data[f"mask_boxes_{i}"],
                data[f"mask_matched_{i}"].astype("int32"),
                28,
                1.0,
                sampling_ratio=0,
            )[..., 0]
            for i in images
        ]
    )
    loss = losses.mask_loss(
        np.concatenate([data[f"mask_logits_{i}"] for i in images]),
        # torchvision's labels: the class of each RoI's matched ground truth
        np.concatenate([data[f"mask_gt_labels_{i}"][data[f"mask_matched_{i}"]] for i in images]),
        mask_targets,
        np.ones(sum(ref.MASK_ROIS), bool),
    )
    np.testing.assert_allclose(loss.numpy(), expected["mask"], rtol=1e-5)


# ------------------------------------------------------------------ by hand


def test_smooth_l1_by_hand():
    beta = 1 / 9
    got = losses.smooth_l1(np.array([0.0, 0.05, -0.1, 0.5, -2.0], "float32")).numpy()
    want = [0.0, 0.5 * 0.05**2 / beta, 0.5 * 0.1**2 / beta, 0.5 - beta / 2, 2.0 - beta / 2]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_box_head_loss_by_hand():
    """Two RoIs, 3 classes: one positive of class 2, one background, one padding slot."""
    logits = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [9.0, 9.0, 9.0]], "float32")
    regression = np.zeros((3, 12), "float32")
    regression[0, 8:12] = [0.1, -0.2, 1.0, 0.0]  # class 2's deltas
    labels = np.array([2, 0, 1])
    target = np.zeros((3, 4), "float32")
    classification, box = losses.box_head_loss(
        logits, regression, labels, target, np.array([True, True, False])
    )
    ce0 = math.log(1 + math.e + math.e**2) - 2.0
    ce1 = math.log(math.e + 2) - 1.0
    assert classification.numpy() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    beta = 1 / 9
    l1 = 0.5 * 0.1**2 / beta + (0.2 - beta / 2) + (1.0 - beta / 2)
    assert box.numpy() == pytest.approx(l1 / 2, rel=1e-6)


def test_mask_loss_without_positives_is_zero():
    loss = losses.mask_loss(
        np.ones((2, 28, 28, 3), "float32"), [1, 2], np.ones((2, 28, 28)), [False, False]
    )
    assert loss.numpy() == 0.0


def test_sample_follows_torchvisions_counts():
    """p = min(#pos, int(B f)) positives and min(#neg, B - p) negatives, never ignored ones."""
    labels = tf.constant([1] * 5 + [0] * 20 + [-1] * 10)
    priorities = tf.random.stateless_uniform([35], seed=(1, 2))
    indices, valid = targets.sample(labels, priorities, batch_size=16, positive_fraction=0.25)
    indices, valid = indices.numpy(), valid.numpy()
    assert indices.shape == (4 + 16,)
    chosen = labels.numpy()[indices[valid]]
    assert (chosen == 1).sum() == 4 and (chosen == 0).sum() == 12 and (chosen == -1).sum() == 0
    assert len(set(indices[valid].tolist())) == 16  # no repeats
    few = tf.constant([1, 0, 0, -1])
    indices, valid = targets.sample(few, tf.constant([0.5, 0.1, 0.2, 0.9]), 16, 0.5)
    assert sorted(few.numpy()[indices.numpy()[valid.numpy()]].tolist()) == [0, 0, 1]


def test_rpn_targets_by_hand():
    """One ground-truth box equal to anchor 1: it is the positive, far anchors negatives."""
    anchors = np.array(
        [[0, 0, 10, 10], [20, 20, 40, 40], [22, 22, 42, 42], [60, 60, 70, 70]], "float32"
    )
    gt = np.array([[20, 20, 40, 40], [0, 0, 0, 0]], "float32")  # second row: padding
    indices, labels, deltas, valid = targets.rpn_targets(
        anchors, gt, 1, tf.constant([0.1, 0.9, 0.5, 0.3]), batch_size=4, positive_fraction=0.5
    )
    chosen = dict(zip(indices.numpy()[valid.numpy()], labels.numpy()[valid.numpy()], strict=True))
    # Anchor 2 has IoU 324 / 476 = 0.68 with the box: between the thresholds, never sampled.
    assert chosen == {1: 1.0, 0: 0.0, 3: 0.0}
    np.testing.assert_allclose(deltas.numpy()[valid.numpy()], 0.0, atol=1e-6)


def test_roi_targets_append_ground_truth_and_encode_with_head_weights():
    proposals = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], "float32")  # one valid proposal
    gt = np.array([[1, 1, 11, 13]], "float32")
    rois, labels, deltas, valid, matched = targets.roi_targets(
        proposals, 1, gt, [3], 1, tf.constant([0.4, 0.8, 0.6]), batch_size=8
    )
    rois, labels, deltas, valid = (t.numpy() for t in (rois, labels, deltas, valid))
    # Proposal: IoU with the box 81 / 139 = 0.58 -> positive of class 3; the box itself too.
    assert valid.sum() == 2 and sorted(labels[valid].tolist()) == [3, 3]
    first = np.flatnonzero(valid & (rois[:, 2] == 10))[0]
    # torchvision's encode with weights (10, 10, 5, 5): centres (6, 7) vs (5, 5), sizes (10, 12)
    want = [10 * (7 - 5) / 10, 10 * (6 - 5) / 10, 5 * math.log(12 / 10), 5 * math.log(1)]
    np.testing.assert_allclose(deltas[first], want, rtol=1e-5)
    assert matched.numpy()[first] == 0


# ------------------------------------------------------------------ model.fit


def _toy_elements(sizes=((96, 80), (64, 96), (80, 64))):
    """Bright rectangles on noise: image i has i instances (the first image none)."""
    rng = np.random.default_rng(0)
    elements = []
    for i, (height, width) in enumerate(sizes):
        image = rng.uniform(0, 60, (height, width, 3)).astype("float32")
        masks = np.zeros((i, height, width), "uint8")
        for k in range(i):
            y, x = rng.integers(0, height - 30), rng.integers(0, width - 30)
            masks[k, y : y + 24, x : x + 20] = 1
            image[y : y + 24, x : x + 20] += 180
        boxes = np.zeros((i, 4), "float32")
        for k, mask in enumerate(masks):
            rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
            boxes[k] = [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]
        elements.append((image, {"boxes": boxes, "class_ids": np.ones(i, "int32"), "masks": masks}))

    def generator():
        yield from elements

    spec = (
        tf.TensorSpec([None, None, 3], tf.float32),
        {
            "boxes": tf.TensorSpec([None, 4], tf.float32),
            "class_ids": tf.TensorSpec([None], tf.int32),
            "masks": tf.TensorSpec([None, None, None], tf.uint8),
        },
    )
    return tf.data.Dataset.from_generator(generator, output_signature=spec)


def test_instance_dataset_pads_images_and_instances():
    dataset = instance_dataset(_toy_elements(), max_instances=4, batch_size=3)
    inputs, batch = next(iter(dataset))
    assert inputs["images"].shape == (3, 96, 96, 3)
    assert inputs["image_sizes"].numpy().tolist() == [[96, 80], [64, 96], [80, 64]]
    assert batch["masks"].shape == (3, 4, 96, 96) and batch["masks"].dtype == tf.uint8
    assert batch["num_instances"].numpy().tolist() == [0, 1, 2]
    assert batch["class_ids"].numpy().tolist()[1] == [1, -1, -1, -1]
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_instances"):
        next(iter(instance_dataset(_toy_elements(), max_instances=1, batch_size=3)))
    with pytest.raises(ValueError, match="max_instances"):
        instance_dataset(_toy_elements(), max_instances=0)


def _small_model():
    keras.utils.set_random_seed(0)
    return maskrcnn(
        num_classes=2,
        backbone="resnet18",
        version=2,
        trainable_backbone_layers=5,
        min_size=64,
        max_size=96,
        rpn_post_nms_top_n_train=200,
        box_batch_size_per_image=64,
    )


@pytest.mark.slow
def test_fit_lowers_the_loss_on_a_fixed_batch(tmp_path):
    """Images of different sizes with 0, 1 and 2 instances; weights restored for resuming."""
    model = _small_model()
    dataset = instance_dataset(_toy_elements(), max_instances=4, batch_size=3).cache()
    model.compile(optimizer=keras.optimizers.Adam(3e-4))
    before = model.evaluate(dataset, verbose=0, return_dict=True)
    assert set(before) == {"loss", *losses.LOSS_NAMES}
    assert all(np.isfinite(v) for v in before.values())
    model.fit(dataset, epochs=10, verbose=0)
    after = model.evaluate(dataset, verbose=0, return_dict=True)
    assert after["loss"] < 0.6 * before["loss"], (before, after)
    # The classifier term may grow while the RPN learns to propose the objects.
    for name in ("rpn_objectness", "mask"):
        assert after[name] < before[name], (name, before, after)
    model.save_weights(tmp_path / "maskrcnn.weights.h5")
    restored = _small_model()
    restored.load_weights(tmp_path / "maskrcnn.weights.h5")
    for saved, loaded in zip(model.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(loaded))


def test_fit_rejects_targets_without_instances_keys():
    model = _small_model()
    model.compile(optimizer="sgd")
    images = np.zeros((1, 64, 64, 3), "float32")
    with pytest.raises(ValueError, match="num_instances"):
        model.fit(images, {"boxes": np.zeros((1, 1, 4), "float32")}, verbose=0)


@pytest.mark.slow
def test_fit_under_mirrored_strategy_on_two_cpu_devices():
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(REPO / "tests")!r}, {str(FIXTURES)!r}]
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np
        from test_maskrcnn_training import _small_model, _toy_elements
        from kerasseg.data.instance_pipeline import instance_dataset
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = _small_model()
            model.compile(optimizer=keras.optimizers.Adam(1e-4))
        dataset = instance_dataset(_toy_elements(((64, 64),) * 4), max_instances=4,
                                   batch_size=4, drop_remainder=True)
        history = model.fit(dataset, epochs=1, verbose=0).history
        assert all(np.isfinite(v).all() for v in history.values()), history
        print("replicas", strategy.num_replicas_in_sync, "loss", history["loss"])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=900, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout
