"""Instance prediction: Mask R-CNN outputs to per-image detections and instance label maps.

    labels, detections = kerasseg.inference.predict_instances(model, image)
    detections = kerasseg.inference.detections_from_outputs(outputs, image_sizes)

`detections_from_outputs` drops the rows past ``num_detections``, pastes the 28 x 28 mask
probabilities at full image size (`kerasseg.models.maskrcnn.postprocess.paste_masks`,
torchvision's rule) and thresholds them (``> 0.5``); `instance_map` paints (overlapping)
instance masks into one label image.
"""

import numpy as np

from kerasseg.ops.checks import check_keys, check_probability, is_number, to_numpy

__all__ = [
    "check_binary_masks",
    "check_corner_boxes",
    "check_image_sizes",
    "detections_from_outputs",
    "instance_map",
    "predict_instances",
]


def check_binary_masks(masks, name, fn):
    """(N, H, W) bool from bool or integer masks (nonzero = foreground)."""
    masks = to_numpy(masks, name, fn)
    if masks.ndim != 3:
        raise ValueError(f"{fn}: `{name}` must have shape (N, H, W); got shape {masks.shape}.")
    if masks.dtype != bool and not np.issubdtype(masks.dtype, np.integer):
        raise TypeError(
            f"{fn}: `{name}` must be bool or integer 0/1 masks (threshold probabilities "
            f"first); got dtype {masks.dtype}."
        )
    return masks != 0


def check_corner_boxes(boxes, count, name, fn):
    boxes = to_numpy(boxes, name, fn).astype(np.float64)
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


def check_image_sizes(image_sizes, count, fn):
    """[(height, width)] * count from one pair or `count` pairs."""
    sizes = to_numpy(image_sizes, "image_sizes", fn)
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

    Args:
        outputs: the model's outputs dict for a batch, ``"boxes"`` (B, D, 4) ``[y1, x1, y2,
            x2]`` in original pixels, ``"scores"`` (B, D), ``"classes"`` (B, D), ``"masks"``
            (B, D, M, M) probabilities and ``"num_detections"`` (B,); or for one image the
            same without the batch axis. Rows past ``num_detections`` are padding and
            dropped; without ``"num_detections"`` every row is a detection.
        image_sizes: (height, width) of the original image(s): one pair for every image, or
            a (B, 2) array. The masks are pasted at this size.
        mask_threshold: float in [0, 1]; a pixel is in a mask where its pasted probability
            is ``> mask_threshold`` (torchvision's 0.5).

    Returns:
        A list of B dicts ``{"boxes": float (n, 4), "scores": (n,), "classes": int64 (n,),
        "masks": bool (n, height, width)}`` in the model's row order (by decreasing score).
    """
    fn = "detections_from_outputs"
    threshold = check_probability(mask_threshold, "mask_threshold", fn)
    arrays, counts = _output_arrays(outputs, fn)
    boxes, masks = arrays["boxes"], arrays["masks"]
    sizes = check_image_sizes(image_sizes, len(counts), fn)
    detections = []
    for index, (count, (height, width)) in enumerate(zip(counts, sizes, strict=True)):
        count = int(count)
        image_boxes = check_corner_boxes(boxes[index, :count], count, "outputs['boxes']", fn)
        detections.append(
            {
                "boxes": image_boxes,
                "scores": arrays["scores"][index, :count].astype(np.float64),
                "classes": arrays["classes"][index, :count].astype(np.int64),
                "masks": _paste(masks[index, :count], image_boxes, height, width, threshold),
            }
        )
    return detections


def _output_arrays(outputs, fn):
    """The outputs as NumPy arrays with a batch axis, checked, and the detections per image."""
    described = "the model's outputs 'boxes', 'scores', 'classes', 'masks' and 'num_detections'"
    check_keys(outputs, "`outputs`", ("boxes", "scores", "classes", "masks"), described, fn)
    arrays = {key: to_numpy(outputs[key], f"outputs[{key!r}]", fn) for key in outputs}
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
    return arrays, counts


def instance_map(masks, scores=None, *, min_score=None):
    """One label image from possibly overlapping instance masks.

    Rule: a pixel takes the id of the highest-scoring mask that covers it (masks painted in
    increasing score order, so higher-scoring masks lie over lower ones); equal scores, or no
    `scores`, go to the earlier mask. Mask i has the id i + 1 (its row in `masks`), 0 is
    background; a mask entirely covered by better ones leaves no pixel.

    Args:
        masks: (N, H, W) bool or 0/1 integer masks (e.g. `detections_from_outputs`' masks).
        scores: optional (N,) scores.
        min_score: optional float; masks scoring below it are left out (needs `scores`).

    Returns:
        int32 (H, W) label image.
    """
    fn = "instance_map"
    masks = check_binary_masks(masks, "masks", fn)
    count = masks.shape[0]
    if scores is None:
        if min_score is not None:
            raise ValueError(f"{fn}: `min_score` needs `scores`.")
        scores = np.zeros(count)
    scores = to_numpy(scores, "scores", fn).astype(np.float64)
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


def predict_instances(model, image, *, min_score=0.5, mask_threshold=0.5):
    """Instance labels of one image from a Mask R-CNN (`task_of(model) == "instance"`).

    Grey images are repeated to RGB. The masks of the detections scoring >= `min_score` are
    pasted at the image size (probability > `mask_threshold`) and painted best on top
    (`kerasseg.inference.instance_map`); ids are then renumbered 1..n by
    decreasing score, 0 = background.

    Args:
        model: a Mask R-CNN (e.g. `kerasseg.load("maskrcnn_resnet18_isbi2012")`).
        image: (H, W), (H, W, 1) or (H, W, 3) array with the values as stored (0..255).
        min_score: in [0, 1]; detections below it are left out.
        mask_threshold: in [0, 1]; torchvision's 0.5.

    Returns:
        (labels, detections): int32 (H, W) instance ids and the image's detections of
        `kerasseg.inference.detections_from_outputs` (all of them, by score).
    """
    for name, value in (("min_score", min_score), ("mask_threshold", mask_threshold)):
        if not is_number(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1]; got {value!r}.")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(
            "`image` must have shape (height, width), (height, width, 1) or (height, width, 3); "
            f"got {image.shape}."
        )
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    size = image.shape[:2]
    outputs = model.predict(
        {"images": image[None], "image_sizes": np.array([size], "int32")}, verbose=0
    )
    detections = detections_from_outputs(outputs, size, mask_threshold=mask_threshold)[0]
    painted = instance_map(detections["masks"], detections["scores"], min_score=min_score)
    ids, labels = np.unique(painted, return_inverse=True)  # ids sorted: row order = score order
    labels = labels.reshape(painted.shape).astype(np.int32)
    return (labels if ids[0] == 0 else labels + 1), detections
