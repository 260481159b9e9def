"""Deterministic joint transforms for (image, mask) segmentation examples.

Tensor conventions (shared by every module of `kerasseg.data`):

* `image`: float32, shape (H, W, C), values as stored (e.g. 0..255, not normalised).
* `mask`: int32, shape (H, W, K); K = 1 for a semantic class-id map, K = N for N stacked
  0/1 instance masks.

Every geometric function applies the same parameters to both tensors: the image is
interpolated bilinearly, the mask with nearest neighbour, so mask values are never
interpolated and its dtype stays int32. Nothing is clipped or cast. All functions are
TensorFlow ops that run eagerly and inside `tf.data.Dataset.map` (graph mode), also with
unknown (None) height and width; static channel counts are preserved. Sizes, offsets and
multiples are Python integers (checked when called); conditions that depend on the
runtime shape (an image larger than a padding target, a crop outside the image) raise
`tf.errors.InvalidArgumentError` when the op runs.
"""

import numpy as np
import tensorflow as tf

from kerasseg.ops.checks import check_int, is_int, is_number

__all__ = [
    "center_crop",
    "check_labels",
    "crop",
    "pad_to_multiple",
    "pad_to_size",
    "remap_classes",
    "resize",
]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# Mappings whose source ids span at most this many values use a dense lookup table.
_DENSE_TABLE_MAX = 1 << 16


# --------------------------------------------------------------------------- checks


def _is_int32(value):
    """True for a Python or NumPy integer in the int32 range (booleans refused)."""
    return is_int(value) and INT32_MIN <= value <= INT32_MAX


def _as_pair(value, name, fn, *, minimum=1, allow_int=False, allow_none=False):
    """(a, b) of Python ints >= minimum; an int is accepted as (v, v) when allow_int, and
    None is returned as is when allow_none."""
    if allow_none and value is None:
        return None
    if allow_int and is_int(value):
        value = (value, value)
    accepted = ("None or " if allow_none else "") + ("an int or " if allow_int else "")
    if not isinstance(value, tuple | list) or len(value) != 2 or not all(map(is_int, value)):
        raise TypeError(
            f"{fn}: `{name}` must be {accepted}a (height, width) pair of Python ints; "
            f"got {value!r}."
        )
    if any(v < minimum for v in value):
        raise ValueError(
            f"{fn}: `{name}` values must be >= {minimum}; got {tuple(int(v) for v in value)}."
        )
    return int(value[0]), int(value[1])


def _check_tensor(value, fn, name, dtype, holds, axes):
    """`value` as a rank-3 tensor of `dtype`; `holds` and `axes` say what it is, in words."""
    value = tf.convert_to_tensor(value)
    if value.dtype != dtype:
        raise TypeError(
            f"{fn}: `{name}` must be {dtype.name} ({holds}); got {value.dtype.name}. Convert "
            f"explicitly with tf.cast({name}, tf.{dtype.name})."
        )
    if value.shape.rank != 3:
        raise ValueError(f"{fn}: `{name}` must have rank 3, {axes}; got shape {value.shape}.")
    return value


def _check_pair(image, mask, fn):
    """Validate an (image, mask) example; returns both as tensors.

    Static mismatches of height/width raise ValueError now; dynamic ones are checked by a
    `tf.debugging.assert_equal` that runs with the returned tensors.
    """
    image = _check_tensor(
        image, fn, "image", tf.float32, "values as stored, e.g. 0..255", "(height, width, channels)"
    )
    mask = _check_tensor(
        mask,
        fn,
        "mask",
        tf.int32,
        "class ids or 0/1 instance masks",
        "(height, width, K) with K = 1 for a class-id map or N instance masks",
    )
    for axis, label in ((0, "height"), (1, "width")):
        a, b = image.shape[axis], mask.shape[axis]
        if a is not None and b is not None and a != b:
            raise ValueError(
                f"{fn}: `image` and `mask` must have the same {label}; got image shape "
                f"{image.shape} and mask shape {mask.shape}."
            )
    if not (image.shape[:2].is_fully_defined() and mask.shape[:2].is_fully_defined()):
        check = tf.debugging.assert_equal(
            tf.shape(image)[:2],
            tf.shape(mask)[:2],
            message=f"{fn}: `image` and `mask` must have the same height and width",
        )
        with tf.control_dependencies([check]):
            image = tf.identity(image)
    return image, mask


