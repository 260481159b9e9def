"""Mean-shift colour / intensity clustering of an image batch as a Keras layer.

`MeanShiftSegmentation` follows `sklearn.cluster.MeanShift(bandwidth, bin_seeding=True)`
(Comaniciu & Meer 2002) per image of a (batch, H, W, C) batch, C = 1 or 3:

* Features: as `KMeansSegmentation` (channels on scikit-image's float scale, uint8 -> [0, 1],
  plus `spatial_weight * (row, col) / max(H, W)` if `spatial_weight > 0`); the bandwidth is
  on that scale. Computed in float64 whatever the input: on quantised (uint8) images many
  pixels lie exactly one bandwidth from a seed, and float32 rounding put them on the other
  side of the kernel's edge than scikit-learn does (different modes on ISBI slices).
* Seeds: scikit-learn's bin seeding: pixels rounded to a grid of cell `bandwidth`
  (`round(x / bandwidth)`, half to even), one seed at each cell holding at least
  `min_bin_freq` pixels. At most `max_seeds` seeds are kept (the most populated cells; ties:
  lower cell key) so that shapes are static; scikit-learn keeps all.
* Mean shift: each seed moves to the mean of the pixels within `bandwidth` (flat kernel,
  distance <= bandwidth, as scikit-learn) or to the Gaussian-weighted mean of all pixels
  (`kernel="gaussian"`, weights `exp(-d^2 / (2 bandwidth^2))`), until it moves by at most
  `tol * bandwidth` (scikit-learn: 1e-3) or `max_iter` iterations. A seed with no pixel
  within the bandwidth is dropped.
* Merging: modes sorted by support (pixels within the bandwidth; Gaussian: kernel density),
  ties by coordinates, both descending, as scikit-learn; a mode within `bandwidth` of a
  stronger kept mode is removed.
* Labels: the nearest kept mode (scikit-learn's `cluster_all=True`), numbered by decreasing
  support, so label 0 is the largest mode (scikit-learn's order too).

Outputs: int32 labels (batch, H, W, 1), modes (batch, max_seeds, C) (colour features of the
kept modes first, NaN after; float32, float64 for float64 images), and the number of modes
(batch,) int32.

Cost: dense seeds x pixels distances, `8 * batch * max_seeds * H * W` bytes (float64) per
iteration, and about three such temporaries: 22 MB for a 90 x 120 image with 256 seeds,
350 MB at 360 x 480. Meant for downsampled images (up to ~10^5 pixels); each iteration is
O(max_seeds * H * W) whatever the number of occupied cells. Cell keys are int64:
`prod(feature range / bandwidth + 1)` must stay below 2^62 (eager calls check and raise).
Under `jit_compile=True`, XLA may round the features differently in the last bit, which can
move a pixel lying exactly on a kernel edge (not seen in the tests).

Edge cases: a constant or 1-pixel image has one mode and label 0; an empty batch gives empty
outputs. Eager calls raise a ValueError on NaN or infinite pixels; traced calls cannot, and
give that image labels 0, NaN modes and 0 modes.

Works eagerly, in `tf.function`, with `jit_compile=True` (`supports_jit = True`), in
`tf.data` maps and in a saved `.keras` model.
"""

import keras
from keras import ops

from kerasseg.classical.base import ClassicalLayer, register_classical
from kerasseg.classical.kmeans import (
    clustering_features,
    clustering_model,
    label_image,
    squared_distances,
)
from kerasseg.ops.checks import check_int, check_number
from kerasseg.ops.image import check_float64, compute_dtype, dtype_name, is_symbolic

__all__ = ["KERNELS", "MeanShiftSegmentation", "bin_seeds", "mean_shift", "mean_shift_cluster"]

KERNELS = ("flat", "gaussian")
_KEY_LIMIT = 2.0**62


