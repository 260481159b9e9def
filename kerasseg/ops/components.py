"""Region operations on boolean masks: scikit-image's connectivity argument, bit-packed
masks and geodesic growing (a bounded `keras.ops.while_loop` over the whole batch with
keras.ops only, so it runs eagerly, in `tf.function`, with XLA and inside `tf.data`).
Connected-component labelling is in `labelling.py`.

References:
    L. Vincent, "Morphological grayscale reconstruction in image analysis", IEEE TIP 2(2),
    1993 (geodesic dilation).
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
