"""COCO instance annotations (polygons and RLE) to `tf.data` instance targets, no pycocotools.

* `rle_encode` / `rle_decode`: COCO run-length encoding in numpy, identical to
  ``pycocotools.mask.encode`` / ``decode``: counts of alternating 0/1 runs (starting with
  0s) over the mask in column-major (Fortran) order, and the compressed string form (LEB128
  like, 5 bits per character from "0"; from the fourth count on, each is stored as the
  difference to the count two before).
* `polygon_to_rle` / `polygon_to_mask`: a port of pycocotools' ``rleFrPoly`` (vertices
  upsampled by 5 and rounded as it does, boundary crossings per column) and of the union of
  ``merge``, so masks equal ``decode(merge(frPyObjects(polygons, h, w)))`` exactly.
* `read_coco`: a COCO instances JSON to a `tf.data.Dataset` of per-image instance targets
  (layout of `kerasseg.data.instances`). Every annotation becomes uncompressed RLE counts
  when the file is read; masks are decoded lazily from the counts by TensorFlow ops in a
  parallel ``map``.
* `label_image_to_coco`: annotation dicts (compressed RLE) from an instance label image.
"""

import dataclasses
import json
import numbers
import pathlib

import numpy as np
import tensorflow as tf

from kerasseg.data.instances import boxes_from_masks
from kerasseg.ops.checks import check_int, is_int

__all__ = [
    "CocoInfo",
    "label_image_to_coco",
    "masks_from_counts",
    "polygon_to_mask",
    "polygon_to_rle",
    "read_coco",
    "rle_decode",
    "rle_encode",
    "rle_to_counts",
]

_INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------- RLE codec


def _counts_to_string(counts):
    """pycocotools' ``rleToString``: uncompressed counts -> compressed str."""
    chars = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as C's on a negative long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def _string_to_counts(string, where="rle_decode"):
    """pycocotools' ``rleFrString``: compressed str/bytes -> int64 counts."""
    if isinstance(string, str):
        try:
            string = string.encode("ascii")
        except UnicodeEncodeError as error:
            raise ValueError(f"{where}: compressed RLE counts must be ASCII; {error}.") from None
    codes = np.frombuffer(string, np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, np.int64)
    if np.any((codes < 0) | (codes > 63)):
        raise ValueError(
            f"{where}: compressed RLE counts may only hold the characters '0'..'o' "
            f"(ASCII 48..111); got {string[:40]!r}."
        )
    more = (codes & 0x20) != 0
    if more[-1]:
        raise ValueError(f"{where}: compressed RLE counts end in the middle of a number.")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 12:
        raise ValueError(f"{where}: compressed RLE counts hold a number of over 60 bits.")
    digit = np.arange(codes.size) - np.repeat(starts, lengths)
    values = np.add.reduceat((codes & 0x1F) << (5 * digit), starts)
    negative = (codes[ends] & 0x10) != 0
    values = values - np.where(negative, np.left_shift(1, 5 * lengths), 0)
    counts = values.copy()
    counts[1::2] = np.cumsum(values[1::2])  # counts[i] += counts[i - 2] for i > 2
    counts[2::2] = np.cumsum(values[2::2])
    return counts


def _check_size(size, where):
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(is_int(v) and v >= 0 for v in size)
    ):
        raise ValueError(f"{where}: RLE 'size' must be [height, width] of ints >= 0; got {size!r}.")
    return int(size[0]), int(size[1])


