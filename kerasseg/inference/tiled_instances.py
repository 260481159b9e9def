"""Tiled instance prediction: instances of images far larger than a model's input.

    labels = kerasseg.inference.tiled_instances.cell_instances_tiled(probs, tile=512)
    labels, detections = kerasseg.inference.tiled_instances.predict_instances_tiled(
        maskrcnn, image, tile=512, overlap=0.25)

The image is covered by overlapping windows of one shape (`kerasseg.inference.windows.
tile_windows`; the last row and column of windows are flush with the image border). Each
window is predicted on its own, its instances are kept as bounding-box crops (memory grows
with the objects, not with windows times image), and `merge_instances` joins the windows'
instances so that every object is found once: not twice (a duplicate from a neighbouring
window) and not cut (a piece of an object at a window edge).

Merge rule (`merge_instances`):

1. An instance is *cut* when its mask touches an inner edge of its window (an edge inside the
   image, where a neighbouring window continues); otherwise it is *whole*.
2. Two instances of two different, overlapping windows A and B are the same object when they
   have the same class, share at least one pixel, and their masks, compared only on the
   intersection of A and B, have IoU >= `match_iou`. Same-object instances are grouped with
   a union-find (a chain of matches is one group). Instances of one window never match each
   other (the model already separated them).
3. A group with a whole member keeps its best whole member (highest score; ties: the window
   earlier in row-major order, then the instance earlier in its window); its cut members are
   pieces of what is kept. Another whole member is dropped as a duplicate only when it
   matches a kept whole member directly, so two objects chained through one piece that
   overlaps both stay two. A group of cut members only (an object larger than the overlap,
   cut in every window that sees it) becomes the union of its members' masks, with the best
   member's score and class.
4. The kept instances are painted into one label map, higher score on top (ties: a whole
   instance over a united one, then the earlier window), as `kerasseg.inference.instance_map`
   does, and numbered 1..n either by decreasing score (as `predict_instances`) or in raster
   order of each instance's first painted pixel (as `skimage.measure.label`). An instance
   left with no pixel gets no id (0).

This is the slicing of SAHI with StarDist's rule for objects at tile borders: take an object
from a window that sees it whole (StarDist needs the overlap larger than the largest object;
here a larger object is still assembled from its pieces, which SAHI's merging does for
boxes and masks).

Connected components (`cell_instances_tiled` without watershed seeds) are merged exactly: a
window's component that touches no inner edge is a whole component of the image (a path out
of the window passes through an edge pixel), and two windows' components that share a pixel
belong to one component of the image. With `match_iou=0` (any shared pixel) the groups are
therefore exactly the image's components, a kept whole member or the union of the pieces is
exactly the component, and raster numbering equals `skimage.measure.label` of the whole
image, for objects of any size, whenever neighbouring windows overlap by at least one pixel.
A seeded watershed is not local (a basin depends on its neighbours' seeds), so there the
tiled result equals the whole-image one only where each basin and its neighbours fit in the
overlap; `cell_instances_tiled` then matches with IoU 0.5.

References:
    F. C. Akyon, S. O. Altinuc and A. Temizel, "Slicing Aided Hyper Inference and
    Fine-tuning for Small Object Detection", ICIP 2022 (SAHI).
    U. Schmidt, M. Weigert, C. Broaddus and G. Myers, "Cell Detection with Star-convex
    Polygons", MICCAI 2018 (StarDist); M. Weigert, U. Schmidt, R. Haase, K. Sugawara and
    G. Myers, "Star-convex Polyhedra for 3D Object Detection and Segmentation in
    Microscopy", WACV 2020 (`predict_instances_big`, prediction of large images in blocks).
"""

from typing import NamedTuple

import numpy as np

from kerasseg.inference.instances import detections_from_outputs
from kerasseg.inference.semantic import cell_instances
from kerasseg.inference.task import task_of
from kerasseg.inference.windows import Window, tile_windows
from kerasseg.ops.checks import check_int, check_probability, is_number

__all__ = [
    "MergedInstance",
    "WindowInstance",
    "cell_instances_tiled",
    "merge_instances",
    "pieces_from_labels",
    "predict_instances_tiled",
]

NUMBERINGS = ("score", "raster")


