"""Mask R-CNN inference post-processing, numerically faithful to torchvision.

* `detections_from_head_outputs`: torchvision `RoIHeads.postprocess_detections` for one image
  (softmax, per-class decoding, clipping, score threshold, small-box removal, class-wise NMS,
  top-k).
* `rescale_boxes`: torchvision `transform.resize_boxes`, boxes from the resized image back to
  the original image.
* `paste_masks`: torchvision `paste_masks_in_image`, the 28x28 mask probabilities pasted into
  full-image probability maps.

Boxes are kerasseg's ``[y1, x1, y2, x2]`` in pixels (torchvision: ``[x1, y1, x2, y2]``).

References: He et al., "Mask R-CNN", ICCV 2017 (arXiv:1703.06870); torchvision
``models/detection/roi_heads.py`` (``expand_boxes``, ``expand_masks``, ``paste_mask_in_image``,
``RoIHeads.postprocess_detections``) and ``models/detection/transform.py`` (``resize_boxes``).
"""

import numbers

import keras
import numpy as np
from keras import ops

from kerasseg.models.maskrcnn import box_coding
from kerasseg.ops.checks import (
    check_int,
    check_ints,
    check_number,
    check_positive_int,
    check_probability,
)

__all__ = ["detections_from_head_outputs", "paste_masks", "rescale_boxes"]

_FLOATS = ("float16", "bfloat16", "float32", "float64")
_NUMBERS = _FLOATS + ("uint8", "int8", "uint16", "int16", "int32", "int64")


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def _tensor(name, value, accepted=_NUMBERS):
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"`{name}` must be a tensor or array; got {type(value).__name__}.")
    x = ops.convert_to_tensor(value)
    if _dtype(x) not in accepted:
        raise TypeError(f"`{name}` dtype must be one of {accepted}; got {_dtype(x)}.")
    return x


def _float_dtype(x):
    """float64 stays float64; every other dtype computes in float32 (as torchvision's float32)."""
    return "float64" if _dtype(x) == "float64" else "float32"


def _size(name, value):
    """A positive Python int, or a scalar integer tensor (not checked for its value)."""
    if isinstance(value, (bool, numbers.Number)):
        return check_positive_int(value, name, type_error=True)
    x = _tensor(name, value, ("uint8", "int8", "uint16", "int16", "int32", "int64"))
    if len(x.shape) != 0:
        raise ValueError(f"`{name}` must be a scalar; got shape {tuple(x.shape)}.")
    return x


def _check_boxes(name, boxes, rank=None):
    shape = tuple(boxes.shape)
    if len(shape) < 1 or shape[-1] != 4 or (rank is not None and len(shape) != rank):
        what = "(N, 4)" if rank == 2 else "(..., 4)"
        raise ValueError(
            f"`{name}` must have shape {what} with [y1, x1, y2, x2] on the last axis; "
            f"got shape {shape}."
        )


# ---------------------------------------------------------------------------------------------
# Boxes back to the original image


