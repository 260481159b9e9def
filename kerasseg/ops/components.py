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
    the parallel scheme used here).
"""

import numpy as np
from keras import ops

from kerasseg.ops.checks import is_int
from kerasseg.ops.image import is_symbolic, materialize

__all__ = [
    "STEPS_PER_ITERATION",
    "check_connectivity",
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


def _value_edges(foreground, values, connectivity):
    """Per neighbour offset, the (N, H, W) bool links of foreground pixels to a foreground
    neighbour of equal value."""
    padded_values = ops.pad(values, ((0, 0), (1, 1), (1, 1)))
    padded_foreground = ops.pad(foreground, ((0, 0), (1, 1), (1, 1)))
    return [
        ops.logical_and(
            ops.logical_and(foreground, _shifted(padded_foreground, dy, dx)),
            ops.equal(values, _shifted(padded_values, dy, dx)),
        )
        for dy, dx in _OFFSETS[connectivity]
    ]


def _neighbourhood_min(current, foreground, edges, connectivity, size):
    """The smallest label among each pixel and its linked neighbours (`size` for background).

    Without `edges` every foreground neighbour is linked: background holds the sentinel
    `size`, so plain minima over the neighbourhood suffice.
    """
    padded = ops.pad(current, ((0, 0), (1, 1), (1, 1)), constant_values=size)
    if edges is None:
        if connectivity == 2:
            rows = ops.minimum(ops.minimum(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:])
            best = ops.minimum(ops.minimum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
        else:
            best = current
            for dy, dx in _OFFSETS[1]:
                best = ops.minimum(best, _shifted(padded, dy, dx))
        return ops.where(foreground, best, size)
    best = current
    for (dy, dx), edge in zip(_OFFSETS[connectivity], edges, strict=True):
        best = ops.minimum(best, ops.where(edge, _shifted(padded, dy, dx), size))
    return best


def label_components(foreground, connectivity, values=None, max_iter=None):
    """Connected components of boolean masks, numbered as `skimage.measure.label` does.

    Args:
        foreground: (N, H, W) bool.
        connectivity: 1 (4-neighbours) or 2 (8-neighbours).
        values: None, or (N, H, W) values: neighbours then connect only where their values
            are equal.
        max_iter: the most iterations, or None for H * W (always enough).

    Returns:
        A tuple (labels (N, H, W) int32, count (N,) int32, converged (N,) bool, iterations
        () int32). Labels are 1.. in raster order of each component's first pixel, 0 for
        background.
    """
    n_images = ops.shape(foreground)[0]
    height, width = _spatial(foreground)
    size = height * width
    limit = size if max_iter is None else max_iter
    index = ops.reshape(ops.arange(size, dtype="int32"), (1, height, width))
    labels = ops.where(foreground, index, size)  # background holds the sentinel `size`
    offsets = ops.reshape(ops.arange(n_images, dtype="int32") * size, (-1, 1, 1))

    edges = None if values is None else _value_edges(foreground, values, connectivity)

    def gather(table, pointer):
        """table[pointer] per image; pointers of background pixels give the sentinel."""
        flat = ops.reshape(table, (-1,))
        found = ops.take(flat, ops.minimum(pointer, size - 1) + offsets)
        return ops.where(foreground, found, size)

    def cond(current, changed, iteration):
        return ops.logical_and(ops.any(changed), iteration < limit)

    def body(current, changed, iteration):
        best = _neighbourhood_min(current, foreground, edges, connectivity, size)
        # Hooking: the pixel a label points to takes the smallest label seen by its pointers.
        targets = ops.reshape(ops.where(foreground, current, 0) + offsets, (-1,))
        hooked = ops.segment_max(
            ops.reshape(size - best, (-1,)), targets, num_segments=n_images * size
        )
        hooked = size - ops.maximum(ops.reshape(hooked, ops.shape(current)), 0)
        new = ops.minimum(best, hooked)
        for _ in range(2):  # pointer jumping, twice per iteration (fewest iterations overall)
            new = gather(new, new)
        changed = ops.any(ops.not_equal(new, current), axis=(1, 2))
        return new, changed, iteration + 1

    changed = ops.ones((n_images,), dtype="bool")
    labels, changed, iterations = ops.while_loop(
        cond, body, (labels, changed, ops.convert_to_tensor(0, dtype="int32"))
    )
    roots = ops.logical_and(foreground, ops.equal(labels, index))
    rank = ops.cumsum(ops.reshape(ops.cast(roots, "int32"), (n_images, -1)), axis=1)
    count = rank[:, -1]
    numbered = ops.take(ops.reshape(rank, (-1,)), ops.minimum(labels, size - 1) + offsets)
    numbered = ops.where(foreground, numbered, 0)
    return numbered, count, ops.logical_not(changed), iterations
