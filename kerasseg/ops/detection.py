"""The few detection ops Keras lacks: RoIAlign, multi-scale RoIAlign, box utilities and NMS.

These are TensorFlow ops (graph-compatible, dynamic shapes), meant to be called from the
`call` of Keras layers on the TensorFlow backend, inside `tf.function` or eagerly. They
reproduce torchvision's (0.29) semantics, with kerasseg's conventions:

* boxes are ``[y1, x1, y2, x2]`` in pixel coordinates (torchvision: ``[x1, y1, x2, y2]``);
* feature maps are NHWC (torchvision: NCHW);
* widths and heights are ``x2 - x1`` and ``y2 - y1``, with no "+1".

References:
    - torchvision ``ops/roi_align.py`` and its C++ kernel
      ``csrc/ops/cpu/roi_align_kernel.cpp``.
    - torchvision ``ops/poolers.py`` (``MultiScaleRoIAlign``, ``LevelMapper``).
    - torchvision ``ops/boxes.py`` (``nms``, ``batched_nms``, ``box_iou``,
      ``clip_boxes_to_image``, ``remove_small_boxes``).
    - He et al., "Mask R-CNN", ICCV 2017; Lin et al., "Feature Pyramid Networks for Object
      Detection", CVPR 2017 (level rule, Eqn. 1).
"""

import numpy as np
import tensorflow as tf

from kerasseg.ops.checks import check_int, check_ints, check_number, check_probability, is_int

__all__ = [
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes",
    "multiscale_roi_align",
    "nms",
    "remove_small_boxes",
    "roi_align",
]

_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _output_size(output_size):
    """`output_size` as a pair of positive Python ints."""
    pair = (output_size, output_size) if is_int(output_size) else output_size
    accepted = "a positive int or a pair (height, width) of positive ints"
    return check_ints(pair, 2, "output_size", accepted)


def _float_tensor(value, name):
    """A float tensor (integers are converted to float32); other dtypes are rejected."""
    tensor = tf.convert_to_tensor(value)
    if tensor.dtype.is_integer:
        return tf.cast(tensor, tf.float32)
    if tensor.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"`{name}` must be a float tensor; got dtype {tensor.dtype.name}. "
            "Accepted: float16, bfloat16, float32, float64 (integers are converted)."
        )
    return tensor


def _check_rank(tensor, rank, name, description):
    if tensor.shape.rank is not None and tensor.shape.rank != rank:
        raise ValueError(f"`{name}` must have shape {description}; got shape {tensor.shape}.")


def _boxes_tensor(boxes, name="boxes", rank=None, description="(N, 4)"):
    """Float boxes with a last axis of 4 (checked when static)."""
    if not tf.is_tensor(boxes) and not isinstance(boxes, (np.ndarray, list, tuple)):
        raise TypeError(f"`{name}` must be a tensor or array of boxes; got {type(boxes).__name__}.")
    tensor = tf.convert_to_tensor(boxes)
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer):
        raise TypeError(f"`{name}` must be numeric; got dtype {tensor.dtype.name}.")
    if tensor.dtype.is_integer:
        tensor = tf.cast(tensor, tf.float32)
    if rank is not None:
        _check_rank(tensor, rank, name, description)
    rank = tensor.shape.rank
    if rank == 0 or (rank is not None and tensor.shape[-1] not in (4, None)):
        raise ValueError(
            f"`{name}` must have shape {description} ([y1, x1, y2, x2] on the last axis); "
            f"got shape {tensor.shape}."
        )
    return tensor


def _corners(boxes):
    """y1, x1, y2, x2 of ``[..., 4]`` boxes (also when the last axis is not static)."""
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def _index_tensor(indices, name):
    """A checked int32 (N,) tensor of indices or group ids."""
    if isinstance(indices, (list, tuple)) and len(indices) == 0:
        tensor = tf.zeros([0], tf.int32)  # an empty list would otherwise become float32
    else:
        tensor = tf.convert_to_tensor(indices)
    if not tensor.dtype.is_integer:
        raise TypeError(f"`{name}` must be an integer tensor; got dtype {tensor.dtype.name}.")
    _check_rank(tensor, 1, name, "(N,)")
    return tf.cast(tensor, tf.int32)