def rescale_boxes(boxes, resized_size, original_size):
    """Map boxes from the resized image to the original image (torchvision `resize_boxes`).

    The per-axis ratios are ``float32(original) / float32(resized)`` from the actual sizes (not
    the resize scale factor), then y coordinates are multiplied by the height ratio and x
    coordinates by the width ratio, as torchvision does.

    Args:
        boxes: tensor (..., 4), ``[y1, x1, y2, x2]`` boxes in resized-image pixels.
        resized_size: (height, width) of the resized image: a pair of Python ints, or an
            integer tensor of shape (2,) or (..., 2); a (B, 2) size goes with (B, N, 4) boxes
            (one size per image).
        original_size: (height, width) of the original image, in the same form.

    Returns:
        Tensor with the shape and float dtype of `boxes` (integers become float32).

    Raises:
        ValueError: a size is not a (height, width) pair of positive integers, or its shape
            does not go with the boxes'.
        TypeError: a tensor has a non-numeric dtype.
    """
    boxes = _tensor("boxes", boxes)
    _check_boxes("boxes", boxes)
    dtype = _float_dtype(boxes) if _dtype(boxes) not in _FLOATS else _dtype(boxes)
    boxes = ops.cast(boxes, dtype)
    sizes = []
    for name, value in (("resized_size", resized_size), ("original_size", original_size)):
        if isinstance(value, (tuple, list)):
            check_ints(value, 2, name, "(height, width) of positive integers")
            value = np.asarray(value, np.int64)
        size = _tensor(name, value, ("uint8", "int8", "uint16", "int16", "int32", "int64"))
        if len(size.shape) < 1 or size.shape[-1] != 2:
            raise ValueError(
                f"`{name}` must have shape (2,) or (..., 2) (height, width); got shape "
                f"{tuple(size.shape)}."
            )
        if len(size.shape) > 1 and len(size.shape) != len(boxes.shape) - 1:
            raise ValueError(
                f"`{name}` of shape {tuple(size.shape)} needs boxes of rank {len(size.shape) + 1} "
                f"(one size per image); got boxes of shape {tuple(boxes.shape)}."
            )
        sizes.append(ops.cast(size, "float32"))
    ratio = sizes[1] / sizes[0]  # (..., 2): (height ratio, width ratio), float32 like torch
    ratio = ops.cast(ops.concatenate([ratio, ratio], axis=-1), dtype)  # [rh, rw, rh, rw]
    if len(ratio.shape) > 1:
        ratio = ops.expand_dims(ratio, -2)
    return boxes * ratio


# ---------------------------------------------------------------------------------------------
# Mask pasting


def _expand_boxes(boxes, scale_y, scale_x):
    """torchvision `expand_boxes` followed by ``.to(torch.int64)``: each box scaled about its
    centre, then truncated toward zero. Returns integral values in the boxes' float dtype."""
    y1, x1, y2, x2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    h_half = (y2 - y1) * 0.5
    w_half = (x2 - x1) * 0.5
    y_c = (y2 + y1) * 0.5
    x_c = (x2 + x1) * 0.5
    h_half = h_half * scale_y
    w_half = w_half * scale_x
    expanded = ops.stack([y_c - h_half, x_c - w_half, y_c + h_half, x_c + w_half], axis=-1)
    return ops.trunc(expanded)


def _axis_weights(start, end, in_size, length, dtype):
    """Per canvas row (or column) the two source indices and weights of `F.interpolate`
    (bilinear, align_corners=False) resizing `in_size` samples to the box's ``end - start + 1``
    pixels, zero outside ``[start, end]``.

    start, end: (N,) integral floats. Returns int32 i0, i1 and weights l0, l1, each (N, length).
    Follows torch's ``compute_source_index_and_lambda``: ``src = max(scale * (i + 0.5) - 0.5,
    0)`` with ``scale = float(in_size) / out_size``; ``i0 = min(floor(src), in_size - 1)``,
    ``i1 = i0 + (i0 < in_size - 1)``, ``l1 = clip(src - i0, 0, 1)``, ``l0 = 1 - l1``.
    """
    positions = ops.cast(ops.arange(length), dtype)[None, :]
    start = start[:, None]
    end = end[:, None]
    out_size = ops.maximum(end - start + 1.0, 1.0)
    scale = ops.cast(in_size, dtype) / out_size
    src = ops.maximum(scale * ((positions - start) + 0.5) - 0.5, 0.0)
    i0 = ops.minimum(ops.floor(src), float(in_size - 1))
    l1 = ops.clip(src - i0, 0.0, 1.0)
    l0 = 1.0 - l1
    i1 = ops.where(i0 < in_size - 1, i0 + 1.0, i0)
    inside = ops.logical_and(positions >= start, positions <= end)
    zero = ops.zeros_like(l0)
    l0 = ops.where(inside, l0, zero)
    l1 = ops.where(inside, l1, zero)
    return ops.cast(i0, "int32"), ops.cast(i1, "int32"), l0, l1