class WindowInstance(NamedTuple):
    """One instance found in one window, in the window's pixels.

    Attributes:
        score: its score (1.0 for label maps).
        top, left: the first row and column of `mask` in the window.
        mask: 2-D bool crop of the instance (its bounding box or larger; the merge trims it).
        label: its class id; only instances of one class are matched.
    """

    score: float
    top: int
    left: int
    mask: np.ndarray
    label: int = 1


class MergedInstance(NamedTuple):
    """One instance of `merge_instances`' result, in the image's pixels.

    Attributes:
        id: its id in the label map; 0 when better instances cover all its pixels.
        score: the kept member's score (the best member's for a union).
        label: its class id.
        top, left: the first row and column of `mask` in the image.
        mask: 2-D bool crop, trimmed to the instance's bounding box (before painting; pixels
            painted over by better instances are still in it).
        united: True when it is the union of cut members (no window saw it whole).
        members: ((window, index), ...) of the window instances it stands for (the kept one
            first, then its duplicates and the pieces of its group); `index` is the
            instance's position in that window's list.
    """

    id: int
    score: float
    label: int
    top: int
    left: int
    mask: np.ndarray
    united: bool
    members: tuple


class _Pieces(NamedTuple):
    """The non-empty window instances as flat arrays, in the image's pixels."""

    boxes: np.ndarray  # int64 (n, 4): top, left, bottom, right (half-open)
    scores: np.ndarray  # float64 (n,)
    labels: np.ndarray  # int64 (n,)
    windows: np.ndarray  # int64 (n,): the window's position in `windows`
    indices: np.ndarray  # int64 (n,): the instance's position in its window's list
    cut: np.ndarray  # bool (n,)
    masks: list  # n tight bool crops


def _check_windows(windows, instances, fn):
    if not isinstance(windows, list | tuple) or not all(isinstance(w, Window) for w in windows):
        raise TypeError(
            f"{fn}: `windows` must be a list of `Window`s (kerasseg.inference.windows."
            f"tile_windows); got {type(windows).__name__}."
        )
    if not isinstance(instances, list | tuple) or len(instances) != len(windows):
        count = len(instances) if isinstance(instances, list | tuple) else type(instances).__name__
        raise ValueError(
            f"{fn}: `instances` must be a list with one list of `WindowInstance`s per window "
            f"({len(windows)}); got {count}."
        )


def _check_instance(item, window, where, fn):
    """(score, label, top, left, 2-D bool mask) of one `WindowInstance`, checked."""
    if not isinstance(item, WindowInstance):
        raise TypeError(f"{fn}: {where} must be a `WindowInstance`; got {type(item).__name__}.")
    if not is_number(item.score) or not np.isfinite(item.score):
        raise ValueError(f"{fn}: {where}.score must be a finite number; got {item.score!r}.")
    mask = np.asarray(item.mask)
    if mask.ndim != 2 or mask.dtype != bool:
        raise ValueError(
            f"{fn}: {where}.mask must be a 2-D bool array (a crop of the instance); got "
            f"dtype {mask.dtype} and shape {mask.shape}."
        )
    for name in ("top", "left", "label"):
        check_int(getattr(item, name), f"{where}.{name}", context=fn)
    bottom, right = item.top + mask.shape[0], item.left + mask.shape[1]
    if item.top < 0 or item.left < 0 or bottom > window.height or right > window.width:
        raise ValueError(
            f"{fn}: {where} spans rows {item.top}..{bottom} and columns {item.left}..{right}, "
            f"outside its {window.height}x{window.width} window; give crops in window pixels."
        )
    return mask


def _pieces(windows, instances, fn):
    """The instances as `_Pieces`, trimmed to their masks; empty masks are left out."""
    rows = []
    masks = []
    for number, (window, items) in enumerate(zip(windows, instances, strict=True)):
        inner_top, inner_bottom, inner_left, inner_right = window.inner
        for index, item in enumerate(items):
            mask = _check_instance(item, window, f"instances[{number}][{index}]", fn)
            ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if ys.size == 0:
                continue  # no pixel: nothing to place or match (documented)
            top, bottom = item.top + ys[0], item.top + ys[-1] + 1
            left, right = item.left + xs[0], item.left + xs[-1] + 1
            cut = (
                (inner_top and top == 0)
                or (inner_bottom and bottom == window.height)
                or (inner_left and left == 0)
                or (inner_right and right == window.width)
            )
            masks.append(mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1])
            rows.append(
                (window.top + top, window.left + left, window.top + bottom, window.left + right,
                 item.score, item.label, number, index, cut)
            )  # fmt: skip
    table = np.array(rows, dtype=np.float64).reshape(-1, 9)
    whole = table.astype(np.int64)
    return _Pieces(
        whole[:, :4], table[:, 4], whole[:, 5], whole[:, 6], whole[:, 7], table[:, 8] > 0, masks
    )


