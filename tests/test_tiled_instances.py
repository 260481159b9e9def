"""Tiled instance prediction: every object once, neither twice nor cut.

References are computed on the whole image: `skimage.measure.label` for connected components,
whole-image `cell_instances` for the seeded watershed, whole-image `predict_instances` (and the
ground truth) for Mask R-CNN; the merge's unit cases are derived by hand.
"""

import re
import time

import numpy as np
import pytest
from PIL import Image
from skimage.measure import label, regionprops

from kerasseg.inference import cell_instances
from kerasseg.inference.tiled_instances import (
    WindowInstance,
    cell_instances_tiled,
    merge_instances,
    predict_instances_tiled,
)
from kerasseg.inference.windows import tile_windows


def _isbi(data_dir, kind, number):
    path = data_dir / "isbi2012-membrane" / "train" / kind / f"{number:02d}.png"
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def label_mosaic(data_dir):
    """2 x 2 ISBI 2012 training label slices, 1024 x 1024, 255 = cell interior."""
    slices = [_isbi(data_dir, "label", number) for number in range(4)]
    return np.block([[slices[0], slices[1]], [slices[2], slices[3]]])


def _cut_counts(reference, windows):
    """(objects touching an inner window edge somewhere, objects no window sees whole)."""
    crossing = set()
    for window in windows:
        view = reference[window.top : window.top + window.height,
                         window.left : window.left + window.width]  # fmt: skip
        edges = (view[0], view[-1], view[:, 0], view[:, -1])
        for inner, edge in zip(window.inner, edges, strict=True):
            if inner:
                crossing.update(np.unique(edge[edge > 0]).tolist())
    never_whole = 0
    for region in regionprops(reference):
        top, left, bottom, right = region.bbox
        whole = False
        for w in windows:
            inside = w.top <= top and bottom <= w.top + w.height
            inside = inside and w.left <= left and right <= w.left + w.width
            touches = (w.inner[0] and top == w.top) or (w.inner[1] and bottom == w.top + w.height)
            touches = touches or (w.inner[2] and left == w.left)
            touches = touches or (w.inner[3] and right == w.left + w.width)
            whole = whole or (inside and not touches)
        never_whole += not whole
    return len(crossing), never_whole


@pytest.mark.parametrize(
    ("tile", "overlap", "least_crossing", "least_never_whole"),
    [(256, 0.25, 200, 20), (128, 0.1, 250, 100)],
)
def test_mosaic_equals_whole_image_labelling(
    label_mosaic, tile, overlap, least_crossing, least_never_whole
):
    """Exactly skimage's labels, numbering included, with many cells cut by windows; the
    second case has a 13-pixel overlap, far smaller than most cells (they are united)."""
    probs = (label_mosaic / 255.0).astype(np.float32)[..., None]
    expected = label(label_mosaic > 127, connectivity=1)
    got = cell_instances_tiled(probs, tile=tile, overlap=overlap)
    crossing, never_whole = _cut_counts(expected, tile_windows(1024, 1024, tile, overlap))
    assert got.dtype == np.int32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert expected.max() >= 400
    assert crossing >= least_crossing  # the merge is exercised on these
    assert never_whole >= least_never_whole  # and the union of cut pieces on these


def test_mosaic_with_three_channels_and_a_rectangular_tile(label_mosaic):
    """Argmax of a 3-class map (class 1 = interior) over (tile_h, tile_w) windows."""
    crop = label_mosaic[:600, :700]
    interior = crop > 127
    probs = np.stack([~interior, interior, np.zeros_like(interior)], -1).astype(np.float32)
    got = cell_instances_tiled(probs, tile=(200, 300), overlap=0.2, batch_size=3)
    np.testing.assert_array_equal(got, label(interior, connectivity=1))


# --------------------------------------------------------------------------- merge by hand

# Two windows side by side on a 6 x 16 image: columns 0..11 and 4..15; their intersection
# is columns 4..11. Window 0's right edge (column 11) and window 1's left edge (column 4)
# are inner edges.
HEIGHT, WIDTH = 6, 16
WINDOWS = tile_windows(HEIGHT, WIDTH, tile=(6, 12), overlap=0.5)


