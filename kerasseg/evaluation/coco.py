"""COCO-style evaluation of instance segmentation: box and mask AP with pycocotools, and the
V_rand / V_info of the instance map made by pasting the predicted masks.

    results = kerasseg.evaluation.coco.evaluate_instances(model, pairs)  # (image, targets)
    results["overall"]["mask_AP"], results["overall"]["v_rand"]
    kerasseg.evaluation.semantic.write_report(results, "runs/isbi_val")  # .json and .md

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
import math
import numbers

import numpy as np

from kerasseg.evaluation.semantic import cell

__all__ = [
    "AREA_RANGES",
    "IOU_TYPES",
    "METRICS",
    "coco_average_precision",
    "coco_ground_truth",
    "coco_results",
    "detections_from_outputs",
    "evaluate_instances",
    "format_markdown",
    "instance_map",
    "masks_to_rle",
    "outputs_to_coco_results",
]

IOU_TYPES = ("bbox", "segm")
METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR")
AREA_RANGES = {"all": 0, "small": 1, "medium": 2, "large": 3}  # COCOeval's areaRng order
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


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _numpy(value, name, fn):
    if value is None or isinstance(value, (str, bytes, dict)):
        raise TypeError(f"{fn}: `{name}` must be an array or tensor; got {type(value).__name__}.")
    try:
        from keras import ops

        return np.asarray(ops.convert_to_numpy(value))
    except Exception:
        return np.asarray(value)


def _check_probability(value, name, fn):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{fn}: `{name}` must be a number in [0, 1]; got {value!r}.")
    return float(value)


def _check_max_detections(value, fn):
    if not _is_int(value) or value < 1:
        raise ValueError(f"{fn}: `max_detections` must be an int >= 1; got {value!r}.")
    return int(value)


def _binary_masks(masks, name, fn):
    """(N, H, W) bool from bool or integer masks (nonzero = foreground)."""
    masks = _numpy(masks, name, fn)
    if masks.ndim != 3:
        raise ValueError(f"{fn}: `{name}` must have shape (N, H, W); got shape {masks.shape}.")
    if masks.dtype != bool and not np.issubdtype(masks.dtype, np.integer):
        raise TypeError(
            f"{fn}: `{name}` must be bool or integer 0/1 masks (threshold probabilities "
            f"first); got dtype {masks.dtype}."
        )
    return masks != 0


def _corner_boxes(boxes, count, name, fn):
    boxes = _numpy(boxes, name, fn).astype(np.float64)
    if boxes.shape != (count, 4):
        raise ValueError(
            f"{fn}: `{name}` must have shape ({count}, 4), [y1, x1, y2, x2] per instance; got "
            f"shape {boxes.shape}."
        )
    if not np.isfinite(boxes).all():
        raise ValueError(f"{fn}: `{name}` holds non-finite values.")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError(
            f"{fn}: `{name}` must be [y1, x1, y2, x2] corners with y2 >= y1 and x2 >= x1; got "
            f"{boxes[(boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])][:3].tolist()}."
        )
    return boxes


def _xywh(boxes):
    """[y1, x1, y2, x2] corners -> COCO [x, y, width, height] lists of Python floats."""
    return [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for y1, x1, y2, x2 in boxes]


def _image_ids(image_ids, count, fn):
    if image_ids is None:
        return list(range(1, count + 1))
    image_ids = list(image_ids)
    if len(image_ids) != count or not all(_is_int(i) for i in image_ids):
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

    Parameters
    ----------
    masks : (N, H, W) or (H, W) bool or integer array; nonzero is foreground.

    Returns
    -------
    A list of N ``{"size": [H, W], "counts": str}`` dicts, or one dict for an (H, W) mask.
    The counts are decoded to str (pycocotools gives bytes), ready for JSON.
    """
    fn = "masks_to_rle"
    array = _numpy(masks, "masks", fn)
    single = array.ndim == 2
    binary = _binary_masks(array[None] if single else array, "masks", fn)
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
    if not isinstance(target, dict):
        raise TypeError(f"{fn}: {where} must be a dict of instance targets; got {target!r:.80}.")
    missing = [key for key in ("masks", "class_ids") if key not in target]
    if missing:
        raise KeyError(
            f"{fn}: {where} lacks {missing}; instance targets have 'masks' (N, H, W), "
            f"'class_ids' (N,) and optionally 'boxes' (N, 4) and 'is_crowd' (N,); got keys "
            f"{sorted(target)}."
        )
    masks = _binary_masks(target["masks"], f"{where}['masks']", fn)
    count = masks.shape[0]
    if "num_instances" in target:  # the padded form of `kerasseg.data.instances.to_padded`
        used = _numpy(target["num_instances"], f"{where}['num_instances']", fn)
        if used.ndim != 0 or not 0 <= int(used) <= count:
            raise ValueError(
                f"{fn}: {where}['num_instances'] must be a scalar in 0..{count}; got {used!r}."
            )
        count = int(used)
        masks = masks[:count]
    class_ids = _numpy(target["class_ids"], f"{where}['class_ids']", fn)[:count]
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
        boxes = _corner_boxes(
            _numpy(target["boxes"], f"{where}['boxes']", fn)[:count], count, f"{where}['boxes']", fn
        )
    else:
        boxes = _mask_boxes(masks)
    crowd = np.zeros(count, bool)
    if "is_crowd" in target:
        crowd = _numpy(target["is_crowd"], f"{where}['is_crowd']", fn)[:count]
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

    Parameters
    ----------
    targets : dict or list of dicts
        Per-image instance targets in the layout of `kerasseg.data.instances`: ``"masks"``
        (N, H, W) bool or 0/1 integers (their H, W is the image size), ``"class_ids"`` (N,)
        ints >= 1, optional ``"boxes"`` (N, 4) ``[y1, x1, y2, x2]`` corners (default: the
        masks' extents) and ``"is_crowd"`` (N,) (COCO ``iscrowd``: ignore regions). The padded
        form with ``"num_instances"`` is accepted too. N may be 0.
    image_ids : optional sequence of distinct ints, one per image (default 1, 2, ...).
    class_agnostic : bool
        Give every instance category 1 (pair with the same option of `coco_results`).
    category_ids : optional iterable of the category ids to declare (default: the class ids
        found in `targets`). Declare every class a model can predict; `coco_average_precision`
        refuses results of undeclared categories.
    category_names : optional {category id: name}.

    Returns
    -------
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


def _image_sizes(image_sizes, count, fn):
    """[(height, width)] * count from one pair or `count` pairs."""
    sizes = _numpy(image_sizes, "image_sizes", fn)
    if sizes.shape == (2,):
        sizes = np.broadcast_to(sizes, (count, 2))
    if sizes.shape != (count, 2) or not np.issubdtype(sizes.dtype, np.integer):
        raise ValueError(
            f"{fn}: `image_sizes` must be one (height, width) pair of ints or {count} of them, "
            f"(B, 2), the original size of each image; got {sizes.tolist()!r:.120}."
        )
    if (sizes < 1).any():
        raise ValueError(f"{fn}: `image_sizes` must be positive; got {sizes.tolist()!r:.120}.")
    return [(int(h), int(w)) for h, w in sizes]


def _paste(masks, boxes, height, width, threshold, chunk=32):
    """(n, M, M) probabilities and (n, 4) boxes -> (n, height, width) bool, chunk by chunk."""
    from kerasseg.models.maskrcnn.postprocess import paste_masks

    pasted = np.zeros((masks.shape[0], height, width), bool)
    for start in range(0, masks.shape[0], chunk):
        stop = start + chunk
        chunk_masks = masks[start:stop].astype(np.float32)
        chunk_boxes = boxes[start:stop].astype(np.float32)
        probabilities = paste_masks(chunk_masks, chunk_boxes, height, width)
        pasted[start:stop] = np.asarray(probabilities) > threshold
    return pasted


def detections_from_outputs(outputs, image_sizes, *, mask_threshold=0.5):
    """Per-image detections with full-size binary masks from Mask R-CNN outputs.

    Parameters
    ----------
    outputs : dict
        The model's outputs for a batch, ``"boxes"`` (B, D, 4) ``[y1, x1, y2, x2]`` in
        original pixels, ``"scores"`` (B, D), ``"classes"`` (B, D), ``"masks"`` (B, D, M, M)
        probabilities and ``"num_detections"`` (B,); or for one image the same without the
        batch axis. Rows past ``num_detections`` are padding and dropped; without
        ``"num_detections"`` every row is a detection.
    image_sizes : (height, width) of the original image(s): one pair for every image, or a
        (B, 2) array. The masks are pasted at this size.
    mask_threshold : float in [0, 1]; a pixel is in a mask where its pasted probability is
        ``> mask_threshold`` (torchvision's 0.5).

    Returns
    -------
    list of B dicts ``{"boxes": float (n, 4), "scores": (n,), "classes": int64 (n,),
    "masks": bool (n, height, width)}`` in the model's row order (by decreasing score).
    """
    fn = "detections_from_outputs"
    if not isinstance(outputs, dict):
        raise TypeError(
            f"{fn}: `outputs` must be the model's dict of 'boxes', 'scores', 'classes', "
            f"'masks' and 'num_detections'; got {type(outputs).__name__}."
        )
    missing = [key for key in ("boxes", "scores", "classes", "masks") if key not in outputs]
    if missing:
        raise KeyError(f"{fn}: `outputs` lacks {missing}; got keys {sorted(outputs)}.")
    threshold = _check_probability(mask_threshold, "mask_threshold", fn)
    arrays = {key: _numpy(outputs[key], f"outputs[{key!r}]", fn) for key in outputs}
    given = {key: value.shape for key, value in arrays.items()}  # for the error messages
    boxes = arrays["boxes"]
    single = boxes.ndim == 2
    if single:
        arrays = {key: value[None] for key, value in arrays.items()}
        boxes = arrays["boxes"]
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(
            f"{fn}: outputs['boxes'] must have shape (B, D, 4) or (D, 4); got {given['boxes']}."
        )
    batch, rows = boxes.shape[:2]
    expected = {"scores": (batch, rows), "classes": (batch, rows)}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise ValueError(
                f"{fn}: outputs[{key!r}] must have shape {shape[1:] if single else shape} to go "
                f"with boxes of shape {given['boxes']}; got {given[key]}."
            )
    masks = arrays["masks"]
    if masks.ndim != 4 or masks.shape[:2] != (batch, rows):
        raise ValueError(
            f"{fn}: outputs['masks'] must have shape "
            f"{'(D, M, M)' if single else '(B, D, M, M)'} (mask probabilities) with D = "
            f"{rows}; got {given['masks']}."
        )
    if not np.issubdtype(masks.dtype, np.floating):
        raise TypeError(
            f"{fn}: outputs['masks'] must be float probabilities; got dtype {masks.dtype}."
        )
    if not np.issubdtype(arrays["classes"].dtype, np.integer):
        raise TypeError(
            f"{fn}: outputs['classes'] must be integer class ids; got dtype "
            f"{arrays['classes'].dtype}."
        )
    if "num_detections" in arrays:
        counts = arrays["num_detections"].reshape(-1)
        if counts.shape != (batch,) or not np.issubdtype(counts.dtype, np.integer):
            raise ValueError(
                f"{fn}: outputs['num_detections'] must be {batch} integer(s); got "
                f"{outputs['num_detections']!r:.120}."
            )
        if (counts < 0).any() or (counts > rows).any():
            raise ValueError(
                f"{fn}: outputs['num_detections'] must lie in 0..{rows} (the rows per image); "
                f"got {counts.tolist()}."
            )
    else:
        counts = np.full(batch, rows)
    sizes = _image_sizes(image_sizes, batch, fn)
    detections = []
    for index, (count, (height, width)) in enumerate(zip(counts, sizes, strict=True)):
        count = int(count)
        image_boxes = _corner_boxes(boxes[index, :count], count, "outputs['boxes']", fn)
        detections.append(
            {
                "boxes": image_boxes,
                "scores": arrays["scores"][index, :count].astype(np.float64),
                "classes": arrays["classes"][index, :count].astype(np.int64),
                "masks": _paste(masks[index, :count], image_boxes, height, width, threshold),
            }
        )
    return detections


def _detection_arrays(detection, fn, where):
    if not isinstance(detection, dict):
        raise TypeError(f"{fn}: {where} must be a dict; got {type(detection).__name__}.")
    missing = [key for key in ("boxes", "scores", "classes", "masks") if key not in detection]
    if missing:
        raise KeyError(
            f"{fn}: {where} lacks {missing}; detections have 'boxes' (n, 4), 'scores' (n,), "
            f"'classes' (n,) and full-size binary 'masks' (n, H, W) (`detections_from_outputs` "
            f"makes them from model outputs); got keys {sorted(detection)}."
        )
    masks = _binary_masks(detection["masks"], f"{where}['masks']", fn)
    count = masks.shape[0]
    boxes = _corner_boxes(detection["boxes"], count, f"{where}['boxes']", fn)
    scores = _numpy(detection["scores"], f"{where}['scores']", fn).astype(np.float64)
    classes = _numpy(detection["classes"], f"{where}['classes']", fn)
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

    Parameters
    ----------
    detections : dict or list of dicts
        Per image: ``"boxes"`` (n, 4) ``[y1, x1, y2, x2]`` corners in image pixels,
        ``"scores"`` (n,), ``"classes"`` (n,) ints (COCO category ids) and ``"masks"``
        (n, H, W) bool or 0/1 full-size masks, as `detections_from_outputs` returns them.
    image_ids : optional ids, one per image (default 1, 2, ...; as `coco_ground_truth`).
    class_agnostic : bool, report every detection as category 1.

    Returns
    -------
    ``{"bbox": [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...],
    "segm": [{"image_id", "category_id", "segmentation": RLE, "score"}, ...]}``: two lists,
    because ``COCO.loadRes`` takes a result's area from its box when it has one, which would
    put masks in the wrong area range.
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

    Parameters
    ----------
    ground_truth : the COCO dict of `coco_ground_truth` (or any COCO instances dict).
    results : ``{"bbox": [...], "segm": [...]}`` of `coco_results` (a list per IoU type).
    iou_types : the IoU types to evaluate, among ``("bbox", "segm")``.
    max_detections : int >= 1, detections per image taken into account (the highest-scoring
        ones), default 300: COCO uses 100, which caps recall on dense images (about 130
        instances per ISBI 2012 slice).

    Returns
    -------
    ``{iou_type: {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR"}}``: AP
    averaged over the IoU thresholds and categories, AP at IoU 0.50 and 0.75, AP per object
    size, and recall (AR) averaged over the thresholds and categories, all at
    `max_detections`. A value with no ground truth to define it is None (pycocotools: -1).
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
    max_detections = _check_max_detections(max_detections, fn)
    _, COCO, COCOeval = _pycocotools(fn)
    image_ids = {image["id"] for image in ground_truth["images"]}
    category_ids = {category["id"] for category in ground_truth["categories"]}
    max_dets = [m for m in (1, 10, 100) if m < max_detections] + [max_detections]
    gt = _coco(copy.deepcopy(ground_truth), COCO)  # COCOeval adds keys to annotations
    scores = {}
    for iou_type in iou_types:
        found = results[iou_type]
        needed = "bbox" if iou_type == "bbox" else "segmentation"
        for result in found:
            keys = {"image_id", "category_id", needed, "score"}
            if not isinstance(result, dict) or not keys <= set(result):
                raise ValueError(
                    f"{fn}: every results[{iou_type!r}] entry must be a dict with 'image_id', "
                    f"'category_id', {needed!r} and 'score'; got {result!r:.120}."
                )
        unknown_images = sorted({r["image_id"] for r in found} - image_ids)
        if unknown_images:
            raise ValueError(
                f"{fn}: results[{iou_type!r}] refer to image ids {unknown_images[:10]} that "
                f"the ground truth lacks."
            )
        unknown_categories = sorted({r["category_id"] for r in found} - category_ids)
        if unknown_categories:
            raise ValueError(
                f"{fn}: results[{iou_type!r}] hold category ids {unknown_categories[:10]} that "
                f"the ground truth does not declare ({sorted(category_ids)}); declare them with "
                "`coco_ground_truth(..., category_ids=...)`, or evaluate class-agnostically "
                "(`class_agnostic=True` on both sides)."
            )
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
        at50 = int(np.argmin(np.abs(thresholds - 0.5)))
        at75 = int(np.argmin(np.abs(thresholds - 0.75)))
        everything = AREA_RANGES["all"]
        scores[iou_type] = {
            "AP": _mean_defined(precision[:, :, :, everything]),
            "AP50": _mean_defined(precision[at50, :, :, everything]),
            "AP75": _mean_defined(precision[at75, :, :, everything]),
            "AP_small": _mean_defined(precision[:, :, :, AREA_RANGES["small"]]),
            "AP_medium": _mean_defined(precision[:, :, :, AREA_RANGES["medium"]]),
            "AP_large": _mean_defined(precision[:, :, :, AREA_RANGES["large"]]),
            "AR": _mean_defined(recall[:, :, everything]),
        }
    return scores


# --------------------------------------------------------------------------- instance map


def instance_map(masks, scores=None, *, min_score=None):
    """One label image from possibly overlapping instance masks.

    Rule: a pixel takes the id of the highest-scoring mask that covers it (masks painted in
    increasing score order, so higher-scoring masks lie over lower ones); equal scores, or no
    `scores`, go to the earlier mask. Mask i has the id i + 1 (its row in `masks`), 0 is
    background; a mask entirely covered by better ones leaves no pixel.

    Parameters
    ----------
    masks : (N, H, W) bool or 0/1 integer masks (e.g. `detections_from_outputs`' masks).
    scores : optional (N,) scores.
    min_score : optional float; masks scoring below it are left out (needs `scores`).

    Returns
    -------
    int32 (H, W) label image.
    """
    fn = "instance_map"
    masks = _binary_masks(masks, "masks", fn)
    count = masks.shape[0]
    if scores is None:
        if min_score is not None:
            raise ValueError(f"{fn}: `min_score` needs `scores`.")
        scores = np.zeros(count)
    scores = _numpy(scores, "scores", fn).astype(np.float64)
    if scores.shape != (count,) or not np.isfinite(scores).all():
        raise ValueError(
            f"{fn}: `scores` must be {count} finite numbers, one per mask; got shape "
            f"{scores.shape}."
        )
    labels = np.zeros(masks.shape[1:], np.int32)
    # Lowest priority first: increasing score, and among equal scores the later mask first.
    order = np.lexsort((-np.arange(count), scores))
    for index in order:
        if min_score is None or scores[index] >= min_score:
            labels[masks[index]] = index + 1
    return labels


# --------------------------------------------------------------------------- evaluation


def _call(model, images, sizes):
    inputs = {"images": images, "image_sizes": sizes}
    if hasattr(model, "predict_on_batch"):  # a keras.Model: its compiled predict function
        return model.predict_on_batch(inputs)
    return model(inputs)


def _element_images(element, fn, index):
    """[(image (H, W, 3) float32, target dict)] from one element of `data`."""
    if not isinstance(element, (tuple, list)) or len(element) != 2:
        raise ValueError(
            f"{fn}: `data` must yield (image, targets) pairs; element {index} is a "
            f"{type(element).__name__}."
        )
    images, targets = element
    images = _numpy(images, "image", fn)
    if images.ndim == 3:
        images, targets = images[None], [targets]
    elif images.ndim == 4:
        if isinstance(targets, dict):  # padded batch: (B, M, ...) with num_instances (B,)
            if "num_instances" not in targets:
                raise ValueError(
                    f"{fn}: element {index} has a batch of images but its targets are one dict "
                    "without 'num_instances'; give a list of per-image targets or the padded "
                    "form of `kerasseg.data.instances.to_padded`."
                )
            arrays = {key: _numpy(value, key, fn) for key, value in targets.items()}
            targets = [{key: value[i] for key, value in arrays.items()} for i in range(len(images))]
        if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
            raise ValueError(
                f"{fn}: element {index} has {len(images)} images but its targets are not a "
                f"list of {len(images)} dicts."
            )
    else:
        raise ValueError(
            f"{fn}: element {index}: the image must have shape (H, W, C) or (B, H, W, C); got "
            f"{images.shape}."
        )
    if images.shape[-1] == 1:  # grey: Mask R-CNN takes RGB
        images = np.repeat(images, 3, axis=-1)
    if images.shape[-1] != 3:
        raise ValueError(
            f"{fn}: element {index}: images must have 1 (grey, repeated to RGB) or 3 channels; "
            f"got {images.shape[-1]}."
        )
    return [
        (image.astype(np.float32), target) for image, target in zip(images, targets, strict=True)
    ]


def _batches(data, batch_size, fn):
    """Lists of up to `batch_size` consecutive (image, target) of one image size."""
    group = []
    for index, element in enumerate(data):
        for image, target in _element_images(element, fn, index):
            if group and (len(group) == batch_size or group[0][0].shape != image.shape):
                yield group
                group = []
            group.append((image, target))
    if group:
        yield group


def evaluate_instances(
    model,
    data,
    *,
    max_detections=300,
    mask_threshold=0.5,
    class_agnostic=False,
    min_score=None,
    batch_size=1,
    category_names=None,
):
    """Run an instance model over images with ground truth; COCO AP and V_rand / V_info.

    Parameters
    ----------
    model : a Mask R-CNN `keras.Model` (``kerasseg.load("maskrcnn_...")`` or a saved one), or
        any callable taking ``{"images": float32 (B, H, W, 3) values 0..255, "image_sizes":
        int32 (B, 2)}`` and returning the Mask R-CNN outputs (see `detections_from_outputs`).
    data : iterable of ``(image, targets)``: an (H, W, C) image (values as stored, 0..255;
        1-channel images are repeated to RGB) and its instance targets (see
        `coco_ground_truth`); or a batch, (B, H, W, C) images with a list of B targets or
        the padded targets of ``to_padded(...)`` batched. E.g.
        `kerasseg.datasets.isbi2012_instances`.
    max_detections : detections per image that COCO AP takes into account (default 300; see
        `coco_average_precision`).
    mask_threshold : mask probability threshold (``>``), default 0.5.
    class_agnostic : evaluate every instance and detection as one category.
    min_score : optional; detections scoring below it stay out of the instance map (they
        still count for AP).
    batch_size : consecutive images of one size given to the model together.
    category_names : optional {class id: name} for the report.

    Returns
    -------
    dict ``{"task": "instance", "overall": {"box_AP", "box_AP50", "box_AP75",
    "box_AP_small", "box_AP_medium", "box_AP_large", "box_AR", "mask_AP", ..., "mask_AR",
    "v_rand", "v_info"}, "images", "instances", "crowd_instances", "detections",
    "categories", "settings", "warnings"}``.

    The instance scores compare two label images per image: the ground truth's non-crowd
    instances (`instance_map`, earlier instances over later ones where they overlap) and the
    predicted one, `instance_map` of the thresholded pasted masks (higher scores on top).
    V_rand and V_info are `kerasseg.metrics.rand_scores` (scikit-image convention,
    foreground-restricted: only ground-truth instance pixels count), averaged over the images
    with ground-truth instances (None when there are none). AP values without ground truth
    are None (see the module docstring).
    """
    fn = "evaluate_instances"
    max_detections = _check_max_detections(max_detections, fn)
    threshold = _check_probability(mask_threshold, "mask_threshold", fn)
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"{fn}: `batch_size` must be an int >= 1; got {batch_size!r}.")
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, numbers.Real)
    ):
        raise ValueError(f"{fn}: `min_score` must be None or a number; got {min_score!r}.")
    _pycocotools(fn)
    from kerasseg import metrics as metrics_lib

    images, annotations, results = [], [], {"bbox": [], "segm": []}
    categories, rand = set(), {"v_rand": [], "v_info": []}
    crowd_total, detections_total, most_instances, rows = 0, 0, 0, None
    for group in _batches(data, batch_size, fn):
        batch = np.stack([image for image, _ in group])
        sizes = np.array([image.shape[:2] for image, _ in group], np.int32)
        outputs = _call(model, batch, sizes)
        if not isinstance(outputs, dict) or "boxes" not in outputs:
            raise TypeError(
                f"{fn}: the model must return the Mask R-CNN outputs dict ('boxes', 'scores', "
                f"'classes', 'masks', 'num_detections'); got {type(outputs).__name__}."
            )
        rows = int(np.shape(outputs["boxes"])[1])
        detections = detections_from_outputs(outputs, sizes, mask_threshold=threshold)
        for (image, target), detection in zip(group, detections, strict=True):
            image_id = len(images) + 1
            where = f"the targets of image {image_id}"
            masks, class_ids, boxes, crowd = _target_arrays(target, fn, where)
            if masks.shape[1:] != image.shape[:2]:
                raise ValueError(
                    f"{fn}: {where} have masks of size {masks.shape[1:]} but the image is "
                    f"{image.shape[:2]}."
                )
            images.append({"id": image_id, "height": image.shape[0], "width": image.shape[1]})
            annotations += _gt_annotations(
                masks, class_ids, boxes, crowd, image_id, len(annotations) + 1, class_agnostic
            )
            bbox, segm = _results_for_image(
                detection["masks"],
                detection["boxes"],
                detection["scores"],
                detection["classes"],
                image_id,
                class_agnostic,
            )
            results["bbox"] += bbox
            results["segm"] += segm
            categories.update(class_ids.tolist())
            categories.update(detection["classes"].tolist())
            crowd_total += int(crowd.sum())
            detections_total += len(detection["scores"])
            most_instances = max(most_instances, int((~crowd).sum()))
            true_map = instance_map(masks[~crowd])
            pred_map = instance_map(detection["masks"], detection["scores"], min_score=min_score)
            scores = metrics_lib.rand_scores(true_map, pred_map)
            for key in rand:
                rand[key].append(float(np.asarray(scores[key])))
    if not images:
        raise ValueError(f"{fn}: `data` yielded no images.")
    if class_agnostic:
        categories = {1}
    ground_truth = {
        "images": images,
        "categories": _categories(categories, category_names),
        "annotations": annotations,
    }
    ap = coco_average_precision(ground_truth, results, max_detections=max_detections)
    overall = {
        f"{_PREFIX[iou_type]}_{metric}": ap[iou_type][metric]
        for iou_type in IOU_TYPES
        for metric in METRICS
    }
    for key, values in rand.items():
        defined = [v for v in values if not math.isnan(v)]
        overall[key] = float(np.mean(defined)) if defined else None
    warnings = []
    if rows is not None and rows < most_instances:
        warnings.append(
            f"the model returns at most {rows} detections per image but an image has "
            f"{most_instances} ground-truth instances, so recall and AP cannot reach 1; raise "
            "the model's detections_per_image (and rpn_post_nms_top_n)."
        )
    if most_instances > max_detections:
        warnings.append(
            f"max_detections={max_detections} is below the {most_instances} ground-truth "
            "instances of an image, so recall and AP cannot reach 1; raise max_detections."
        )
    return {
        "task": "instance",
        "overall": overall,
        "images": len(images),
        "instances": len(annotations) - crowd_total,
        "crowd_instances": crowd_total,
        "detections": detections_total,
        "categories": [c["id"] for c in ground_truth["categories"]],
        "settings": {
            "max_detections": max_detections,
            "mask_threshold": threshold,
            "class_agnostic": bool(class_agnostic),
            "min_score": min_score,
            "iou_thresholds": "0.50:0.05:0.95",
            "instance_map": "each pixel takes the highest-scoring predicted mask covering it",
            "rand_convention": "skimage",
        },
        "warnings": warnings,
    }


