"""COCO-style evaluation of instance segmentation: box and mask AP with pycocotools, and the
V_rand / V_info of the instance map made by pasting the predicted masks.

    results = kerasseg.evaluation.evaluate_instances(model, pairs)  # (image, targets)
    results["overall"]["mask_AP"], results["overall"]["v_rand"]
    kerasseg.evaluation.write_report(results, "runs/isbi_val")  # .json and .md

Building blocks, usable on their own (e.g. on detections you already have):

* `coco_ground_truth`: a COCO ground-truth dict from per-image instance targets (the layout of
  `kerasseg.data.instances`: masks (N, H, W), class_ids (N,), boxes ``[y1, x1, y2, x2]``
  corners, optional is_crowd).
* `detections_from_outputs`: Mask R-CNN outputs (one image or a batch) to per-image
  detections: the rows past ``num_detections`` dropped, the 28 x 28 mask probabilities pasted
  at full image size (`kerasseg.models.maskrcnn.postprocess.paste_masks`, torchvision's rule)
  and thresholded (``> 0.5``).
* `coco_results`: COCO result dicts for ``"bbox"`` and ``"segm"`` from such detections (masks
  as Fortran-ordered RLE, counts as str); `outputs_to_coco_results` chains the two.
* `coco_average_precision`: AP, AP50, AP75, AP_small / medium / large and AR for ``"bbox"`` and
  ``"segm"`` through ``pycocotools.cocoeval.COCOeval``.
* `instance_map`: one label image from (overlapping) instance masks.

Conventions, as torchvision's ``references/detection/coco_eval.py``: class ids are COCO
category ids as they are (``class_agnostic=True`` maps every instance and detection to
category 1), boxes go to COCO as ``[x, y, width, height]`` from the corner boxes (a box
``[y1, x1, y2, x2]`` gives ``[x1, y1, x2 - x1, y2 - y1]``, exactly what
``pycocotools.mask.toBbox`` gives for the mask it bounds), and masks are binarised at
``probability > 0.5``.

Maximum detections. COCO's summary (``COCOeval.summarize``, ``stats``) computes its AP row at
100 detections per image, whatever ``params.maxDets`` says. Dense images hold more instances
than that (an ISBI 2012 slice about 130 cells, where even a perfect prediction scores below
1.0 at 100), so `coco_average_precision` sets ``params.maxDets`` to end at `max_detections`
(default 300) and reads every value from ``COCOeval.eval["precision"]`` /
``eval["recall"]`` at that index itself. The model must also return enough detections
(Mask R-CNN's ``detections_per_image``, 100 by default, and its RPN proposal counts).

Undefined values. pycocotools marks a (category, area range) without ground truth with -1
and leaves it out of its means; here a metric with no defined value at all (e.g. AP_large
when no instance is larger than 96 x 96 pixels, or any AP without ground truth) is ``None``
(JSON ``null``), never -1 or NaN. Ground truth without any detection gives AP 0.

pycocotools is an optional dependency, imported only when a function needs it:
``pip install "kerasseg[coco]"`` (or ``pip install pycocotools``).

References: Lin et al. 2014, "Microsoft COCO: Common Objects in Context", arXiv:1405.0312, and
the COCO detection evaluation (cocodataset.org/#detection-eval); pycocotools
``cocoeval.py``; Arganda-Carreras et al. 2015 (V_rand, V_info), see `kerasseg.metrics`.
"""

import contextlib
import copy
import io

import numpy as np

from kerasseg.inference.instances import (
    check_binary_masks,
    check_corner_boxes,
    detections_from_outputs,
)
from kerasseg.ops.checks import check_keys, is_int, to_numpy

__all__ = [
    "AREA_RANGES",
    "IOU_TYPES",
    "METRICS",
    "coco_average_precision",
    "coco_ground_truth",
    "coco_results",
    "masks_to_rle",
    "outputs_to_coco_results",
]

