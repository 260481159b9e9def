"""Anchor boxes of torchvision's `AnchorGenerator`, in kerasseg's `[y1, x1, y2, x2]` order.

torchvision (`torchvision/models/detection/anchor_utils.py`) defines, per FPN level, zero-centred
"cell" anchors for every (aspect ratio, size) pair with aspect ratio = height / width:
``h_ratio = sqrt(ratio)``, ``w_ratio = 1 / h_ratio``, ``w = w_ratio * size``, ``h = h_ratio * size``
and corners ``round((-w, -h, w, h) / 2)`` (float32, round half to even). They are shifted to
every feature-map location ``(i * stride_y, j * stride_x)`` -- top-left grid points, no
half-stride offset -- with ``stride = padded_image_size // feature_size`` per axis. The global
order is levels concatenated, then (y, x, anchor) inside a level; ``grid_anchors`` keeps it, so
row ``n`` of its output is torchvision's anchor ``n`` with the coordinates reordered to
``[y1, x1, y2, x2]``.

References: Ren et al., "Faster R-CNN", NeurIPS 2015 (arXiv:1506.01497); Lin et al., "Feature
Pyramid Networks for Object Detection", CVPR 2017 (arXiv:1612.03144).
"""

import numpy as np
from keras import ops

from kerasseg.ops.checks import check_number, is_int, is_number

__all__ = [
    "DEFAULT_ASPECT_RATIOS",
    "DEFAULT_SIZES",
    "base_anchors",
    "grid_anchors",
    "int_or_tensor",
    "num_anchors_per_level",
]

DEFAULT_SIZES = ((32,), (64,), (128,), (256,), (512,))
DEFAULT_ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * 5


def _positive_numbers(name, values):
    """`values` (a number or a sequence) as a tuple of finite positive numbers."""
    if is_number(values):
        values = (values,)
    if isinstance(values, (str, bytes)):
        raise TypeError(f"`{name}` must be a number or a sequence of numbers; got {values!r}.")
    try:
        values = tuple(values)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a number or a sequence of numbers; got {values!r}."
        ) from None
    if not values:
        raise ValueError(f"`{name}` must not be empty; got {values!r}.")
    for index, value in enumerate(values):
        check_number(value, f"{name}[{index}]", positive=True)
    return values


def base_anchors(size, aspect_ratios=(0.5, 1.0, 2.0)):
    """Zero-centred cell anchors, a float32 numpy array (len(ratios) * len(sizes), 4).

    Args:
        size: number or sequence of numbers, the anchor size(s) in pixels (the square root
            of the anchor's area before rounding).
        aspect_ratios: sequence of numbers, the height / width ratios.

    Returns:
        ``[y1, x1, y2, x2]`` rows in torchvision's order: ratio-major, size-minor. For size 32
        and ratios (0.5, 1, 2): ``[-11, -23, 11, 23], [-16, -16, 16, 16], [-23, -11, 23, 11]``.

    Raises:
        TypeError: `size` or `aspect_ratios` is neither a number nor a sequence.
        ValueError: they are empty or hold a number that is not finite and positive.
    """
    scales = np.asarray(_positive_numbers("size", size), np.float32)
    ratios = np.asarray(_positive_numbers("aspect_ratios", aspect_ratios), np.float32)
    # Same float32 operations and order as torchvision's `AnchorGenerator.generate_anchors`.
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1.0) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    anchors = np.stack([-hs, -ws, hs, ws], axis=1) / np.float32(2.0)
    return np.round(anchors).astype(np.float32)  # numpy and torch both round half to even


def int_or_tensor(name, value, minimum, shown=None, float_error=TypeError):
    """A Python int of at least `minimum`, or a scalar tensor cast to int32 (not checked).

    Args:
        name: the argument's name, for the messages.
        value: a Python int, or a scalar tensor (graph mode, dynamic sizes).
        minimum: the smallest int accepted.
        shown: what the messages show as given (default `value`), e.g. the pair it is from.
        float_error: the exception class raised for a Python float.

    Returns:
        `value` as an int or an int32 tensor.

    Raises:
        ValueError: a bool, or an int below `minimum`.
    """
    shown = value if shown is None else shown
    if isinstance(value, bool) or (is_int(value) and value < minimum):
        raise ValueError(f"`{name}` must hold integers >= {minimum}; got {shown!r}.")
    if is_int(value):
        return int(value)
    if is_number(value):
        raise float_error(f"`{name}` must hold integers, not floats; got {shown!r}.")
    return ops.cast(value, "int32")