def _paste_inputs(masks, boxes):
    """`masks` and `boxes` of `paste_masks` as tensors, their shapes checked."""
    masks = _tensor("masks", masks, _FLOATS)
    boxes = _tensor("boxes", boxes)
    if len(masks.shape) < 3 or None in tuple(masks.shape[-2:]):
        raise ValueError(
            f"`masks` must have shape (..., mask_height, mask_width) with a leading instance "
            f"axis and known mask size; got shape {tuple(masks.shape)}."
        )
    _check_boxes("boxes", boxes)
    lead_m, lead_b = tuple(masks.shape[:-2]), tuple(boxes.shape[:-1])
    if len(lead_m) != len(lead_b) or any(
        a is not None and b is not None and a != b for a, b in zip(lead_m, lead_b, strict=True)
    ):
        raise ValueError(
            f"`masks` (..., M_h, M_w) and `boxes` (..., 4) must share their leading axes; got "
            f"shapes {tuple(masks.shape)} and {tuple(boxes.shape)}."
        )
    return masks, boxes


def paste_masks(masks, boxes, image_height, image_width, padding=1):
    """Paste RoI mask probabilities into full-image maps, like torchvision `paste_masks_in_image`.

    Each (M, M) mask is zero-padded by `padding` on every side; its box is scaled by
    ``(M + 2 * padding) / M`` about its centre and truncated toward zero to integers
    ``[y1, x1, y2, x2]``; the padded mask is resized bilinearly (``align_corners=False``, no
    antialias, also when shrinking) to ``(y2 - y1 + 1) x (x2 - x1 + 1)`` pixels and written at
    ``(y1, x1)`` into a zero ``image_height x image_width`` canvas, clipped to the canvas.
    Computed as a sampling of the padded mask at every canvas pixel (two row gathers per
    axis, no Python loop over masks), which reproduces torch's `F.interpolate` coordinate rule.

    Differences from torchvision: non-square masks use one scale per axis (torchvision uses the
    width's for both), and boxes lying fully outside the canvas give empty maps (torchvision
    may raise a size-mismatch error).

    Args:
        masks: tensor (..., M_h, M_w), mask probabilities (e.g. (N, 28, 28) sigmoid outputs
            for the predicted classes).
        boxes: tensor (..., 4), ``[y1, x1, y2, x2]`` boxes in the canvas's pixels, same
            leading shape as `masks`.
        image_height: int or scalar integer tensor, the canvas height (the original image's).
        image_width: int or scalar integer tensor, the canvas width.
        padding: int >= 0, the zero border added to each mask before resizing
            (torchvision: 1).

    Returns:
        Tensor (..., image_height, image_width) of probabilities in the masks' float dtype;
        threshold at 0.5 for binary masks.

    Raises:
        ValueError: a shape or an argument is out of range.
        TypeError: an argument has the wrong type or dtype.
    """
    masks, boxes = _paste_inputs(masks, boxes)
    height = _size("image_height", image_height)
    width = _size("image_width", image_width)
    padding = check_int(padding, "padding", minimum=0)

    out_dtype = _dtype(masks)
    dtype = _float_dtype(masks)
    mask_h, mask_w = int(masks.shape[-2]), int(masks.shape[-1])
    in_h, in_w = mask_h + 2 * padding, mask_w + 2 * padding
    lead = ops.shape(masks)[:-2]
    masks = ops.reshape(ops.cast(masks, dtype), (-1, mask_h, mask_w))
    boxes = ops.reshape(ops.cast(boxes, _float_dtype(boxes)), (-1, 4))

    expanded = ops.cast(_expand_boxes(boxes, in_h / mask_h, in_w / mask_w), dtype)
    padded = ops.pad(masks, [[0, 0], [padding, padding], [padding, padding]])
    y0, y1, wy0, wy1 = _axis_weights(expanded[:, 0], expanded[:, 2], in_h, height, dtype)
    x0, x1, wx0, wx1 = _axis_weights(expanded[:, 1], expanded[:, 3], in_w, width, dtype)

    num = ops.shape(padded)[0]
    # Along x first, then y, as torch's bilinear kernel nests them. Each step gathers whole
    # rows: (n, in_w) columns of the padded mask, then (n, height) rows of the result.
    offsets = ops.arange(num, dtype="int32")[:, None]
    columns = ops.reshape(ops.transpose(padded, (0, 2, 1)), (-1, in_h))  # (n * in_w, in_h)
    a = ops.take(columns, x0 + offsets * in_w, axis=0)  # (n, width, in_h)
    b = ops.take(columns, x1 + offsets * in_w, axis=0)
    rows = ops.transpose(a * wx0[:, :, None] + b * wx1[:, :, None], (0, 2, 1))
    rows = ops.reshape(rows, (-1, width))  # (n * in_h, width)
    a = ops.take(rows, y0 + offsets * in_h, axis=0)  # (n, height, width)
    b = ops.take(rows, y1 + offsets * in_h, axis=0)
    canvas = a * wy0[:, :, None] + b * wy1[:, :, None]
    return ops.cast(ops.reshape(canvas, (*lead, height, width)), out_dtype)


