"""Seeded flooding of a quantised landscape as a minimum spanning forest (Borůvka).

A seeded watershed floods a landscape from its seeds; scikit-image does it with a priority
queue, one pixel at a time. Flooding is also a minimum spanning forest rooted at the seeds
(Cousty et al. 2009): each pixel joins, through the 4-neighbour edge of least weight
`max(level(p), level(q))`, the tree of one seed. Borůvka's algorithm builds that forest in
rounds: every tree without a seed takes its least outgoing edge and joins the tree at its
other end, so the number of seedless trees at least halves each round, and the rounds grow
with the logarithm of the image's size (at most 19 for 512 x 512, 5 on ISBI cell maps)
rather than with the length of the flooding paths. Inside plateaus, levels are refined by
the distance to the plateau's lower border (the breadth-first order of the queue); ties
between edges of equal weight go to the edge whose lower end is lower (the neighbour the
queue pops first), then to the smaller edge index, so every edge has a distinct rank and
only two trees choosing each other can form a cycle.

Written with keras.ops only (scatter-min onto the roots, pointer jumping), batched, and
compilable with XLA.

References:
    O. Borůvka, "O jistém problému minimálním", Práce Moravské přírodovědecké společnosti 3,
    1926. J. Cousty, G. Bertrand, L. Najman and M. Couprie, "Watershed cuts: minimum
    spanning forests and the drop of water principle", IEEE TPAMI 31(8), 2009. F. Meyer,
    "Un algorithme optimal de ligne de partage des eaux", 8e congrès AFCET RFIA, 1991
    (lower completion of plateaus).
"""

from keras import ops

from kerasseg.ops.image import is_symbolic, materialize

__all__ = ["MAX_LEVELS", "flood_from_seeds"]

# (dy, dx) of the 4-neighbours; an edge's index is 2 * (its first pixel) + (0 across a row,
# 1 down a column), the same seen from both of its pixels.
_NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))
_LARGE = 2**31 - 1
# Plateau distances are capped at _DEEPEST; level * (_DEEPEST + 1) + distance stays below
# _LARGE for every level up to MAX_LEVELS.
_DEEPEST = 2**16 - 2
MAX_LEVELS = 2**15 - 1


def _neighbour(padded, dy, dx):
    """From a (N, H + 2, W + 2) padded array, the (N, H, W) view of x[i + dy, j + dx]."""
    return padded[:, 1 + dy : (dy - 1) or None, 1 + dx : (dx - 1) or None]


