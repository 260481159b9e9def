"""Instance-segmentation targets: label images and binary masks to per-instance masks and boxes.

Instance-target layout (one image; what the Mask R-CNN code consumes)
---------------------------------------------------------------------
A dict of tensors, N >= 0 instances of an image of H x W pixels:

* ``"boxes"``: float32 (N, 4), ``[y1, x1, y2, x2]`` in pixel coordinates of the image,
  as corners: pixel (r, c) covers [r, r + 1) x [c, c + 1), so a box is the extent of the
  mask ``[min row, min col, max row + 1, max col + 1]`` and a one-pixel instance at (r, c)
  has the box ``[r, c, r + 1, c + 1]``. An empty mask has the all-zero box.
* ``"class_ids"``: int32 (N,), >= 1 (0 is background, never an instance).
* ``"masks"``: uint8 (N, H, W) full-image binary masks (0/1). Instances may overlap.
* optional ``"is_crowd"``: bool (N,) (COCO ``iscrowd``; see `kerasseg.data.coco`): crowd
  regions are ignore regions for training and evaluation, never positives.

N may be 0: shapes (0, 4), (0,), (0, H, W). Instances are never dropped silently: only
`drop_empty_instances` removes instances (those whose mask became empty, e.g. after a crop).

Batches use the padded form of `to_padded` (the main one): every per-instance key padded to
``max_instances`` rows, ``"class_ids"`` with -1 (the padding marker), ``"boxes"`` and
``"masks"`` with 0, ``"is_crowd"`` with False, plus ``"num_instances"`` int32 () = N. Then
``dataset.map(lambda t: to_padded(t, M)).batch(B)`` (images of one size) gives (B, M, ...)
tensors and (B,) ``num_instances``; `to_padded` refuses an image with more than M instances
instead of truncating. A ragged form is possible too (``dataset.ragged_batch(B)`` gives
`tf.RaggedTensor` boxes/class_ids/masks with N varying per image), but the padded form is
the one the models expect.

Geometric augmentation: `masks_to_channels` turns (N, H, W) masks into (H, W, N) int32 mask
channels for the joint image/mask transforms of `kerasseg.data.transforms` (nearest
neighbour); bring them back with `channels_to_masks`, then recompute boxes with
`boxes_from_masks` and remove emptied instances with `drop_empty_instances`.

Every function here is TensorFlow ops only: it runs eagerly and inside `tf.data` maps
(graph mode), also with unknown (None) height and width.
"""

import tensorflow as tf

from kerasseg.ops.checks import check_int, check_keys, is_int

__all__ = [
    "INSTANCE_KEYS",
    "PADDING_VALUES",
    "boxes_from_masks",
    "channels_to_masks",
    "connected_components",
    "drop_empty_instances",
    "from_padded",
    "instances_from_binary_mask",
    "instances_from_label_image",
    "label_image_from_instances",
    "masks_to_channels",
    "to_padded",
]

# Keys whose leading dimension is the instance axis, and their padding values.
INSTANCE_KEYS = ("boxes", "class_ids", "masks", "is_crowd")
PADDING_VALUES = {"boxes": 0.0, "class_ids": -1, "masks": 0, "is_crowd": False}

_INTEGER_DTYPES = (
    tf.int8,
    tf.int16,
    tf.int32,
    tf.int64,
    tf.uint8,
    tf.uint16,
    tf.uint32,
    tf.uint64,
)


# --------------------------------------------------------------------------- checks


def _check_class_id(class_id, fn):
    if not is_int(class_id) or class_id < 1:
        raise ValueError(
            f"{fn}: `class_id` must be a Python int >= 1 (0 is background); got {class_id!r}."
        )
    return int(class_id)


def _image_2d(image, name, fn, dtypes, accepted):
    """(H, W) or (H, W, 1) tensor of one of `dtypes` -> (H, W)."""
    image = tf.convert_to_tensor(image)
    if image.dtype not in dtypes:
        raise TypeError(f"{fn}: `{name}` must be {accepted}; got dtype {image.dtype.name}.")
    rank = image.shape.rank
    if rank == 3 and image.shape[-1] == 1:
        return image[..., 0]
    if rank != 2:
        raise ValueError(
            f"{fn}: `{name}` must have shape (H, W) or (H, W, 1); got shape {image.shape}."
        )
    return image


