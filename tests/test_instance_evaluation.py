"""COCO box / mask AP through pycocotools, RLE, instance maps, and `kerasseg evaluate` for
instance models. Expected AP values are derived by hand in each test from COCO's rules: IoU
thresholds 0.50:0.05:0.95 (a match needs IoU >= threshold), 101 recall points 0.00:0.01:1.00,
precision made non-increasing from the right before it is read at each recall point."""

import json
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_api
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import kerasseg
from kerasseg import cli
from kerasseg.cli.evaluate import _instance_data
from kerasseg.data.coco import rle_encode
from kerasseg.data.instances import to_padded
from kerasseg.evaluation import (
    METRICS,
    coco_average_precision,
    coco_ground_truth,
    coco_results,
    evaluate_instances,
    format_markdown,
    masks_to_rle,
    outputs_to_coco_results,
)
from kerasseg.inference import detections_from_outputs, instance_map
from kerasseg.models.maskrcnn.postprocess import paste_masks

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _box_masks(boxes, height, width):
    """uint8 (N, H, W) masks filling integer [y1, x1, y2, x2] corner boxes."""
    masks = np.zeros((len(boxes), height, width), np.uint8)
    for mask, (y1, x1, y2, x2) in zip(masks, boxes, strict=True):
        mask[y1:y2, x1:x2] = 1
    return masks


def _targets(boxes, height, width, class_ids=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    ids = np.ones(len(boxes), np.int32) if class_ids is None else np.asarray(class_ids, np.int32)
    return {
        "boxes": boxes,
        "class_ids": ids,
        "masks": _box_masks(boxes.astype(int), height, width),
    }


def _perfect(targets, scores=None):
    """The targets as detections (each instance predicted exactly)."""
    count = len(targets["class_ids"])
    return {
        "boxes": targets["boxes"],
        "scores": np.ones(count) if scores is None else np.asarray(scores, float),
        "classes": targets["class_ids"],
        "masks": targets["masks"],
    }


def _ap(targets, detections, **options):
    ground_truth = coco_ground_truth(targets)
    return coco_average_precision(ground_truth, coco_results(detections), **options)


# ----------------------------------------------------------------------------- RLE


def test_masks_to_rle_matches_pycocotools_in_any_memory_order():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 17, 23)) < 0.4
    encoded = masks_to_rle(masks)
    assert [rle["size"] for rle in encoded] == [[17, 23]] * 3
    assert all(isinstance(rle["counts"], str) for rle in encoded)  # JSON-ready
    json.dumps(encoded)
    for mask, rle in zip(masks, encoded, strict=True):
        assert rle == rle_encode(mask)  # kerasseg's numpy RLE, checked against pycocotools
        np.testing.assert_array_equal(mask_api.decode(rle), mask)  # round trip
    # pycocotools wants Fortran order and refuses a C-ordered (H, W, N) array outright:
    with pytest.raises(ValueError, match="Fortran"):
        mask_api.encode(np.ascontiguousarray(masks.transpose(1, 2, 0)).astype(np.uint8))
    # masks_to_rle takes any layout: Fortran-ordered, transposed views, strided slices.
    assert masks_to_rle(np.asfortranarray(masks)) == encoded
    assert masks_to_rle(masks.transpose(0, 2, 1).copy().transpose(0, 2, 1)) == encoded
    big = np.zeros((3, 34, 69), bool)
    big[:, ::2, 1::3] = masks
    assert masks_to_rle(big[:, ::2, 1::3]) == encoded
    assert masks_to_rle(masks.astype(np.uint8) * 255) == encoded  # nonzero is foreground
    assert masks_to_rle(masks[1]) == encoded[1]  # one (H, W) mask -> one dict
    assert masks_to_rle(np.zeros((0, 4, 5), bool)) == []


# ----------------------------------------------------------------------------- AP