def _find(parent, item):
    root = item
    while parent[root] != root:
        root = parent[root]
    while parent[item] != root:  # path compression
        parent[item], item = root, parent[item]
    return root


def _area_in(pieces, item, region):
    """Pixels of piece `item` inside region (top, left, bottom, right) of the image."""
    top, left = pieces.boxes[item, :2]
    rows = slice(max(region[0] - top, 0), max(region[2] - top, 0))
    columns = slice(max(region[1] - left, 0), max(region[3] - left, 0))
    return int(np.count_nonzero(pieces.masks[item][rows, columns]))


def _shared(pieces, first, second):
    """Pixels the two pieces' masks share."""
    a, b = pieces.boxes[first], pieces.boxes[second]
    top, left = max(a[0], b[0]), max(a[1], b[1])
    bottom, right = min(a[2], b[2]), min(a[3], b[3])
    crop_a = pieces.masks[first][top - a[0] : bottom - a[0], left - a[1] : right - a[1]]
    crop_b = pieces.masks[second][top - b[0] : bottom - b[0], left - b[1] : right - b[1]]
    return int(np.count_nonzero(crop_a & crop_b))


def _candidates(pieces, members, region):
    """The pieces of `members` whose box meets `region`."""
    boxes = pieces.boxes[members]
    meets = (boxes[:, 0] < region[2]) & (boxes[:, 2] > region[0])
    meets &= (boxes[:, 1] < region[3]) & (boxes[:, 3] > region[1])
    return members[meets]


def _groups(windows, pieces, match_iou):
    """Union-find roots (n,) of the pieces (same-object pieces share a root) and the set of
    matched pairs of whole pieces."""
    parent = list(range(len(pieces.scores)))
    whole_pairs = set()
    rects = np.array([(w.top, w.left, w.top + w.height, w.left + w.width) for w in windows])
    by_window = [np.flatnonzero(pieces.windows == k) for k in range(len(windows))]
    for first in range(len(windows)):
        others = np.arange(first + 1, len(windows))
        regions = np.concatenate(
            [np.maximum(rects[others, :2], rects[first, :2]),
             np.minimum(rects[others, 2:], rects[first, 2:])], axis=1
        )  # fmt: skip
        meets = (regions[:, 0] < regions[:, 2]) & (regions[:, 1] < regions[:, 3])
        for second, region in zip(others[meets], regions[meets], strict=True):
            ours = _candidates(pieces, by_window[first], region)
            theirs = _candidates(pieces, by_window[second], region)
            for one, other in _box_pairs(pieces, ours, theirs):
                whole = not (pieces.cut[one] or pieces.cut[other])
                root_one, root_other = _find(parent, one), _find(parent, other)
                if root_one == root_other and not whole:
                    continue  # already one group: the IoU would change nothing
                if _same_object(pieces, one, other, region, match_iou):
                    parent[max(root_one, root_other)] = min(root_one, root_other)
                    if whole:
                        whole_pairs.add((min(one, other), max(one, other)))
    roots = np.array([_find(parent, item) for item in range(len(parent))], dtype=np.int64)
    return roots, whole_pairs


def _box_pairs(pieces, ours, theirs):
    """The (one, other) pieces of `ours` x `theirs` of one class whose boxes meet."""
    if ours.size == 0 or theirs.size == 0:
        return []
    a, b = pieces.boxes[ours][:, None], pieces.boxes[theirs][None]
    meets = (a[..., 0] < b[..., 2]) & (b[..., 0] < a[..., 2])
    meets &= (a[..., 1] < b[..., 3]) & (b[..., 1] < a[..., 3])
    meets &= pieces.labels[ours][:, None] == pieces.labels[theirs][None]
    rows, columns = np.nonzero(meets)
    return list(zip(ours[rows].tolist(), theirs[columns].tolist(), strict=True))