# ---------------------------------------------------------------------------------------------
# Detections from the box head


def detections_from_head_outputs(
    class_logits,
    box_regression,
    proposals,
    image_height,
    image_width,
    score_threshold=0.05,
    nms_threshold=0.5,
    detections_per_image=100,
    min_size=1e-2,
    weights=box_coding.BOX_HEAD_WEIGHTS,
):
    """Final detections of one image from the box predictor (torchvision's inference).

    As torchvision's `RoIHeads.postprocess_detections`: softmax over the class logits; each
    proposal decoded once per class (`box_coding.decode` with `weights`) and clipped to
    ``[0, image_height] x [0, image_width]``; the background class 0 dropped; every
    (proposal, class) pair with score ``> score_threshold`` and height and width
    ``>= min_size`` kept; class-wise NMS at `nms_threshold`; the best `detections_per_image`
    by decreasing score returned. Uses `kerasseg.ops.detection` (TensorFlow).

    Args:
        class_logits: tensor (R, K), `BoxPredictor` logits for R proposals and K classes
            (class 0 = background).
        box_regression: tensor (R, 4 * K), `BoxPredictor` deltas, class-major, torchvision's
            ``(dx, dy, dw, dh)`` order.
        proposals: tensor (R, 4), the RPN proposals ``[y1, x1, y2, x2]`` the deltas refer to
            (resized-image pixels).
        image_height: int or scalar tensor, the resized image's height (before batch
            padding) to clip to.
        image_width: int or scalar tensor, the resized image's width.
        score_threshold: torchvision's ``box_score_thresh`` (0.05).
        nms_threshold: torchvision's ``box_nms_thresh`` (0.5).
        detections_per_image: torchvision's ``box_detections_per_img`` (100).
        min_size: the `remove_small_boxes` size (0.01).
        weights: the box-coder weights (10, 10, 5, 5).

    Returns:
        `(boxes, scores, labels)`: float32 (D, 4) ``[y1, x1, y2, x2]``, float32 (D,) and
        int32 (D,) class ids, with D <= detections_per_image, by decreasing score. Tied
        scores may be ordered differently from torchvision.

    Raises:
        ValueError: a shape or an argument is out of range.
        TypeError: a tensor has an unaccepted dtype.
    """
    # Imported here: TensorFlow ops (NMS, clipping), while `paste_masks` and `rescale_boxes`
    # (used by kerasseg.export and kerasseg.inference) run on any backend.
    from kerasseg.ops import detection as detection_ops

    class_logits, box_regression, proposals = _head_outputs(class_logits, box_regression, proposals)
    height = _size("image_height", image_height)
    width = _size("image_width", image_width)
    score_threshold = check_probability(score_threshold, "score_threshold")
    nms_threshold = check_probability(nms_threshold, "nms_threshold")
    detections_per_image = check_positive_int(detections_per_image, "detections_per_image")
    min_size = check_number(min_size, "min_size", minimum=0)

    boxes, scores, labels = _class_candidates(class_logits, box_regression, proposals, weights)
    boxes = detection_ops.clip_boxes(boxes, height, width)
    keep = ops.logical_and(
        scores > score_threshold, detection_ops.remove_small_boxes(boxes, min_size)
    )
    index = ops.nonzero(keep)[0]
    boxes = ops.take(boxes, index, axis=0)
    scores = ops.take(scores, index, axis=0)
    labels = ops.take(labels, index, axis=0)

    keep = detection_ops.batched_nms(
        boxes, scores, labels, nms_threshold, max_output_size=detections_per_image
    )
    return (
        ops.take(boxes, keep, axis=0),
        ops.take(scores, keep, axis=0),
        ops.take(labels, keep, axis=0),
    )


