"""kerasseg.ops against torchvision 0.29 (RoIAlign, MultiScaleRoIAlign, NMS) and by definition.

The torchvision outputs are committed in tests/fixtures/maskrcnn/ops_reference.npz, written by
make_ops_reference.py beside it (which also regenerates the seeded feature maps used here).
"""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasseg.ops import detection as ops

FIXTURES = Path(__file__).parent / "fixtures" / "maskrcnn"


import make_ops_reference as maker  # noqa: E402  (tests/fixtures/maskrcnn, on sys.path via conftest)


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURES / "ops_reference.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def feats(ref):
    values = maker.features()
    # The maps are regenerated from their seed: make sure numpy still gives the same numbers.
    np.testing.assert_allclose(values.astype(np.float64).sum(), ref["features_checksum"], 0, 1e-6)
    return values


# --------------------------------------------------------------------------------------------
# RoIAlign parity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [7, 14])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_matches_torchvision(ref, feats, size, aligned):
    boxes, indices = ref[f"roi{size}_boxes"], ref[f"roi{size}_indices"]
    expected = ref[f"roi{size}_aligned{int(aligned)}"]
    got = ops.roi_align(feats, boxes, indices, size, float(ref[f"roi{size}_scale"]), 2, aligned)
    assert got.shape == expected.shape
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-4)
    # The fixture exercises the border rules: some bins are exactly zero (samples further
    # than one pixel outside the map), most are not.
    assert 0 < np.mean(np.all(expected == 0, axis=(1, 2, 3))) < 0.2


def test_roi_align_adaptive_matches_torchvision_mask_targets(ref):
    maps = maker.masks()
    assert maps.sum() == ref["masks_checksum"]
    boxes, indices = ref["adaptive_mask_boxes"], ref["adaptive_mask_indices"]
    got = ops.roi_align(maps, boxes, indices, (28, 28), 1.0, sampling_ratio=-1)
    np.testing.assert_allclose(got.numpy(), ref["adaptive_mask"], rtol=0, atol=1e-5)
    # Soft targets: fractional values are present (not re-binarized).
    assert np.any((ref["adaptive_mask"] > 0.05) & (ref["adaptive_mask"] < 0.95))


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_adaptive_matches_torchvision_features(ref, feats, aligned):
    boxes, indices = ref["adaptive_feat_boxes"], ref["adaptive_feat_indices"]
    got = ops.roi_align(feats, boxes, indices, 7, 0.25, sampling_ratio=0, aligned=aligned)
    expected = ref[f"adaptive_feat_aligned{int(aligned)}"]
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-5)


def test_roi_align_adaptive_equals_fixed_grid_when_grids_agree(feats):
    # ceil(roi / out) == 2 for every box, so the adaptive path must equal sampling_ratio=2.
    rng = np.random.default_rng(3)
    size = rng.uniform(7.5, 13.5, (30, 2))  # feature pixels, output 7 -> grid 2
    start = rng.uniform(-3, 30, (30, 2))
    boxes = np.concatenate([start, start + size], 1).astype(np.float32)
    indices = rng.integers(0, 2, 30).astype(np.int32)
    fixed = ops.roi_align(feats, boxes, indices, 7, sampling_ratio=2)
    adaptive = ops.roi_align(feats, boxes, indices, 7, sampling_ratio=-1)
    np.testing.assert_allclose(adaptive.numpy(), fixed.numpy(), rtol=0, atol=1e-4)


def test_roi_align_rectangular_output_and_dtype(ref, feats):
    boxes, indices = ref["roi7_boxes"], ref["roi7_indices"]
    rect = ops.roi_align(feats, boxes, indices, maker.RECT_SIZE, 0.25)
    assert rect.shape == (len(boxes), *maker.RECT_SIZE, 4)
    np.testing.assert_allclose(rect.numpy(), ref["roi_rect_aligned0"], rtol=0, atol=1e-4)
    half = ops.roi_align(feats.astype(np.float16), boxes, indices, 7, 0.25)
    assert half.dtype == tf.float16
    np.testing.assert_allclose(half.numpy(), ref["roi7_aligned0"], rtol=0, atol=2e-2)