def _same_object(pieces, one, other, region, match_iou):
    """True when the pieces share a pixel and their IoU on `region` is >= `match_iou`."""
    shared = _shared(pieces, one, other)
    if shared == 0:
        return False
    if match_iou == 0:
        return True
    union = _area_in(pieces, one, region) + _area_in(pieces, other, region) - shared
    return shared >= match_iou * union


def _resolve(pieces, roots, whole_pairs):
    """(members, united) per kept instance, its kept member first.

    A group with whole members keeps its best whole member and every other whole member
    that matches no kept one directly (two different objects chained through a piece that
    overlaps both stay two); its cut members are pieces of what is kept. A group of cut
    members only is their union.
    """
    # best first: highest score, then earlier window, then earlier instance
    order = np.lexsort((pieces.indices, pieces.windows, -pieces.scores))
    groups = {}
    for item in order:
        groups.setdefault(int(roots[item]), []).append(int(item))
    resolved = []
    for members in groups.values():
        whole = [item for item in members if not pieces.cut[item]]
        if not whole:
            resolved.append((members, True))
            continue
        kept = {}  # kept whole member -> its duplicates
        for item in whole:
            duplicate_of = [k for k in kept if (min(k, item), max(k, item)) in whole_pairs]
            if duplicate_of:
                kept[duplicate_of[0]].append(item)
            else:
                kept[item] = [item]
        pieces_of = [item for item in members if pieces.cut[item]]
        for number, duplicates in enumerate(kept.values()):
            resolved.append((duplicates + (pieces_of if number == 0 else []), False))
    return resolved


def _united_mask(pieces, members):
    """(top, left, mask) of the union of the members' masks."""
    boxes = pieces.boxes[members]
    top, left = boxes[:, 0].min(), boxes[:, 1].min()
    bottom, right = boxes[:, 2].max(), boxes[:, 3].max()
    mask = np.zeros((bottom - top, right - left), bool)
    for item, box in zip(members, boxes, strict=True):
        mask[box[0] - top : box[2] - top, box[1] - left : box[3] - left] |= pieces.masks[item]
    return int(top), int(left), mask


def _paint(pieces, resolved, height, width):
    """(labels painted with 1-based paint positions, kept instances in paint order)."""
    kept = []
    for members, united in resolved:
        best = members[0]
        if united:
            top, left, mask = _united_mask(pieces, members)
        else:
            top, left = (int(value) for value in pieces.boxes[best, :2])
            mask = pieces.masks[best]
        source = tuple((int(pieces.windows[m]), int(pieces.indices[m])) for m in members)
        kept.append(
            MergedInstance(0, float(pieces.scores[best]), int(pieces.labels[best]), top, left,
                           mask, united, source)
        )  # fmt: skip
    # lowest priority first: score, then united under whole, then later window under earlier
    keys = [(-k.score, not k.united, k.members[0][0], k.members[0][1]) for k in kept]
    priority = sorted(range(len(kept)), key=lambda item: keys[item], reverse=True)
    kept = [kept[item] for item in priority]
    labels = np.zeros((height, width), np.int32)
    for position, item in enumerate(kept, start=1):
        region = labels[item.top : item.top + item.mask.shape[0],
                        item.left : item.left + item.mask.shape[1]]  # fmt: skip
        region[item.mask] = position
    return labels, kept


def _first_pixel(labels, item, position):
    """Raster index of the first pixel of `labels` equal to `position` in the item's box, or
    None when it has none."""
    region = labels[item.top : item.top + item.mask.shape[0],
                    item.left : item.left + item.mask.shape[1]]  # fmt: skip
    hits = region == position
    rows = np.flatnonzero(hits.any(axis=1))
    if rows.size == 0:
        return None
    column = int(np.argmax(hits[rows[0]]))
    return (item.top + int(rows[0])) * labels.shape[1] + item.left + column