def _masks_3d(masks, fn, name="masks"):
    masks = tf.convert_to_tensor(masks)
    if masks.shape.rank != 3:
        raise ValueError(f"{fn}: `{name}` must have shape (N, H, W); got shape {masks.shape}.")
    if masks.dtype != tf.bool and masks.dtype not in _INTEGER_DTYPES:
        raise TypeError(
            f"{fn}: `{name}` must be bool or integer 0/1 masks; got dtype {masks.dtype.name}."
        )
    return masks


def _check_targets(targets, fn):
    described = (
        "instance targets: 'boxes' (N, 4), 'class_ids' (N,), 'masks' (N, H, W) and optionally "
        "'is_crowd' (N,)"
    )
    check_keys(targets, "`targets`", ("class_ids",), described, fn)


# --------------------------------------------------------------------------- targets


def boxes_from_masks(masks):
    """Boxes of binary masks.

    Args:
        masks: (N, H, W) bool or integer tensor; nonzero is foreground.

    Returns:
        float32 (N, 4) ``[y1, x1, y2, x2]`` corners (``max + 1`` on the far side); an empty
        mask gives ``[0, 0, 0, 0]``.
    """
    masks = _masks_3d(masks, "boxes_from_masks")
    foreground = tf.not_equal(masks, tf.zeros((), masks.dtype))
    rows = tf.reduce_any(foreground, axis=2)  # (N, H)
    cols = tf.reduce_any(foreground, axis=1)  # (N, W)

    def extent(hits):
        size = tf.shape(hits, out_type=tf.int32)[1]
        index = tf.range(size, dtype=tf.int32)[None, :]
        first = tf.reduce_min(tf.where(hits, index, size), axis=1)
        last = tf.reduce_max(tf.where(hits, index + 1, 0), axis=1)
        nonempty = tf.reduce_any(hits, axis=1)
        return tf.where(nonempty, first, 0), tf.where(nonempty, last, 0)

    y1, y2 = extent(rows)
    x1, x2 = extent(cols)
    return tf.cast(tf.stack([y1, x1, y2, x2], axis=1), tf.float32)


def _masks_from_index(index, count):
    """(count, H, W) uint8 masks of an index image, by scattering its foreground pixels."""
    shape = tf.shape(index, out_type=tf.int64)
    flat = tf.reshape(index, [-1])
    pixels = tf.where(tf.greater_equal(flat, 0))[:, 0]
    area = shape[0] * shape[1]
    target = tf.cast(tf.gather(flat, pixels), tf.int64) * area + pixels
    masks = tf.scatter_nd(
        target[:, None], tf.ones_like(target, tf.uint8), [tf.cast(count, tf.int64) * area]
    )
    masks = tf.reshape(masks, tf.stack([tf.cast(count, tf.int64), shape[0], shape[1]]))
    masks.set_shape([None] + index.shape.as_list())  # keep a static H, W
    return masks


def _targets_from_index(index, count, class_id):
    """Targets of the instances of an (H, W) int32 index image: 0..count-1, -1 for none."""
    on = tf.greater_equal(index, 0)
    segments = tf.reshape(tf.where(on, index, count), [-1])  # `count` collects the rest
    shape = tf.shape(index, out_type=tf.int32)
    rows = tf.reshape(tf.broadcast_to(tf.range(shape[0])[:, None], shape), [-1])
    cols = tf.reshape(tf.broadcast_to(tf.range(shape[1])[None, :], shape), [-1])
    # Every instance has at least one pixel, so the segment minima and maxima are real.
    y1 = tf.math.unsorted_segment_min(rows, segments, count + 1)[:count]
    x1 = tf.math.unsorted_segment_min(cols, segments, count + 1)[:count]
    y2 = tf.math.unsorted_segment_max(rows, segments, count + 1)[:count] + 1
    x2 = tf.math.unsorted_segment_max(cols, segments, count + 1)[:count] + 1
    return {
        "boxes": tf.cast(tf.stack([y1, x1, y2, x2], axis=1), tf.float32),
        "class_ids": tf.fill([count], tf.constant(class_id, tf.int32)),
        "masks": _masks_from_index(index, count),
    }