def _box(rows, columns, window=None):
    """A full (HEIGHT, WIDTH) mask, or a window's crop of it."""
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[rows[0] : rows[1], columns[0] : columns[1]] = True
    if window is not None:
        w = WINDOWS[window]
        mask = mask[w.top : w.top + w.height, w.left : w.left + w.width]
    return mask


def _instance(mask, score, label_id=1):
    return WindowInstance(score, 0, 0, mask, label_id)


def test_windows_of_the_hand_cases():
    assert [(w.left, w.width, w.inner) for w in WINDOWS] == [
        (0, 12, (False, False, False, True)),
        (4, 12, (False, False, True, False)),
    ]


def test_duplicate_whole_instances_become_one():
    cell = ((1, 4), (6, 9))  # inside the intersection, whole in both windows
    instances = [[_instance(_box(*cell, 0), 0.8)], [_instance(_box(*cell, 1), 0.9)]]
    labels, merged = merge_instances(WINDOWS, instances, HEIGHT, WIDTH)
    np.testing.assert_array_equal(labels, _box(*cell).astype(np.int32))
    assert len(merged) == 1 and merged[0].score == 0.9 and merged[0].members == ((1, 0), (0, 0))
    # equal scores: the earlier window's
    instances = [[_instance(_box(*cell, 0), 0.7)], [_instance(_box(*cell, 1), 0.7)]]
    _, merged = merge_instances(WINDOWS, instances, HEIGHT, WIDTH)
    assert len(merged) == 1 and merged[0].members[0] == (0, 0) and not merged[0].united


def test_a_cut_piece_gives_way_to_the_whole_instance():
    cell = ((1, 5), (1, 8))  # whole in window 0; window 1 sees columns 4..7, cut at column 4
    piece = _box(*cell, 1)
    assert piece[:, 0].any()  # it touches window 1's inner left edge
    instances = [[_instance(_box(*cell, 0), 0.6)], [_instance(piece, 0.99)]]
    labels, merged = merge_instances(WINDOWS, instances, HEIGHT, WIDTH)
    np.testing.assert_array_equal(labels, _box(*cell).astype(np.int32))
    assert [m.score for m in merged] == [0.6]  # the whole one, although the piece scores more


def test_cut_halves_of_an_object_larger_than_the_overlap_are_united():
    cell = ((2, 4), (2, 14))  # 12 columns: cut in both windows
    instances = [[_instance(_box(*cell, 0), 0.7)], [_instance(_box(*cell, 1), 0.8)]]
    labels, merged = merge_instances(WINDOWS, instances, HEIGHT, WIDTH)
    np.testing.assert_array_equal(labels, _box(*cell).astype(np.int32))
    assert len(merged) == 1 and merged[0].united and merged[0].score == 0.8
    assert (merged[0].top, merged[0].left, merged[0].mask.shape) == (2, 2, (2, 12))


def test_touching_different_objects_stay_two():
    left, right = ((1, 4), (5, 8)), ((1, 4), (8, 11))  # side by side in the intersection
    instances = [
        [_instance(_box(*left, 0), 0.9), _instance(_box(*right, 0), 0.8)],
        [_instance(_box(*right, 1), 0.8), _instance(_box(*left, 1), 0.9)],
    ]
    labels, merged = merge_instances(WINDOWS, instances, HEIGHT, WIDTH)
    np.testing.assert_array_equal(labels, _box(*left) * 1 + _box(*right) * 2)
    assert [m.id for m in merged] == [1, 2] and [m.score for m in merged] == [0.9, 0.8]


def test_a_piece_overlapping_two_whole_objects_does_not_merge_them():
    """A cut piece that matches two different whole objects (chained in one group) keeps both."""
    first, second = ((0, 3), (5, 9)), ((3, 6), (5, 9))
    window_one = _box((0, 6), (4, 9), 1)  # both objects as one piece, cut at column 4
    instances = [
        [_instance(_box(*first, 0), 0.9), _instance(_box(*second, 0), 0.85)],
        [_instance(window_one, 0.95)],
    ]
    labels, merged = merge_instances(WINDOWS, instances, HEIGHT, WIDTH, match_iou=0.3)
    np.testing.assert_array_equal(labels, _box(*first) * 1 + _box(*second) * 2)
    assert [m.score for m in merged] == [0.9, 0.85]