def _lower_completion(level):
    """Levels refined inside plateaus by the distance to their lower border.

    scikit-image's priority queue floods a plateau (4-connected pixels of one level) breadth
    first from the pixels that have a lower neighbour; ranking plateau pixels by that
    geodesic distance makes the spanning forest do the same (lower completion, Meyer 1991).
    The distance takes one pass per pixel of the deepest plateau (8 passes per loop
    iteration); plateaus with no lower border (unseeded minima) keep `_DEEPEST`.

    Args:
        level: (N, H, W) int32 levels.

    Returns:
        (N, H, W) int32 `level * (_DEEPEST + 1) + min(distance, _DEEPEST)`.
    """
    padded_level = ops.pad(level, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    lower = None
    same = []
    for dy, dx in _NEIGHBOURS:
        other = _neighbour(padded_level, dy, dx)
        below = ops.logical_and(other >= 0, other < level)
        lower = below if lower is None else ops.logical_or(lower, below)
        same.append(ops.equal(other, level))
    distance = ops.where(lower, 0, _DEEPEST)
    traced = is_symbolic(level)

    def step(distance):
        padded = ops.pad(distance, ((0, 0), (1, 1), (1, 1)), constant_values=_DEEPEST)
        nearest = distance
        for (dy, dx), plateau in zip(_NEIGHBOURS, same, strict=True):
            reach = ops.minimum(_neighbour(padded, dy, dx) + 1, _DEEPEST)
            nearest = ops.minimum(nearest, ops.where(plateau, reach, _DEEPEST))
        return nearest

    def body(distance, changed):
        new = distance
        for k in range(8):
            new = step(materialize(new) if k and traced else new)
        return new, ops.any(ops.not_equal(new, distance))

    distance, _ = ops.while_loop(
        lambda distance, changed: changed, body, (distance, ops.convert_to_tensor(True))
    )
    return level * (_DEEPEST + 1) + distance


def _least_edges(tree, completed, index, width):
    """Each pixel's least edge to another tree, by (higher end, lower end, edge index):
    a tuple of those three and the tree at the other end; `_LARGE` where there is none."""
    padded_tree = ops.pad(tree, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    padded_level = ops.pad(completed, ((0, 0), (1, 1), (1, 1)))
    best = None
    for dy, dx in _NEIGHBOURS:
        other_tree = _neighbour(padded_tree, dy, dx)
        other_level = _neighbour(padded_level, dy, dx)
        outgoing = ops.logical_and(other_tree >= 0, ops.not_equal(other_tree, tree))
        high = ops.where(outgoing, ops.maximum(completed, other_level), _LARGE)
        low = ops.where(outgoing, ops.minimum(completed, other_level), _LARGE)
        edge = 2 * (index + min(dy, 0) * width + min(dx, 0)) + (1 if dy else 0)
        candidate = (high, low, edge, other_tree)
        if best is None:
            best = candidate
            continue
        better = ops.logical_or(
            high < best[0],
            ops.logical_and(
                ops.equal(high, best[0]),
                ops.logical_or(
                    low < best[1], ops.logical_and(ops.equal(low, best[1]), edge < best[2])
                ),
            ),
        )
        best = tuple(ops.where(better, new, old) for new, old in zip(candidate, best, strict=True))
    return best


def flood_from_seeds(level, seeds):
    """Labels every pixel reachable from a seed with the label of the seed that floods it.

    Args:
        level: (N, H, W) int32 levels of the landscape in [0, `MAX_LEVELS`]; lower floods
            first.
        seeds: (N, H, W) int32 seed labels, 0 where a pixel is not a seed. The pixels of one
            seed must be 4-connected (as `label_components` numbers them).

    Returns:
        A tuple ((N, H, W) int32 labels: the seed label flooding each pixel, 0 for pixels
        4-connected to no seed; () int32 Borůvka rounds).
    """
    n_images = ops.shape(level)[0]
    height, width = ops.shape(level)[1], ops.shape(level)[2]
    size = height * width
    index = ops.reshape(ops.arange(size, dtype="int32"), (1, height, width))
    image = ops.reshape(ops.arange(n_images, dtype="int32"), (-1, 1, 1))
    offsets = image * size
    barrier = materialize if is_symbolic(level) else (lambda x: x)
    completed = _lower_completion(level)

    def per_tree(values, tree, reduce):
        """`reduce` (a segment min or max) of pixel values over each tree, read back at
        every pixel of the tree."""
        flat_tree = ops.reshape(tree + offsets, (-1,))
        table = reduce(ops.reshape(values, (-1,)), flat_tree, num_segments=n_images * size)
        return ops.reshape(ops.take(table, flat_tree), ops.shape(tree))

    def at(table, pointer):
        """table[pointer] within each image."""
        flat = ops.take(ops.reshape(table, (-1,)), ops.reshape(pointer + offsets, (-1,)))
        return ops.reshape(flat, ops.shape(pointer))

    def flatten(parent):
        """Pointer jumping until every pixel points to its tree's root."""

        def body(parent, changed):
            new = barrier(at(parent, parent))
            return new, ops.any(ops.not_equal(new, parent))

        return ops.while_loop(
            lambda parent, changed: changed, body, (parent, ops.convert_to_tensor(True))
        )[0]

    # Each seed is one tree rooted at its first pixel; every other pixel is a tree alone.
    seed_pixels = seeds > 0
    labels = size + 1  # seed labels 0..size (a 1-pixel seed can fill a 1 x 1 image)
    seed_ids = seeds + image * labels
    first = ops.segment_min(
        ops.reshape(ops.where(seed_pixels, index, _LARGE), (-1,)),
        ops.reshape(seed_ids, (-1,)),
        num_segments=n_images * labels,
    )
    parent = ops.where(seed_pixels, ops.take(first, seed_ids), index)

    def round_body(parent, hooked, rounds):
        high, low, edge, other = _least_edges(parent, completed, index, width)
        candidate = ops.logical_and(ops.logical_not(at(seed_pixels, parent)), high < _LARGE)
        for key in (high, low, edge):  # the tree's least edge, key by key
            key = ops.where(candidate, key, _LARGE)
            candidate = ops.logical_and(
                candidate, ops.equal(key, per_tree(key, parent, ops.segment_min))
            )
        target = per_tree(ops.where(candidate, other, -1), parent, ops.segment_max)
        # Roots hook onto the tree their least edge leads to; of two trees choosing each
        # other (the same edge), the one with the smaller root stays a root.
        mutual = ops.logical_and(
            ops.equal(at(target, ops.maximum(target, 0)), index), target > index
        )
        hook = ops.logical_and(ops.equal(parent, index), target >= 0)
        hook = ops.logical_and(hook, ops.logical_not(mutual))
        parent = flatten(barrier(ops.where(hook, target, parent)))
        return parent, ops.any(hook), rounds + 1

    parent, _, rounds = ops.while_loop(
        lambda parent, hooked, rounds: hooked,
        round_body,
        (parent, ops.convert_to_tensor(True), ops.convert_to_tensor(0, dtype="int32")),
    )
    return at(seeds, parent), rounds
