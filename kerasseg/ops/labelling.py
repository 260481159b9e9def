"""Connected-component labelling in a logarithmic number of passes, as keras.ops.

Label equivalence with pointer jumping (`_minimum_roots`): each iteration takes the
smallest label among a node and its linked neighbours, hooks the node each label points to
onto that minimum (a scatter-min) and jumps pointers, so the iterations grow with the
logarithm of the components' size, not with their length. Nodes are blocks of pixels whose
foreground pixels are neighbours (2 x 2 squares; pairs for label images), which cuts the
work by four or two. Written as bounded `keras.ops.while_loop`s over the whole batch: runs
eagerly, in `tf.function`, with XLA (`jit_compile=True`), inside `tf.data` and on JAX. The
classical layers (`ConnectedComponents`, `RegionGrowing`, `SeededWatershed`), the instance
post-processing of semantic models and the instance metrics all label through here.

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

from kerasseg.ops.image import is_symbolic, materialize

__all__ = ["component_roots", "label_components"]


def _spatial(x):
    """Height and width of a (N, H, W) tensor (static where known)."""
    shape = ops.shape(x)
    return shape[1], shape[2]


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
                _link(node_links, offset, link[:, row::rows, column::columns])
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


def _grid_shift(x, dy, dx, fill):
    """x[:, i + dy, j + dx] on a (N, h, w) grid, `fill` outside it (dy, dx in -1..1)."""
    return _shifted(ops.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=fill), dy, dx)


def _interleave(top_left, top_right, bottom_left, bottom_right):
    """The (N, 2h, 2w) pixels of 2 x 2 blocks from their four (N, h, w) corners."""
    top = ops.stack([top_left, top_right], axis=-1)
    bottom = ops.stack([bottom_left, bottom_right], axis=-1)
    blocks = ops.stack([top, bottom], axis=2)  # (N, h, 2, w, 2)
    height, width = _spatial(top_left)
    return ops.reshape(blocks, (-1, 2 * height, 2 * width))


def _link(node_links, offset, link):
    """Adds `link` (OR) to the links of `node_links` at `offset`."""
    previous = node_links.get(offset)
    node_links[offset] = link if previous is None else ops.logical_or(previous, link)


def _diagonal_squares(foreground):
    """4-connected labelling by 2 x 2 blocks: the blocks and their links.

    A block's foreground pixels are 4-connected unless the block holds only a diagonal pair;
    the later pixel of such a pair (the "lone" bottom pixel) is then left out of the block,
    and links the blocks of its outside neighbours instead: the pixel below it (the top row
    of the next block row, never lone) and the one beside it (lone only in a pair of lone
    pixels side by side).

    Returns:
        A tuple (the lone bottom-left and bottom-right pixels (N, H/2, W/2) bool each, node
        foreground, node links).
    """
    top_left, top_right, bottom_left, bottom_right = _corners(foreground)
    lone_left = top_right & bottom_left & ~top_left & ~bottom_right
    lone_right = top_left & bottom_right & ~top_right & ~bottom_left
    kept_left, kept_right = bottom_left & ~lone_left, bottom_right & ~lone_right
    kept = _interleave(top_left, top_right, kept_left, kept_right)
    node_foreground, node_links = _node_graph(kept, _pixel_links(kept, None, 1), (2, 2))
    below_top_right = _grid_shift(top_right, 1, 0, False)
    below_top_left = _grid_shift(top_left, 1, 0, False)
    # a lone bottom-right pixel joins the block below (i + 1, j) and the one right (i, j + 1)
    bridge = lone_right & below_top_right & _grid_shift(kept_left, 0, 1, False)
    _link(node_links, (1, -1), _grid_shift(bridge, 0, -1, False))
    _link(node_links, (-1, 1), _grid_shift(bridge, -1, 0, False))
    # a lone bottom-left pixel joins the block below (i + 1, j) and the one left (i, j - 1)
    bridge = lone_left & below_top_left & _grid_shift(kept_right, 0, -1, False)
    _link(node_links, (1, 1), _grid_shift(bridge, 0, 1, False))
    _link(node_links, (-1, -1), _grid_shift(bridge, -1, 0, False))
    # two lone pixels side by side join the two blocks below them
    bridge = lone_right & _grid_shift(lone_left, 0, 1, False) & below_top_right
    bridge = bridge & _grid_shift(top_left, 1, 1, False)
    _link(node_links, (0, 1), _grid_shift(bridge, -1, 0, False))
    _link(node_links, (0, -1), _grid_shift(bridge, -1, -1, False))
    return lone_left, lone_right, node_foreground, node_links


def _corners(foreground):
    """The top-left, top-right, bottom-left and bottom-right pixels of the 2 x 2 blocks."""
    return (
        foreground[:, 0::2, 0::2],
        foreground[:, 0::2, 1::2],
        foreground[:, 1::2, 0::2],
        foreground[:, 1::2, 1::2],
    )


def _square_keys(roots):
    """Raster positions of the blocks' top and bottom rows: (2 i) w + j and (2 i + 1) w + j
    on the (2 h, w) grid of block rows, in the pixels' raster order row by row."""
    height, width = _spatial(roots)
    rows = ops.reshape(ops.arange(height, dtype="int32"), (1, -1, 1))
    columns = ops.reshape(ops.arange(width, dtype="int32"), (1, 1, -1))
    top = 2 * rows * width + columns
    return top, top + width