def test_scores_order_ids_and_painting():
    low, high, middle = ((0, 4), (0, 3)), ((2, 6), (1, 4)), ((0, 2), (12, 16))
    instances = [
        [_instance(_box(*low, 0), 0.5), _instance(_box(*high, 0), 0.9)],
        [_instance(_box(*middle, 1), 0.7)],
    ]
    labels, merged = merge_instances(WINDOWS, instances, HEIGHT, WIDTH)
    expected = np.zeros((HEIGHT, WIDTH), np.int32)
    expected[_box(*low)] = 3
    expected[_box(*high)] = 1  # the best on top where it overlaps the worst
    expected[_box(*middle)] = 2
    np.testing.assert_array_equal(labels, expected)
    assert [(m.id, m.score) for m in merged] == [(1, 0.9), (2, 0.7), (3, 0.5)]
    _, merged = merge_instances(WINDOWS, instances, HEIGHT, WIDTH, numbering="raster")
    assert [(m.id, m.score) for m in merged] == [(1, 0.5), (2, 0.7), (3, 0.9)]


def test_an_instance_covered_entirely_gets_no_id():
    inner, outer = ((1, 3), (1, 3)), ((0, 4), (0, 4))
    instances = [[_instance(_box(*outer, 0), 0.9), _instance(_box(*inner, 0), 0.4)], []]
    labels, merged = merge_instances(WINDOWS, instances, HEIGHT, WIDTH)
    assert labels.max() == 1 and [m.id for m in merged] == [1, 0]


# --------------------------------------------------------------------------- watershed