def test_perfect_predictions_give_ap_one_for_boxes_and_masks():
    # One small (< 32^2), one medium and one large (> 96^2) instance, two images, two classes.
    first = _targets([[5, 5, 15, 15], [30, 40, 80, 90], [100, 100, 230, 240]], 256, 256, [1, 2, 1])
    second = _targets([[0, 0, 20, 8]], 40, 30, [2])
    detections = [_perfect(first, [0.9, 0.8, 0.7]), _perfect(second)]
    results = _ap([first, second], detections)
    for iou_type in ("bbox", "segm"):
        # pycocotools computes precision as tp / (tp + fp + eps): 1 - 2e-16 for one hit.
        assert results[iou_type] == {metric: pytest.approx(1.0) for metric in METRICS}, iou_type


def test_dense_image_needs_more_than_100_detections():
    # 12 x 12 = 144 squares of 8 x 8 pixels, predicted perfectly with distinct scores.
    corners = [(16 * r, 16 * c) for r in range(12) for c in range(12)]
    targets = _targets([[y, x, y + 8, x + 8] for y, x in corners], 192, 192)
    detections = _perfect(targets, np.linspace(1.0, 0.5, 144))
    assert _ap(targets, detections)["segm"]["AP"] == pytest.approx(1.0)  # max_detections=300
    # At 100 detections recall stops at 100/144 = 0.694: precision is 1 up to the recall
    # point 0.69 (70 of the 101 points) and 0 beyond.
    capped = _ap(targets, detections, max_detections=100)
    for iou_type in ("bbox", "segm"):
        assert capped[iou_type]["AP"] == pytest.approx(70 / 101)
        assert capped[iou_type]["AR"] == pytest.approx(100 / 144)
    assert np.sum(RECALL_POINTS <= 100 / 144) == 70
    # pycocotools' own summary row reads AP at 100 detections even when 300 were evaluated.
    ground_truth = COCO()
    ground_truth.dataset = coco_ground_truth(targets)
    ground_truth.createIndex()
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(coco_results(detections)["segm"]))
    evaluation.params.maxDets = [1, 100, 300]
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(70 / 101)  # "AP @ maxDets=100"


def test_shifted_box_and_mask_ap_by_hand():
    # A 10 x 10 ground-truth square and a detection shifted right by 2 pixels:
    # intersection 8 * 10 = 80, union 100 + 100 - 80 = 120, IoU = 2/3, which passes the
    # thresholds 0.50, 0.55, 0.60, 0.65 and fails 0.70 and above. Where it passes, the one
    # detection gives precision 1 at every recall point; elsewhere 0. AP = 4/10.
    truth = _targets([[20, 20, 30, 30]], 64, 64)
    shifted = _perfect(_targets([[20, 22, 30, 32]], 64, 64), [0.9])
    iou = 80 / 120
    assert np.sum(IOU_THRESHOLDS <= iou) == 4
    results = _ap(truth, shifted)
    for iou_type in ("bbox", "segm"):
        scores = results[iou_type]
        assert scores["AP"] == pytest.approx(0.4), iou_type
        assert scores["AP50"] == pytest.approx(1.0) and scores["AP75"] == 0.0
        assert scores["AP_small"] == pytest.approx(0.4)  # area 100 < 32^2
        assert scores["AP_medium"] is None and scores["AP_large"] is None  # no such instances
        assert scores["AR"] == pytest.approx(0.4)  # recall 1 at 4 thresholds, 0 at 6
    # A box shifted by 1.5 pixels (boxes are floats): IoU = 85 / 115 = 0.739 passes 5
    # thresholds (up to 0.70).
    half = dict(shifted, boxes=np.array([[20.0, 21.5, 30.0, 31.5]]))
    assert np.sum(IOU_THRESHOLDS <= 85 / 115) == 5
    assert _ap(truth, half, iou_types="bbox")["bbox"]["AP"] == pytest.approx(0.5)