def rle_to_counts(rle, *, where="rle_to_counts"):
    """Uncompressed counts of a COCO RLE, checked.

    Args:
        rle: dict ``{"size": [h, w], "counts": ...}``; counts a compressed str or bytes, or
            an uncompressed list/array of ints >= 0.
        where: the prefix of error messages (the caller).

    Returns:
        ((h, w), int64 counts) with ``sum(counts) == h * w``.

    Raises:
        ValueError: `rle` is malformed or its counts do not sum to h * w.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        got = sorted(rle) if isinstance(rle, dict) else type(rle).__name__
        raise ValueError(f"{where}: an RLE must be a dict with 'size' and 'counts'; got {got}.")
    height, width = _check_size(rle["size"], where)
    raw = rle["counts"]
    if isinstance(raw, (str, bytes)):
        counts = _string_to_counts(raw, where)
    else:
        counts = np.asarray(raw)
        if counts.ndim != 1 or (counts.size and not np.issubdtype(counts.dtype, np.integer)):
            raise ValueError(
                f"{where}: RLE 'counts' must be a compressed str/bytes or a flat list of ints; "
                f"got {type(raw).__name__} of shape {counts.shape} and dtype {counts.dtype}."
            )
        counts = counts.astype(np.int64)
    if np.any(counts < 0):
        raise ValueError(f"{where}: RLE counts must be >= 0; got {counts[counts < 0][:5]}.")
    if counts.sum() != height * width:
        raise ValueError(
            f"{where}: RLE counts sum to {int(counts.sum())} pixels, but 'size' {[height, width]} "
            f"has {height * width}."
        )
    return (height, width), counts


def _canonical_counts(flat):
    """Counts of a flat bool array: runs of 0s and 1s alternating, starting with 0s."""
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat.size and flat[0]:
        counts = np.concatenate([[0], counts])
    return counts.astype(np.int64)


def _check_mask(mask, fn):
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"{fn}: `mask` must have shape (H, W) or (H, W, 1); got {mask.shape}.")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise TypeError(f"{fn}: `mask` must be bool or integer 0/1; got dtype {mask.dtype}.")
    return mask != 0


def rle_encode(mask):
    """COCO RLE of a binary mask, equal to ``pycocotools.mask.encode`` (counts as str).

    Args:
        mask: (H, W) or (H, W, 1) bool or integer array; nonzero is foreground.

    Returns:
        ``{"size": [H, W], "counts": str}`` (compressed, as stored in COCO JSON files).
    """
    mask = _check_mask(mask, "rle_encode")
    counts = _canonical_counts(mask.ravel(order="F"))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _counts_to_string(counts)}


def _counts_to_mask(counts, height, width):
    values = np.arange(counts.size, dtype=np.uint8) & 1
    return np.repeat(values, counts).reshape(width, height).T


def rle_decode(rle):
    """Binary mask of a COCO RLE, equal to ``pycocotools.mask.decode``.

    Args:
        rle: dict ``{"size": [h, w], "counts": str | bytes | list of ints}``.

    Returns:
        uint8 (h, w) array of 0/1.
    """
    (height, width), counts = rle_to_counts(rle, where="rle_decode")
    return np.ascontiguousarray(_counts_to_mask(counts, height, width))


# --------------------------------------------------------------------------- polygons


def _polygon_counts(xy, height, width):
    """pycocotools' ``rleFrPoly`` for one polygon (flat x, y list) -> int64 counts."""
    scale = 5.0
    x = np.trunc(scale * xy[0::2] + 0.5).astype(np.int64)  # C's (int) truncates
    y = np.trunc(scale * xy[1::2] + 0.5).astype(np.int64)
    # Densely sampled boundary of the upsampled polygon, edge by edge, in vertex order.
    xs, xe = x, np.roll(x, -1)
    ys, ye = y, np.roll(y, -1)
    dx, dy = np.abs(xe - xs), np.abs(ys - ye)
    along_x = dx >= dy
    flip = (along_x & (xs > xe)) | (~along_x & (ys > ye))
    xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
    ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
    steps = np.maximum(dx, dy)
    # C divides 0 by 0 for a repeated vertex; that point's v is never used, so 0 will do.
    slope = np.where(along_x, (ye - ys) / np.maximum(dx, 1), (xe - xs) / np.maximum(dy, 1)).astype(
        np.float64
    )
    edge = np.repeat(np.arange(xy.size // 2), steps + 1)
    d = np.arange(edge.size) - np.repeat(np.cumsum(steps + 1) - (steps + 1), steps + 1)
    t = np.where(flip[edge], steps[edge] - d, d)
    s, xs, ys, along = slope[edge], xs[edge], ys[edge], along_x[edge]
    u = np.where(along, t + xs, np.trunc(xs + s * t + 0.5).astype(np.int64))
    v = np.where(along, np.trunc(ys + s * t + 0.5).astype(np.int64), t + ys)
    # Points where the boundary crosses a column centre of the original grid, downsampled.
    cross = u[1:] != u[:-1]
    u1, u0, v1, v0 = u[1:][cross], u[:-1][cross], v[1:][cross], v[:-1][cross]
    xd = (np.where(u1 < u0, u1, u1 - 1).astype(np.float64) + 0.5) / scale - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    yd = (np.where(v1 < v0, v1, v0).astype(np.float64) + 0.5) / scale - 0.5
    yd = np.ceil(np.clip(yd, 0, height))
    positions = xd[keep].astype(np.int64) * height + yd[keep].astype(np.int64)
    # Each crossing toggles the mask; pycocotools' run merging amounts to keeping the
    # positions crossed an odd number of times (the end h * w always closes the last run).
    area = height * width
    positions, times = np.unique(positions, return_counts=True)
    toggles = positions[(times % 2 == 1) & (positions < area)]
    return np.diff(np.concatenate([[0], toggles, [area]])).astype(np.int64)


def _union_counts(all_counts, area):
    """Counts of the union of masks given by counts (pycocotools ``merge``)."""
    if len(all_counts) == 1:
        return all_counts[0]
    starts, ends = [], []
    for counts in all_counts:
        bounds = np.cumsum(counts)
        starts.append(bounds[0::2][: counts.size // 2])  # runs of 1s: [bounds[i], bounds[i+1])
        ends.append(bounds[1::2])
    starts, ends = np.concatenate(starts), np.concatenate(ends)
    events = np.concatenate([starts, ends])
    delta = np.concatenate([np.ones_like(starts), -np.ones_like(ends)])
    positions, inverse = np.unique(events, return_inverse=True)
    covered = np.cumsum(np.bincount(inverse, weights=delta, minlength=positions.size)) > 0
    changes = covered != np.concatenate([[False], covered[:-1]])
    toggles = positions[changes & (positions < area)]
    return np.diff(np.concatenate([[0], toggles, [area]])).astype(np.int64)


def _parse_polygons(polygons, where):
    """A COCO polygon list (or one flat polygon) -> list of float64 (2k,) arrays."""
    if isinstance(polygons, np.ndarray):
        polygons = polygons.tolist()
    if not isinstance(polygons, (list, tuple)) or not polygons:
        raise ValueError(
            f"{where}: polygons must be a non-empty list of [x1, y1, x2, y2, ...] lists (or "
            f"one such list); got {polygons!r:.80}."
        )
    if all(isinstance(v, numbers.Real) for v in polygons):
        polygons = [polygons]
    parsed = []
    for i, polygon in enumerate(polygons):
        try:
            xy = np.asarray(polygon, dtype=np.float64)
        except (TypeError, ValueError):
            xy = None
        if xy is None or xy.ndim != 1 or xy.size < 6 or xy.size % 2:
            raise ValueError(
                f"{where}: polygon {i} must be a flat list [x1, y1, x2, y2, ...] of at least 3 "
                f"points (an even number >= 6 of values); got {polygon!r:.80}."
            )
        if not np.all(np.isfinite(xy)):
            raise ValueError(f"{where}: polygon {i} has non-finite coordinates.")
        parsed.append(xy)
    return parsed


def _check_image_size(height, width, fn):
    if not (is_int(height) and is_int(width) and height >= 0 and width >= 0):
        raise ValueError(
            f"{fn}: `height` and `width` must be ints >= 0; got {height!r}, {width!r}."
        )
    return int(height), int(width)


def _polygons_counts(polygons, height, width, where):
    parsed = _parse_polygons(polygons, where)
    counts = [_polygon_counts(xy, height, width) for xy in parsed]
    return _union_counts(counts, height * width)


def polygon_to_rle(polygons, height, width):
    """COCO RLE (compressed) of the union of polygons, as pycocotools computes it.

    Args:
        polygons: list of [x1, y1, x2, y2, ...] lists (COCO "segmentation"), or one such
            list; x is the column, y the row, in pixels. Overlapping polygons are united.
        height: int, the image height.
        width: int, the image width.

    Returns:
        ``{"size": [height, width], "counts": str}``, equal to pycocotools'
        ``merge(frPyObjects(polygons, height, width))``.
    """
    height, width = _check_image_size(height, width, "polygon_to_rle")
    counts = _polygons_counts(polygons, height, width, "polygon_to_rle")
    return {"size": [height, width], "counts": _counts_to_string(counts)}


def polygon_to_mask(polygons, height, width):
    """uint8 (height, width) mask of the union of polygons, equal to pycocotools'.

    Same as ``rle_decode(polygon_to_rle(polygons, height, width))``; see `polygon_to_rle`.
    """
    height, width = _check_image_size(height, width, "polygon_to_mask")
    counts = _polygons_counts(polygons, height, width, "polygon_to_mask")
    return np.ascontiguousarray(_counts_to_mask(counts, height, width))


# --------------------------------------------------------------------------- graph decode


def masks_from_counts(counts, height, width):
    """Decode uncompressed RLE counts to masks with TensorFlow ops (graph compatible).

    Args:
        counts: `tf.RaggedTensor` (N, None) of ints, one row of COCO counts per mask
            (column-major runs, starting with 0s); each row must sum to ``height * width``.
        height: scalar int tensor or int.
        width: scalar int tensor or int.

    Returns:
        uint8 (N, height, width) 0/1 masks.
    """
    if not isinstance(counts, tf.RaggedTensor) or counts.shape.rank != 2:
        raise TypeError(
            f"masks_from_counts: `counts` must be a 2-D tf.RaggedTensor (N, None); got "
            f"{type(counts).__name__} of shape {getattr(counts, 'shape', None)}."
        )
    height = tf.cast(height, tf.int64)
    width = tf.cast(width, tf.int64)
    area = height * width
    values = tf.cast(counts.flat_values, tf.int64)
    check = tf.debugging.assert_equal(
        tf.reduce_sum(tf.cast(counts, tf.int64), axis=1),
        area,
        message="masks_from_counts: a row of RLE counts does not sum to height * width",
    )
    with tf.control_dependencies([check]):
        values = tf.identity(values)
    row_starts = tf.cast(counts.row_starts(), tf.int64)
    rowids = tf.cast(counts.value_rowids(), tf.int64)
    position = tf.range(tf.size(values, out_type=tf.int64)) - tf.gather(row_starts, rowids)
    ends = tf.cumsum(values)  # rows sum to `area`, so row n starts at pixel n * area
    ones = tf.equal(position % 2, 1)
    run_ends = tf.boolean_mask(ends, ones)
    run_starts = run_ends - tf.boolean_mask(values, ones)
    pixel = tf.ragged.range(run_starts, run_ends).flat_values  # column-major, per mask
    within = pixel % area
    target = (pixel - within) + (within % height) * width + within // height  # row-major
    n = tf.cast(counts.nrows(), tf.int64)
    masks = tf.scatter_nd(target[:, None], tf.ones_like(target, tf.uint8), [n * area])
    return tf.reshape(masks, tf.stack([n, height, width]))


# --------------------------------------------------------------------------- COCO files


@dataclasses.dataclass(frozen=True)
class CocoInfo:
    """What `read_coco` read: class names and the category mapping.

    Attributes:
        class_names: tuple; ``class_names[c]`` names class id c; ``class_names[0]`` is
            "background".
        category_to_class: dict {COCO category id: class id 1..K}.
        class_to_category: dict {class id: COCO category id}.
        image_ids: tuple of the image ids in dataset order (the file's order of "images").
        num_annotations: annotations in the dataset (crowd ones included).
        num_crowd: of those, ``iscrowd`` ones.
        num_skipped: annotations left out because their category is not in `category_ids`.
    """

    class_names: tuple
    category_to_class: dict
    class_to_category: dict
    image_ids: tuple
    num_annotations: int
    num_crowd: int
    num_skipped: int

    @property
    def num_classes(self):
        """Number of classes including background (K + 1), as Mask R-CNN heads count them."""
        return len(self.class_names)


def _require(record, keys, what, path):
    if not isinstance(record, dict):
        raise ValueError(f"read_coco: {path}: {what} must be a JSON object; got {record!r:.80}.")
    missing = [key for key in keys if key not in record]
    if missing:
        raise KeyError(
            f"read_coco: {path}: {what} lacks the key(s) {missing} (has {sorted(record)}); "
            f"required: {list(keys)}."
        )


def _segmentation_counts(segmentation, height, width, where):
    """int64 counts of an annotation's "segmentation" (polygons, RLE or compressed RLE)."""
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if isinstance(size, (list, tuple)) and list(size) != [height, width]:
            raise ValueError(
                f"{where}: the RLE mask size {list(size)} differs from the image's "
                f"[height, width] = {[height, width]}."
            )
        return rle_to_counts(segmentation, where=where)[1]
    if isinstance(segmentation, list):
        return _polygons_counts(segmentation, height, width, where)
    raise ValueError(
        f"{where}: 'segmentation' must be a polygon list or an RLE dict; got "
        f"{type(segmentation).__name__}."
    )


def read_coco(annotation_file, image_dir=None, *, category_ids=None):
    """A COCO instances JSON file as a `tf.data.Dataset` of per-image instance targets.

    The file is parsed and checked once; every annotation's mask is converted to
    uncompressed RLE counts then (polygons rasterised exactly as pycocotools does), and the
    masks are decoded from the counts lazily by TensorFlow ops in a parallel ``map``.
    Boxes are recomputed from the decoded masks (`kerasseg.data.instances` corners); the
    COCO "bbox" field (polygon extents in floats) is not used. Crowd annotations
    (``iscrowd`` 1, usually RLE) are kept as instances flagged in ``"is_crowd"``: treat them
    as ignore regions (neither positives nor negatives), as COCO evaluation does. Images
    without annotations are kept (N = 0). Annotations keep the file's order.

    Args:
        annotation_file: path of the JSON file (keys "images", "annotations",
            "categories").
        image_dir: folder of the images; ``"image_path"`` is ``image_dir / file_name``
            (just ``file_name`` when None).
        category_ids: optional sequence of COCO category ids to keep, mapped to class ids
            1..K in the given order; the annotations of other categories are left out
            (counted in ``info.num_skipped``). Default: every category, in increasing id
            order.

    Returns:
        (dataset, info): elements ``{"image_path": string, "image_id": int64, "boxes":
        float32 (N, 4), "class_ids": int32 (N,), "masks": uint8 (N, H, W), "is_crowd": bool
        (N,)}``, and a `CocoInfo`.

    Raises:
        KeyError: missing keys.
        ValueError: annotations of unknown image or category ids, masks whose size differs
            from their image's, malformed polygons or RLE, duplicate ids.
    """
    path = pathlib.Path(annotation_file)
    with open(path, encoding="utf-8") as file:
        data = json.load(file)
    _require(data, ("images", "annotations", "categories"), "the top level", path)
    categories = _read_categories(data["categories"], path)
    selected = _select_categories(categories, category_ids)
    category_to_class = {category: i + 1 for i, category in enumerate(selected)}
    images = _read_images(data["images"], path)
    skipped = _add_annotations(data["annotations"], path, images, categories, category_to_class)
    entries = list(images.values())
    dataset = tf.data.Dataset.from_tensor_slices(_image_tensors(entries, image_dir)).map(
        _decode_element, num_parallel_calls=tf.data.AUTOTUNE
    )
    info = CocoInfo(
        class_names=("background",) + tuple(categories[c] for c in selected),
        category_to_class=category_to_class,
        class_to_category={v: k for k, v in category_to_class.items()},
        image_ids=tuple(images),
        num_annotations=sum(len(entry["counts"]) for entry in entries),
        num_crowd=sum(sum(entry["crowd"]) for entry in entries),
        num_skipped=skipped,
    )
    return dataset, info


def _read_categories(records, path):
    """{category id: name} of the file's "categories"."""
    categories = {}
    for category in records:
        _require(category, ("id", "name"), "a category", path)
        if category["id"] in categories:
            raise ValueError(f"read_coco: {path}: category id {category['id']!r} appears twice.")
        categories[category["id"]] = str(category["name"])
    return categories


def _select_categories(categories, category_ids):
    """The category ids kept, in class order: `category_ids`, checked, or all in id order."""
    if category_ids is None:
        return sorted(categories)
    selected = list(category_ids)
    unknown = [c for c in selected if c not in categories]
    if unknown or len(set(selected)) != len(selected):
        raise ValueError(
            f"read_coco: `category_ids` must be distinct ids of the file's categories "
            f"{sorted(categories)}; got {selected}."
        )
    return selected


def _read_images(records, path):
    """{image id: entry} in the file's order; each entry holds the image record and the
    (empty) lists that `_add_annotations` fills: "counts", "class_ids" and "crowd"."""
    images = {}
    for image in records:
        _require(image, ("id", "file_name", "height", "width"), "an image", path)
        image_id = image["id"]
        if not is_int(image_id):
            raise ValueError(f"read_coco: {path}: image ids must be ints; got {image_id!r}.")
        if image_id in images:
            raise ValueError(f"read_coco: {path}: image id {image_id!r} appears twice.")
        height, width = image["height"], image["width"]
        if not (is_int(height) and is_int(width) and height > 0 and width > 0):
            raise ValueError(
                f"read_coco: {path}: image id {image_id!r} has height/width {height!r}/{width!r}; "
                "positive ints are required."
            )
        if height * width > _INT32_MAX:
            raise ValueError(
                f"read_coco: {path}: image id {image_id!r} has {height * width} pixels; at most "
                f"{_INT32_MAX} are supported."
            )
        images[image_id] = {"image": image, "counts": [], "class_ids": [], "crowd": []}
    return images


def _add_annotations(records, path, images, categories, category_to_class):
    """Add each annotation's counts, class id and crowd flag to its image's entry; returns
    how many were left out because their category is not selected."""
    skipped = 0
    for index, annotation in enumerate(records):
        _require(annotation, ("image_id", "category_id", "segmentation"), "an annotation", path)
        name = (
            f"annotation id {annotation['id']!r}" if "id" in annotation else f"annotation {index}"
        )
        image_id, category = annotation["image_id"], annotation["category_id"]
        if image_id not in images:
            raise ValueError(f"read_coco: {path}: {name} refers to unknown image id {image_id!r}.")
        if category not in categories:
            raise ValueError(
                f"read_coco: {path}: {name} refers to unknown category id {category!r} "
                f"(categories: {sorted(categories)})."
            )
        if category not in category_to_class:
            skipped += 1
            continue
        crowd = annotation.get("iscrowd", 0)
        if crowd not in (0, 1):
            raise ValueError(f"read_coco: {path}: {name} has 'iscrowd' {crowd!r}; 0 or 1 expected.")
        entry = images[image_id]
        height, width = entry["image"]["height"], entry["image"]["width"]
        where = f"read_coco: {path}: {name} (image id {image_id!r})"
        entry["counts"].append(
            _segmentation_counts(annotation["segmentation"], height, width, where)
        )
        entry["class_ids"].append(category_to_class[category])
        entry["crowd"].append(bool(crowd))
    return skipped


def _image_tensors(entries, image_dir):
    """The tensors, one row per image entry, that `_decode_element` turns into targets."""
    image_lengths = tf.constant([len(entry["counts"]) for entry in entries], tf.int64)
    all_counts = [counts for entry in entries for counts in entry["counts"]]
    count_lengths = [counts.size for counts in all_counts]
    values = np.concatenate(all_counts) if all_counts else np.zeros(0, np.int64)
    file_names = [str(entry["image"]["file_name"]) for entry in entries]
    if image_dir is not None:
        file_names = [str(pathlib.Path(image_dir) / name) for name in file_names]
    return {
        "image_path": tf.constant(file_names, tf.string),
        "image_id": tf.constant([int(entry["image"]["id"]) for entry in entries], tf.int64),
        "height": tf.constant([entry["image"]["height"] for entry in entries], tf.int32),
        "width": tf.constant([entry["image"]["width"] for entry in entries], tf.int32),
        "class_ids": tf.RaggedTensor.from_row_lengths(
            tf.constant([c for e in entries for c in e["class_ids"]], tf.int32), image_lengths
        ),
        "is_crowd": tf.RaggedTensor.from_row_lengths(
            tf.constant([c for e in entries for c in e["crowd"]], tf.bool), image_lengths
        ),
        "counts": tf.RaggedTensor.from_nested_row_lengths(
            tf.constant(values.astype(np.int32), tf.int32),
            [image_lengths, tf.constant(count_lengths, tf.int64)],
        ),
    }


def _decode_element(element):
    masks = masks_from_counts(element["counts"], element["height"], element["width"])
    return {
        "image_path": element["image_path"],
        "image_id": element["image_id"],
        "boxes": boxes_from_masks(masks),
        "class_ids": tf.reshape(element["class_ids"], [-1]),
        "masks": masks,
        "is_crowd": tf.reshape(element["is_crowd"], [-1]),
    }


def label_image_to_coco(labels, image_id, *, category_id=1, first_id=1, background=0):
    """COCO annotation dicts (compressed RLE) for the instances of a label image.

    Args:
        labels: (H, W) or (H, W, 1) integer array of instance ids.
        image_id: the COCO image id the annotations refer to.
        category_id: COCO category id of every instance.
        first_id: annotation id of the first instance; the next ones count up.
        background: the id that is not an instance.

    Returns:
        list of ``{"id", "image_id", "category_id", "segmentation": RLE, "area", "bbox": [x,
        y, w, h], "iscrowd": 0}``, one per distinct non-background id in increasing id order.
    """
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"label_image_to_coco: `labels` must be an (H, W) integer array; got shape "
            f"{labels.shape} and dtype {labels.dtype}."
        )
    check_int(first_id, "first_id", context="label_image_to_coco", type_error=True)
    annotations = []
    ids = np.unique(labels)
    for i, label in enumerate(ids[ids != background]):
        mask = labels == label
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        annotations.append(
            {
                "id": int(first_id) + i,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": rle_encode(mask),
                "area": int(mask.sum()),
                "bbox": [
                    float(cols[0]),
                    float(rows[0]),
                    float(cols[-1] + 1 - cols[0]),
                    float(rows[-1] + 1 - rows[0]),
                ],
                "iscrowd": 0,
            }
        )
    return annotations