def _lone_ids(roots, foreground, lone_left, lone_right):
    """The component identifier of each block's lone pixel (-1 where none): the root of the
    block it links to, or, with no foreground neighbour outside (alone, or two lone pixels
    side by side), 2 h w + the bottom key of the (left) lone pixel's block."""
    top_left, top_right, bottom_left, bottom_right = _corners(foreground)
    _, bottom_key = _square_keys(roots)
    alone = 2 * ops.shape(roots)[1] * ops.shape(roots)[2] + bottom_key
    below = _grid_shift(roots, 1, 0, -1)
    right = ops.where(
        _grid_shift(bottom_left & ~lone_left, 0, 1, False),
        _grid_shift(roots, 0, 1, -1),
        ops.where(
            _grid_shift(lone_left, 0, 1, False) & _grid_shift(top_left, 1, 1, False),
            _grid_shift(roots, 1, 1, -1),
            alone,
        ),
    )
    left_lone = _grid_shift(lone_right, 0, -1, False)
    left = ops.where(
        _grid_shift(bottom_right & ~lone_right, 0, -1, False),
        _grid_shift(roots, 0, -1, -1),
        ops.where(
            left_lone & _grid_shift(top_right, 1, -1, False),
            _grid_shift(roots, 1, -1, -1),
            alone - ops.cast(left_lone, "int32"),
        ),
    )
    lone_right_id = ops.where(_grid_shift(top_right, 1, 0, False), below, right)
    lone_left_id = ops.where(_grid_shift(top_left, 1, 0, False), below, left)
    return ops.where(lone_left, lone_left_id, ops.where(lone_right, lone_right_id, -1))


def _square_pixels(block_values, lone_values, lone_left, lone_right):
    """Pixel values of 2 x 2 blocks: the block's value, or its lone pixel's."""
    if lone_values is None:
        return _spread(block_values, (2, 2))
    return _interleave(
        block_values,
        block_values,
        ops.where(lone_left, lone_values, block_values),
        ops.where(lone_right, lone_values, block_values),
    )