def bin_seeds(x, bandwidth, min_bin_freq, max_seeds):
    """scikit-learn's bin seeds of each image's features.

    Pixels are binned on a grid of cell `bandwidth`; each cell is encoded as one int64 key,
    keys are sorted, runs of equal keys counted, and the `max_seeds` most populated cells
    with at least `min_bin_freq` pixels become seeds at `cell * bandwidth`.

    Args:
        x: (batch, N, D) features.
        bandwidth: the grid cell size.
        min_bin_freq: the pixels a cell needs to give a seed.
        max_seeds: the number of seeds kept per image.

    Returns:
        A tuple (seeds (batch, max_seeds, D), valid (batch, max_seeds) bool).

    Raises:
        ValueError: in eager calls, a grid whose cell keys would overflow int64.
    """
    dtype = dtype_name(x)
    n = ops.shape(x)[1]
    cells = ops.round(x / ops.cast(bandwidth, dtype))  # (batch, N, D)
    _check_grid(cells, bandwidth)
    cells = ops.cast(cells, "int64")
    low = ops.min(cells, axis=1, keepdims=True, initial=2**62)  # initial: empty batch
    cells = cells - low
    extent = ops.max(cells, axis=1, keepdims=True, initial=0) + 1  # (batch, 1, D)
    strides = ops.concatenate(
        [ops.ones_like(extent[..., :1]), ops.cumprod(extent[..., :-1], axis=-1)], axis=-1
    )
    keys = ops.sum(cells * strides, axis=-1)  # (batch, N)
    keys = ops.sort(keys, axis=-1)
    index = ops.arange(n, dtype="int32")
    start = ops.concatenate(
        [ops.ones_like(keys[:, :1], dtype="bool"), ops.not_equal(keys[:, 1:], keys[:, :-1])],
        axis=1,
    )
    # Start positions of the runs of equal keys, in order, padded with N.
    starts = ops.sort(ops.where(start, index[None, :], n), axis=-1)
    ends = ops.concatenate([starts[:, 1:], ops.full_like(starts[:, :1], n)], axis=1)
    counts = ends - starts  # run lengths; 0 after the last run
    run_keys = ops.take_along_axis(keys, ops.minimum(starts, n - 1), axis=1)
    # Pad so that top_k works on images with fewer than max_seeds pixels.
    counts = ops.pad(counts, ((0, 0), (0, max_seeds)))
    run_keys = ops.pad(run_keys, ((0, 0), (0, max_seeds)))
    top_counts, top = ops.top_k(counts, max_seeds, sorted=True)
    seed_keys = ops.take_along_axis(run_keys, top, axis=1)  # (batch, max_seeds)
    cell = ops.floor_divide(ops.expand_dims(seed_keys, -1), strides) % extent + low
    # scikit-learn's seeds are float32: cell (float32) * bandwidth (rounded to float32).
    seeds = ops.cast(ops.cast(cell, "float32") * ops.cast(bandwidth, "float32"), dtype)
    valid = top_counts >= max(min_bin_freq, 1)
    return seeds, valid


def _check_grid(cells, bandwidth):
    """Eagerly, raise a ValueError if the cell keys would overflow int64."""
    if is_symbolic(cells) or ops.shape(cells)[0] == 0 or ops.shape(cells)[1] == 0:
        return
    cells = ops.convert_to_numpy(cells)
    size = (cells.max(axis=1) - cells.min(axis=1) + 1).prod(axis=-1).max()
    if not (size < _KEY_LIMIT and abs(cells).max() < _KEY_LIMIT):
        raise ValueError(
            f"`bandwidth` {bandwidth!r} is too small for the range of the features: the grid of "
            f"seed cells would have {size:.3g} cells (limit 2^62)."
        )


def _shift(x, seeds, valid, bandwidth, kernel, max_iter, tol):
    """Mean-shift the (batch, S, D) seeds; returns modes and their support (batch, S)."""
    dtype = dtype_name(x)
    bw = ops.cast(bandwidth, dtype)
    stop = ops.cast(tol * bandwidth, dtype) ** 2
    xs = ops.expand_dims(x, 1)  # (batch, 1, N, D)

    def weights(means):
        distance = squared_distances(xs, ops.expand_dims(means, 2))  # (batch, S, N)
        if kernel == "flat":
            return ops.cast(distance <= bw * bw, dtype)
        return ops.exp(-distance / (2.0 * bw * bw))

    def cond(i, means, support, done):
        return ops.logical_and(i <= max_iter, ops.logical_not(ops.all(done)))

    def body(i, means, support, done):
        w = weights(means)
        total = ops.sum(w, axis=-1)
        empty = total <= 0
        new = ops.einsum("bsn,bnd->bsd", w, x) / ops.expand_dims(
            ops.where(empty, ops.ones_like(total), total), -1
        )
        new = ops.where(ops.expand_dims(empty, -1), means, new)
        moved = ops.sum(ops.square(new - means), axis=-1)
        frozen = ops.expand_dims(done, -1)
        means = ops.where(frozen, means, new)
        support = ops.where(done, support, total)
        done = done | empty | (moved <= stop)
        return i + 1, means, support, done

    support = ops.zeros_like(valid, dtype=dtype)
    _, modes, support, _ = ops.while_loop(cond, body, (0, seeds, support, ops.logical_not(valid)))
    return modes, ops.where(valid, support, ops.zeros_like(support))