def test_roi_align_gradient_reaches_features(feats):
    # Boxes well inside the map: every sample's bilinear weights sum to 1, so the gradient of
    # the sum of all bins spreads exactly one unit per bin and channel over the map.
    boxes = np.array([[8, 8, 80, 100], [20, 40, 30, 44], [0, 0, 140, 160]], np.float32)
    indices = np.array([0, 1, 1], np.int32)
    x = tf.constant(feats)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(ops.roi_align(x, boxes, indices, 7, 0.25))
    grad = tape.gradient(total, x).numpy()
    np.testing.assert_allclose(grad.sum(axis=(0, 1, 2)), [3 * 49] * 4, rtol=1e-5)
    np.testing.assert_allclose(grad[0].sum(axis=(0, 1)), [49] * 4, rtol=1e-5)


def test_roi_align_empty_boxes(feats):
    empty = np.zeros((0, 4), np.float32)
    indices = np.zeros((0,), np.int32)
    assert ops.roi_align(feats, empty, indices, 7).shape == (0, 7, 7, 4)
    assert ops.roi_align(feats, empty, indices, 7, sampling_ratio=-1).shape == (0, 7, 7, 4)


def test_roi_align_in_tf_function_with_unknown_shapes(ref, feats):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, None], tf.float32),
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([], tf.float32),
        ]
    )
    def pool(x, b, i, scale):
        return (
            ops.roi_align(x, b, i, 7, scale, 2, False),
            ops.roi_align(x, b, i, 7, scale, -1, True),
        )

    fixed, _ = pool(feats, ref["roi7_boxes"], ref["roi7_indices"], tf.constant(0.25))
    np.testing.assert_allclose(fixed.numpy(), ref["roi7_aligned0"], rtol=0, atol=1e-4)
    boxes, indices = ref["adaptive_feat_boxes"], ref["adaptive_feat_indices"]
    _, adaptive = pool(feats, boxes, indices, tf.constant(0.25))
    np.testing.assert_allclose(adaptive.numpy(), ref["adaptive_feat_aligned1"], rtol=0, atol=1e-5)
    # Same graph, other sizes.
    other = pool(feats[:1, :20, :25, :3], boxes[:5], np.zeros(5, np.int32), tf.constant(0.5))
    assert other[0].shape == (5, 7, 7, 3) and other[1].shape == (5, 7, 7, 3)


# --------------------------------------------------------------------------------------------
# MultiScaleRoIAlign parity
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyramid(ref):
    levels = maker.pyramid()
    total = sum(p.astype(np.float64).sum() for p in levels)
    np.testing.assert_allclose(total, ref["pyramid_checksum"], 0, 1e-6)
    return levels


def test_multiscale_roi_align_matches_torchvision(ref, pyramid):
    # The fixture routes boxes to all four levels.
    assert set(np.unique(ref["pyramid_levels"])) == {0, 1, 2, 3}
    np.testing.assert_array_equal(ref["pyramid_scales"], [1 / 4, 1 / 8, 1 / 16, 1 / 32])
    boxes, indices = ref["pyramid_boxes"], ref["pyramid_indices"]
    got = ops.multiscale_roi_align(pyramid, boxes, indices, maker.PADDED_SIZE, 7)
    assert got.shape == ref["pyramid_pooled"].shape
    np.testing.assert_allclose(got.numpy(), ref["pyramid_pooled"], rtol=0, atol=1e-4)
    # torchvision infers the scales from the largest unpadded size: same result.
    largest = np.max(maker.IMAGE_SIZES, axis=0)
    again = ops.multiscale_roi_align(pyramid, boxes, indices, tuple(largest), 7)
    np.testing.assert_array_equal(again.numpy(), got.numpy())