def _number_squares(roots, node_foreground, foreground, lone_left, lone_right, lone_id):
    """Numbers the components of 2 x 2 blocks 1.. in raster order of their first pixel.

    Each block's first pixel and each lone pixel has a key (`_square_keys`), ordered as the
    pixels' raster order wherever two keys differ; a scatter-min of the keys onto the
    component identifiers finds each component's first pixel, and a cumulative sum of the
    first pixels, in key order, numbers them.

    Returns:
        A tuple (pixel labels (N, H, W) int32, count (N,) int32).
    """
    n_images = ops.shape(roots)[0]
    height, width = _spatial(roots)
    keys = 2 * height * width
    top_left, top_right, _, _ = _corners(foreground)
    top = top_left | top_right
    top_key, bottom_key = _square_keys(roots)
    block_key = ops.where(top, top_key, bottom_key)
    image = ops.reshape(ops.arange(n_images, dtype="int32"), (-1, 1, 1))
    ids = [ops.where(node_foreground, roots, 0)]
    values = [ops.where(node_foreground, block_key, keys)]
    if lone_id is not None:
        lone = lone_left | lone_right
        ids.append(ops.where(lone, lone_id, 0))
        values.append(ops.where(lone, bottom_key, keys))
    # identifiers: roots < h w; lone pixels alone: 2 h w + a key < 4 h w
    id_count = 2 * keys if lone_id is not None else keys // 2
    first = ops.segment_min(
        ops.reshape(ops.stack(values, axis=1), (-1,)),
        ops.reshape(ops.stack(ids, axis=1) + ops.expand_dims(image, 1) * id_count, (-1,)),
        num_segments=n_images * id_count,
    )
    block_first = ops.take(first, ids[0] + image * id_count)
    is_first = ops.logical_and(node_foreground, ops.equal(block_first, block_key))
    top_first = ops.logical_and(is_first, top)
    bottom_first = ops.logical_and(is_first, ops.logical_not(top))
    if lone_id is not None:
        lone_first = ops.take(first, ids[1] + image * id_count)
        bottom_first = bottom_first | (lone & ops.equal(lone_first, bottom_key))
    flags = ops.reshape(ops.stack([top_first, bottom_first], axis=2), (n_images, -1))
    rank = ops.cumsum(ops.cast(flags, "int32"), axis=1)
    flat_rank = ops.reshape(rank, (-1,))
    block_label = ops.take(flat_rank, ops.minimum(block_first, keys - 1) + image * keys)
    lone_label = None
    if lone_id is not None:
        lone_label = ops.take(flat_rank, ops.minimum(lone_first, keys - 1) + image * keys)
    return _square_pixels(block_label, lone_label, lone_left, lone_right), rank[:, -1]


def _block_labels(foreground, values, connectivity, block, max_iter, numbered):
    """Labels (numbered, or component identifiers) of every pixel, labelled by blocks of
    `block` = (rows, columns) pixels: (1, 1), (1, 2) or (2, 2)."""
    height, width = _spatial(foreground)
    foreground = _pad_to_blocks(foreground, block, False)
    if values is not None:
        values = _pad_to_blocks(values, block, 0)
    lone_left = lone_right = lone_id = None
    if block == (2, 2) and connectivity == 1:
        lone_left, lone_right, node_foreground, node_links = _diagonal_squares(foreground)
    else:
        links = _pixel_links(foreground, values, connectivity)
        node_foreground, node_links = _node_graph(foreground, links, block)
    roots, converged, iterations = _minimum_roots(node_foreground, node_links, max_iter)
    count = ops.zeros((ops.shape(roots)[0],), dtype="int32")
    if block[0] == 1:  # blocks of one row: the smallest node holds the first pixel
        if numbered:
            roots, count = _number_nodes(roots, node_foreground)
        labels = _spread(roots, block)
    else:
        if lone_left is not None:
            lone_id = _lone_ids(roots, foreground, lone_left, lone_right)
        if numbered:
            labels, count = _number_squares(
                roots, node_foreground, foreground, lone_left, lone_right, lone_id
            )
        else:
            labels = _square_pixels(roots, lone_id, lone_left, lone_right)
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

    def several_values():  # pairs hold together unless two values meet inside one
        padded = _pad_to_blocks(foreground, (1, 2), False)
        links = _pixel_links(padded, _pad_to_blocks(values, (1, 2), 0), connectivity)
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
    """`label_components` of masks, by 2 x 2 blocks (a quarter of the nodes)."""
    return _block_labels(foreground, None, connectivity, (2, 2), max_iter, True)


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
    roots, _, converged, iterations = _block_labels(
        foreground, None, connectivity, (2, 2), max_iter, numbered=False
    )
    return roots, converged, iterations