def instances_from_label_image(labels, *, class_id=1, background=0):
    """Instance targets from a label image (one instance per distinct non-background id).

    Args:
        labels: (H, W) or (H, W, 1) integer tensor of instance ids (need not be
            contiguous).
        class_id: int >= 1, the class of every instance.
        background: int, the id that is not an instance.

    Returns:
        dict ``{"boxes", "class_ids", "masks"}`` (module layout), instances ordered by id.
    """
    fn = "instances_from_label_image"
    class_id = _check_class_id(class_id, fn)
    check_int(background, "background", context=fn, type_error=True)
    labels = _image_2d(labels, "labels", fn, _INTEGER_DTYPES, "an integer label image")
    labels = tf.cast(labels, tf.int64)
    ids = tf.sort(tf.unique(tf.reshape(labels, [-1])).y)
    ids = tf.boolean_mask(ids, tf.not_equal(ids, background))
    count = tf.size(ids, out_type=tf.int32)
    index = tf.searchsorted(ids, tf.reshape(labels, [-1]), out_type=tf.int32)
    index = tf.reshape(index, tf.shape(labels))
    index = tf.where(tf.equal(labels, background), -1, index)  # ids holds every other value
    return _targets_from_index(index, count, class_id)


def _check_connectivity(connectivity, fn):
    """4 or 8 (or scikit-image's 1 or 2) as scikit-image's 1 or 2.

    `kerasseg.ops.components.check_connectivity` reads the same numbers, but it takes None
    for full (8-) connectivity, where this function's callers default to 4 and refuse None,
    and it does not name the function in its message.
    """
    aliases = {1: 1, 2: 2, 4: 1, 8: 2}
    if not is_int(connectivity) or connectivity not in aliases:
        raise ValueError(
            f"{fn}: `connectivity` must be 4 (or 1, scikit-image's name) for edge neighbours "
            f"or 8 (or 2) for edge and corner neighbours; got {connectivity!r}."
        )
    return aliases[connectivity]