def _with_shape(x, height, width, channels):
    """Re-attach static shape information lost by ops with tensor-valued sizes."""
    x.set_shape([height, width, channels])
    return x


def _static_hw(x):
    return x.shape[0], x.shape[1]


# ----------------------------------------------------------------------- geometric


def resize(image, mask, size):
    """Resize an example to `size`: image bilinear, mask nearest neighbour.

    Args:
        image: float32 tensor (H, W, C).
        mask: int32 tensor (H, W, K).
        size: (height, width) pair of positive ints.

    Returns:
        (image, mask) of shape (height, width, C) and (height, width, K). The image uses
        `tf.image.resize(..., "bilinear", antialias=False)` (half-pixel centres, the default
        of `keras.layers.Resizing`); the mask uses `tf.image.resize(..., "nearest")`, so it
        keeps dtype int32 and only holds values of the input mask.
    """
    fn = "resize"
    size = _as_pair(size, "size", fn)
    image, mask = _check_pair(image, mask, fn)
    out_image = tf.image.resize(image, size, method="bilinear", antialias=False)
    out_mask = tf.image.resize(mask, size, method="nearest")
    return (
        _with_shape(out_image, *size, image.shape[-1]),
        _with_shape(out_mask, *size, mask.shape[-1]),
    )


def _fitting_shape(image, size, fn, *, pad):
    """The (height, width) of `image` as a tensor, asserted to be at most `size` when `fn`
    pads to it (`pad`), else at least `size` (`fn` crops it); a statically known height or
    width that does not fit raises ValueError at once."""
    if pad:
        word, advice, never = "larger", "crop or resize first", f"{fn} never crops"
    else:
        word, advice, never = "smaller", "pad first", f"{fn} never pads"
    for dim, target, label in zip(_static_hw(image), size, ("height", "width"), strict=True):
        if dim is not None and (dim > target if pad else dim < target):
            raise ValueError(
                f"{fn}: the image {label} {dim} is {word} than `size` {size}; {advice} ({never})."
            )
    shape = tf.shape(image)[:2]
    assertion = tf.debugging.assert_less_equal if pad else tf.debugging.assert_greater_equal
    check = assertion(
        shape,
        tf.constant(size, tf.int32),
        message=f"{fn}: the image is {word} than `size` {size}; {never}",
    )
    with tf.control_dependencies([check]):
        return tf.identity(shape)


def _pad_bottom_right(image, mask, pad_h, pad_w, image_value, mask_value):
    image_pad = tf.pad(
        image,
        [[0, pad_h], [0, pad_w], [0, 0]],
        constant_values=tf.constant(image_value, tf.float32),
    )
    mask_pad = tf.pad(
        mask, [[0, pad_h], [0, pad_w], [0, 0]], constant_values=tf.constant(mask_value, tf.int32)
    )
    return image_pad, mask_pad


def _check_fill(image_value, mask_value, fn):
    if not is_number(image_value):
        raise TypeError(f"{fn}: `image_value` must be a Python number; got {image_value!r}.")
    if not _is_int32(mask_value):
        raise TypeError(
            f"{fn}: `mask_value` must be a Python int in the int32 range (e.g. 0 for "
            f"background or the ignore label); got {mask_value!r}."
        )
    return float(image_value), int(mask_value)


def pad_to_size(image, mask, size, *, image_value=0.0, mask_value=0):
    """Pad an example at the bottom and right to exactly `size`.

    Args:
        image: float32 tensor (H, W, C).
        mask: int32 tensor (H, W, K).
        size: (height, width) pair of positive ints, each >= the example's size.
        image_value: value of the padded image pixels (a float).
        mask_value: value of the padded mask pixels (an int: e.g. the ignore label, or 0
            for background).

    Returns:
        (image, mask) of shape (height, width, C) and (height, width, K).

    Raises:
        ValueError: the static size of the example exceeds `size`.
        tf.errors.InvalidArgumentError: at run time, a dynamic size exceeds `size`
            (nothing is cropped silently).
    """
    fn = "pad_to_size"
    size = _as_pair(size, "size", fn)
    image_value, mask_value = _check_fill(image_value, mask_value, fn)
    image, mask = _check_pair(image, mask, fn)
    shape = _fitting_shape(image, size, fn, pad=True)
    pad_h = size[0] - shape[0]
    pad_w = size[1] - shape[1]
    out_image, out_mask = _pad_bottom_right(image, mask, pad_h, pad_w, image_value, mask_value)
    return (
        _with_shape(out_image, *size, image.shape[-1]),
        _with_shape(out_mask, *size, mask.shape[-1]),
    )