def _voronoi_cells(seed, size=192, spacing=16):
    """A cell-probability map: Voronoi cells about 16 pixels across, p near 0 on their walls."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[spacing // 2 : size : spacing, spacing // 2 : size : spacing]
    centres = np.stack([ys.ravel(), xs.ravel()], 1) + rng.uniform(-4, 4, (ys.size, 2))
    yy, xx = np.mgrid[:size, :size]
    distances = np.sqrt((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2)
    nearest = np.sort(distances, axis=-1)
    return np.clip((nearest[..., 1] - nearest[..., 0]) / 6, 0, 1).astype(np.float32)[..., None]


@pytest.mark.parametrize("seed", [0, 1])
def test_watershed_matches_whole_image_where_cells_fit_the_overlap(seed):
    """Cells of at most ~24 pixels, an overlap of 48: the same cells with the same ids. The
    watershed floods level by level over the whole image, so a window's flood runs ahead of
    the whole image's where the whole image waits for lower levels elsewhere: ties on a few
    wall pixels may go the other way (seed 0: 0 pixels of 36864 differ, seed 1: 3)."""
    probs = _voronoi_cells(seed)
    expected = cell_instances(probs[None], watershed_seeds=0.9)[0]
    got = cell_instances_tiled(probs, tile=96, overlap=0.5, watershed_seeds=0.9)
    assert expected.max() == got.max() == 144
    assert np.count_nonzero(got != expected) <= 10
    for cell in range(1, 145):
        a, b = expected == cell, got == cell
        assert np.count_nonzero(a & b) / np.count_nonzero(a | b) >= 0.9
    components = cell_instances_tiled(probs, tile=64, overlap=0.25)
    np.testing.assert_array_equal(components, label(probs[..., 0] > 0.5, connectivity=1))


# --------------------------------------------------------------------------- Mask R-CNN


def _mask_iou(first, second):
    union = np.count_nonzero(first | second)
    return np.count_nonzero(first & second) / union if union else 0.0


def _full_masks(detections, height, width):
    masks = np.zeros((len(detections["masks"]), height, width), bool)
    for index, (mask, box) in enumerate(
        zip(detections["masks"], detections["mask_boxes"], strict=True)
    ):
        masks[index, box[0] : box[2], box[1] : box[3]] = mask
    return masks


def _matched(first, second, threshold=0.5):
    """How many masks of `first` have a mask of `second` with IoU >= threshold (greedy)."""
    free = list(range(len(second)))
    count = 0
    for mask in first:
        ious = [_mask_iou(mask, second[index]) for index in free]
        if ious and max(ious) >= threshold:
            free.pop(int(np.argmax(ious)))
            count += 1
    return count


@pytest.mark.slow
def test_maskrcnn_tiles_find_each_cell_once(data_dir):
    """A 256 x 512 mosaic of two ISBI training image crops (seam at column 200), windows of
    256 overlapping by half (three windows; inner edges at columns 128, 256 and 384). The model
    is loaded with `min_size=256, max_size=512`, so that the windows and the whole image are
    both predicted at the pixel size it was trained at. Measured (TensorFlow, 2 busy CPU
    cores): 66 tiled instances (4 united) against 62 whole-image ones, all 62 matched at IoU
    0.5; 59 of the 69 true cells matched by either; largest IoU between two tiled
    instances 0.16; the tiled call took 18 to 27 s and the whole test 29 to 43 s, on 2 cores
    shared with other jobs (load average about 5)."""
    import kerasseg
    from kerasseg.inference import predict_instances

    def mosaic(kind):
        first, second = _isbi(data_dir, kind, 0), _isbi(data_dir, kind, 1)
        return np.concatenate([first[:256, :200], second[:256, 200:]], axis=1)

    image, truth = mosaic("image"), mosaic("label")
    model = kerasseg.load("maskrcnn_resnet18_isbi2012", min_size=256, max_size=512)
    start = time.perf_counter()
    labels, detections = predict_instances_tiled(model, image, tile=256, overlap=0.5)
    seconds = time.perf_counter() - start
    _, whole = predict_instances(model, image)
    masks = _full_masks(detections, *image.shape)
    whole_masks = whole["masks"][whole["scores"] >= 0.5]
    truth_labels = label(truth > 127, connectivity=1)
    truth_masks = [truth_labels == cell for cell in range(1, truth_labels.max() + 1)]
    crossing = [
        index
        for index, mask in enumerate(masks)
        if any((mask[:, edge - 1] & mask[:, edge]).any() for edge in (128, 256, 384))
    ]
    pairs = [
        _mask_iou(masks[i], masks[j]) for i in range(len(masks)) for j in range(i + 1, len(masks))
    ]
    matched = _matched(whole_masks, masks)
    print(
        f"tiled {len(masks)} ({detections['united'].sum()} united, {len(crossing)} crossing "
        f"inner edges, {(detections['merged'] > 1).sum()} merged from several windows) in "
        f"{seconds:.1f} s; whole {len(whole_masks)}, {matched} matched; truth "
        f"{len(truth_masks)}: tiled {_matched(truth_masks, masks)}, whole "
        f"{_matched(truth_masks, whole_masks)}; largest pair IoU {max(pairs):.2f}"
    )
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert labels.max() == len(masks) == np.count_nonzero(detections["ids"])
    assert np.all(np.diff(detections["scores"]) <= 0) and detections["scores"].min() >= 0.5
    assert len(crossing) >= 8 and (detections["merged"] > 1).sum() >= 20
    assert max(pairs) <= 0.3  # no cell twice
    assert len(whole_masks) >= 50 and matched >= 0.9 * len(whole_masks)
    assert len(masks) <= 1.15 * len(whole_masks)
    assert _matched(truth_masks, masks) >= _matched(truth_masks, whole_masks) - 3


class _RectangleDetector:
    """A stand-in instance model: each 4-connected bright region of a window is a detection
    with its exact box, an all-ones 28 x 28 mask and a score that grows with its area."""

    output = {"boxes": None, "masks": None, "num_detections": None}

    def __init__(self):
        self.calls = []

    def predict(self, inputs, verbose=0):
        images, sizes = inputs["images"], inputs["image_sizes"]
        self.calls.append((images.shape, images.dtype, sizes.tolist()))
        rows = 300
        outputs = {
            "boxes": np.zeros((len(images), rows, 4), np.float32),
            "scores": np.zeros((len(images), rows), np.float32),
            "classes": np.ones((len(images), rows), np.int32),
            "masks": np.ones((len(images), rows, 28, 28), np.float32),
            "num_detections": np.zeros(len(images), np.int32),
        }
        for index, image in enumerate(images):
            regions = regionprops(label(image[..., 0] > 127, connectivity=1))
            regions.sort(key=lambda region: -region.area)
            for row, region in enumerate(regions):
                outputs["boxes"][index, row] = region.bbox[:2] + region.bbox[2:]
                outputs["scores"][index, row] = 0.5 + region.area / 1000
            outputs["num_detections"][index] = len(regions)
        return outputs


def _rectangles(height=160, width=224, seed=0):
    """Separate bright rectangles of 6..18 pixels a side (distinct areas) on a dark image."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width), np.uint8)
    areas = set()
    for _ in range(400):
        h, w = rng.integers(6, 19, 2)
        top, left = rng.integers(1, height - h - 1), rng.integers(1, width - w - 1)
        if h * w in areas or image[top - 1 : top + h + 1, left - 1 : left + w + 1].any():
            continue
        areas.add(h * w)
        image[top : top + h, left : left + w] = 255
    return image