def _head_outputs(class_logits, box_regression, proposals):
    """The inputs of `detections_from_head_outputs` as tensors, their shapes checked."""
    class_logits = _tensor("class_logits", class_logits, _FLOATS)
    box_regression = _tensor("box_regression", box_regression, _FLOATS)
    proposals = _tensor("proposals", proposals)
    if len(class_logits.shape) != 2 or class_logits.shape[-1] is None:
        raise ValueError(
            f"`class_logits` must have shape (R, num_classes); got {tuple(class_logits.shape)}."
        )
    num_classes = int(class_logits.shape[-1])
    if num_classes < 2:
        raise ValueError(
            f"`class_logits` needs at least 2 classes (background + one); got shape "
            f"{tuple(class_logits.shape)}."
        )
    if tuple(box_regression.shape)[1:] != (4 * num_classes,) or len(box_regression.shape) != 2:
        raise ValueError(
            f"`box_regression` must have shape (R, {4 * num_classes}) for {num_classes} classes; "
            f"got {tuple(box_regression.shape)}."
        )
    _check_boxes("proposals", proposals, rank=2)
    counts = {class_logits.shape[0], box_regression.shape[0], proposals.shape[0]} - {None}
    if len(counts) > 1:
        raise ValueError(
            f"`class_logits`, `box_regression` and `proposals` must have the same number of rows; "
            f"got shapes {tuple(class_logits.shape)}, {tuple(box_regression.shape)} and "
            f"{tuple(proposals.shape)}."
        )
    return class_logits, box_regression, proposals


def _class_candidates(class_logits, box_regression, proposals, weights):
    """Every (proposal, class) pair but the background's, proposal-major.

    Returns the decoded boxes (R * (K - 1), 4) (not clipped), their softmax scores and their
    int32 class ids.
    """
    num_classes = int(class_logits.shape[-1])
    class_logits = ops.cast(class_logits, "float32")
    box_regression = ops.cast(box_regression, "float32")
    proposals = ops.cast(proposals, "float32")
    boxes = box_coding.decode(box_regression, proposals, weights)
    boxes = ops.reshape(boxes, (-1, num_classes, 4))
    scores = ops.softmax(class_logits, axis=-1)

    labels = ops.broadcast_to(
        ops.arange(1, num_classes, dtype="int32")[None, :], ops.shape(scores[:, 1:])
    )
    boxes = ops.reshape(boxes[:, 1:], (-1, 4))
    scores = ops.reshape(scores[:, 1:], (-1,))
    labels = ops.reshape(labels, (-1,))
    return boxes, scores, labels