def test_multiscale_roi_align_keeps_box_order(ref, pyramid):
    boxes, indices = ref["pyramid_boxes"], ref["pyramid_indices"]
    order = np.random.default_rng(0).permutation(len(boxes))
    got = ops.multiscale_roi_align(pyramid, boxes[order], indices[order], maker.PADDED_SIZE, 7)
    np.testing.assert_allclose(got.numpy(), ref["pyramid_pooled"][order], rtol=0, atol=1e-4)


def test_multiscale_roi_align_level_rule_and_empty(pyramid):
    # sqrt(area) 111 -> P2, 112 -> P3 (eps), 224 -> P4, 448 -> P5, 2000 -> P5 (clamp).
    boxes = np.array(
        [[0, 0, 111, 111], [0, 0, 112, 112], [0, 0, 224, 224], [0, 0, 448, 448], [0, 0, 2e3, 2e3]],
        np.float32,
    )
    indices = np.zeros(5, np.int32)
    got = ops.multiscale_roi_align(pyramid, boxes, indices, maker.PADDED_SIZE, 7).numpy()
    for row, level in enumerate([0, 1, 2, 3, 3]):
        scale = 1 / 2 ** (level + 2)
        one = ops.roi_align(pyramid[level], boxes[row : row + 1], indices[:1], 7, scale)
        np.testing.assert_array_equal(got[row], one.numpy()[0])
    # An inverted box (negative area, NaN size) is pooled on the first level, not lost.
    inverted = np.array([[40, 10, 20, 60]], np.float32)
    got = ops.multiscale_roi_align(pyramid, inverted, indices[:1], maker.PADDED_SIZE, 7)
    one = ops.roi_align(pyramid[0], inverted, indices[:1], 7, 1 / 4)
    np.testing.assert_array_equal(got.numpy(), one.numpy())
    empty = ops.multiscale_roi_align(
        pyramid, np.zeros((0, 4), np.float32), np.zeros(0, np.int32), maker.PADDED_SIZE, 14
    )
    assert empty.shape == (0, 14, 14, 4)


class _Pooler(keras.layers.Layer):
    """A Keras layer calling multiscale_roi_align, as the Mask R-CNN heads will."""

    def call(self, p2, p3, p4, p5, boxes, indices, image_size):
        return ops.multiscale_roi_align(
            [p2, p3, p4, p5], boxes, indices, (image_size[0], image_size[1]), 7
        )


def test_multiscale_roi_align_in_keras_functional_model(ref, pyramid):
    maps = [keras.Input((None, None, 4), batch_size=None) for _ in range(4)]
    boxes = keras.Input((4,), batch_size=None)
    indices = keras.Input((), batch_size=None, dtype="int32")
    image_size = keras.Input((), batch_size=2, dtype="int32")
    pooled = _Pooler()(*maps, boxes, indices, image_size)
    assert tuple(pooled.shape) == (None, 7, 7, 4)
    model = keras.Model([*maps, boxes, indices, image_size], pooled)
    inputs = [*pyramid, ref["pyramid_boxes"], ref["pyramid_indices"]]
    got = model(inputs + [np.array(maker.PADDED_SIZE, np.int32)])
    np.testing.assert_allclose(np.asarray(got), ref["pyramid_pooled"], rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------------
# NMS parity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", maker.NMS_THRESHOLDS)
def test_nms_matches_torchvision(ref, threshold):
    boxes, scores, groups = maker.nms_inputs()
    tag = int(round(threshold * 100))
    keep = ops.nms(boxes, scores, threshold)
    assert keep.dtype == tf.int32
    np.testing.assert_array_equal(keep.numpy(), ref[f"nms{tag}"])
    assert 0 < len(ref[f"nms{tag}"]) < len(boxes)  # something was suppressed
    batched = ops.batched_nms(boxes, scores, groups, threshold)
    np.testing.assert_array_equal(batched.numpy(), ref[f"batched_nms{tag}"])
    assert len(ref[f"nms{tag}"]) < len(ref[f"batched_nms{tag}"]) < len(boxes)
    top = ops.batched_nms(boxes, scores, groups, threshold, max_output_size=10)
    np.testing.assert_array_equal(top.numpy(), ref[f"batched_nms{tag}"][:10])


def test_nms_suppresses_strictly_above_threshold_and_groups_are_independent():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    # IoU(box0, box1) = 0.5 exactly: kept at threshold 0.5, suppressed below it.
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.5).numpy(), [0, 1, 3])
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.49).numpy(), [0, 3])
    # The duplicate in another group survives.
    groups = np.array([0, 0, 1, 0], np.int32)
    np.testing.assert_array_equal(ops.batched_nms(boxes, scores, groups, 0.49).numpy(), [0, 2, 3])
    empty = ops.batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [], 0.5)
    assert empty.shape == (0,)