def test_instance_model_tiles_equal_the_whole_image():
    """With a detector that sees each rectangle exactly, tiles give whole-image labels."""
    from kerasseg.inference import predict_instances

    image = _rectangles()
    expected, _ = predict_instances(_RectangleDetector(), image)
    model = _RectangleDetector()
    labels, detections = predict_instances_tiled(model, image, tile=64, overlap=0.5, batch_size=4)
    crossing, _ = _cut_counts(label(image > 127, connectivity=1), tile_windows(160, 224, 64, 0.5))
    assert expected.max() >= 40 and crossing >= 30
    np.testing.assert_array_equal(labels, expected)
    assert not detections["united"].any() and (detections["merged"] > 1).sum() >= 30
    # one input shape: 24 windows as 6 batches of 4 grey windows repeated to RGB, float32
    assert model.calls == [((4, 64, 64, 3), np.float32, [[64, 64]] * 4)] * 6


def test_argument_checks():
    probs = np.zeros((32, 32, 1), np.float32)
    cases = [
        (lambda: cell_instances_tiled(probs[None]), ValueError, "`probs` must have shape"),
        (lambda: cell_instances_tiled(probs > 0), TypeError, "`probs` must be float"),
        (lambda: cell_instances_tiled(probs, threshold=2), ValueError, "`threshold` must be"),
        (lambda: cell_instances_tiled(probs, watershed_seeds=0), ValueError, "in (0, 1]"),
        (
            lambda: cell_instances_tiled(np.zeros((32, 32, 3), np.float32), watershed_seeds=0.9),
            ValueError,
            "needs a 1-channel",
        ),
        (lambda: cell_instances_tiled(probs, tile=16, overlap=1.0), ValueError, "[0, 1)"),
        (
            lambda: cell_instances_tiled(probs, tile=16, overlap=0.01),
            ValueError,
            "without a shared row",
        ),
        (lambda: cell_instances_tiled(probs, batch_size=0), ValueError, "`batch_size` must"),
        (lambda: merge_instances(WINDOWS, [[]], 6, 16), ValueError, "one list of"),
        (lambda: merge_instances([(0, 0)], [[]], 6, 16), TypeError, "list of `Window`s"),
        (
            lambda: merge_instances(WINDOWS, [[_instance(np.ones((7, 2), bool), 1.0)], []], 6, 16),
            ValueError,
            "outside its 6x12 window",
        ),
        (
            lambda: merge_instances(WINDOWS, [[_instance(np.ones((2, 2)), 1.0)], []], 6, 16),
            ValueError,
            "2-D bool array",
        ),
        (lambda: merge_instances(WINDOWS, [[], []], 6, 8), ValueError, "outside the 6x8 image"),
        (lambda: merge_instances(WINDOWS, [[], []], 6, 16, numbering="id"), ValueError, "raster"),
        (lambda: merge_instances(WINDOWS, [[], []], 6, 16, match_iou=-1), ValueError, "match_iou"),
    ]
    for call, error, text in cases:
        with pytest.raises(error, match=re.escape(text)):
            call()


def test_instance_argument_checks():
    import keras

    inputs = keras.Input((None, None, 3))
    semantic = keras.Model(inputs, keras.layers.Conv2D(1, 1)(inputs))
    image = np.zeros((32, 32), np.uint8)
    detector = _RectangleDetector()
    cases = [
        (lambda: predict_instances_tiled(semantic, image), ValueError, "an instance model"),
        (lambda: predict_instances_tiled(detector, image[..., None][..., [0, 0]]), ValueError,
         "`image` must have shape"),
        (lambda: predict_instances_tiled(detector, image, min_score=2), ValueError, "min_score"),
        (lambda: predict_instances_tiled(detector, image, match_iou=None), ValueError,
         "match_iou"),
    ]  # fmt: skip
    for call, error, text in cases:
        with pytest.raises(error, match=re.escape(text)):
            call()
    assert detector.calls == []  # every check comes before the model runs
