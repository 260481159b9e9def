"""Region operations on boolean masks: connected-component labelling and geodesic growing.

Both are iterative and data-dependent, written as bounded `keras.ops.while_loop`s over the
whole batch with keras.ops only, so they run eagerly, in `tf.function`, with XLA
(`jit_compile=True`) and inside `tf.data`. The classical layers (`ConnectedComponents`,
`RegionGrowing`, `SeededWatershed`), the instance post-processing of semantic models and
the instance metrics all label through `label_components`.

References:
    A. Rosenfeld and J. L. Pfaltz, "Sequential operations in digital picture processing",
    J. ACM 13(4), 1966. O. Kalentev et al., "Connected component labeling on a 2D grid using
    CUDA", J. Parallel Distrib. Comput. 71, 2011 (label equivalence with pointer jumping,
    the parallel scheme used here). D. P. Playne and K. Hawick, "A new algorithm for
    parallel connected-component labelling on GPUs", IEEE TPDS 29(6), 2018 (labelling
    blocks of pixels instead of pixels).
"""

import keras
import numpy as np
from keras import ops

from kerasseg.ops.checks import is_int
from kerasseg.ops.image import is_symbolic, materialize

__all__ = [
    "STEPS_PER_ITERATION",
    "check_connectivity",
    "component_roots",
    "dilate_bits",
    "grow",
    "label_components",
    "pack_bits",
    "unpack_bits",
]


def check_connectivity(connectivity, default=2, *, allow_none=True, context=""):
    """scikit-image's connectivity: 1 for 4-neighbours, 2 for 8-neighbours.

    Args:
        connectivity: 1, 2, their aliases 4 and 8, or None.
        default: what None stands for (scikit-image's "full" connectivity, 2).
        allow_none: accept None.
        context: a prefix for the message (the function or layer that checks).

    Returns:
        1 or 2.

    Raises:
        ValueError: any other value.
    """
    aliases = {1: 1, 2: 2, 4: 1, 8: 2}
    if connectivity is None and allow_none:
        return default
    if not is_int(connectivity) or connectivity not in aliases:
        prefix = f"{context}: " if context else ""
        if allow_none:
            rule = "1 (4-connected), 2 (8-connected; 4 and 8 are accepted too) or None for full"
            rule += " connectivity"
        else:
            rule = "1 (4-connected) or 2 (8-connected; 4 and 8 are accepted too)"
        raise ValueError(f"{prefix}`connectivity` must be {rule}; got {connectivity!r}.")
    return aliases[connectivity]


STEPS_PER_ITERATION = 16


def _spatial(x):
    """Height and width of a (N, H, W) tensor (static where known)."""
    shape = ops.shape(x)
    return shape[1], shape[2]


# ----------------------------------------------------------------------------- bit masks

_ONE = np.uint32(1)
_BIT_SHIFTS = np.arange(32, dtype=np.uint32)
_BIT_WEIGHTS = np.left_shift(np.uint32(1), _BIT_SHIFTS)


def pack_bits(mask):
    """Pack boolean masks along the width, 32 pixels per uint32 word.

    Args:
        mask: (N, H, W) bool.

    Returns:
        (N, H, ceil(W / 32)) uint32: bit j of word k is column 32 k + j (0 past the width).
    """
    n, height, width = ops.shape(mask)
    pad = (-width) % 32
    bits = ops.cast(ops.pad(mask, ((0, 0), (0, 0), (0, pad))), "uint32")
    bits = ops.reshape(bits, (n, height, -1, 32))
    return ops.sum(bits * ops.convert_to_tensor(_BIT_WEIGHTS), axis=-1)


def unpack_bits(words, width):
    """The inverse of `pack_bits`.

    Args:
        words: (N, H, K) uint32 packed masks.
        width: the mask width W (at most 32 K).

    Returns:
        (N, H, W) bool.
    """
    n, height, _ = ops.shape(words)
    bits = ops.right_shift(ops.expand_dims(words, -1), ops.convert_to_tensor(_BIT_SHIFTS))
    bits = ops.bitwise_and(bits, ops.convert_to_tensor(_ONE))
    return ops.reshape(bits, (n, height, -1))[:, :, :width] > 0