def test_nms_in_tf_function_with_unknown_shapes():
    boxes, scores, groups = maker.nms_inputs()

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ]
    )
    def run(b, s, g):
        return ops.batched_nms(b, s, g, 0.5, max_output_size=100)

    eager = ops.batched_nms(boxes, scores, groups, 0.5, max_output_size=100)
    np.testing.assert_array_equal(run(boxes, scores, groups).numpy(), eager.numpy())


# --------------------------------------------------------------------------------------------
# Box utilities
# --------------------------------------------------------------------------------------------


def test_box_area_and_iou_match_definition():
    rng = np.random.default_rng(5)

    def random_boxes(n):
        y = np.sort(rng.uniform(0, 50, (n, 2)), axis=1)
        x = np.sort(rng.uniform(0, 50, (n, 2)), axis=1)
        return np.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], 1).astype(np.float32)

    a, b = random_boxes(6), random_boxes(5)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    np.testing.assert_allclose(ops.box_area(a).numpy(), area_a, rtol=1e-6)
    expected = np.zeros((6, 5))
    for i, p in enumerate(a.astype(np.float64)):
        for j, q in enumerate(b.astype(np.float64)):
            h = max(min(p[2], q[2]) - max(p[0], q[0]), 0)
            w = max(min(p[3], q[3]) - max(p[1], q[1]), 0)
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - h * w
            expected[i, j] = h * w / union
    iou = ops.box_iou(a, b)
    assert iou.shape == (6, 5)
    np.testing.assert_allclose(iou.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert np.any(expected > 0) and np.any(expected == 0)
    # Batched (..., N, 4) x (..., M, 4).
    batched = ops.box_iou(np.stack([a, a]), np.stack([b, b]))
    np.testing.assert_allclose(batched.numpy()[1], iou.numpy(), rtol=0, atol=0)
    # No "+1": a 10x10 box overlapping half of another.
    half = ops.box_iou([[0.0, 0.0, 10.0, 10.0]], [[0.0, 5.0, 10.0, 15.0]]).numpy()
    np.testing.assert_allclose(half, [[1 / 3]], rtol=1e-6)


def test_clip_boxes_to_image_edges():
    boxes = np.array([[-5, -3, 50, 70], [10, 20, 30, 40], [60, 90, 70, 100]], np.float32)
    clipped = ops.clip_boxes(boxes, 40, 80).numpy()
    np.testing.assert_array_equal(clipped, [[0, 0, 40, 70], [10, 20, 30, 40], [40, 80, 40, 80]])
    # Per-image sizes broadcast against a batch of boxes (B, N, 4).
    batch = np.stack([boxes, boxes])
    heights = np.array([[40.0], [100.0]], np.float32)
    widths = np.array([[80.0], [60.0]], np.float32)
    per_image = ops.clip_boxes(batch, heights, widths).numpy()
    np.testing.assert_array_equal(per_image[0], clipped)
    np.testing.assert_array_equal(
        per_image[1], [[0, 0, 50, 60], [10, 20, 30, 40], [60, 60, 70, 60]]
    )


def test_remove_small_boxes_returns_keep_mask():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 0.5, 3], [0, 0, 3, 0.99], [2, 2, 1, 5]], np.float32)
    keep = ops.remove_small_boxes(boxes, 1.0)
    assert keep.dtype == tf.bool
    np.testing.assert_array_equal(keep.numpy(), [True, False, False, False])
    np.testing.assert_array_equal(ops.remove_small_boxes(boxes[None], 0.5).numpy(), [[1, 1, 1, 0]])