def _is_array(value):
    return tf.is_tensor(value) or isinstance(value, np.ndarray)


def _positive_scalar(value, name):
    """A positive Python number is checked now; a tensor is converted to a float32 scalar."""
    if _is_array(value):
        tensor = tf.cast(tf.convert_to_tensor(value), tf.float32)
        if tensor.shape.rank not in (0, None):
            raise ValueError(f"`{name}` must be a scalar; got shape {tensor.shape}.")
        return tf.reshape(tensor, [])
    return tf.constant(check_number(value, name, positive=True), tf.float32)


def _iou_threshold(value):
    if tf.is_tensor(value):
        return tf.cast(value, tf.float32)
    return check_probability(value, "iou_threshold")


def _max_output_size(value, num_boxes):
    if value is None:
        return num_boxes
    if tf.is_tensor(value):
        return tf.cast(value, tf.int32)
    return check_int(value, "max_output_size", minimum=0, allow_none=True)


# --------------------------------------------------------------------------------------------
# RoIAlign
# --------------------------------------------------------------------------------------------


def _roi_geometry(boxes, spatial_scale, aligned):
    """Start and size of each RoI on the feature grid, per torchvision's kernel (float32)."""
    offset = 0.5 if aligned else 0.0
    y1, x1, y2, x2 = _corners(boxes)
    start_y = y1 * spatial_scale - offset
    start_x = x1 * spatial_scale - offset
    roi_h = y2 * spatial_scale - offset - start_y
    roi_w = x2 * spatial_scale - offset - start_x
    if not aligned:  # legacy behaviour: RoIs are at least 1x1
        roi_h = tf.maximum(roi_h, 1.0)
        roi_w = tf.maximum(roi_w, 1.0)
    return start_y, start_x, roi_h, roi_w