def _before(support, modes):
    """before[b, i, j]: mode j precedes mode i (support, then coordinates, descending)."""
    s = ops.shape(support)[1]
    index = ops.arange(s)
    # Lexicographic "j > i" over the coordinates, last feature first.
    greater = ops.zeros_like(support[:, :, None] < support[:, None, :])
    for d in reversed(range(modes.shape[-1])):
        a, b = modes[:, :, None, d], modes[:, None, :, d]
        greater = (b > a) | (ops.equal(b, a) & greater)
    same = ops.equal(support[:, None, :], support[:, :, None])
    tie = same & ops.all(ops.equal(modes[:, :, None], modes[:, None, :]), axis=-1)
    return (
        (support[:, None, :] > support[:, :, None])
        | (same & greater)
        | (tie & (index[None, None, :] < index[None, :, None]))
    )


def _merge(modes, support, bandwidth):
    """Order modes by strength and drop those within `bandwidth` of a stronger kept one.

    Returns the modes in that order and the keep mask (batch, S).
    """
    dtype = dtype_name(modes)
    s = modes.shape[1]
    rank = ops.sum(ops.cast(_before(support, modes), "int32"), axis=-1)  # a permutation
    order = ops.cast(ops.argsort(rank, axis=-1), "int32")
    modes = ops.take_along_axis(modes, ops.expand_dims(order, -1), axis=1)
    support = ops.take_along_axis(support, order, axis=1)
    bw = ops.cast(bandwidth, dtype)
    near = squared_distances(modes[:, :, None], modes[:, None, :]) <= bw * bw  # (b, S, S)
    later = ops.arange(s)[None, :]

    def suppress(t, keep):
        row = ops.take(near, t, axis=1)  # (batch, S)
        current = ops.take(keep, t, axis=1)[:, None]
        return keep & ~(current & row & (later > t))

    keep = support > 0
    # Only the first max(#valid) modes can suppress others (invalid ones are sorted last).
    steps = ops.max(ops.sum(ops.cast(keep, "int32"), axis=-1), initial=0)
    _, keep = ops.while_loop(
        lambda t, keep: t < steps, lambda t, keep: (t + 1, suppress(t, keep)), (0, keep)
    )
    return modes, keep


def mean_shift_cluster(x, finite, bandwidth, kernel, min_bin_freq, max_seeds, max_iter, tol):
    """Mean shift with bin seeding, as `MeanShiftSegmentation`.

    Args:
        x: (batch, N, D) features.
        finite: (batch,) bool, False for images whose features were not finite.
        bandwidth, kernel, min_bin_freq, max_seeds, max_iter, tol: as
            `MeanShiftSegmentation`.

    Returns:
        A tuple (labels (batch, N) int32, modes (batch, max_seeds, D) with NaN past the
        number of modes, number of modes (batch,) int32).
    """
    dtype = dtype_name(x)
    seeds, valid = bin_seeds(x, bandwidth, min_bin_freq, max_seeds)
    modes, support = _shift(x, seeds, valid, bandwidth, kernel, max_iter, tol)
    modes, keep = _merge(modes, support, bandwidth)
    # Compact the kept modes to the front, in order.
    s = modes.shape[1]
    position = ops.arange(s)[None, :]
    compact = ops.cast(ops.argsort(ops.where(keep, position, s + position), axis=-1), "int32")
    modes = ops.take_along_axis(modes, ops.expand_dims(compact, -1), axis=1)
    count = ops.sum(ops.cast(keep, "int32"), axis=-1)
    count = ops.where(finite, count, 0)
    used = position < count[:, None]
    distance = squared_distances(ops.expand_dims(x, 2), ops.expand_dims(modes, 1))  # (b, N, S)
    distance = ops.where(ops.expand_dims(used, 1), distance, float("inf"))
    labels = ops.cast(ops.argmin(distance, axis=-1), "int32")
    labels = ops.where(ops.expand_dims(finite, 1), labels, 0)
    modes = ops.where(ops.expand_dims(used, -1), modes, ops.cast(float("nan"), dtype))
    return labels, modes, count