def _renumber(labels, kept, numbering, chunk_rows=1024):
    """Final ids 1..n in place: by priority (`"score"`) or by first pixel (`"raster"`)."""
    firsts = [_first_pixel(labels, item, position) for position, item in enumerate(kept, 1)]
    painted = [position for position, first in enumerate(firsts) if first is not None]
    if numbering == "score":
        painted = painted[::-1]  # paint order is lowest priority first
    else:
        painted.sort(key=lambda position: firsts[position])
    table = np.zeros(len(kept) + 1, np.int32)
    for new_id, position in enumerate(painted, start=1):
        table[position + 1] = new_id
    for start in range(0, labels.shape[0], chunk_rows):  # a lookup of bounded extra memory
        labels[start : start + chunk_rows] = table[labels[start : start + chunk_rows]]
    merged = [item._replace(id=int(table[position + 1])) for position, item in enumerate(kept)]
    if numbering == "score":
        return merged[::-1]  # best first
    merged.sort(key=lambda item: (item.id == 0, item.id))
    return merged


def merge_instances(windows, instances, height, width, *, match_iou=0.5, numbering="score"):
    """One instance label map from the instances of overlapping windows (module docstring).

    Args:
        windows: the `Window`s the instances come from (`tile_windows`), row-major.
        instances: one list of `WindowInstance`s per window, in window pixels, best first or
            in any order (ties of score go to the earlier instance). Instances with an empty
            mask have no pixel to place or match and are left out.
        height, width: the image size.
        match_iou: in [0, 1]: instances of two windows are one object when they share a pixel
            and their IoU on the windows' intersection is >= `match_iou` (0: any shared
            pixel, exact for connected components).
        numbering: "score" (ids by decreasing score, as `predict_instances`) or "raster"
            (ids in raster order of each instance's first pixel, as `skimage.measure.label`).

    Returns:
        (labels, merged): int32 (height, width) ids (0 = background) and the list of
        `MergedInstance`s: best first for "score" (the order of the ids; one left with no
        pixel, id 0, keeps its place), by id for "raster" (those with id 0 last).

    Raises:
        TypeError, ValueError: malformed windows or instances, or a bad argument.
    """
    fn = "merge_instances"
    _check_windows(windows, instances, fn)
    height = check_int(height, "height", minimum=1, context=fn)
    width = check_int(width, "width", minimum=1, context=fn)
    match_iou = check_probability(match_iou, "match_iou", fn)
    if numbering not in NUMBERINGS:
        raise ValueError(f"{fn}: `numbering` must be one of {NUMBERINGS}; got {numbering!r}.")
    for number, window in enumerate(windows):
        if window.top + window.height > height or window.left + window.width > width:
            raise ValueError(
                f"{fn}: windows[{number}] ends at row {window.top + window.height}, column "
                f"{window.left + window.width}, outside the {height}x{width} image."
            )
    pieces = _pieces(windows, instances, fn)
    roots, whole_pairs = _groups(windows, pieces, match_iou)
    labels, kept = _paint(pieces, _resolve(pieces, roots, whole_pairs), height, width)
    return labels, _renumber(labels, kept, numbering)


def pieces_from_labels(labels, score=1.0):
    """The instances of a label map as `WindowInstance`s, by id (class 1, score `score`)."""
    from scipy import ndimage  # scikit-image's dependency; loaded only when tiling

    labels = np.asarray(labels)
    pieces = []
    for number, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is not None:
            mask = labels[found] == number
            pieces.append(WindowInstance(score, found[0].start, found[1].start, mask))
    return pieces


def _tiled_windows(height, width, tile, overlap, fn):
    """`tile_windows` (divisor 1), checked to overlap where there are several windows."""
    windows = tile_windows(height, width, tile, overlap)
    rows = sorted({w.top for w in windows})
    columns = sorted({w.left for w in windows})
    tiles = windows[0].height, windows[0].width
    for name, starts, size in (("rows", rows, tiles[0]), ("columns", columns, tiles[1])):
        if len(starts) > 1 and np.diff(starts).min() >= size:
            raise ValueError(
                f"{fn}: `overlap` {overlap!r} of a {size}-pixel tile leaves neighbouring "
                f"windows without a shared {name[:-1]}, so objects cut by a window border "
                "cannot be joined; use an overlap of at least a few pixels (0.25 is usual)."
            )
    return windows


def _batches(windows, batch_size):
    return [windows[start : start + batch_size] for start in range(0, len(windows), batch_size)]


def _window_batch(array, batch, batch_size):
    """(batch_size, h, w, ...) crops of `array` under the windows of `batch`, zero-padded to
    `batch_size` windows (one input shape for every call)."""
    first = batch[0]
    crops = np.zeros((batch_size, first.height, first.width) + array.shape[2:], np.float32)
    for slot, window in enumerate(batch):
        crops[slot] = array[window.top : window.top + window.height,
                            window.left : window.left + window.width]  # fmt: skip
    return crops