def test_ranking_of_two_detections_by_hand():
    # Two ground-truth squares A and B; detections: a false positive elsewhere and A exactly.
    truth = _targets([[0, 0, 10, 10], [0, 40, 10, 50]], 64, 64)
    false_positive, hit = [30, 0, 40, 10], [0, 0, 10, 10]
    boxes = [false_positive, hit]

    def detections(scores):
        return _perfect(_targets(boxes, 64, 64), scores)

    # False positive ranked first: after 1 detection recall 0, precision 0; after 2 recall
    # 1/2, precision 1/2. Made non-increasing from the right: precision 1/2 at recall points
    # 0.00..0.50 (51 of 101), 0 above (B is never found). At every IoU threshold.
    assert np.sum(RECALL_POINTS <= 0.5) == 51
    worse = _ap(truth, detections([0.9, 0.8]))
    # The hit ranked first: precision 1 up to recall 1/2, so AP doubles.
    better = _ap(truth, detections([0.8, 0.9]))
    for iou_type in ("bbox", "segm"):
        assert worse[iou_type]["AP"] == pytest.approx(0.5 * 51 / 101)
        assert better[iou_type]["AP"] == pytest.approx(51 / 101)
        assert worse[iou_type]["AR"] == better[iou_type]["AR"] == pytest.approx(0.5)


def test_empty_predictions_and_undefined_values():
    truth = [_targets([[5, 5, 15, 15], [20, 20, 30, 30]], 40, 40), _targets([], 40, 40)]
    nothing = {
        "boxes": np.zeros((0, 4)),
        "scores": np.zeros(0),
        "classes": np.zeros(0, int),
        "masks": np.zeros((0, 40, 40), bool),
    }
    results = _ap(truth, [nothing, nothing])
    for iou_type in ("bbox", "segm"):
        scores = results[iou_type]
        # Ground truth and no detection: AP 0, not undefined. pycocotools marks the area
        # ranges without ground truth with -1; they are reported as None.
        assert scores["AP"] == scores["AP50"] == scores["AP_small"] == scores["AR"] == 0.0
        assert scores["AP_medium"] is None and scores["AP_large"] is None
    # No ground truth at all: nothing defines AP, detections or not.
    empty = coco_ground_truth([_targets([], 40, 40)], category_ids=[1])
    assert empty["annotations"] == [] and empty["categories"] == [{"id": 1, "name": "1"}]
    some = coco_results(_perfect(_targets([[5, 5, 15, 15]], 40, 40)))
    for found in (some, {"bbox": [], "segm": []}):
        assert all(v is None for v in coco_average_precision(empty, found)["segm"].values())