def connected_components(mask, *, connectivity=4):
    """Connected components of a binary mask, numbered as `skimage.measure.label` does.

    Label equivalence (Kalentev et al. 2011) in a `tf.while_loop`: each foreground pixel
    starts with its raster index; an iteration takes the minimum over the neighbourhood,
    hooks the pixel each label points to onto that minimum (scatter-min) and jumps pointers
    twice, until nothing changes. Every component ends labelled with its first raster
    pixel, so numbering the roots in raster order gives exactly scikit-image's labels.

    Args:
        mask: (H, W) or (H, W, 1) bool or integer tensor; nonzero is foreground.
        connectivity: 4 (edge neighbours; scikit-image's 1) or 8 (also corners; 2).

    Returns:
        int32 (H, W) labels 1..K in raster order of each component's first pixel, 0
        background.

    References:
        O. Kalentev, A. Rai, S. Kemnitz and R. Schneider, "Connected component labeling on a
        2D grid using CUDA", J. Parallel Distrib. Comput. 71(4), 2011.
    """
    fn = "connected_components"
    neighbours = _check_connectivity(connectivity, fn)
    mask = _image_2d(
        mask, "mask", fn, (tf.bool,) + _INTEGER_DTYPES, "a bool or integer mask (nonzero = on)"
    )
    foreground = tf.not_equal(mask, tf.zeros((), mask.dtype))
    shape = tf.shape(foreground, out_type=tf.int32)
    size = shape[0] * shape[1]
    index = tf.reshape(tf.range(size, dtype=tf.int32), shape)
    sentinel = size  # background holds `size`, larger than every raster index
    labels = tf.where(foreground, index, sentinel)

    def gather(table, pointer):
        """table[pointer]; the sentinel pointer gives the sentinel (an extra table entry)."""
        flat = tf.concat([tf.reshape(table, [-1]), [sentinel]], axis=0)
        return tf.gather(flat, pointer)

    def neighbourhood_min(current):
        padded = tf.pad(current, [[1, 1], [1, 1]], constant_values=sentinel)
        if neighbours == 2:
            rows = tf.minimum(tf.minimum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
            best = tf.minimum(tf.minimum(rows[:-2], rows[1:-1]), rows[2:])
        else:
            best = tf.minimum(
                tf.minimum(current, tf.minimum(padded[:-2, 1:-1], padded[2:, 1:-1])),
                tf.minimum(padded[1:-1, :-2], padded[1:-1, 2:]),
            )
        return tf.where(foreground, best, sentinel)

    def body(current, changed):
        best = neighbourhood_min(current)
        # Hooking: the pixel a label points to takes the smallest label seen by its pointers.
        hooked = tf.math.unsorted_segment_min(
            tf.reshape(best, [-1]), tf.reshape(current, [-1]), num_segments=size + 1
        )[:size]
        new = tf.minimum(best, tf.reshape(hooked, shape))
        for _ in range(2):  # pointer jumping
            new = gather(new, new)
        return new, tf.reduce_any(tf.not_equal(new, current))

    labels, _ = tf.while_loop(
        lambda current, changed: changed,
        body,
        (labels, tf.constant(True)),
        maximum_iterations=size,
    )
    roots = tf.logical_and(foreground, tf.equal(labels, index))
    rank = tf.cumsum(tf.reshape(tf.cast(roots, tf.int32), [-1]))
    return tf.reshape(gather(rank, labels), shape) * tf.cast(foreground, tf.int32)


def instances_from_binary_mask(mask, *, connectivity=4, class_id=1):
    """Instance targets from the connected regions of a binary mask (e.g. ISBI interiors).

    Args:
        mask: (H, W) or (H, W, 1) bool or integer tensor; nonzero is foreground.
        connectivity: 4 or 8 (scikit-image's 1 or 2), see `connected_components`.
        class_id: int >= 1, the class of every instance.

    Returns:
        dict ``{"boxes", "class_ids", "masks"}``, instances in scikit-image's label order.
    """
    fn = "instances_from_binary_mask"
    class_id = _check_class_id(class_id, fn)
    labels = connected_components(mask, connectivity=connectivity)
    count = tf.reduce_max(tf.pad(tf.reshape(labels, [-1]), [[0, 1]]))  # 0 when empty
    return _targets_from_index(labels - 1, count, class_id)


def label_image_from_instances(masks):
    """(N, H, W) masks -> (H, W) int32 label image with ids 1..N, later instances on top.

    The inverse of `instances_from_label_image` up to the numbering (for metrics and
    display).
    """
    masks = _masks_3d(masks, "label_image_from_instances")
    n = tf.shape(masks)[0]
    ids = tf.range(1, n + 1, dtype=tf.int32)[:, None, None]
    on = tf.cast(tf.not_equal(masks, tf.zeros((), masks.dtype)), tf.int32)
    return tf.maximum(tf.reduce_max(ids * on, axis=0), 0)  # N = 0: reduce_max gives INT_MIN


# --------------------------------------------------------------------------- editing


def drop_empty_instances(targets):
    """Remove the instances whose mask is empty (e.g. cut off by a crop).

    The one place instances disappear. Filters every per-instance key present
    (`INSTANCE_KEYS`); other keys are returned unchanged. Boxes are not recomputed (call
    `boxes_from_masks` first when the masks moved).

    Args:
        targets: dict in the module layout (unpadded).

    Returns:
        dict with the non-empty instances, in their original order.
    """
    fn = "drop_empty_instances"
    _check_targets(targets, fn)
    if "masks" not in targets:
        raise KeyError(f"{fn}: `targets` must contain 'masks'; got keys {sorted(targets)}.")
    if "num_instances" in targets:
        raise ValueError(
            f"{fn}: `targets` are padded (they have 'num_instances'); call it before "
            "`to_padded`, or on `from_padded(targets)`."
        )
    masks = _masks_3d(targets["masks"], fn, "targets['masks']")
    keep = tf.reduce_any(tf.not_equal(masks, tf.zeros((), masks.dtype)), axis=[1, 2])
    return {
        key: tf.boolean_mask(value, keep) if key in INSTANCE_KEYS else value
        for key, value in targets.items()
    }


def masks_to_channels(masks):
    """(N, H, W) instance masks -> (H, W, N) int32 0/1 mask channels for joint transforms."""
    masks = _masks_3d(masks, "masks_to_channels")
    on = tf.not_equal(masks, tf.zeros((), masks.dtype))
    return tf.transpose(tf.cast(on, tf.int32), [1, 2, 0])


def channels_to_masks(channels):
    """(H, W, N) mask channels -> (N, H, W) uint8 masks.

    A channel value of 1 is foreground; anything else (0, or a fill value such as an ignore
    label written by a "constant" padding transform) is background.
    """
    channels = tf.convert_to_tensor(channels)
    if channels.shape.rank != 3:
        raise ValueError(
            f"channels_to_masks: `channels` must have shape (H, W, N); got {channels.shape}."
        )
    if channels.dtype not in _INTEGER_DTYPES:
        raise TypeError(
            f"channels_to_masks: `channels` must be integer (int32 from `masks_to_channels`); "
            f"got dtype {channels.dtype.name}."
        )
    on = tf.equal(channels, tf.ones((), channels.dtype))
    return tf.transpose(tf.cast(on, tf.uint8), [2, 0, 1])


# --------------------------------------------------------------------------- batching


def to_padded(targets, max_instances):
    """Pad the per-instance keys to `max_instances` rows and add ``"num_instances"``.

    ``"class_ids"`` is padded with -1 (the padding marker), ``"boxes"``/``"masks"`` with 0 and
    ``"is_crowd"`` with False; other keys are returned unchanged. An image with more than
    `max_instances` instances raises `tf.errors.InvalidArgumentError` when the op runs
    (nothing is truncated).

    Args:
        targets: dict in the module layout (unpadded).
        max_instances: int >= 0.

    Returns:
        dict with (max_instances, ...) per-instance tensors and int32 ``"num_instances"``.
    """
    fn = "to_padded"
    _check_targets(targets, fn)
    check_int(max_instances, "max_instances", minimum=0, context=fn)
    if "num_instances" in targets:
        raise ValueError(f"{fn}: `targets` are already padded (they have 'num_instances').")
    n = tf.shape(targets["class_ids"], out_type=tf.int32)[0]
    check = tf.debugging.assert_less_equal(
        n,
        tf.constant(max_instances, tf.int32),
        message=(
            f"{fn}: an image has more instances than max_instances={max_instances}; raise "
            "max_instances (instances are never truncated). Instances, max_instances:"
        ),
    )
    with tf.control_dependencies([check]):
        n = tf.identity(n)
    extra = max_instances - n
    padded = {}
    for key, value in targets.items():
        if key not in INSTANCE_KEYS:
            padded[key] = value
            continue
        value = tf.convert_to_tensor(value)
        if value.shape.rank is None or value.shape.rank < 1:
            raise ValueError(
                f"{fn}: targets[{key!r}] must have a leading instance axis; got shape "
                f"{value.shape}."
            )
        paddings = [[0, extra]] + [[0, 0]] * (value.shape.rank - 1)
        pad_value = tf.constant(PADDING_VALUES[key], value.dtype)
        value = tf.pad(value, paddings, constant_values=pad_value)
        padded[key] = tf.ensure_shape(value, [max_instances] + value.shape.as_list()[1:])
    padded["num_instances"] = n
    return padded


def from_padded(targets):
    """Inverse of `to_padded` for one image: keep the first ``num_instances`` rows."""
    fn = "from_padded"
    _check_targets(targets, fn)
    if "num_instances" not in targets:
        raise KeyError(f"{fn}: `targets` must contain 'num_instances' (from `to_padded`).")
    n = tf.convert_to_tensor(targets["num_instances"])
    if n.shape.rank != 0:
        raise ValueError(
            f"{fn}: expects one image's targets (scalar 'num_instances'); got shape {n.shape}. "
            "Unbatch first."
        )
    return {
        key: value[:n] if key in INSTANCE_KEYS else value
        for key, value in targets.items()
        if key != "num_instances"
    }