# --------------------------------------------------------------------------- report


def format_markdown(results, title="Evaluation"):
    """The results of `evaluate_instances` as Markdown: a box / mask AP table and the rest."""
    overall = results["overall"]
    max_detections = results.get("settings", {}).get("max_detections", "max")
    labels = {"AR": f"AR@{max_detections}"}
    lines = [f"# {title}", "", "| metric | box | mask |", "|---|---:|---:|"]
    for metric in METRICS:
        lines.append(
            f"| {labels.get(metric, metric)} | {cell(overall.get(f'box_{metric}'))} | "
            f"{cell(overall.get(f'mask_{metric}'))} |"
        )
    lines += [
        "",
        "| metric | value |",
        "|---|---:|",
        f"| V_rand | {cell(overall.get('v_rand'))} |",
        f"| V_info | {cell(overall.get('v_info'))} |",
    ]
    for key in ("images", "instances", "crowd_instances", "detections"):
        if key in results:
            lines.append(f"| {key.replace('_', ' ')} | {results[key]} |")
    lines += [
        "",
        f"COCO AP (IoU 0.50:0.05:0.95) with up to {max_detections} detections per image; "
        "n/a: no ground truth defines the value.",
    ]
    for warning in results.get("warnings", ()):
        lines += ["", f"Warning: {warning}"]
    return "\n".join(lines) + "\n"