def test_classes_category_ids_and_class_agnostic():
    truth = _targets([[5, 5, 25, 25]], 40, 40, [1])
    wrong_class = dict(_perfect(truth), classes=np.array([2]))
    with pytest.raises(ValueError, match=r"category ids \[2\].*class_agnostic"):
        _ap(truth, wrong_class)
    declared = coco_ground_truth(truth, category_ids=[1, 2], category_names={1: "cell"})
    assert declared["categories"] == [{"id": 1, "name": "cell"}, {"id": 2, "name": "2"}]
    # The instance of class 1 is missed (AP 0); class 2 has no ground truth, so it is left out
    # of the mean (COCO's rule) rather than counting its false positive.
    assert coco_average_precision(declared, coco_results(wrong_class))["segm"]["AP"] == 0.0
    agnostic = coco_average_precision(
        coco_ground_truth(truth, class_agnostic=True),
        coco_results(wrong_class, class_agnostic=True),
    )
    assert agnostic["segm"]["AP"] == agnostic["bbox"]["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"class ids \[1\] missing from `category_ids`"):
        coco_ground_truth(truth, category_ids=[2])


def test_crowd_ground_truth_is_ignored():
    truth = _targets([[5, 5, 15, 15], [20, 20, 35, 35]], 40, 40)
    truth["is_crowd"] = np.array([False, True])
    ground_truth = coco_ground_truth(truth)
    assert [a["iscrowd"] for a in ground_truth["annotations"]] == [0, 1]
    # A detection on the crowd region is neither a hit nor a false positive.
    both = _perfect(_targets([[5, 5, 15, 15], [20, 20, 35, 35]], 40, 40), [0.5, 0.9])
    assert coco_average_precision(ground_truth, coco_results(both))["segm"]["AP"] == pytest.approx(
        1.0
    )


# ----------------------------------------------------------------------------- model outputs


def _outputs(rng, boxes, counts, rows=4, mask_size=28):
    """Mask R-CNN style outputs: rows past `counts` hold garbage that must be ignored."""
    batch = len(counts)
    out_boxes = rng.uniform(0, 5, (batch, rows, 4)).astype(np.float32)  # garbage padding
    out_boxes[..., 2:] += out_boxes[..., :2]  # (valid boxes, for the test without the count)
    for b, image_boxes in enumerate(boxes):
        if image_boxes:
            out_boxes[b, : len(image_boxes)] = image_boxes
    return {
        "boxes": out_boxes,
        "scores": rng.uniform(0.1, 1.0, (batch, rows)).astype(np.float32),
        "classes": rng.integers(1, 3, (batch, rows)).astype(np.int32),
        "masks": rng.uniform(0, 1, (batch, rows, mask_size, mask_size)).astype(np.float32),
        "num_detections": np.array(counts, np.int32),
    }


def test_detections_from_outputs_drop_padding_and_paste_masks():
    rng = np.random.default_rng(3)
    boxes = [[[4.0, 6.5, 30.0, 41.0], [20.0, 3.0, 44.0, 25.5]], []]
    outputs = _outputs(rng, boxes, [2, 0])
    detections = detections_from_outputs(outputs, (48, 50))
    assert [len(d["scores"]) for d in detections] == [2, 0]
    assert detections[1]["masks"].shape == (0, 48, 50)
    first = detections[0]
    np.testing.assert_allclose(first["boxes"], boxes[0])
    np.testing.assert_allclose(first["scores"], outputs["scores"][0, :2])
    np.testing.assert_array_equal(first["classes"], outputs["classes"][0, :2])
    pasted = np.asarray(paste_masks(outputs["masks"][0, :2], outputs["boxes"][0, :2], 48, 50))
    np.testing.assert_array_equal(first["masks"], pasted > 0.5)
    assert first["masks"].any() and not first["masks"][:, 47, :].any()  # inside the boxes
    strict = detections_from_outputs(outputs, [[48, 50], [48, 50]], mask_threshold=0.8)
    np.testing.assert_array_equal(strict[0]["masks"], pasted > 0.8)
    # One image without the batch axis; without num_detections every row counts.
    one = {key: value[0] for key, value in outputs.items() if key != "num_detections"}
    assert len(detections_from_outputs(one, (48, 50))[0]["scores"]) == 4
    # The results are the pasted masks as RLE and the boxes as [x, y, w, h].
    results = outputs_to_coco_results(outputs, (48, 50), image_ids=[7, 8])
    assert [r["image_id"] for r in results["segm"]] == [7, 7]
    assert results["bbox"][0]["bbox"] == pytest.approx([6.5, 4.0, 34.5, 26.0])
    np.testing.assert_array_equal(
        mask_api.decode(results["segm"][1]["segmentation"]), first["masks"][1]
    )
    # Ground truth equal to the pasted detections: perfect scores through the outputs path.
    truth = [
        {"masks": d["masks"], "class_ids": d["classes"], "boxes": d["boxes"]} for d in detections
    ]
    perfect = coco_average_precision(coco_ground_truth(truth, image_ids=[7, 8]), results)
    assert perfect["bbox"]["AP"] == perfect["segm"]["AP"] == pytest.approx(1.0)


def test_instance_map_puts_higher_scores_on_top():
    masks = _box_masks([[0, 0, 6, 6], [3, 3, 9, 9], [0, 0, 2, 2]], 10, 10)
    labels = instance_map(masks, np.array([0.5, 0.9, 0.5]))
    assert labels[4, 4] == 2  # mask 2 (0.9) over mask 1 (0.5)
    assert labels[1, 1] == 1  # equal scores: the earlier mask wins
    assert labels[0, 5] == 1 and labels[8, 8] == 2 and labels[9, 9] == 0
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(instance_map(masks), instance_map(masks, np.zeros(3)))
    low = instance_map(masks, np.array([0.5, 0.9, 0.5]), min_score=0.6)
    assert set(np.unique(low)) == {0, 2}


class _FixedModel:
    """A callable standing in for Mask R-CNN: the rows of `outputs` image after image, in the
    order the images come; the inputs are recorded."""

    def __init__(self, outputs):
        self.outputs, self.calls, self.seen = outputs, [], 0

    def __call__(self, inputs):
        self.calls.append({key: np.asarray(value) for key, value in inputs.items()})
        start, self.seen = self.seen, self.seen + len(inputs["images"])
        return {key: value[start : self.seen] for key, value in self.outputs.items()}


def test_evaluate_instances_scores_a_perfect_model():
    rng = np.random.default_rng(5)
    boxes = [[4.0, 4.0, 30.0, 30.0], [34.0, 30.0, 60.0, 62.0], [5.0, 40.0, 25.0, 60.0]]
    outputs = _outputs(rng, [boxes, boxes[:2]], [3, 2], rows=5)
    outputs["classes"][:] = 1
    outputs["scores"][0, :3] = [0.5, 0.9, 0.8]
    outputs["masks"][:] = 0.9  # pasted: a little more than each box; disjoint here
    detections = detections_from_outputs(outputs, (64, 64))
    pairs = [
        (
            rng.uniform(0, 255, (64, 64, 1)),
            {"masks": d["masks"].astype(np.uint8), "class_ids": d["classes"], "boxes": d["boxes"]},
        )
        for d in detections
    ]
    model = _FixedModel(outputs)
    results = evaluate_instances(model, pairs, batch_size=2)
    assert len(model.calls) == 1 and model.calls[0]["images"].shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(model.calls[0]["image_sizes"], [[64, 64], [64, 64]])
    overall = results["overall"]
    assert overall["box_AP"] == overall["mask_AP"] == overall["mask_AR"] == pytest.approx(1.0)
    assert overall["v_rand"] == pytest.approx(1.0) and overall["v_info"] == pytest.approx(1.0)
    assert (results["images"], results["instances"], results["detections"]) == (2, 5, 5)
    assert results["warnings"] == [] and results["task"] == "instance"
    json.dumps(results, allow_nan=False)
    markdown = format_markdown(results, title="perfect")
    assert "| AP | 1.0000 | 1.0000 |" in markdown and "| V_rand | 1.0000 |" in markdown
    assert "| AP_medium | n/a | n/a |" in markdown  # nothing of 32^2..96^2 pixels

    # The padded batch form of `to_padded` gives the same, one model call per element.
    padded = {
        key: np.stack([np.asarray(to_padded(target, 4)[key]) for _, target in pairs])
        for key in ("boxes", "masks", "class_ids", "num_instances")
    }
    images = np.stack([image for image, _ in pairs])
    batched = evaluate_instances(_FixedModel(outputs), [(images, padded)])
    assert batched["overall"] == overall

    # An imperfect map: V_rand as scikit-image computes it on the two label images.
    from skimage.metrics import adapted_rand_error

    first = {key: value[:1] for key, value in pairs[0][1].items()}  # only the first cell
    merged = [(pairs[0][0], first)]
    one = evaluate_instances(_FixedModel(outputs), merged)
    truth = instance_map(detections[0]["masks"][:1])
    predicted = instance_map(detections[0]["masks"], detections[0]["scores"])
    expected = 1 - adapted_rand_error(truth, predicted)[0]
    assert one["overall"]["v_rand"] == pytest.approx(expected, abs=1e-6)
    # The one hit is ranked third (scores 0.9, 0.8 go to false positives): precision 1/3 at
    # recall 1, so 1/3 at every recall point and IoU threshold.
    assert one["overall"]["mask_AP"] == pytest.approx(1 / 3)
    assert one["overall"]["box_AP"] == pytest.approx(1 / 3)


def test_bad_inputs_give_clear_errors():
    truth = _targets([[5, 5, 15, 15]], 20, 20)
    good = coco_ground_truth(truth)
    results = coco_results(_perfect(truth))
    rng = np.random.default_rng(0)
    outputs = _outputs(rng, [[[1.0, 1.0, 9.0, 9.0]]], [1])
    cases = [
        (lambda: masks_to_rle(np.zeros((2, 3, 4, 5))), ValueError, r"\(N, H, W\)"),
        (lambda: masks_to_rle(np.zeros((2, 3, 4), np.float32)), TypeError, "threshold"),
        (lambda: coco_ground_truth({"masks": truth["masks"]}), KeyError, "class_ids"),
        (lambda: coco_ground_truth(dict(truth, class_ids=[0])), ValueError, ">= 1"),
        (lambda: coco_ground_truth(dict(truth, boxes=[[1, 2, 3]])), ValueError, r"\(1, 4\)"),
        (lambda: coco_ground_truth([truth, truth], image_ids=[1, 1]), ValueError, "distinct"),
        (lambda: coco_ground_truth("masks"), TypeError, "list of dicts"),
        (
            lambda: detections_from_outputs(dict(outputs, num_detections=[5]), (20, 20)),
            ValueError,
            r"0\.\.4",
        ),
        (
            lambda: detections_from_outputs(dict(outputs, masks=outputs["masks"][0]), (20, 20)),
            ValueError,
            r"\(B, D, M, M\)",
        ),
        (lambda: detections_from_outputs(outputs, (20, 20, 3)), ValueError, "image_sizes"),
        (lambda: detections_from_outputs(outputs, (20, 20), mask_threshold=2), ValueError, "0, 1"),
        (
            lambda: detections_from_outputs({"boxes": outputs["boxes"]}, (20, 20)),
            KeyError,
            "scores",
        ),
        (
            lambda: coco_results(dict(_perfect(truth), scores=[0.5, 0.4])),
            ValueError,
            r"scores.*\(1,\)",
        ),
        (lambda: coco_results(dict(_perfect(truth), boxes=[[5, 5, 1, 15]])), ValueError, "y2"),
        (lambda: coco_average_precision(good, results, iou_types="keypoints"), ValueError, "bbox"),
        (lambda: coco_average_precision(good, results, max_detections=0), ValueError, ">= 1"),
        (lambda: coco_average_precision(good, results, max_detections=True), ValueError, ">= 1"),
        (lambda: coco_average_precision(good, {"bbox": []}), TypeError, "segm"),
        (lambda: coco_average_precision({"images": []}, results), TypeError, "COCO dict"),
        (
            lambda: coco_average_precision(good, coco_results(_perfect(truth), image_ids=[9])),
            ValueError,
            r"image ids \[9\]",
        ),
        (lambda: instance_map(truth["masks"], min_score=0.5), ValueError, "needs `scores`"),
        (lambda: evaluate_instances(_FixedModel(outputs), [truth]), ValueError, "pairs"),
        (
            lambda: evaluate_instances(_FixedModel(outputs), [(np.zeros((30, 20, 3)), truth)]),
            ValueError,
            r"size \(20, 20\) but the image is \(30, 20\)",
        ),
        (
            lambda: evaluate_instances(_FixedModel(outputs), [(np.zeros((20, 20, 2)), truth)]),
            ValueError,
            "1 .*or 3 channels",
        ),
        (lambda: evaluate_instances(_FixedModel(outputs), []), ValueError, "no images"),
        (
            lambda: evaluate_instances(lambda x: x, [(np.zeros((20, 20, 3)), truth)]),
            TypeError,
            "dict",
        ),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_missing_pycocotools_names_the_extra(monkeypatch):
    for name in ("pycocotools", "pycocotools.mask", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "kerasseg\[coco\]"'):
        masks_to_rle(np.zeros((1, 4, 4), bool))
    with pytest.raises(ImportError, match="coco_average_precision needs pycocotools"):
        empty = {"images": [], "annotations": [], "categories": []}
        coco_average_precision(empty, {"bbox": [], "segm": []})


# ----------------------------------------------------------------------------- real data


def test_isbi_instances_and_a_dense_slice(data_dir):
    from skimage.measure import label

    root = data_dir / "isbi2012-membrane"
    dataset, info = kerasseg.datasets.isbi2012_instances(root, subset="all")
    image, targets = next(iter(dataset))  # slice 00: 136 cells
    stored = np.asarray(Image.open(root / "train" / "label" / "00.png"))
    expected = label(stored == 255, connectivity=1)
    masks = targets["masks"].numpy()
    assert expected.max() == 136
    assert image.shape == (512, 512, 1) and masks.shape == (136, 512, 512)
    np.testing.assert_array_equal(instance_map(masks), expected)  # same regions, same order
    assert set(targets["class_ids"].numpy().tolist()) == {1}
    assert info.class_names[1] == "cell interior"
    detections = _perfect({k: v.numpy() for k, v in targets.items()}, np.linspace(1, 0.5, 136))
    truth = {k: v.numpy() for k, v in targets.items()}
    assert _ap(truth, detections)["segm"]["AP"] == pytest.approx(1.0)
    # COCO's 100: recall stops at 100/136, precision 1 up to the recall point 0.73.
    assert _ap(truth, detections, max_detections=100)["segm"]["AP"] == pytest.approx(74 / 101)
    assert np.sum(RECALL_POINTS <= 100 / 136) == 74
    with pytest.raises(ValueError, match="subset"):
        kerasseg.datasets.isbi2012_instances(root, subset="test")


# ----------------------------------------------------------------------------- CLI

TINY_MASKRCNN = {
    "num_classes": 2,
    "min_size": 64,
    "max_size": 64,
    "rpn_pre_nms_top_n": 50,
    "rpn_post_nms_top_n": 30,
    "box_score_threshold": 0.0,  # random weights: keep some detections
    "detections_per_image": 20,
}


def test_cli_evaluates_an_instance_model(data_dir, tmp_path, capsys):
    # Two ISBI slices cropped to 96 x 128, as an image folder and a mask folder.
    root = data_dir / "isbi2012-membrane" / "train"
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for number in ("20", "21"):
        image = np.asarray(Image.open(root / "image" / f"{number}.png"))[:96, :128]
        mask = np.asarray(Image.open(root / "label" / f"{number}.png"))[:96, :128]
        Image.fromarray(image).save(tmp_path / "images" / f"{number}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{number}.png")
    model = kerasseg.load("maskrcnn_resnet18_fpn", **TINY_MASKRCNN)
    model.save(tmp_path / "maskrcnn.keras")  # a saved file: told apart by its outputs
    stem = tmp_path / "report" / "isbi"
    folders = ["--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks")]
    argv = ["evaluate", "--model", str(tmp_path / "maskrcnn.keras"), *folders]
    options = ["--class-map", "0:0,255:1", "--batch-size", "2", "--min-score", "0.3"]
    code = cli.main([*argv, *options, "--out", str(stem)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "| metric | box | mask |" in printed and "| V_rand |" in printed
    report = json.loads(stem.with_suffix(".json").read_text())
    expected = {f"{p}_{m}" for p in ("box", "mask") for m in METRICS} | {"v_rand", "v_info"}
    assert set(report["overall"]) == expected
    assert report["images"] == 2 and report["task"] == "instance"
    truth = [np.asarray(Image.open(tmp_path / "masks" / f"{n}.png")) == 255 for n in ("20", "21")]
    from skimage.measure import label

    assert report["instances"] == sum(label(t, connectivity=1).max() for t in truth)
    assert 0 < report["detections"] <= 40
    for key, value in report["overall"].items():
        assert value is None or 0.0 <= value <= 1.0, key
    assert report["settings"]["max_detections"] == 300
    assert report["settings"]["min_score"] == 0.3
    assert "| AP |" in stem.with_suffix(".md").read_text()


def test_cli_instance_usage_errors(data_dir, tmp_path, capsys):
    isbi = ["--dataset", "isbi2012", "--data-root", str(data_dir / "isbi2012-membrane")]
    camvid = ["--dataset", "camvid", "--data-root", str(tmp_path)]
    out = ["--out", str(tmp_path / "run")]
    tiny = ["--model", "maskrcnn_resnet18_fpn"] + [
        arg for key, value in TINY_MASKRCNN.items() for arg in ("--model-arg", f"{key}={value}")
    ]
    unet = ["--model", "unet", "--model-arg", "base_filters=4", "--model-arg", "depth=2"]
    cases = [
        (["evaluate", *tiny, *camvid, *out], "has no instance labels"),
        (["evaluate", *tiny, *isbi, "--subset", "test", *out], "--subset for isbi2012"),
        (["evaluate", *tiny, *isbi, "--instance-masks", "labels", *out], "--instance-masks"),
        (["evaluate", *unet, *isbi, "--max-detections", "10", *out], "only apply to instance"),
        (["evaluate", *unet, *isbi, "--min-score", "0.5", *out], "only apply to instance"),
        (["evaluate", *tiny, *isbi, "--min-score", "1.5", *out], "--min-score must be in"),
        (["evaluate", *tiny, "--coco", str(tmp_path / "none.json"), *out], "is not a file"),
        (["evaluate", *tiny, "--coco", __file__, *isbi, *out], "--dataset, --data-root"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        error = capsys.readouterr().err
        assert message in error and "error" in error, (argv, error)
    assert not (tmp_path / "run.json").exists()


def test_cli_instance_data_from_coco_and_folders(tmp_path):
    # A COCO file: two images, a crowd region, RLE and polygon annotations, categories 3 and 7
    # (read_coco numbers them 1 and 2).
    labels = np.zeros((24, 32), np.int32)
    labels[2:10, 3:12], labels[14:22, 5:9], labels[12:20, 20:30] = 1, 2, 3
    images = []
    for number in (1, 2):
        Image.fromarray(np.full((24, 32, 3), 40 * number, np.uint8)).save(
            tmp_path / f"{number}.png"
        )
        images.append({"id": number * 10, "file_name": f"{number}.png", "height": 24, "width": 32})
    annotations = [
        dict(a, category_id=3) for a in kerasseg.data.coco.label_image_to_coco(labels, 10)
    ]
    annotations[2].update(category_id=7, iscrowd=1)
    polygon = [[2.0, 2.0, 12.0, 2.0, 12.0, 9.0, 2.0, 9.0]]
    annotations.append(
        {"id": 9, "image_id": 20, "category_id": 7, "segmentation": polygon, "iscrowd": 0}
    )
    coco_file = tmp_path / "instances.json"
    coco_file.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 3, "name": "cell"}, {"id": 7, "name": "clump"}],
            }
        )
    )
    argv = ["evaluate", "--model", "m.keras", "--coco", str(coco_file), "--images", str(tmp_path)]
    args = cli._parser().parse_args([*argv, "--out", str(tmp_path / "r")])
    pairs, names = _instance_data(args)
    pairs = list(pairs)
    assert names[1] == "cell" and names[2] == "clump"
    (first_image, first), (second_image, second) = pairs
    assert np.asarray(first_image).shape == (24, 32, 3) and np.asarray(second_image)[0, 0, 0] == 80
    np.testing.assert_array_equal(first["class_ids"], [1, 1, 2])
    np.testing.assert_array_equal(first["is_crowd"], [False, False, True])
    np.testing.assert_array_equal(instance_map(np.asarray(first["masks"])), labels)
    np.testing.assert_array_equal(second["class_ids"], [2])
    # Scored without detections: AP 0, the crowd region left out of the instances.
    nothing = _outputs(np.random.default_rng(0), [[], []], [0, 0], rows=3)
    results = evaluate_instances(_FixedModel(nothing), pairs, category_names=names)
    assert results["overall"]["mask_AP"] == 0.0 and results["crowd_instances"] == 1
    assert results["instances"] == 3 and results["categories"] == [1, 2]

    # Folders: class-id masks (4-connected regions of each class) or instance-id masks.
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(tmp_path / "images" / "a.png")
    classes = np.where(labels == 3, 2, labels > 0).astype(np.uint8)  # 1, 2 -> class 1; 3 -> 2
    classes[0, :] = 9  # an ignored row
    Image.fromarray(classes).save(tmp_path / "masks" / "a.png")
    folders = ["--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks")]
    args = cli._parser().parse_args(["evaluate", "--model", "m", *folders, "--out", "r"])
    args.ignore_label = 9
    ((image, targets),) = list(_instance_data(args)[0])
    np.testing.assert_array_equal(targets["class_ids"], [1, 1, 2])  # class 1: two regions
    np.testing.assert_array_equal(instance_map(targets["masks"]), labels)
    Image.fromarray(labels.astype(np.uint8) * 50).save(tmp_path / "masks" / "a.png")
    args = cli._parser().parse_args(
        ["evaluate", "--model", "m", *folders, "--instance-masks", "labels", "--out", "r"]
    )
    ((image, targets),) = list(_instance_data(args)[0])
    np.testing.assert_array_equal(targets["class_ids"], [1, 1, 1])
    np.testing.assert_array_equal(instance_map(targets["masks"]), labels)