@keras.saving.register_keras_serializable(package="kerasseg")
class MeanShiftSegmentation(ClassicalLayer):
    """Mean-shift clustering of each image's pixels, as `sklearn.cluster.MeanShift`.

    Rules and limits: see the module docstring.

    Reference:
        D. Comaniciu & P. Meer, "Mean shift: a robust approach toward feature space
        analysis", IEEE Trans. PAMI 24(5), 2002.

    Args:
        bandwidth: kernel radius (> 0) on the feature scale (uint8 images: [0, 1]).
        kernel: "flat" (scikit-learn's) or "gaussian".
        spatial_weight: weight of the (row, col) / max(H, W) features; 0 = colour only.
        min_bin_freq: pixels a seed cell needs (scikit-learn's `min_bin_freq`).
        max_seeds: most seeds (and modes) per image; shapes and memory scale with it.
        max_iter: most mean-shift iterations (scikit-learn: 300).
        tol: a seed stops when it moves by <= `tol * bandwidth` (scikit-learn: 1e-3).

    Returns:
        A tuple (labels (batch, H, W, 1) int32 by decreasing mode support, modes
        (batch, max_seeds, C) (NaN past the number of modes), number of modes (batch,)).

    Example:
        >>> labels, modes, n = MeanShiftSegmentation(bandwidth=0.1)(images)  # downsampled
    """

    config_keys = (
        "bandwidth",
        "kernel",
        "spatial_weight",
        "min_bin_freq",
        "max_seeds",
        "max_iter",
        "tol",
    )

    def __init__(
        self,
        bandwidth,
        kernel="flat",
        spatial_weight=0.0,
        min_bin_freq=1,
        max_seeds=256,
        max_iter=300,
        tol=1e-3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.bandwidth = check_number(bandwidth, "bandwidth", positive=True)
        if kernel not in KERNELS:
            raise ValueError(f"`kernel` must be one of {KERNELS}; got {kernel!r}.")
        self.kernel = kernel
        self.spatial_weight = check_number(spatial_weight, "spatial_weight", 0)
        self.min_bin_freq = check_int(min_bin_freq, "min_bin_freq", 1)
        self.max_seeds = check_int(max_seeds, "max_seeds", 1)
        self.max_iter = check_int(max_iter, "max_iter", 1)
        self.tol = check_number(tol, "tol", 0)
        self.supports_jit = True
        self.autocast = False  # keep float64 images float64 (and float16 ones exact)

    def call(self, images, training=None):
        check_float64(type(self).__name__)
        # float64 throughout: on quantised images many pixels lie at exactly one bandwidth
        # from a seed, and float32 rounding would put them on the other side of the kernel's
        # edge than scikit-learn's float64 does.
        x, finite, channels = clustering_features(
            images, type(self).__name__, self.spatial_weight, "float64"
        )
        labels, modes, count = mean_shift_cluster(
            x,
            finite,
            self.bandwidth,
            self.kernel,
            self.min_bin_freq,
            self.max_seeds,
            self.max_iter,
            self.tol,
        )
        labels = label_image(labels, images)
        modes = ops.cast(modes[..., :channels], compute_dtype(dtype_name(images)))
        return labels, modes, count

    def compute_output_spec(self, images, training=None):
        dtype = compute_dtype(dtype_name(images))
        batch = images.shape[0]
        return (
            keras.KerasTensor(tuple(images.shape[:3]) + (1,), dtype="int32"),
            keras.KerasTensor((batch, self.max_seeds, images.shape[-1]), dtype=dtype),
            keras.KerasTensor((batch,), dtype="int32"),
        )


@register_classical(
    "mean_shift",
    description="Mean-shift clustering per image (scikit-learn MeanShift, bin seeding), no weights",
    reference="Comaniciu & Meer 2002, IEEE TPAMI 24(5)",
    channels=3,
)
def mean_shift(
    bandwidth=0.1,
    input_dtype="uint8",
    channels=3,
    kernel="flat",
    spatial_weight=0.0,
    min_bin_freq=1,
    max_seeds=256,
    max_iter=300,
    tol=1e-3,
):
    """Mean-shift clustering as a model: images -> {"labels", "modes", "num_modes"}.

    Args:
        bandwidth: kernel radius on scikit-image's float scale (uint8 images: [0, 1]).
        input_dtype: dtype of the images the model takes ("uint8" default).
        channels: 1 (grey) or 3 (colour, clustered in RGB).
        kernel, spatial_weight, min_bin_freq, max_seeds, max_iter, tol: see
            `MeanShiftSegmentation`. Meant for downsampled images (dense seeds x pixels).

    Returns:
        A `SegmentationModel`.

    Example:
        >>> out = mean_shift(bandwidth=0.1)(small_images)  # out["labels"]: (batch, H, W, 1)
    """
    layer = MeanShiftSegmentation(
        bandwidth=bandwidth,
        kernel=kernel,
        spatial_weight=spatial_weight,
        min_bin_freq=min_bin_freq,
        max_seeds=max_seeds,
        max_iter=max_iter,
        tol=tol,
        name="mean_shift",
    )
    return clustering_model(
        layer, "mean_shift", input_dtype, channels, ("labels", "modes", "num_modes")
    )