IOU_TYPES = ("bbox", "segm")
METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR")
AREA_RANGES = {"all": 0, "small": 1, "medium": 2, "large": 3}  # COCOeval's areaRng order
AREA_SIZES = ("small", "medium", "large")
_PREFIX = {"bbox": "box", "segm": "mask"}
_INSTALL = (
    "{what} needs pycocotools, an optional dependency of kerasseg: install it with "
    '`pip install "kerasseg[coco]"` (or `pip install pycocotools`).'
)


def _pycocotools(what):
    """(pycocotools.mask, COCO, COCOeval), or an ImportError naming the extra."""
    try:
        from pycocotools import mask as mask_api
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise ImportError(_INSTALL.format(what=what)) from error
    return mask_api, COCO, COCOeval


# --------------------------------------------------------------------------- checks


def check_max_detections(value, fn):
    """`max_detections` as an int >= 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{fn}: `max_detections` must be an int >= 1; got {value!r}.")
    return int(value)


def _xywh(boxes):
    """[y1, x1, y2, x2] corners -> COCO [x, y, width, height] lists of Python floats."""
    return [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for y1, x1, y2, x2 in boxes]


def _image_ids(image_ids, count, fn):
    if image_ids is None:
        return list(range(1, count + 1))
    image_ids = list(image_ids)
    if len(image_ids) != count or not all(is_int(i) for i in image_ids):
        raise ValueError(
            f"{fn}: `image_ids` must be {count} ints, one per image; got {image_ids!r:.200}."
        )
    if len(set(image_ids)) != count:
        raise ValueError(f"{fn}: `image_ids` must be distinct; got {image_ids!r:.200}.")
    return [int(i) for i in image_ids]


def _per_image(items, name, fn):
    """One dict -> [dict]; a list/tuple of dicts stays; anything else raises."""
    if isinstance(items, dict):
        return [items]
    if isinstance(items, (list, tuple)) and all(isinstance(item, dict) for item in items):
        return list(items)
    raise TypeError(
        f"{fn}: `{name}` must be a dict (one image) or a list of dicts (one per image); got "
        f"{type(items).__name__}."
    )


# --------------------------------------------------------------------------- RLE


def masks_to_rle(masks):
    """COCO RLE of binary masks, as ``pycocotools.mask.encode`` computes it.

    pycocotools wants a Fortran-ordered uint8 (H, W, N) array and raises on a C-ordered one;
    this takes the usual (N, H, W) or (H, W) layout in any memory order (views and slices
    included) and converts it.

    Args:
        masks: (N, H, W) or (H, W) bool or integer array; nonzero is foreground.

    Returns:
        A list of N ``{"size": [H, W], "counts": str}`` dicts, or one dict for an (H, W) mask.
        The counts are decoded to str (pycocotools gives bytes), ready for JSON.
    """
    fn = "masks_to_rle"
    array = to_numpy(masks, "masks", fn)
    single = array.ndim == 2
    binary = check_binary_masks(array[None] if single else array, "masks", fn)
    mask_api, _, _ = _pycocotools(fn)
    if binary.shape[0] == 0:
        return []
    encoded = mask_api.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
    for rle in encoded:
        rle["counts"] = rle["counts"].decode("ascii")
    return encoded[0] if single else encoded


# --------------------------------------------------------------------------- ground truth


def _target_arrays(target, fn, where):
    """Checked numpy masks (N, H, W) bool, class_ids (N,), boxes (N, 4), is_crowd (N,)."""
    described = (
        "instance targets: 'masks' (N, H, W), 'class_ids' (N,) and optionally 'boxes' (N, 4) "
        "and 'is_crowd' (N,)"
    )
    check_keys(target, where, ("masks", "class_ids"), described, fn)
    masks = check_binary_masks(target["masks"], f"{where}['masks']", fn)
    count = masks.shape[0]
    if "num_instances" in target:  # the padded form of `kerasseg.data.instances.to_padded`
        used = to_numpy(target["num_instances"], f"{where}['num_instances']", fn)
        if used.ndim != 0 or not 0 <= int(used) <= count:
            raise ValueError(
                f"{fn}: {where}['num_instances'] must be a scalar in 0..{count}; got {used!r}."
            )
        count = int(used)
        masks = masks[:count]
    class_ids = to_numpy(target["class_ids"], f"{where}['class_ids']", fn)[:count]
    if class_ids.shape != (count,) or not np.issubdtype(class_ids.dtype, np.integer):
        raise ValueError(
            f"{fn}: {where}['class_ids'] must be {count} integers, one per mask; got shape "
            f"{class_ids.shape} and dtype {class_ids.dtype}."
        )
    if (class_ids < 1).any():
        raise ValueError(
            f"{fn}: {where}['class_ids'] must be >= 1 (0 is background); got "
            f"{sorted(set(class_ids[class_ids < 1].tolist()))}."
        )
    if "boxes" in target:
        boxes = check_corner_boxes(
            to_numpy(target["boxes"], f"{where}['boxes']", fn)[:count],
            count,
            f"{where}['boxes']",
            fn,
        )
    else:
        boxes = _mask_boxes(masks)
    crowd = np.zeros(count, bool)
    if "is_crowd" in target:
        crowd = to_numpy(target["is_crowd"], f"{where}['is_crowd']", fn)[:count]
        if crowd.shape != (count,):
            raise ValueError(
                f"{fn}: {where}['is_crowd'] must have shape ({count},); got {crowd.shape}."
            )
        crowd = crowd.astype(bool)
    return masks, class_ids.astype(np.int64), boxes, crowd


def _mask_boxes(masks):
    """[y1, x1, y2, x2] corner boxes of (N, H, W) bool masks; all-zero for empty masks."""
    boxes = np.zeros((masks.shape[0], 4))
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            boxes[i] = [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]
    return boxes


def _gt_annotations(masks, class_ids, boxes, crowd, image_id, first_id, class_agnostic):
    rles = masks_to_rle(masks)
    areas = masks.sum(axis=(1, 2))
    return [
        {
            "id": first_id + i,
            "image_id": image_id,
            "category_id": 1 if class_agnostic else int(class_ids[i]),
            "segmentation": rles[i],
            "area": float(areas[i]),
            "bbox": box,
            "iscrowd": int(crowd[i]),
        }
        for i, box in enumerate(_xywh(boxes))
    ]


def _categories(category_ids, category_names):
    ids = sorted({int(c) for c in category_ids})
    names = dict(category_names or {})
    return [{"id": c, "name": str(names.get(c, c))} for c in ids]


def coco_ground_truth(
    targets, *, image_ids=None, class_agnostic=False, category_ids=None, category_names=None
):
    """A COCO ground-truth dict (``images``, ``categories``, ``annotations``) from targets.

    Args:
        targets: a dict or a list of dicts, per-image instance targets in the layout of
            `kerasseg.data.instances`: ``"masks"`` (N, H, W) bool or 0/1 integers (their H, W is
            the image size), ``"class_ids"`` (N,) ints >= 1, optional ``"boxes"`` (N, 4) ``[y1,
            x1, y2, x2]`` corners (default: the masks' extents) and ``"is_crowd"`` (N,) (COCO
            ``iscrowd``: ignore regions). The padded form with ``"num_instances"`` is accepted
            too. N may be 0.
        image_ids: optional sequence of distinct ints, one per image (default 1, 2, ...).
        class_agnostic: give every instance category 1 (pair with the same option of
            `coco_results`).
        category_ids: optional iterable of the category ids to declare (default: the class ids
            found in `targets`). Declare every class a model can predict;
            `coco_average_precision` refuses results of undeclared categories.
        category_names: optional {category id: name}.

    Returns:
        dict ready for ``pycocotools.coco.COCO`` (``coco.dataset = ...; coco.createIndex()``):
        annotation ``area`` is the mask's pixel count, ``bbox`` the box as ``[x, y, w, h]``,
        ``segmentation`` compressed RLE with str counts.
    """
    fn = "coco_ground_truth"
    targets = _per_image(targets, "targets", fn)
    image_ids = _image_ids(image_ids, len(targets), fn)
    images, annotations, found = [], [], set()
    for index, (target, image_id) in enumerate(zip(targets, image_ids, strict=True)):
        masks, class_ids, boxes, crowd = _target_arrays(target, fn, f"`targets[{index}]`")
        images.append({"id": image_id, "height": masks.shape[1], "width": masks.shape[2]})
        annotations += _gt_annotations(
            masks, class_ids, boxes, crowd, image_id, len(annotations) + 1, class_agnostic
        )
        found.update(class_ids.tolist())
    if class_agnostic:
        declared = [1]
    elif category_ids is None:
        declared = found
    else:
        declared = {int(c) for c in category_ids}
        if any(c < 1 for c in declared):
            raise ValueError(f"{fn}: `category_ids` must be ints >= 1; got {sorted(declared)}.")
        undeclared = sorted(found - declared)
        if undeclared:
            raise ValueError(
                f"{fn}: the targets hold class ids {undeclared} missing from `category_ids` "
                f"{sorted(declared)}."
            )
    return {
        "images": images,
        "categories": _categories(declared, category_names),
        "annotations": annotations,
    }


# --------------------------------------------------------------------------- detections


def _detection_arrays(detection, fn, where):
    described = (
        "detections: 'boxes' (n, 4), 'scores' (n,), 'classes' (n,) and full-size binary "
        "'masks' (n, H, W), as `detections_from_outputs` makes them from model outputs"
    )
    check_keys(detection, where, ("boxes", "scores", "classes", "masks"), described, fn)
    masks = check_binary_masks(detection["masks"], f"{where}['masks']", fn)
    count = masks.shape[0]
    boxes = check_corner_boxes(detection["boxes"], count, f"{where}['boxes']", fn)
    scores = to_numpy(detection["scores"], f"{where}['scores']", fn).astype(np.float64)
    classes = to_numpy(detection["classes"], f"{where}['classes']", fn)
    for name, value in (("scores", scores), ("classes", classes)):
        if value.shape != (count,):
            raise ValueError(
                f"{fn}: {where}['{name}'] must have shape ({count},), one per mask; got "
                f"{value.shape}."
            )
    if not np.isfinite(scores).all():
        raise ValueError(f"{fn}: {where}['scores'] holds non-finite values.")
    if not np.issubdtype(classes.dtype, np.integer):
        if not np.array_equal(classes, np.round(classes)):
            raise TypeError(f"{fn}: {where}['classes'] must be integer class ids.")
    return masks, boxes, scores, classes.astype(np.int64)


def _results_for_image(masks, boxes, scores, classes, image_id, class_agnostic):
    categories = np.ones_like(classes) if class_agnostic else classes
    bbox = [
        {"image_id": image_id, "category_id": int(c), "bbox": box, "score": float(s)}
        for box, s, c in zip(_xywh(boxes), scores, categories, strict=True)
    ]
    segm = [
        {"image_id": image_id, "category_id": int(c), "segmentation": rle, "score": float(s)}
        for rle, s, c in zip(masks_to_rle(masks), scores, categories, strict=True)
    ]
    return bbox, segm


def coco_results(detections, *, image_ids=None, class_agnostic=False):
    """COCO result dicts for ``"bbox"`` and ``"segm"`` evaluation from detections.

    Args:
        detections: a dict or a list of dicts, per image: ``"boxes"`` (n, 4) ``[y1, x1, y2, x2]``
            corners in image pixels, ``"scores"`` (n,), ``"classes"`` (n,) ints (COCO category
            ids) and ``"masks"`` (n, H, W) bool or 0/1 full-size masks, as
            `detections_from_outputs` returns them.
        image_ids: optional ids, one per image (default 1, 2, ...; as `coco_ground_truth`).
        class_agnostic: report every detection as category 1.

    Returns:
        ``{"bbox": [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...], "segm":
        [{"image_id", "category_id", "segmentation": RLE, "score"}, ...]}``: two lists, because
        ``COCO.loadRes`` takes a result's area from its box when it has one, which would put
        masks in the wrong area range.
    """
    fn = "coco_results"
    detections = _per_image(detections, "detections", fn)
    image_ids = _image_ids(image_ids, len(detections), fn)
    results = {"bbox": [], "segm": []}
    for index, (detection, image_id) in enumerate(zip(detections, image_ids, strict=True)):
        arrays = _detection_arrays(detection, fn, f"`detections[{index}]`")
        bbox, segm = _results_for_image(*arrays, image_id, class_agnostic)
        results["bbox"] += bbox
        results["segm"] += segm
    return results


def outputs_to_coco_results(
    outputs, image_sizes, *, image_ids=None, mask_threshold=0.5, class_agnostic=False
):
    """`coco_results` of `detections_from_outputs`: Mask R-CNN outputs to COCO results."""
    detections = detections_from_outputs(outputs, image_sizes, mask_threshold=mask_threshold)
    return coco_results(detections, image_ids=image_ids, class_agnostic=class_agnostic)


# --------------------------------------------------------------------------- AP


def _mean_defined(values):
    values = values[values > -1]
    return float(values.mean()) if values.size else None


def _coco(dataset, COCO):
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _check_ground_truth(ground_truth, fn):
    if not isinstance(ground_truth, dict) or not all(
        key in ground_truth for key in ("images", "annotations", "categories")
    ):
        raise TypeError(
            f"{fn}: `ground_truth` must be a COCO dict with 'images', 'annotations' and "
            f"'categories' (see `coco_ground_truth`); got {type(ground_truth).__name__}"
            + (f" with keys {sorted(ground_truth)}" if isinstance(ground_truth, dict) else "")
            + "."
        )


def coco_average_precision(ground_truth, results, *, iou_types=IOU_TYPES, max_detections=300):
    """COCO AP of results against ground truth, through ``pycocotools.cocoeval.COCOeval``.

    The standard protocol (IoU thresholds 0.50:0.05:0.95, 101 recall points, COCO's area
    ranges: small < 32², medium, large > 96² pixels), with ``params.maxDets`` ending at
    `max_detections` and every value read from ``COCOeval.eval`` at that index (not from
    ``summarize()``, whose AP row always uses 100).

    Args:
        ground_truth: the COCO dict of `coco_ground_truth` (or any COCO instances dict).
        results: ``{"bbox": [...], "segm": [...]}`` of `coco_results` (a list per IoU type).
        iou_types: the IoU types to evaluate, among ``("bbox", "segm")``.
        max_detections: int >= 1, detections per image taken into account (the
            highest-scoring ones), default 300: COCO uses 100, which caps recall on dense
            images (about 130 instances per ISBI 2012 slice).

    Returns:
        ``{iou_type: {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR"}}``:
        AP averaged over the IoU thresholds and categories, AP at IoU 0.50 and 0.75, AP per
        object size, and recall (AR) averaged over the thresholds and categories, all at
        `max_detections`. A value with no ground truth to define it is None (pycocotools:
        -1).
    """
    fn = "coco_average_precision"
    _check_ground_truth(ground_truth, fn)
    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    iou_types = tuple(iou_types)
    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown or not iou_types:
        raise ValueError(f"{fn}: `iou_types` must be among {IOU_TYPES}; got {iou_types!r}.")
    if not isinstance(results, dict) or any(
        not isinstance(results.get(t), list) for t in iou_types
    ):
        raise TypeError(
            f"{fn}: `results` must be a dict with a list of result dicts for each of "
            f"{iou_types} (see `coco_results`); got "
            f"{sorted(results) if isinstance(results, dict) else type(results).__name__}."
        )
    max_detections = check_max_detections(max_detections, fn)
    _, COCO, _ = _pycocotools(fn)
    gt = _coco(copy.deepcopy(ground_truth), COCO)  # COCOeval adds keys to annotations
    scores = {}
    for iou_type in iou_types:
        _check_results(results[iou_type], iou_type, ground_truth, fn)
        scores[iou_type] = _iou_type_scores(
            gt, ground_truth, results[iou_type], iou_type, max_detections
        )
    return scores


def _check_results(found, iou_type, ground_truth, fn):
    """Every result of one IoU type names an image and a category of the ground truth."""
    needed = "bbox" if iou_type == "bbox" else "segmentation"
    keys = {"image_id", "category_id", needed, "score"}
    for result in found:
        if not isinstance(result, dict) or not keys <= set(result):
            raise ValueError(
                f"{fn}: every results[{iou_type!r}] entry must be a dict with 'image_id', "
                f"'category_id', {needed!r} and 'score'; got {result!r:.120}."
            )
    where = f"{fn}: results[{iou_type!r}]"
    unknown_images = _undeclared(found, "image_id", ground_truth["images"])
    if unknown_images:
        raise ValueError(
            f"{where} refer to image ids {unknown_images[:10]} that the ground truth lacks."
        )
    unknown_categories = _undeclared(found, "category_id", ground_truth["categories"])
    if unknown_categories:
        declared = sorted(category["id"] for category in ground_truth["categories"])
        raise ValueError(
            f"{where} hold category ids {unknown_categories[:10]} that the ground truth does "
            f"not declare ({declared}); declare them with `coco_ground_truth(..., "
            "category_ids=...)`, or evaluate class-agnostically (`class_agnostic=True` on "
            "both sides)."
        )


def _undeclared(found, key, declared):
    """The values of `key` in the results `found` that are not the id of an entry of
    `declared` (the ground truth's images or categories), sorted."""
    return sorted({result[key] for result in found} - {entry["id"] for entry in declared})


def _iou_type_scores(gt, ground_truth, found, iou_type, max_detections):
    """The AP / AR values of one IoU type, read from ``COCOeval.eval``."""
    _, COCO, COCOeval = _pycocotools("coco_average_precision")
    max_dets = [m for m in (1, 10, 100) if m < max_detections] + [max_detections]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        if found:
            # loadRes adds "area", "id", "iscrowd" (and a box or polygon) to the dicts.
            dt = gt.loadRes([dict(result) for result in found])
        else:  # loadRes cannot take an empty list
            dt = _coco({**ground_truth, "annotations": []}, COCO)
        evaluation = COCOeval(gt, dt, iou_type)
        evaluation.params.maxDets = list(max_dets)
        evaluation.evaluate()
        evaluation.accumulate()
    # precision: (IoU threshold, recall point, category, area range, max detections)
    precision = evaluation.eval["precision"][..., -1]
    recall = evaluation.eval["recall"][..., -1]  # (IoU threshold, category, area range)
    thresholds = evaluation.params.iouThrs
    everything = AREA_RANGES["all"]
    # (IoU thresholds, area range) of each AP value: all thresholds or one, all sizes or one.
    where = {
        "AP": (slice(None), everything),
        "AP50": (int(np.argmin(np.abs(thresholds - 0.5))), everything),
        "AP75": (int(np.argmin(np.abs(thresholds - 0.75))), everything),
    }
    where.update({f"AP_{size}": (slice(None), AREA_RANGES[size]) for size in AREA_SIZES})
    scores = {
        name: _mean_defined(precision[iou, :, :, area]) for name, (iou, area) in where.items()
    }
    scores["AR"] = _mean_defined(recall[:, :, everything])
    return scores