def _pair(name, value):
    """Split a (height, width) pair given as a sequence or as a tensor of shape (2,)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"`{name}` must be a (height, width) pair; got {value!r}.")
        return int_or_tensor(name, value[0], 1, value), int_or_tensor(name, value[1], 1, value)
    shape = getattr(value, "shape", None)
    if shape is None:
        raise TypeError(f"`{name}` must be a (height, width) pair; got {value!r}.")
    if tuple(shape) != (2,):
        raise ValueError(f"`{name}` must be a (height, width) pair; got shape {tuple(shape)}.")
    if isinstance(value, np.ndarray):
        value = value.tolist()
        return int_or_tensor(name, value[0], 1, value), int_or_tensor(name, value[1], 1, value)
    value = ops.cast(value, "int32")
    return value[0], value[1]


def num_anchors_per_level(feature_sizes, sizes=DEFAULT_SIZES, aspect_ratios=DEFAULT_ASPECT_RATIOS):
    """Number of anchors of each level, ``h * w * len(sizes[l]) * len(aspect_ratios[l])``.

    Args:
        feature_sizes: list of (height, width), the size of each feature level.
        sizes: per-level anchor sizes (see `grid_anchors`).
        aspect_ratios: per-level height/width ratios.

    Returns:
        A list of counts: Python ints when the feature sizes are, scalar tensors otherwise.
    """
    sizes, aspect_ratios = _check_levels(feature_sizes, sizes, aspect_ratios)
    counts = []
    for level, feature_size in enumerate(feature_sizes):
        h, w = _pair(f"feature_sizes[{level}]", feature_size)
        counts.append(h * w * len(sizes[level]) * len(aspect_ratios[level]))
    return counts


def _check_levels(feature_sizes, sizes, aspect_ratios):
    if isinstance(feature_sizes, (str, bytes)) or not isinstance(feature_sizes, (list, tuple)):
        raise TypeError(
            "`feature_sizes` must be a list of (height, width) pairs, one per level; "
            f"got {type(feature_sizes).__name__}."
        )
    if not isinstance(sizes, (list, tuple)) or not isinstance(aspect_ratios, (list, tuple)):
        raise TypeError(
            "`sizes` and `aspect_ratios` must be tuples with one tuple per level; got "
            f"{sizes!r} and {aspect_ratios!r}."
        )
    if not (len(feature_sizes) == len(sizes) == len(aspect_ratios)) or not sizes:
        raise ValueError(
            "`feature_sizes`, `sizes` and `aspect_ratios` need one entry per feature level; got "
            f"{len(feature_sizes)}, {len(sizes)} and {len(aspect_ratios)} entries."
        )
    sizes = [_positive_numbers(f"sizes[{i}]", s) for i, s in enumerate(sizes)]
    aspect_ratios = [
        _positive_numbers(f"aspect_ratios[{i}]", r) for i, r in enumerate(aspect_ratios)
    ]
    return sizes, aspect_ratios


def grid_anchors(
    image_size, feature_sizes, sizes=DEFAULT_SIZES, aspect_ratios=DEFAULT_ASPECT_RATIOS
):
    """All anchors of a padded image, float32 (N, 4) ``[y1, x1, y2, x2]``, torchvision's order.

    ``stride = image_size // feature_size`` per axis (floor division, as torchvision), shifts
    are ``arange(feature_size) * stride`` with no half-stride offset. Works in graph mode with
    dynamic sizes.

    Args:
        image_size: (height, width) of the *padded* batch (Python ints or int scalar tensors,
            or an int tensor of shape (2,)). Anchors are shared by all images of the batch.
        feature_sizes: list of (height, width), the spatial size of each feature level
            (P2..P6 for Mask R-CNN), ints or scalar tensors.
        sizes: tuple of tuples, the per-level anchor sizes (torchvision's defaults for
            `maskrcnn_resnet50_fpn`: 32..512).
        aspect_ratios: tuple of tuples, the per-level height/width ratios (torchvision:
            (0.5, 1, 2) on every level).

    Returns:
        Tensor (N, 4) with N = sum over levels of h * w * A; inside a level the order is
        (y, x, anchor), levels are concatenated. Coordinates are exact integers in float32.

    Raises:
        TypeError: an argument has the wrong type (e.g. float feature sizes).
        ValueError: the levels disagree in number, or a size is not positive.
    """
    sizes, aspect_ratios = _check_levels(feature_sizes, sizes, aspect_ratios)
    image_h, image_w = _pair("image_size", image_size)
    levels = []
    for level, feature_size in enumerate(feature_sizes):
        feat_h, feat_w = _pair(f"feature_sizes[{level}]", feature_size)
        cell = ops.convert_to_tensor(base_anchors(sizes[level], aspect_ratios[level]))
        stride_h = image_h // feat_h
        stride_w = image_w // feat_w
        shifts_y = ops.cast(ops.arange(0, feat_h, dtype="int32") * stride_h, "float32")
        shifts_x = ops.cast(ops.arange(0, feat_w, dtype="int32") * stride_w, "float32")
        grid_y, grid_x = ops.meshgrid(shifts_y, shifts_x, indexing="ij")
        grid_y = ops.reshape(grid_y, (-1,))
        grid_x = ops.reshape(grid_x, (-1,))
        shifts = ops.stack([grid_y, grid_x, grid_y, grid_x], axis=1)
        anchors = ops.expand_dims(shifts, 1) + ops.expand_dims(cell, 0)
        levels.append(ops.reshape(anchors, (-1, 4)))
    return ops.concatenate(levels, axis=0)