def dilate_bits(words, connectivity):
    """One binary dilation of packed masks, zero outside the image.

    Args:
        words: (N, H, K) uint32 masks packed by `pack_bits`.
        connectivity: 2 for the 3x3 square (8-neighbours), 1 for the cross (4-neighbours).

    Returns:
        The dilated masks, packed like `words`.
    """
    one = ops.convert_to_tensor(_ONE)
    top = ops.convert_to_tensor(np.uint32(31))
    zero_column = ops.zeros_like(words[:, :, :1])
    following = ops.concatenate([words[:, :, 1:], zero_column], axis=2)
    previous = ops.concatenate([zero_column, words[:, :, :-1]], axis=2)
    left_right = ops.bitwise_or(
        ops.bitwise_or(ops.right_shift(words, one), ops.left_shift(following, top)),
        ops.bitwise_or(ops.left_shift(words, one), ops.right_shift(previous, top)),
    )
    rows = ops.bitwise_or(words, left_right)
    vertical = rows if connectivity == 2 else words
    zero_row = ops.zeros_like(words[:, :1])
    up = ops.concatenate([vertical[:, 1:], zero_row], axis=1)
    down = ops.concatenate([zero_row, vertical[:, :-1]], axis=1)
    return ops.bitwise_or(rows, ops.bitwise_or(up, down))


def grow(candidates, start, connectivity, max_iter=None):
    """Geodesic dilation of `start` inside `candidates`.

    Each step adds the neighbours of the region that are candidates; `STEPS_PER_ITERATION`
    steps run per while-loop iteration (separated by `materialize` so that XLA does not fuse
    them into one exponentially recomputed expression: 4x faster than one step per
    iteration), and the loop stops when no region grew during an iteration or after
    `max_iter` steps.

    Args:
        candidates: (N, H, W) bool, the pixels a region may take.
        start: (N, H, W) bool, the regions to grow (only their candidate pixels count).
        connectivity: 1 (4-neighbours) or 2 (8-neighbours).
        max_iter: the most steps, or None for H * W (always enough).

    Returns:
        A tuple (regions (N, H, W) bool, converged (N,) bool, steps () int32); `converged`
        is False where the last iteration still grew.
    """
    height, width = _spatial(candidates)
    limit = height * width if max_iter is None else max_iter
    allowed = pack_bits(candidates)
    region = ops.bitwise_and(pack_bits(start), allowed)
    grew = ops.ones((ops.shape(candidates)[0],), dtype="bool")
    traced = is_symbolic(allowed)  # eager steps run op by op: nothing to fuse

    def cond(region, grew, step):
        return ops.logical_and(ops.any(grew), step < limit)

    def body(region, grew, step):
        new = region
        for k in range(STEPS_PER_ITERATION):
            if k and traced:
                new = materialize(new)
            grown = ops.bitwise_and(dilate_bits(new, connectivity), allowed)
            new = ops.where(step + k < limit, grown, new)  # stop exactly at max_iter
        grew = ops.any(ops.not_equal(new, region), axis=(1, 2))
        return new, grew, ops.minimum(step + STEPS_PER_ITERATION, limit)

    region, grew, steps = ops.while_loop(
        cond, body, (region, grew, ops.convert_to_tensor(0, dtype="int32"))
    )
    return unpack_bits(region, width), ops.logical_not(grew), steps


# ----------------------------------------------------------------------------- labelling

_OFFSETS = {
    1: ((-1, 0), (0, -1), (0, 1), (1, 0)),
    2: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
}


def _shifted(padded, dy, dx):
    """From a (N, H + 2, W + 2) padded array, the (N, H, W) view of x[i + dy, j + dx]."""
    return padded[:, 1 + dy : (dy - 1) or None, 1 + dx : (dx - 1) or None]


def _pixel_links(foreground, values, connectivity):
    """{(dy, dx): (N, H, W) bool}: foreground pixels linked to their neighbour at (dy, dx)
    (also foreground, and of equal value when `values` is given)."""
    padded_foreground = ops.pad(foreground, ((0, 0), (1, 1), (1, 1)))
    if values is not None:
        padded_values = ops.pad(values, ((0, 0), (1, 1), (1, 1)))
    links = {}
    for dy, dx in _OFFSETS[connectivity]:
        link = ops.logical_and(foreground, _shifted(padded_foreground, dy, dx))
        if values is not None:
            link = ops.logical_and(link, ops.equal(values, _shifted(padded_values, dy, dx)))
        links[(dy, dx)] = link
    return links