def _check_probs(probs, threshold, watershed_seeds, fn):
    """(probs as an array, threshold): the arguments of `cell_instances_tiled`, checked."""
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(
            f"{fn}: `probs` must have shape (height, width, channels), the probabilities of one "
            f"image; got shape {probs.shape}."
        )
    if not np.issubdtype(probs.dtype, np.floating):
        raise TypeError(f"{fn}: `probs` must be float probabilities; got dtype {probs.dtype}.")
    threshold = check_probability(threshold, "threshold", fn)
    if watershed_seeds is not None:
        if not is_number(watershed_seeds) or not 0.0 < watershed_seeds <= 1.0:
            raise ValueError(f"{fn}: `watershed_seeds` must be in (0, 1]; got {watershed_seeds!r}.")
        if probs.shape[-1] != 1:
            raise ValueError(
                f"{fn}: `watershed_seeds` needs a 1-channel (sigmoid) probability map; got "
                f"{probs.shape[-1]} channels."
            )
    return probs, threshold


def cell_instances_tiled(
    probs, *, tile=512, overlap=0.25, threshold=0.5, watershed_seeds=None, batch_size=4
):
    """`kerasseg.inference.cell_instances` of one large probability map, window by window.

    `cell_instances` runs on batches of `batch_size` windows of one shape (the compiled
    watershed is traced once; a short last batch is padded with empty windows) and the
    windows' cells are joined by `merge_instances`. Without `watershed_seeds` the cells are
    the 4-connected regions of class 1, matched on any shared pixel: the result equals
    `skimage.measure.label(foreground, connectivity=1)` exactly, numbering included, for
    objects of any size (a cell larger than the overlap is the union of its pieces). With
    `watershed_seeds` cells are matched at IoU 0.5 and numbered in raster order of their
    seeds, as whole-image `cell_instances`; the result equals it where every cell and its
    neighbours fit in the overlap (a watershed basin depends on its neighbours' seeds).

    Args:
        probs: float (H, W, C) probabilities of one image (e.g. from dense tiled prediction).
        tile: the window side in pixels, an int or (height, width); an image no larger than
            it along an axis is one window along that axis.
        overlap: overlap of neighbouring windows as a fraction of the tile, in [0, 1); it
            must leave at least one shared pixel, and should exceed the largest cell for the
            watershed.
        threshold: in [0, 1]: class 1 where p > threshold (1 channel), else the argmax.
        watershed_seeds: None, or in (0, 1] for a seeded watershed (1-channel maps only).
        batch_size: windows per `cell_instances` call, an integer >= 1.

    Returns:
        int32 (H, W) instance ids, 0 = background.

    Raises:
        ValueError, TypeError: a bad argument (the message names it).
    """
    fn = "cell_instances_tiled"
    probs, threshold = _check_probs(probs, threshold, watershed_seeds, fn)
    batch_size = check_int(batch_size, "batch_size", minimum=1, context=fn)
    height, width = probs.shape[:2]
    windows = _tiled_windows(height, width, tile, overlap, fn)
    batch_size = min(batch_size, len(windows))
    instances = []
    for batch in _batches(windows, batch_size):
        crops = _window_batch(probs, batch, batch_size)
        found = cell_instances(crops, threshold=threshold, watershed_seeds=watershed_seeds)
        instances.extend(pieces_from_labels(found[slot]) for slot in range(len(batch)))
    match_iou = 0.0 if watershed_seeds is None else 0.5
    labels, _ = merge_instances(
        windows, instances, height, width, match_iou=match_iou, numbering="raster"
    )
    if watershed_seeds is not None:
        _number_by_seed(labels, probs[..., 0] > watershed_seeds)
    return labels