def roi_align(
    features,
    boxes,
    box_indices,
    output_size,
    spatial_scale=1.0,
    sampling_ratio=2,
    aligned=False,
):
    """RoIAlign with exactly torchvision's ``roi_align`` semantics (NHWC, yx boxes).

    Each box is divided into ``output_size`` bins; each bin averages ``sampling_ratio**2``
    bilinear samples placed at ``start + (i + 0.5) * bin / sampling_ratio``, where
    ``start = box * spatial_scale - (0.5 if aligned else 0)``. As in torchvision's C++ kernel,
    a sample further than one pixel outside the map contributes 0 (but still counts in the
    average), samples in the outer one-pixel band use the border row/column, and when
    ``aligned`` is False a box is at least 1x1 feature pixels.

    With ``sampling_ratio > 0`` this is computed with ``tf.image.crop_and_resize`` on the
    map padded by one replicated pixel, then average pooling (max abs difference to
    torchvision about 1e-5 on N(0, 1) features). With ``sampling_ratio <= 0`` each box uses
    torchvision's adaptive grid ``ceil(roi_size / output_size)`` per axis (as for Mask R-CNN
    mask targets); this path evaluates the separable bilinear weights on each box's window
    with ``tf.map_fn`` (exact, but one box at a time; about 0.2 s for 128 boxes on 800x1216
    masks on 2 CPU cores). Neither path compiles with XLA (``CropAndResize`` has no XLA kernel).

    Args:
        features: tensor (B, H, W, C), float (or integer/bool with ``sampling_ratio <= 0``):
            the feature maps. Computed in float32; the result has the dtype of float
            `features`, float32 for integer maps (e.g. uint8 instance masks for mask targets).
        boxes: tensor (N, 4), ``[y1, x1, y2, x2]`` in input-image pixels (multiplied by
            `spatial_scale`).
        box_indices: int tensor (N,), the image of `features` that each box samples, in
            ``[0, B)``.
        output_size: int or (int, int), the ``(out_h, out_w)`` bins per box.
        spatial_scale: float or scalar tensor, feature pixels per input pixel, e.g. 1/4 for
            P2.
        sampling_ratio: int, samples per bin and axis; ``<= 0`` for torchvision's adaptive
            grid.
        aligned: bool, shift boxes by -0.5 pixel (``aligned=True``, Detectron2) or not
            (torchvision's default, used by Mask R-CNN v1).

    Returns:
        Tensor (N, out_h, out_w, C).

    Raises:
        ValueError: a shape or an argument is out of range.
        TypeError: `features`, `boxes` or `box_indices` have an unaccepted dtype.
    """
    out_h, out_w = _output_size(output_size)
    check_int(sampling_ratio, "sampling_ratio")
    if not isinstance(aligned, (bool, np.bool_)):
        raise ValueError(f"`aligned` must be a bool; got {aligned!r}.")
    aligned = bool(aligned)
    features, integer = _roi_features(features, sampling_ratio)
    boxes = _boxes_tensor(boxes, rank=2)
    box_indices = _index_tensor(box_indices, "box_indices")
    scale = _positive_scalar(spatial_scale, "spatial_scale")

    out_dtype = tf.float32 if integer else features.dtype
    # Integer maps (masks) stay as they are: the adaptive path converts each box's window.
    feats = features if integer else tf.cast(features, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    if sampling_ratio > 0:
        result = _roi_align_crop_and_resize(
            feats, boxes, box_indices, out_h, out_w, scale, int(sampling_ratio), aligned
        )
    elif tf.executing_eagerly():  # a graph runs map_fn's loop far faster than eager ops
        result = _roi_align_adaptive_graph(
            feats, boxes, box_indices, scale, out_h=out_h, out_w=out_w, aligned=aligned
        )
    else:
        result = _roi_align_adaptive(feats, boxes, box_indices, scale, out_h, out_w, aligned)
    result = tf.ensure_shape(result, [None, out_h, out_w, features.shape[-1]])
    return tf.cast(result, out_dtype)


def _roi_features(features, sampling_ratio):
    """`features` as a checked rank-4 tensor, and whether it holds integers (or bools)."""
    features = tf.convert_to_tensor(features)
    integer = features.dtype.is_integer or features.dtype == tf.bool
    if features.dtype not in _FLOAT_DTYPES and not (integer and sampling_ratio <= 0):
        raise TypeError(
            f"`features` must be a float tensor; got dtype {features.dtype.name}. "
            "Accepted: float16, bfloat16, float32, float64; with `sampling_ratio <= 0` also "
            "integer or bool maps such as instance masks (result float32)."
        )
    _check_rank(features, 4, "features", "(batch, height, width, channels)")
    return features, integer


def _roi_align_crop_and_resize(features, boxes, box_indices, out_h, out_w, scale, ratio, aligned):
    """Fixed sampling grid: `crop_and_resize` on the edge-padded map, then bin averages."""
    shape = tf.shape(features)
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    start_y, start_x, roi_h, roi_w = _roi_geometry(boxes, scale, aligned)
    n_h, n_w = out_h * ratio, out_w * ratio
    # First and last of the n equally spaced samples, shifted by the one-pixel pad and
    # normalized for crop_and_resize's corner-aligned convention: pixel = coord * (size - 1).
    # True divisions (DivNoNan), so that Grappler does not fold them into reciprocals.
    div = tf.math.divide_no_nan
    step_y, step_x = div(roi_h, float(n_h)), div(roi_w, float(n_w))
    y0 = div(start_y + 0.5 * step_y + 1.0, height + 1.0)
    y1 = div(start_y + (n_h - 0.5) * step_y + 1.0, height + 1.0)
    x0 = div(start_x + 0.5 * step_x + 1.0, width + 1.0)
    x1 = div(start_x + (n_w - 0.5) * step_x + 1.0, width + 1.0)
    # Replicating the edge reproduces the kernel's clamp of [-1, 0] and [H - 1, H]; beyond
    # that crop_and_resize's extrapolation value 0 reproduces the kernel's empty samples.
    padded = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    samples = tf.image.crop_and_resize(
        padded,
        tf.stack([y0, x0, y1, x1], axis=-1),
        box_indices,
        (n_h, n_w),
        method="bilinear",
        extrapolation_value=0.0,
    )
    channels = tf.shape(samples)[-1]
    samples = tf.reshape(samples, [-1, out_h, ratio, out_w, ratio, channels])
    return tf.reduce_mean(samples, axis=[2, 4])


def _axis_weights(start, roi, out, size):
    """Separable sampling weights of one box along one axis, for the adaptive grid.

    Returns ``(first, window, weights, grid)``: ``weights`` is the (out, window) matrix of the
    summed bilinear weights of each bin's samples over feature rows ``first`` to
    ``first + window - 1``; ``grid`` is the number of samples per bin along this axis.
    """
    # torchvision divides by the bin count; Grappler's constant folding would turn a plain
    # division by a constant into a multiplication by its reciprocal (1e-5 off), DivNoNan not.
    bin_size = tf.math.divide_no_nan(roi, tf.constant(out, tf.float32))
    grid = tf.cast(tf.math.ceil(bin_size), tf.int32)
    grid = tf.maximum(grid, 0)
    grid_f = tf.cast(grid, tf.float32)
    size_f = tf.cast(size, tf.float32)
    p = tf.repeat(tf.range(out, dtype=tf.float32), grid)  # bin of each sample
    i = tf.tile(tf.range(grid_f), [out])  # sample within the bin
    coord = start + p * bin_size + (i + 0.5) * bin_size / grid_f
    valid = (coord >= -1.0) & (coord <= size_f)
    coord = tf.maximum(coord, 0.0)
    low = tf.cast(tf.floor(coord), tf.int32)
    at_end = low >= size - 1
    low = tf.where(at_end, size - 1, low)
    high = tf.where(at_end, size - 1, low + 1)
    coord = tf.where(at_end, tf.cast(low, tf.float32), coord)
    frac = coord - tf.cast(low, tf.float32)
    valid_f = tf.cast(valid, tf.float32)
    w_low = (1.0 - frac) * valid_f
    w_high = frac * valid_f
    # The window of rows that valid samples touch.
    first = tf.reduce_min(tf.concat([tf.boolean_mask(low, valid), [size - 1]], 0))
    last = tf.reduce_max(tf.concat([tf.boolean_mask(high, valid), [first]], 0))
    window = last - first + 1
    bins = tf.cast(p, tf.int32)
    rows = tf.clip_by_value(tf.concat([low, high], 0) - first, 0, window - 1)
    indices = tf.stack([tf.concat([bins, bins], 0), rows], axis=1)
    weights = tf.scatter_nd(indices, tf.concat([w_low, w_high], 0), [out, window])
    return first, window, weights, grid


def _roi_align_adaptive(features, boxes, box_indices, scale, out_h, out_w, aligned):
    """Adaptive grid (``sampling_ratio <= 0``): exact separable weights, one box at a time."""
    shape = tf.shape(features)
    height, width, channels = shape[1], shape[2], shape[3]
    start_y, start_x, roi_h, roi_w = _roi_geometry(boxes, scale, aligned)

    def one_box(args):
        sy, sx, rh, rw, index = args
        y_first, y_window, wy, grid_h = _axis_weights(sy, rh, out_h, height)
        x_first, x_window, wx, grid_w = _axis_weights(sx, rw, out_w, width)
        patch = features[index, y_first : y_first + y_window, x_first : x_first + x_window]
        patch = tf.cast(patch, tf.float32)
        rows = tf.tensordot(wy, patch, axes=[[1], [0]])  # (out_h, x_window, C)
        pooled = tf.einsum("pxc,qx->pqc", rows, wx)
        count = tf.cast(tf.maximum(grid_h * grid_w, 1), tf.float32)
        return pooled / count

    result = tf.map_fn(
        one_box,
        (start_y, start_x, roi_h, roi_w, box_indices),
        fn_output_signature=tf.TensorSpec(None, tf.float32),
    )
    return tf.reshape(result, [-1, out_h, out_w, channels])


_roi_align_adaptive_graph = tf.function(_roi_align_adaptive, reduce_retracing=True)


# --------------------------------------------------------------------------------------------
# Multi-scale RoIAlign (FPN)
# --------------------------------------------------------------------------------------------


def _log2(x):
    # DivNoNan keeps a true division in graphs (Grappler folds x / c into x * (1 / c)).
    return tf.math.divide_no_nan(tf.math.log(x), tf.math.log(tf.constant(2.0, x.dtype)))


def multiscale_roi_align(
    features,
    boxes,
    box_indices,
    image_size,
    output_size,
    sampling_ratio=2,
    canonical_scale=224,
    canonical_level=4,
    eps=1e-6,
):
    """torchvision's ``MultiScaleRoIAlign`` over FPN levels (NHWC, yx boxes).

    Each box goes to level ``k = clamp(floor(canonical_level + log2(sqrt(area) /
    canonical_scale) + eps), k_min, k_max)`` with ``area = (x2 - x1) * (y2 - y1)``, and is
    pooled there with `roi_align` (``aligned=False``). As in torchvision, the scale of each
    map is ``2 ** round(log2(map_height / image_height))`` and ``k_min``, ``k_max`` are
    ``-log2`` of the first and last scales (2 and 5 for P2..P5 of a stride-32-padded batch).

    Args:
        features: list of tensors (B, H_l, W_l, C), the maps of consecutive levels, finest
            first (P2, P3, P4, P5 for Mask R-CNN).
        boxes: tensor (N, 4), ``[y1, x1, y2, x2]`` in input-image pixels.
        box_indices: int tensor (N,), the image of each box in the batch.
        image_size: (height, width) of the (padded) batch the maps were computed from; ints
            or scalar tensors. torchvision uses the largest unpadded image size, which gives
            the same scales.
        output_size: int or (int, int), the bins per box.
        sampling_ratio: int, samples per bin and axis (> 0 uses the fast crop_and_resize
            path).
        canonical_scale: the FPN level rule's box size of level `canonical_level`
            (torchvision: 224).
        canonical_level: the level of a box of `canonical_scale` pixels (torchvision: 4).
        eps: added before the floor of the level rule (torchvision: 1e-6).

    Returns:
        Tensor (N, out_h, out_w, C), in the order of `boxes`.

    Raises:
        ValueError: a shape or an argument is out of range.
    """
    features = _check_multiscale_args(
        features, image_size, sampling_ratio, canonical_scale, canonical_level
    )
    out_h, out_w = _output_size(output_size)
    boxes = tf.cast(_boxes_tensor(boxes, rank=2), tf.float32)
    box_indices = _index_tensor(box_indices, "box_indices")
    image_height = tf.cast(tf.reshape(image_size[0], []), tf.float32)

    # Scale of each map, inferred from its height like torchvision's _infer_scale.
    scales = [
        tf.pow(2.0, tf.round(_log2(tf.cast(tf.shape(f)[1], tf.float32) / image_height)))
        for f in features
    ]
    if len(features) == 1:
        return roi_align(features[0], boxes, box_indices, (out_h, out_w), scales[0], sampling_ratio)

    levels = _fpn_levels(boxes, scales, canonical_scale, canonical_level, eps)
    positions, pooled = [], []
    for level, (feature, scale) in enumerate(zip(features, scales, strict=True)):
        index = tf.cast(tf.where(tf.equal(levels, level))[:, 0], tf.int32)
        positions.append(index)
        pooled.append(
            roi_align(
                feature,
                tf.gather(boxes, index),
                tf.gather(box_indices, index),
                (out_h, out_w),
                scale,
                sampling_ratio,
                aligned=False,
            )
        )
    result = tf.dynamic_stitch(positions, pooled)
    # dynamic_stitch sizes its output by the largest index; keep N rows even when N = 0.
    result = tf.reshape(result, [tf.shape(boxes)[0], out_h, out_w, tf.shape(features[0])[-1]])
    return tf.ensure_shape(result, [None, out_h, out_w, features[0].shape[-1]])


def _check_multiscale_args(features, image_size, sampling_ratio, canonical_scale, level):
    """The checks of `multiscale_roi_align`; returns `features` as a list of tensors."""
    if not isinstance(features, (list, tuple)) or not features:
        raise ValueError(
            "`features` must be a non-empty list of (batch, height, width, channels) maps; "
            f"got {type(features).__name__}."
        )
    features = [tf.convert_to_tensor(f) for f in features]
    for index, feature in enumerate(features):
        _check_rank(feature, 4, f"features[{index}]", "(batch, height, width, channels)")
    check_int(sampling_ratio, "sampling_ratio")
    if not isinstance(image_size, (tuple, list)) and not tf.is_tensor(image_size):
        raise ValueError(
            f"`image_size` must be a pair (height, width); got {type(image_size).__name__}."
        )
    if isinstance(image_size, (tuple, list)) and len(image_size) != 2:
        raise ValueError(f"`image_size` must be a pair (height, width); got {image_size!r}.")
    check_number(canonical_scale, "canonical_scale", positive=True)
    check_int(level, "canonical_level")
    return features


def _fpn_levels(boxes, scales, canonical_scale, canonical_level, eps):
    """Index (from 0 = the first map) of the level of each box, by the FPN level rule."""
    k_min = -tf.round(_log2(scales[0]))
    k_max = -tf.round(_log2(scales[-1]))
    y1, x1, y2, x2 = _corners(boxes)
    size = tf.sqrt((x2 - x1) * (y2 - y1))
    ratio = tf.math.divide_no_nan(size, tf.constant(canonical_scale, tf.float32))
    target = tf.floor(canonical_level + _log2(ratio) + eps)
    # Degenerate boxes (negative area: NaN) go to the first level instead of nowhere.
    target = tf.where(tf.math.is_nan(target), k_min, tf.clip_by_value(target, k_min, k_max))
    return tf.cast(target - k_min, tf.int32)


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------


def box_area(boxes):
    """Area ``(y2 - y1) * (x2 - x1)`` of ``[..., 4]`` yx boxes (no "+1", like torchvision)."""
    boxes = _boxes_tensor(boxes, description="(..., 4)")
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1, boxes2):
    """Pairwise IoU of ``(..., N, 4)`` and ``(..., M, 4)`` yx boxes.

    Same formula as torchvision's ``box_iou``: intersection clamped at 0, union
    ``area1 + area2 - intersection``, no "+1"; two empty boxes give NaN.

    Args:
        boxes1: ``(..., N, 4)`` boxes ``[y1, x1, y2, x2]``.
        boxes2: ``(..., M, 4)`` boxes, cast to the dtype of `boxes1`.

    Returns:
        ``(..., N, M)`` IoU.
    """
    boxes1 = _boxes_tensor(boxes1, "boxes1", description="(..., N, 4)")
    boxes2 = _boxes_tensor(boxes2, "boxes2", description="(..., M, 4)")
    dtype = boxes1.dtype
    boxes2 = tf.cast(boxes2, dtype)
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    top_left = tf.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = tf.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    size = tf.maximum(bottom_right - top_left, 0.0)
    inter = size[..., 0] * size[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union


def clip_boxes(boxes, height, width):
    """Clip ``[..., 4]`` yx boxes to ``[0, height] x [0, width]`` (torchvision's rule).

    Like torchvision's ``clip_boxes_to_image``, the far edge is ``height``, not
    ``height - 1``.

    Args:
        boxes: ``[..., 4]`` boxes ``[y1, x1, y2, x2]``.
        height: a number >= 0, or a tensor that broadcasts against ``boxes[..., 0]`` (e.g.
            shape (B, 1) for boxes (B, N, 4) of images of different sizes).
        width: the same for the width.

    Returns:
        The clipped boxes, shape and dtype of `boxes`.
    """
    boxes = _boxes_tensor(boxes, description="(..., 4)")
    for name, value in (("height", height), ("width", width)):
        if not _is_array(value):
            check_number(value, name, minimum=0)
    height = tf.cast(height, boxes.dtype)
    width = tf.cast(width, boxes.dtype)
    y1, x1, y2, x2 = _corners(boxes)
    y1 = tf.minimum(tf.maximum(y1, 0.0), height)
    y2 = tf.minimum(tf.maximum(y2, 0.0), height)
    x1 = tf.minimum(tf.maximum(x1, 0.0), width)
    x2 = tf.minimum(tf.maximum(x2, 0.0), width)
    return tf.stack([y1, x1, y2, x2], axis=-1)


def remove_small_boxes(boxes, min_size):
    """Boolean keep mask of the boxes whose height and width are both ``>= min_size``.

    torchvision's ``remove_small_boxes`` returns the indices ``where(mask)``; a mask is
    returned here so that it can be combined with other filters on padded batches. Use
    ``tf.where(mask)[:, 0]`` for torchvision's indices.

    Args:
        boxes: ``[..., 4]`` boxes ``[y1, x1, y2, x2]``.
        min_size: a number >= 0 or a scalar tensor.

    Returns:
        Bool tensor of shape ``boxes.shape[:-1]``.
    """
    boxes = _boxes_tensor(boxes, description="(..., 4)")
    if not tf.is_tensor(min_size):
        check_number(min_size, "min_size", minimum=0)
    min_size = tf.cast(min_size, boxes.dtype)
    heights = boxes[..., 2] - boxes[..., 0]
    widths = boxes[..., 3] - boxes[..., 1]
    return (widths >= min_size) & (heights >= min_size)


# --------------------------------------------------------------------------------------------
# Non-maximum suppression
# --------------------------------------------------------------------------------------------


def nms(boxes, scores, iou_threshold, max_output_size=None):
    """Greedy non-maximum suppression like torchvision's ``nms``.

    A box is dropped when its IoU with a kept, higher-scoring box is ``> iou_threshold``.
    Uses ``tf.image.non_max_suppression``. Ties in `scores` may be ordered differently than
    in torchvision (TF keeps the lower index first; torchvision's sort order is unspecified).

    Args:
        boxes: ``(N, 4)`` boxes ``[y1, x1, y2, x2]`` (any corner order works for TF, but the
            IoU follows torchvision only for ``y1 <= y2``, ``x1 <= x2``).
        scores: ``(N,)`` float scores.
        iou_threshold: a number in [0, 1] or a scalar tensor.
        max_output_size: the most indices returned; None for all.

    Returns:
        int32 indices of the kept boxes, by decreasing score.
    """
    boxes = _boxes_tensor(boxes, rank=2)
    scores = _float_tensor(scores, "scores")
    _check_rank(scores, 1, "scores", "(N,)")
    threshold = _iou_threshold(iou_threshold)
    limit = _max_output_size(max_output_size, tf.shape(boxes)[0])
    return tf.image.non_max_suppression(
        tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32), limit, iou_threshold=threshold
    )


def batched_nms(boxes, scores, group_ids, iou_threshold, max_output_size=None):
    """NMS within groups (e.g. classes, FPN levels), like torchvision's ``batched_nms``.

    Boxes of different groups never suppress each other: as in torchvision's coordinate
    trick, every box is shifted by ``group_id * (max(boxes) + 1)`` before one `nms` call.
    Ties in `scores` may be ordered differently than in torchvision.

    Args:
        boxes: ``(N, 4)`` boxes ``[y1, x1, y2, x2]``.
        scores: ``(N,)`` float scores.
        group_ids: ``(N,)`` non-negative integers.
        iou_threshold: a number in [0, 1] or a scalar tensor.
        max_output_size: the most indices returned; None for all.

    Returns:
        int32 indices of the kept boxes, by decreasing score.
    """
    boxes = tf.cast(_boxes_tensor(boxes, rank=2), tf.float32)
    group_ids = _index_tensor(group_ids, "group_ids")
    max_coordinate = tf.reduce_max(boxes)
    offsets = tf.cast(group_ids, tf.float32) * (max_coordinate + 1.0)
    return nms(boxes + offsets[:, None], scores, iou_threshold, max_output_size)