def _node_graph(foreground, links, block):
    """The nodes of the labelling and the links between them.

    A node is a block of `block` = (rows, columns) pixels: (1, 1) single pixels, (1, 2)
    horizontal pairs or (2, 2) squares. The foreground pixels of a block must be connected
    inside it (always so for pairs of a binary mask and for squares with 8-connectivity),
    so each block is one node. Blocks are numbered in raster order; with one row per block
    that is also the raster order of their first pixels.

    Args:
        foreground: (N, H, W) bool, H and W multiples of the block's sides.
        links: `_pixel_links` of the foreground.
        block: (rows, columns) of a block.

    Returns:
        A tuple (node foreground (N, H / rows, W / columns) bool, {(dy, dx): bool links of
        each node to the node at offset (dy, dx)}).
    """
    rows, columns = block
    if block == (1, 1):
        return foreground, links
    node_foreground, node_links = None, {}
    for row in range(rows):
        for column in range(columns):
            part = foreground[:, row::rows, column::columns]
            node_foreground = part if node_foreground is None else node_foreground | part
    for (dy, dx), link in links.items():
        for row in range(rows):
            for column in range(columns):  # where the pixel lies in its block
                offset = ((row + dy) // rows, (column + dx) // columns)
                if offset == (0, 0):
                    continue  # a link inside the block
                part = link[:, row::rows, column::columns]
                previous = node_links.get(offset)
                node_links[offset] = part if previous is None else previous | part
    return node_foreground, node_links


def _pairs_hold_together(foreground, links):
    """Whether, in every image, the two pixels of each horizontal pair are linked when both
    are foreground (always true for binary masks)."""
    both = ops.logical_and(foreground[:, :, 0::2], foreground[:, :, 1::2])
    split = ops.logical_and(both, ops.logical_not(links[(0, 1)][:, :, 0::2]))
    return ops.logical_not(ops.any(split))


def _pad_to_blocks(x, block, value):
    """Pads (N, H, W) at the bottom and right with `value` to multiples of the block's sides."""
    padded = x
    for axis, side in ((1, block[0]), (2, block[1])):
        length = x.shape[axis]
        if side == 1 or (length is not None and length % side == 0):
            continue
        widths = [(0, 0)] * 3
        widths[axis] = (0, side - 1)
        padded = ops.pad(padded, widths, constant_values=value)
        if length is not None:
            cut = (length + side - 1) // side * side
        else:  # known only at run time
            cut = (ops.shape(x)[axis] + side - 1) // side * side
        padded = padded[:, :cut] if axis == 1 else padded[:, :, :cut]
    return padded


def _minimum_roots(node_foreground, node_links, max_iter):
    """For every node, the smallest node of its component (label equivalence).

    Each iteration takes the smallest label among a node and its linked neighbours, hooks
    the node each label points to onto that minimum (a scatter-min: information flows to
    the roots, not only between neighbours) and jumps pointers twice (label = label[label]).
    The number of iterations grows with the logarithm of the components' size, not with
    their geodesic length (Kalentev et al. 2011; Playne and Hawick 2018).

    Returns:
        A tuple (roots (N, H, w) int32, the sentinel H * w on background; converged (N,)
        bool; iterations () int32).
    """
    n_images = ops.shape(node_foreground)[0]
    height, width = _spatial(node_foreground)
    size = height * width
    limit = size if max_iter is None else max_iter
    index = ops.reshape(ops.arange(size, dtype="int32"), (1, height, width))
    offsets = ops.reshape(ops.arange(n_images, dtype="int32") * size, (-1, 1, 1))
    traced = is_symbolic(node_foreground)
    barrier = materialize if traced else (lambda x: x)  # keeps XLA from refusing the steps

    def jump(labels):
        flat = ops.reshape(labels, (-1,))
        found = ops.take(flat, ops.minimum(labels, size - 1) + offsets)
        return barrier(ops.where(node_foreground, found, size))

    def cond(labels, changed, iteration):
        return ops.logical_and(ops.any(changed), iteration < limit)

    def body(labels, changed, iteration):
        padded = ops.pad(labels, ((0, 0), (1, 1), (1, 1)), constant_values=size)
        best = labels
        for (dy, dx), link in node_links.items():
            best = ops.minimum(best, ops.where(link, _shifted(padded, dy, dx), size))
        best = barrier(best)
        # hooking: the node a label points to takes the smallest label seen by its pointers
        targets = ops.reshape(ops.where(node_foreground, labels, 0) + offsets, (-1,))
        hooked = ops.segment_max(
            ops.reshape(size - best, (-1,)), targets, num_segments=n_images * size
        )
        hooked = size - ops.maximum(ops.reshape(hooked, ops.shape(labels)), 0)
        new = jump(jump(ops.minimum(best, hooked)))
        changed = ops.any(ops.not_equal(new, labels), axis=(1, 2))
        return new, changed, iteration + 1

    labels = ops.where(node_foreground, index, size)
    changed = ops.ones((n_images,), dtype="bool")
    roots, changed, iterations = ops.while_loop(
        cond, body, (labels, changed, ops.convert_to_tensor(0, dtype="int32"))
    )
    return roots, ops.logical_not(changed), iterations


def _number_nodes(roots, node_foreground):
    """Numbers the components 1.. in raster order of their smallest node; 0 on background."""
    n_images = ops.shape(roots)[0]
    height, width = _spatial(roots)
    size = height * width
    index = ops.reshape(ops.arange(size, dtype="int32"), (1, height, width))
    is_root = ops.logical_and(node_foreground, ops.equal(roots, index))
    rank = ops.cumsum(ops.reshape(ops.cast(is_root, "int32"), (n_images, -1)), axis=1)
    offsets = ops.reshape(ops.arange(n_images, dtype="int32") * size, (-1, 1, 1))
    numbered = ops.take(ops.reshape(rank, (-1,)), ops.minimum(roots, size - 1) + offsets)
    return ops.where(node_foreground, numbered, 0), rank[:, -1]


def _spread(node_values, block):
    """Node values repeated over the pixels of their blocks."""
    for axis, side in ((1, block[0]), (2, block[1])):
        if side > 1:
            node_values = ops.repeat(node_values, side, axis=axis)
    return node_values


def _number_by_first_pixel(roots, node_foreground, foreground, block):
    """Numbers components 1.. in raster order of their first pixel, for blocks of several
    rows (whose order is not the pixels' raster order): each component's first pixel is
    the smallest first pixel of its blocks (a scatter-min onto the roots)."""
    n_images = ops.shape(roots)[0]
    height, width = _spatial(foreground)
    nodes, pixels = ops.shape(roots)[1] * ops.shape(roots)[2], height * width
    raster = ops.reshape(ops.arange(pixels, dtype="int32"), (1, height, width))
    first = None  # the raster index of each block's first foreground pixel
    for row in range(block[0]):
        for column in range(block[1]):
            part = ops.where(
                foreground[:, row :: block[0], column :: block[1]],
                raster[:, row :: block[0], column :: block[1]],
                pixels,
            )
            first = part if first is None else ops.minimum(first, part)
    node_offsets = ops.reshape(ops.arange(n_images, dtype="int32") * nodes, (-1, 1, 1))
    targets = ops.reshape(ops.where(node_foreground, roots, 0) + node_offsets, (-1,))
    component_first = ops.segment_max(
        ops.reshape(pixels - first, (-1,)), targets, num_segments=n_images * nodes
    )
    component_first = pixels - ops.take(component_first, ops.reshape(targets, ops.shape(roots)))
    component_first = ops.where(foreground, _spread(component_first, block), pixels)
    is_first = ops.equal(component_first, raster)
    rank = ops.cumsum(ops.reshape(ops.cast(is_first, "int32"), (n_images, -1)), axis=1)
    pixel_offsets = ops.reshape(ops.arange(n_images, dtype="int32") * pixels, (-1, 1, 1))
    numbered = ops.take(
        ops.reshape(rank, (-1,)), ops.minimum(component_first, pixels - 1) + pixel_offsets
    )
    return numbered, rank[:, -1]


def _block_labels(foreground, values, connectivity, block, max_iter, numbered):
    """Labels (numbered, or component roots) of every pixel, labelled by blocks of pixels."""
    height, width = _spatial(foreground)
    foreground = _pad_to_blocks(foreground, block, False)
    if values is not None:
        values = _pad_to_blocks(values, block, 0)
    links = _pixel_links(foreground, values, connectivity)
    node_foreground, node_links = _node_graph(foreground, links, block)
    roots, converged, iterations = _minimum_roots(node_foreground, node_links, max_iter)
    if not numbered:
        labels = _spread(roots, block)
        count = ops.zeros((ops.shape(roots)[0],), dtype="int32")
    elif block[0] == 1:  # blocks of one row: the smallest node holds the first pixel
        labels, count = _number_nodes(roots, node_foreground)
        labels = _spread(labels, block)
    else:
        labels, count = _number_by_first_pixel(roots, node_foreground, foreground, block)
    labels = ops.where(foreground, labels, 0 if numbered else -1)[:, :height, :width]
    return labels, count, converged, iterations


def label_components(foreground, connectivity, values=None, max_iter=None):
    """Connected components of boolean masks, numbered as `skimage.measure.label` does.

    Label equivalence on blocks of pixels (`_minimum_roots`): 2 x 2 squares for
    8-connectivity, horizontal pairs for 4-connectivity (the foreground pixels of a block
    are neighbours, so a block is one node: a quarter or half of the work). Label images
    holding several values per image are labelled by pairs where no two values meet inside
    a pair, else pixel by pixel.

    Args:
        foreground: (N, H, W) bool.
        connectivity: 1 (4-neighbours) or 2 (8-neighbours).
        values: None, or (N, H, W) integer values: neighbours then connect only where their
            values are equal.
        max_iter: the most iterations, or None for as many as needed (about
            log2 of the largest component's size).

    Returns:
        A tuple (labels (N, H, W) int32, count (N,) int32, converged (N,) bool, iterations
        () int32). Labels are 1.. in raster order of each component's first pixel, 0 for
        background.
    """
    if values is None:
        return _binary_labels(foreground, connectivity, max_iter)
    padded = _pad_to_blocks(foreground, (1, 2), False)
    links = _pixel_links(padded, _pad_to_blocks(values, (1, 2), 0), connectivity)

    def several_values():  # pairs hold together unless two values meet inside one
        return ops.cond(
            _pairs_hold_together(padded, links),
            lambda: _block_labels(foreground, values, connectivity, (1, 2), max_iter, True),
            lambda: _block_labels(foreground, values, connectivity, (1, 1), max_iter, True),
        )

    return ops.cond(
        _one_value_each(foreground, values),
        lambda: _binary_labels(foreground, connectivity, max_iter),
        several_values,
    )


def _binary_labels(foreground, connectivity, max_iter):
    """`label_components` of masks: 8-connected squares of pixels are connected, so they
    are labelled by 2 x 2 blocks (a quarter of the nodes), 4-connected ones by pairs."""
    block = (2, 2) if connectivity == 2 else (1, 2)
    return _block_labels(foreground, None, connectivity, block, max_iter, True)


def _one_value_each(foreground, values):
    """Whether the foreground of every image holds a single value (masks given as 0/1)."""
    dtype = keras.backend.standardize_dtype(values.dtype)
    limits = np.iinfo(dtype)
    highest = ops.convert_to_tensor(limits.max, dtype=dtype)
    lowest = ops.convert_to_tensor(limits.min, dtype=dtype)
    # `initial`: an empty batch has nothing to reduce
    low = ops.min(ops.where(foreground, values, highest), axis=(1, 2), initial=limits.max)
    high = ops.max(ops.where(foreground, values, lowest), axis=(1, 2), initial=limits.min)
    return ops.all(low >= high)  # no foreground: low > high


def component_roots(foreground, connectivity, max_iter=None):
    """An identifier of each pixel's connected component, without numbering them.

    Cheaper than `label_components` where only "same component or not" matters (a flood
    fill: the pixels whose identifier equals the seed's).

    Args:
        foreground: (N, H, W) bool.
        connectivity: 1 (4-neighbours) or 2 (8-neighbours).
        max_iter: the most iterations, or None for as many as needed.

    Returns:
        A tuple (roots (N, H, W) int32: equal within a component, different between
        components, -1 on background; converged (N,) bool; iterations () int32).
    """
    block = (2, 2) if connectivity == 2 else (1, 2)  # 8-connected squares are connected
    roots, _, converged, iterations = _block_labels(
        foreground, None, connectivity, block, max_iter, numbered=False
    )
    return roots, converged, iterations