def pad_to_multiple(image, mask, multiple, *, image_value=0.0, mask_value=0):
    """Pad an example at the bottom and right so height and width are multiples of `multiple`.

    Args:
        image: float32 tensor (H, W, C).
        mask: int32 tensor (H, W, K).
        multiple: int or (height, width) pair of positive ints, e.g. 2**depth for an
            encoder-decoder network with `depth` down-sampling steps.
        image_value: value of the padded image pixels, as in `pad_to_size`.
        mask_value: value of the padded mask pixels, as in `pad_to_size`.

    Returns:
        (image, mask) of height ceil(H / m_h) * m_h and width ceil(W / m_w) * m_w; unchanged
        when already divisible.
    """
    fn = "pad_to_multiple"
    mult = _as_pair(multiple, "multiple", fn, allow_int=True)
    image_value, mask_value = _check_fill(image_value, mask_value, fn)
    image, mask = _check_pair(image, mask, fn)
    shape = tf.shape(image)[:2]
    pad_h = (-shape[0]) % mult[0]
    pad_w = (-shape[1]) % mult[1]
    out_image, out_mask = _pad_bottom_right(image, mask, pad_h, pad_w, image_value, mask_value)
    static = [
        None if d is None else -(-d // m) * m for d, m in zip(_static_hw(image), mult, strict=True)
    ]
    return (
        _with_shape(out_image, *static, image.shape[-1]),
        _with_shape(out_mask, *static, mask.shape[-1]),
    )


def crop(image, mask, offset, size):
    """Crop the window of `size` whose top-left corner is at `offset`.

    Args:
        image: float32 tensor (H, W, C).
        mask: int32 tensor (H, W, K).
        offset: (row, column) pair of non-negative ints.
        size: (height, width) pair of positive ints.

    Returns:
        (image, mask) of shape (height, width, C) and (height, width, K).

    Raises:
        ValueError: the window leaves a statically known image.
        tf.errors.InvalidArgumentError: at run time, the window leaves a dynamic one
            (nothing is padded silently; see `pad_to_size`).
    """
    fn = "crop"
    offset = _as_pair(offset, "offset", fn, minimum=0)
    size = _as_pair(size, "size", fn)
    image, mask = _check_pair(image, mask, fn)
    return _crop(image, mask, offset, size, fn)


def _crop(image, mask, offset, size, fn):
    end = (offset[0] + size[0], offset[1] + size[1])
    for dim, stop, label in zip(_static_hw(image), end, ("height", "width"), strict=True):
        if dim is not None and stop > dim:
            raise ValueError(
                f"{fn}: the window offset {offset} + size {size} leaves the image ({label} {dim})."
            )
    check = tf.debugging.assert_less_equal(
        tf.constant(end, tf.int32),
        tf.shape(image)[:2],
        message=f"{fn}: the window offset {offset} + size {size} leaves the image",
    )
    with tf.control_dependencies([check]):
        out_image = image[offset[0] : end[0], offset[1] : end[1]]
        out_mask = mask[offset[0] : end[0], offset[1] : end[1]]
    return (
        _with_shape(out_image, *size, image.shape[-1]),
        _with_shape(out_mask, *size, mask.shape[-1]),
    )


def center_crop(image, mask, size):
    """Crop the central window of `size` (the extra row/column goes to the bottom/right).

    Args:
        image: float32 tensor (H, W, C).
        mask: int32 tensor (H, W, K).
        size: (height, width) pair of positive ints, each <= the example's size.

    Returns:
        (image, mask) of shape (height, width, C) and (height, width, K).

    Raises:
        ValueError: the example is statically smaller than `size`.
        tf.errors.InvalidArgumentError: at run time, the example is smaller than `size`.
    """
    fn = "center_crop"
    size = _as_pair(size, "size", fn)
    image, mask = _check_pair(image, mask, fn)
    static = _static_hw(image)
    shape = _fitting_shape(image, size, fn, pad=False)
    if all(d is not None for d in static):
        offset = ((static[0] - size[0]) // 2, (static[1] - size[1]) // 2)
        return _crop(image, mask, offset, size, fn)
    top = (shape[0] - size[0]) // 2
    left = (shape[1] - size[1]) // 2
    out_image = image[top : top + size[0], left : left + size[1]]
    out_mask = mask[top : top + size[0], left : left + size[1]]
    return (
        _with_shape(out_image, *size, image.shape[-1]),
        _with_shape(out_mask, *size, mask.shape[-1]),
    )


# ------------------------------------------------------------------------- labels


def _check_mapping(mask, mapping, ignore_label, unmapped, fn):
    """The argument checks of `remap_classes`; returns `mask` as a tensor."""
    mask = tf.convert_to_tensor(mask)
    if mask.dtype != tf.int32:
        raise TypeError(
            f"{fn}: `mask` must be int32; got {mask.dtype.name}. Convert explicitly with "
            f"tf.cast(mask, tf.int32)."
        )
    if not isinstance(mapping, dict) or not mapping:
        raise TypeError(
            f"{fn}: `mapping` must be a non-empty dict {{source id: target id}}; got {mapping!r}."
        )
    for key, value in mapping.items():
        for item, role in ((key, "key"), (value, "value")):
            if not _is_int32(item):
                raise TypeError(
                    f"{fn}: every `mapping` {role} must be a Python int in the int32 range; "
                    f"got {item!r} in {{{key!r}: {value!r}}}."
                )
    if unmapped not in ("error", "ignore"):
        raise ValueError(f'{fn}: `unmapped` must be "error" or "ignore"; got {unmapped!r}.')
    if ignore_label is not None and not _is_int32(ignore_label):
        raise TypeError(
            f"{fn}: `ignore_label` must be None or a Python int in the int32 range; got "
            f"{ignore_label!r}."
        )
    if unmapped == "ignore" and ignore_label is None:
        raise ValueError(f'{fn}: `unmapped="ignore"` requires `ignore_label`; got None.')
    if ignore_label is not None and mapping.get(ignore_label, ignore_label) != ignore_label:
        raise ValueError(
            f"{fn}: `mapping` sends `ignore_label` {ignore_label} to "
            f"{mapping[ignore_label]}, but ignore-label pixels always stay `ignore_label`; "
            f"remove {ignore_label} from `mapping` or map it to itself."
        )
    return mask


def _lookup(flat, keys, values):
    """(found, mapped): which values of `flat` are among the sorted int64 `keys`, and the
    int32 `values` of those keys (anything where not found).

    A gather from a dense table indexed by ``value - min(keys)`` when the keys span at most
    `_DENSE_TABLE_MAX` values, else a binary search (`tf.searchsorted`) in the keys.
    """
    span = int(keys[-1] - keys[0]) + 1
    if span > _DENSE_TABLE_MAX:
        sorted_keys = tf.constant(keys.astype(np.int32))
        index = tf.minimum(tf.searchsorted(sorted_keys, flat, side="left"), len(keys) - 1)
        return tf.gather(sorted_keys, index) == flat, tf.gather(tf.constant(values), index)
    table = np.zeros(span, np.int32)
    known = np.zeros(span, bool)
    table[keys - keys[0]] = values
    known[keys - keys[0]] = True
    index = tf.cast(flat, tf.int64) - int(keys[0])
    inside = (index >= 0) & (index < span)
    index = tf.where(inside, index, tf.zeros_like(index))
    return inside & tf.gather(tf.constant(known), index), tf.gather(tf.constant(table), index)


def remap_classes(mask, mapping, *, ignore_label=None, unmapped="error"):
    """Map the class ids of a mask through `mapping`.

    The lookup is a gather from a dense table indexed by ``value - min(keys)`` when the
    keys span at most 65536 values, else a binary search (`tf.searchsorted`) in the sorted
    keys; both are plain graph ops (no lookup-table resource), so they run inside
    `tf.data.Dataset.map`.

    Args:
        mask: int32 tensor of any shape.
        mapping: dict {source id: target id} of Python ints, e.g. ``{0: 0, 255: 1}`` for
            the ISBI 2012 membrane labels.
        ignore_label: optional int. Pixels equal to it in the input stay `ignore_label` (as
            a key of `mapping` it may only map to itself; as a target it sends a class to
            ignore). Required when ``unmapped="ignore"``.
        unmapped: "error" or "ignore": what happens to values that are neither keys of
            `mapping` nor `ignore_label`. "error" raises `tf.errors.InvalidArgumentError`
            (eagerly, or when the op runs in a graph) listing the accepted values and the
            offending ones; "ignore" sets them to `ignore_label`.

    Returns:
        int32 tensor of the same shape.
    """
    fn = "remap_classes"
    mask = _check_mapping(mask, mapping, ignore_label, unmapped, fn)
    keys = np.array(sorted(int(k) for k in mapping), np.int64)
    values = np.array([int(mapping[int(k)]) for k in keys], np.int32)
    flat = tf.reshape(mask, [-1])
    found, mapped = _lookup(flat, keys, values)
    valid = found
    if ignore_label is not None:
        valid = found | tf.equal(flat, ignore_label)
        mapped = tf.where(found, mapped, ignore_label)
    if unmapped == "error":
        accepted = sorted(set(keys.tolist()) | ({ignore_label} - {None}))
        bad = tf.unique(tf.boolean_mask(flat, tf.logical_not(valid)))[0][:10]
        check = tf.debugging.Assert(
            tf.reduce_all(valid),
            [
                f"{fn}: `mask` holds values that are not keys of `mapping` (accepted values: "
                f"{accepted}); pass unmapped='ignore' with an `ignore_label` to ignore them. "
                "Offending values (up to 10):",
                bad,
            ],
            summarize=10,
        )
        with tf.control_dependencies([check]):
            mapped = tf.identity(mapped)
    out = tf.reshape(mapped, tf.shape(mask))
    out.set_shape(mask.shape)
    return out


def check_labels(mask, num_classes, ignore_label=None, *, source="mask"):
    """`mask` after an assertion that it holds only class ids 0..num_classes-1 or
    `ignore_label`.

    A compiled loss cannot raise on other values and would skip their pixels, so data
    pipelines check here, where the file is still known.

    Args:
        mask: integer or float tensor of any shape.
        num_classes: int, the class count (2 for a binary, 1-channel model).
        ignore_label: optional int, a value that is not a class.
        source: str or scalar string tensor, what `mask` is, for the message (e.g.
            "mask a.png").

    Returns:
        `mask`, unchanged.

    Raises:
        tf.errors.InvalidArgumentError: (eagerly, or when the op runs in a graph) `mask`
            holds other values; the message gives `source` and up to 10 of them.
    """
    fn = "check_labels"
    check_int(num_classes, "num_classes", minimum=1, context=fn)
    check_int(ignore_label, "ignore_label", allow_none=True, context=fn, type_error=True)
    mask = tf.convert_to_tensor(mask)
    flat = tf.reshape(mask, [-1])
    ignored = None if ignore_label is None else tf.equal(flat, tf.cast(ignore_label, flat.dtype))
    # The common case costs two reductions: the smallest and largest value that is not the
    # ignore label must lie in 0..num_classes-1 (an empty mask passes).
    labels = flat if ignored is None else tf.where(ignored, tf.zeros_like(flat), flat)
    inside = (tf.reduce_min(labels) >= 0) & (tf.reduce_max(labels) <= num_classes - 1)
    ignore = "" if ignore_label is None else f" and the ignore label {ignore_label}"
    message = tf.strings.join(
        [
            source,
            f" holds values other than the class ids 0..{num_classes - 1}{ignore} (after any "
            "class map), whose pixels a loss would skip; values (up to 10):",
        ]
    )

    def passed():
        return tf.identity(mask)

    def failed():
        valid = (flat >= 0) & (flat <= num_classes - 1)
        if ignored is not None:
            valid |= ignored
        bad = tf.unique(tf.boolean_mask(flat, tf.logical_not(valid)))[0][:10]
        assertion = tf.debugging.Assert(False, [message, bad], summarize=10)
        with tf.control_dependencies([assertion]):
            return tf.identity(mask)

    return tf.cond(inside, passed, failed)