def _number_by_seed(labels, seeds, chunk_rows=1024):
    """Renumber `labels` in place in raster order of each cell's first seed pixel (as
    `SeededWatershed` numbers its seeds); cells without a seed pixel follow, by first pixel."""
    from scipy import ndimage  # scikit-image's dependency; loaded only when tiling

    keys = []
    for number, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        cell = labels[found] == number
        seeded = cell & seeds[found]
        hits = seeded if seeded.any() else cell
        row = int(np.flatnonzero(hits.any(axis=1))[0])
        column = int(np.argmax(hits[row]))
        first = (found[0].start + row) * labels.shape[1] + found[1].start + column
        keys.append((not seeded.any(), first, number))
    table = np.zeros(labels.max() + 1 if labels.size else 1, np.int32)
    for new_id, (_, _, number) in enumerate(sorted(keys), start=1):
        table[number] = new_id
    for start in range(0, labels.shape[0], chunk_rows):
        labels[start : start + chunk_rows] = table[labels[start : start + chunk_rows]]


def _check_image(image, fn):
    """The image as (H, W, 1 or 3), its values and dtype kept (converted window by window)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(
            f"{fn}: `image` must have shape (height, width), (height, width, 1) or (height, "
            f"width, 3); got {image.shape}."
        )
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise TypeError(
            f"{fn}: `image` must hold numbers, the values as stored (0..255); got dtype "
            f"{image.dtype}."
        )
    return image


def _best_rows(outputs, min_score):
    """The outputs with, per image, the rows scoring >= `min_score` first (in their order)
    and `num_detections` counting them, so that only those masks are pasted."""
    arrays = {key: np.asarray(outputs[key]) for key in ("boxes", "scores", "classes", "masks")}
    scores = arrays["scores"]
    rows = np.arange(scores.shape[1])[None]
    counts = outputs.get("num_detections")
    valid = rows < np.asarray(counts).reshape(-1, 1) if counts is not None else rows >= 0
    keep = valid & (scores >= min_score)
    order = np.argsort(~keep, axis=1, kind="stable")
    for key, value in arrays.items():
        index = order.reshape(order.shape + (1,) * (value.ndim - 2))
        arrays[key] = np.take_along_axis(value, index, axis=1)
    arrays["num_detections"] = keep.sum(axis=1).astype(np.int32)
    return arrays


def _window_instances(found):
    """`WindowInstance`s (trimmed to each mask's box) and boxes of one window's detections;
    detections whose mask is empty are left out (nothing to place)."""
    instances, boxes = [], []
    for score, label, box, mask in zip(
        found["scores"], found["classes"], found["boxes"], found["masks"], strict=True
    ):
        ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if ys.size == 0:
            continue
        crop = mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        instances.append(WindowInstance(float(score), int(ys[0]), int(xs[0]), crop, int(label)))
        boxes.append(box)
    return instances, np.array(boxes, np.float64).reshape(-1, 4)


def _merged_detections(merged, windows, boxes):
    """The detections dict of `predict_instances_tiled` from `MergedInstance`s."""
    global_boxes = []
    for item in merged:
        corners = np.array(
            [boxes[w][i] + [windows[w].top, windows[w].left] * 2 for w, i in item.members]
        )
        if not item.united:
            corners = corners[:1]  # the kept member's box
        global_boxes.append([*corners[:, :2].min(axis=0), *corners[:, 2:].max(axis=0)])
    return {
        "boxes": np.array(global_boxes, np.float64).reshape(-1, 4),
        "scores": np.array([item.score for item in merged], np.float64),
        "classes": np.array([item.label for item in merged], np.int64),
        "masks": [item.mask for item in merged],
        "mask_boxes": np.array(
            [
                (item.top, item.left, item.top + item.mask.shape[0], item.left + item.mask.shape[1])
                for item in merged
            ],
            np.int64,
        ).reshape(-1, 4),  # fmt: skip
        "ids": np.array([item.id for item in merged], np.int32),
        "united": np.array([item.united for item in merged], bool),
        "merged": np.array([len(item.members) for item in merged], np.int64),
    }


def _predict_windows(model, image, windows, batch_size, min_score, mask_threshold):
    """Per window, its `WindowInstance`s and the (n, 4) boxes of their detections."""
    instances, boxes = [], []
    for batch in _batches(windows, batch_size):
        crops = _window_batch(image, batch, batch_size)
        if crops.shape[-1] == 1:
            crops = np.repeat(crops, 3, axis=-1)
        sizes = np.array([crops.shape[1:3]] * batch_size, np.int32)
        outputs = model.predict({"images": crops, "image_sizes": sizes}, verbose=0)
        found = detections_from_outputs(
            _best_rows(outputs, min_score), sizes, mask_threshold=mask_threshold
        )
        for detections in found[: len(batch)]:  # padding windows' detections are ignored
            window_instances, window_boxes = _window_instances(detections)
            instances.append(window_instances)
            boxes.append(window_boxes)
    return instances, boxes


def predict_instances_tiled(
    model,
    image,
    *,
    tile=512,
    overlap=0.25,
    min_score=0.5,
    mask_threshold=0.5,
    match_iou=0.5,
    batch_size=1,
):
    """`kerasseg.inference.predict_instances` of a large image, window by window (SAHI).

    The model (a Mask R-CNN) sees windows of one shape, `batch_size` at a time, with the input
    `predict_instances` builds (``{"images": (B, h, w, 3) float32, "image_sizes": int32 (B,
    2)}``, grey repeated to RGB; a short last batch is padded with black windows whose
    detections are ignored). Per window, the detections scoring >= `min_score` are pasted
    (`detections_from_outputs`, probability > `mask_threshold`) and the windows' instances
    joined by `merge_instances` (module docstring: a duplicate of a neighbouring window or a
    piece cut by a window border is dropped for the instance a window sees whole; an object
    cut in every window is the union of its pieces). Detections whose pasted mask is empty
    have nothing to place and are left out.

    Memory: the label map, one batch of windows and each instance's bounding-box crop; no
    full-size mask is made (an 8000 x 8000 image holds tens of thousands of cells).

    Args:
        model: a Mask R-CNN (`kerasseg.inference.task_of(model) == "instance"`), e.g.
            `kerasseg.load("maskrcnn_resnet18_isbi2012")`.
        image: (H, W), (H, W, 1) or (H, W, 3) array with the values as stored (0..255).
        tile: the window side in pixels, an int or (height, width). Choose the size the model
            works at (the ISBI preset resizes its input to fit 512).
        overlap: overlap of neighbouring windows as a fraction of the tile, in [0, 1); objects
            smaller than the overlap are taken from a window that sees them whole.
        min_score: in [0, 1]; detections below it are left out.
        mask_threshold: in [0, 1]; torchvision's 0.5.
        match_iou: in [0, 1]; two windows' instances of one class are one object when their
            IoU on the windows' intersection is >= it (0: any shared pixel).
        batch_size: windows per model call, an integer >= 1.

    Returns:
        (labels, detections): int32 (H, W) instance ids, 1..n by decreasing score, best on
        top, 0 = background; and the merged detections by decreasing score: ``"boxes"``
        float64 (n, 4) ``[y1, x1, y2, x2]`` in image pixels (the kept detection's box, the
        union of the boxes for a united one), ``"scores"`` (n,), ``"classes"`` int64 (n,),
        ``"masks"`` a list of n bool crops, ``"mask_boxes"`` int64 (n, 4) ``[top, left,
        bottom, right)`` where each crop lies in the image (``full[t:b, l:r] = masks[i]``),
        ``"ids"`` int32 (n,) each one's id in `labels` (0 where better instances cover it
        entirely), ``"united"`` bool (n,) (a union of cut pieces) and ``"merged"`` int64 (n,)
        (how many window detections it stands for: 1 when one window saw it).

    Raises:
        ValueError, TypeError: a model that is not an instance model, or a bad argument.
    """
    fn = "predict_instances_tiled"
    if task_of(model) != "instance":
        raise ValueError(
            f"{fn}: `model` must be an instance model (a Mask R-CNN, whose outputs include "
            "'boxes', 'masks' and 'num_detections'); got a semantic model: predict it with "
            "dense tiled prediction and label its cells with `cell_instances_tiled`."
        )
    image = _check_image(image, fn)
    min_score = check_probability(min_score, "min_score", fn)
    mask_threshold = check_probability(mask_threshold, "mask_threshold", fn)
    match_iou = check_probability(match_iou, "match_iou", fn)
    batch_size = check_int(batch_size, "batch_size", minimum=1, context=fn)
    height, width = image.shape[:2]
    windows = _tiled_windows(height, width, tile, overlap, fn)
    instances, boxes = _predict_windows(
        model, image, windows, min(batch_size, len(windows)), min_score, mask_threshold
    )
    labels, merged = merge_instances(
        windows, instances, height, width, match_iou=match_iou, numbering="score"
    )
    return labels, _merged_detections(merged, windows, boxes)