# --------------------------------------------------------------------------------------------
# Argument errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"output_size": 0}, ValueError, "output_size"),
        ({"output_size": (7,)}, ValueError, "output_size"),
        ({"output_size": "7"}, ValueError, "output_size"),
        ({"output_size": 7.0}, ValueError, "output_size"),
        ({"sampling_ratio": 2.0}, ValueError, "sampling_ratio"),
        ({"aligned": "yes"}, ValueError, "aligned"),
        ({"spatial_scale": 0}, ValueError, "spatial_scale"),
        ({"spatial_scale": -0.25}, ValueError, "spatial_scale"),
        ({"features": np.zeros((4, 4, 2), np.float32)}, ValueError, "features"),
        ({"features": np.zeros((1, 4, 4, 2), np.int32)}, TypeError, "features"),
        ({"boxes": np.zeros((3, 5), np.float32)}, ValueError, "boxes"),
        ({"boxes": np.zeros((3, 2, 4), np.float32)}, ValueError, "boxes"),
        ({"boxes": "boxes"}, TypeError, "boxes"),
        ({"box_indices": np.zeros(3, np.float32)}, TypeError, "box_indices"),
        ({"box_indices": np.zeros((3, 1), np.int32)}, ValueError, "box_indices"),
    ],
)
def test_roi_align_argument_errors(kwargs, error, match):
    args = {
        "features": np.zeros((1, 8, 8, 2), np.float32),
        "boxes": np.zeros((3, 4), np.float32),
        "box_indices": np.zeros(3, np.int32),
        "output_size": 7,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ops.roi_align(**args)


def test_other_argument_errors():
    maps = [np.zeros((1, 8 // 2**k, 8 // 2**k, 2), np.float32) for k in range(4)]
    boxes, indices = np.zeros((3, 4), np.float32), np.zeros(3, np.int32)
    with pytest.raises(ValueError, match="features"):
        ops.multiscale_roi_align(maps[0], boxes, indices, (32, 32), 7)
    with pytest.raises(ValueError, match="features"):
        ops.multiscale_roi_align([], boxes, indices, (32, 32), 7)
    with pytest.raises(ValueError, match="image_size"):
        ops.multiscale_roi_align(maps, boxes, indices, 32, 7)
    with pytest.raises(ValueError, match="image_size"):
        ops.multiscale_roi_align(maps, boxes, indices, (32, 32, 3), 7)
    with pytest.raises(ValueError, match="output_size"):
        ops.multiscale_roi_align(maps, boxes, indices, (32, 32), -1)
    with pytest.raises(ValueError, match="canonical_scale"):
        ops.multiscale_roi_align(maps, boxes, indices, (32, 32), 7, canonical_scale=0)
    scores = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="iou_threshold"):
        ops.nms(boxes, scores, 1.5)
    with pytest.raises(ValueError, match="max_output_size"):
        ops.nms(boxes, scores, 0.5, max_output_size=-1)
    with pytest.raises(ValueError, match="scores"):
        ops.nms(boxes, np.zeros((3, 1), np.float32), 0.5)
    with pytest.raises(TypeError, match="group_ids"):
        ops.batched_nms(boxes, scores, np.zeros(3, np.float32), 0.5)
    with pytest.raises(ValueError, match="height"):
        ops.clip_boxes(boxes, -1, 10)
    with pytest.raises(ValueError, match="min_size"):
        ops.remove_small_boxes(boxes, -0.1)
    with pytest.raises(ValueError, match="boxes"):
        ops.box_area(np.zeros((2, 3), np.float32))
