"""k-means colour / intensity clustering of an image batch as a Keras layer.

`KMeansSegmentation` clusters the pixels of each image of a (batch, H, W, C) batch (C = 1 or
3) into `k` groups with k-means++ seeding (Arthur & Vassilvitskii 2007) and Lloyd's
iterations (Lloyd 1982), with scikit-learn's `KMeans` rules:

* Features: the channels on scikit-image's float scale (`kerasseg.ops.image.to_float`: unsigned and
  signed integers divided by their dtype maximum, so uint8 becomes [0, 1]; float images as
  they are), plus, if `spatial_weight > 0`, the pixel position
  `spatial_weight * (row, col) / max(H, W)`. Computation is float32 (float64 for float64
  images; cluster sums in float64, so equal pixels average to exactly their value). Centres
  are returned for the colour features only, on that scale.
* Seeding: greedy k-means++ with `2 + int(log(k))` candidates per centre, as scikit-learn.
  Its `n_init * k * (2 + int(log(k)))` uniform numbers come from `seed` (NumPy's PCG64,
  drawn once, a constant of the graph) and are shared by all images, so an image gets the
  same result for the same seed whatever batch it is in, eagerly or compiled.
* `n_init` restarts run side by side (an extra axis) and the one with the lowest inertia
  (sum of squared distances of pixels to their centre) is kept.
* Stopping, per image and restart: labels unchanged, or the squared centre shift summed over
  clusters <= `tol * mean(per-feature variance of the image)`, or `max_iter` iterations; a
  final assignment step makes the labels those of the nearest final centre.
* Empty clusters keep their previous centre (scikit-learn moves the farthest points there,
  OpenCV a point of the largest cluster). With more clusters than distinct pixel values,
  k-means++ picks duplicate centres: those clusters stay empty, the labels used are the
  lowest of each group of equal centres, and the inertia is 0.
* Labels are renumbered by increasing centre intensity (the sum of the colour features of
  the centre; ties keep the order found), so label 0 is the darkest cluster.

Outputs: int32 labels (batch, H, W, 1), centres (batch, k, C) and, with `return_inertia`,
the inertia (batch,). Memory: the restarts hold `4 * batch * n_init * H * W * k` bytes of
distances (float32) at a time, plus as much for the one-hot assignment.

Edge cases: a constant image gives label 0 everywhere, all centres equal to its value and
inertia 0; a 1-pixel image likewise; an empty batch gives empty outputs. Eager calls raise a
ValueError on NaN or infinite pixels; traced calls cannot, and give that image labels 0, NaN
centres and NaN inertia.

Works eagerly, in `tf.function`, with `jit_compile=True` (`supports_jit = True`), in
`tf.data` maps and in a saved `.keras` model. XLA rounds some features differently in the
last bit, so compiled calls agree with eager ones to about 1e-6 in the centres (k-means++
sums in float64 keep them on the same path); a pixel almost equidistant from two centres
may change label.
"""

import math

import keras
import numpy as np
from keras import ops

from kerasseg.classical.base import ClassicalLayer, layer_model, register_classical
from kerasseg.ops.checks import check_int, check_number
from kerasseg.ops.image import (
    IMAGE_DTYPES,
    check_finite,
    check_images,
    compute_dtype,
    dtype_name,
    images_input,
    to_float,
)

__all__ = [
    "MAX_SEED",
    "KMeansSegmentation",
    "clustering_features",
    "clustering_model",
    "kmeans",
    "kmeans_cluster",
    "label_image",
    "pixel_features",
    "squared_distances",
]

MAX_SEED = 2**32 - 1


def pixel_features(images, spatial_weight, dtype):
    """Per-pixel features: colours on scikit-image's scale [+ weighted position].

    Non-finite images (possible only in traced calls) are replaced by zeros.

    Args:
        images: a (batch, H, W, C) image batch.
        spatial_weight: weight of the (row, col) / max(H, W) features; 0 for none.
        dtype: the float dtype of the features.

    Returns:
        A tuple ((batch, H * W, C [+ 2]) features, (batch,) bool: whether each image was
        finite).
    """
    x = to_float(images, dtype)
    shape = ops.shape(x)
    batch, height, width = shape[0], shape[1], shape[2]
    if spatial_weight:
        weight = ops.cast(spatial_weight, dtype)
        size = ops.cast(ops.maximum(height, width), dtype)
        rows = ops.cast(ops.arange(height), dtype) * weight / size
        cols = ops.cast(ops.arange(width), dtype) * weight / size
        rows = ops.broadcast_to(ops.reshape(rows, (1, -1, 1, 1)), (batch, height, width, 1))
        cols = ops.broadcast_to(ops.reshape(cols, (1, 1, -1, 1)), (batch, height, width, 1))
        x = ops.concatenate([x, rows, cols], axis=-1)
    x = ops.reshape(x, (batch, height * width, x.shape[-1]))
    finite = ops.all(ops.isfinite(x), axis=(1, 2))
    x = ops.where(ops.reshape(finite, (-1, 1, 1)), x, ops.zeros_like(x))
    return x, finite


def clustering_features(images, layer, spatial_weight, dtype=None):
    """Check the image batch of a clustering layer and compute its pixel features.

    Args:
        images: a (batch, H, W, C) image batch, C = 1 or 3 (known at trace time).
        layer: the layer's name, for the messages.
        spatial_weight: as `pixel_features`.
        dtype: the float dtype of the features; None: float64 for float64 images, float32
            for the others.

    Returns:
        A tuple (features, finite, channels): those of `pixel_features`, and C.

    Raises:
        TypeError, ValueError: as `kerasseg.ops.image.check_images`; ValueError also for
            an unknown channel axis and, in eager calls, NaN or infinite pixels.
    """
    check_images(images, layer, dtypes=IMAGE_DTYPES)
    check_finite(images, layer)
    channels = images.shape[-1]
    if channels is None:
        raise ValueError(f"{layer}: the channel axis of `images` must be known (1 or 3).")
    x, finite = pixel_features(images, spatial_weight, dtype or compute_dtype(dtype_name(images)))
    return x, finite, channels


def label_image(labels, images):
    """(batch, H * W) pixel labels as the (batch, H, W, 1) label image of `images`."""
    shape = ops.shape(images)
    return ops.reshape(labels, (shape[0], shape[1], shape[2], 1))


def squared_distances(points, centres):
    """Exact sum over features of (points - centres)^2, broadcasting the leading axes.

    Written per feature so that equal vectors are at distance exactly 0 (no
    |x|^2 - 2 x.c + |c|^2 cancellation).

    Args:
        points: (..., 1, D) or (..., N, D) points.
        centres: (..., K, D) centres, broadcast against `points` but for the last axis.

    Returns:
        The squared distances, the broadcast shape without the last axis.
    """
    total = None
    for d in range(points.shape[-1]):
        term = ops.square(points[..., d] - centres[..., d])
        total = term if total is None else total + term
    return total


def _kmeans_plus_plus(x, k, n_init, seed):
    """Greedy k-means++ centres (batch, n_init, k, D), scikit-learn's variant."""
    n = ops.shape(x)[1]
    trials = 2 + int(math.log(k))
    # The draws, shared by the batch: [:, 0, 0] picks the first centre, [:, c, :] the
    # candidates for centre c. They do not depend on the images, so they are made once from
    # `seed` with NumPy and held as a constant: keras.random's stateless TF ops pick another
    # generator under XLA, which would give jit-compiled calls other centres than eager ones.
    u = np.random.default_rng(seed).random((n_init, k, trials))
    u = ops.convert_to_tensor(u)  # float64, as the sums below
    first = ops.cast(ops.floor(u[:, 0, 0] * ops.cast(n, "float64")), "int32")
    first = ops.minimum(first, n - 1)
    centre = ops.take(x, first, axis=1)  # (batch, n_init, D)
    xr = ops.expand_dims(x, 1)  # (batch, 1, N, D)
    closest = squared_distances(xr, ops.expand_dims(centre, 2))  # (batch, n_init, N)
    centres = ops.repeat(ops.expand_dims(centre, 2), k, axis=2)  # (batch, n_init, k, D)
    xc = ops.expand_dims(xr, 2)  # (batch, 1, 1, N, D)

    def add_centre(c, state):
        centres, closest = state
        # float64 sums: float32 rounding would make compiled and eager calls pick different
        # candidates more often (XLA rounds the features differently in the last bit).
        cumulative = ops.cumsum(ops.cast(closest, "float64"), axis=-1)
        total = cumulative[..., -1:]
        target = ops.take(u, c, axis=1) * total  # (batch, n_init, trials)
        # Sample proportionally to the squared distance (inverse CDF, searchsorted 'left').
        index = ops.sum(
            ops.cast(ops.expand_dims(cumulative, 2) < ops.expand_dims(target, -1), "int32"),
            axis=-1,
        )
        index = ops.minimum(index, n - 1)  # (batch, n_init, trials)
        candidates = ops.take_along_axis(
            ops.expand_dims(x, 1), ops.expand_dims(index, -1), axis=2
        )  # (batch, n_init, trials, D)
        distance = squared_distances(xc, ops.expand_dims(candidates, 3))
        potential = ops.minimum(ops.expand_dims(closest, 2), distance)
        best = ops.argmin(ops.sum(ops.cast(potential, "float64"), axis=-1), axis=-1)
        best = ops.reshape(ops.cast(best, "int32"), (-1, n_init, 1, 1))
        closest = ops.take_along_axis(potential, best, axis=2)[:, :, 0]
        chosen = ops.take_along_axis(candidates, best, axis=2)  # (batch, n_init, 1, D)
        slot = ops.reshape(ops.equal(ops.arange(k), c), (1, 1, k, 1))
        centres = ops.where(slot, chosen, centres)
        return centres, closest

    if k > 1:
        centres, _ = ops.fori_loop(1, k, add_centre, (centres, closest))
    return centres


def _assign(x, centres):
    """Labels of the nearest centre for the Lloyd loop: argmin of -2 x.c + |c|^2."""
    scores = ops.sum(ops.square(centres), axis=-1)[:, :, None, :] - 2.0 * ops.einsum(
        "bnd,brkd->brnk", x, centres
    )
    return ops.cast(ops.argmin(scores, axis=-1), "int32")


def _lloyd(x, centres, max_iter, tol, finite):
    """Lloyd iterations on (batch, n_init, k, D) centres until every restart stops."""
    k = centres.shape[2]
    dtype = dtype_name(x)
    n_init = centres.shape[1]
    variance = ops.mean(ops.var(x, axis=1), axis=-1)  # (batch,)
    threshold = ops.expand_dims(ops.cast(tol, dtype) * variance, 1)  # (batch, 1)
    batch = ops.shape(x)[0]
    done = ops.broadcast_to(ops.expand_dims(ops.logical_not(finite), 1), (batch, n_init))
    previous = ops.full((batch, n_init, ops.shape(x)[1]), -1, dtype="int32")

    def cond(i, centres, previous, done):
        return ops.logical_and(i < max_iter, ops.logical_not(ops.all(done)))

    def body(i, centres, previous, done):
        labels = _assign(x, centres)
        # Sums in float64: exact for pixels of equal value, so their mean is that value.
        onehot = ops.one_hot(labels, k, dtype="float64")  # (batch, n_init, N, k)
        counts = ops.sum(onehot, axis=2)
        sums = ops.einsum("brnk,bnd->brkd", onehot, ops.cast(x, "float64"))
        occupied = ops.expand_dims(counts > 0, -1)
        means = ops.cast(sums / ops.where(occupied, ops.expand_dims(counts, -1), 1), dtype)
        new = ops.where(occupied, means, centres)
        shift = ops.sum(ops.square(new - centres), axis=(2, 3))
        same = ops.all(ops.equal(labels, previous), axis=-1)
        stop = ops.logical_or(same, shift <= threshold)
        centres = ops.where(ops.reshape(done, (-1, n_init, 1, 1)), centres, new)
        previous = ops.where(ops.expand_dims(done, -1), previous, labels)
        return i + 1, centres, previous, ops.logical_or(done, stop)

    _, centres, _, _ = ops.while_loop(cond, body, (0, centres, previous, done))
    return centres


def _intensity_rank(centres, channels):
    """Rank (batch, k) of each centre by increasing colour sum; ties by index (stable)."""
    key = ops.sum(centres[..., :channels], axis=-1)  # (batch, k)
    k = centres.shape[1]
    index = ops.arange(k)
    before = ops.logical_or(
        key[:, None, :] < key[:, :, None],
        ops.logical_and(
            ops.equal(key[:, None, :], key[:, :, None]), index[None, None, :] < index[None, :, None]
        ),
    )  # before[b, i, j]: centre j comes before centre i
    return ops.sum(ops.cast(before, "int32"), axis=-1)


def kmeans_cluster(x, finite, k, n_init, max_iter, tol, seed, channels):
    """k-means with k-means++ seeding and Lloyd's iterations, as `KMeansSegmentation`.

    Args:
        x: (batch, N, D) features.
        finite: (batch,) bool, False for images whose features were not finite.
        k: the number of clusters.
        n_init: the number of restarts (the lowest inertia wins).
        max_iter: the most Lloyd iterations.
        tol: the relative tolerance on the centre shift.
        seed: the seed of the k-means++ draws.
        channels: the number of colour features (the first ones), which order the labels.

    Returns:
        A tuple (labels (batch, N) int32, centres (batch, k, D), inertia (batch,)).
    """
    dtype = dtype_name(x)
    # Work on mean-centred features, as scikit-learn: sums of centred values round less (and
    # a constant image becomes exactly 0, so its centres come back exactly).
    mean = ops.cast(ops.mean(ops.cast(x, "float64"), axis=1, keepdims=True), dtype)
    x = x - mean
    centres = _kmeans_plus_plus(x, k, n_init, seed)
    centres = _lloyd(x, centres, max_iter, tol, finite)
    # Final assignment with exact distances: labels match the centres, inertia is exact.
    distance = squared_distances(ops.expand_dims(ops.expand_dims(x, 1), 3), centres[:, :, None])
    labels = ops.cast(ops.argmin(distance, axis=-1), "int32")  # (batch, n_init, N)
    inertia = ops.sum(ops.min(distance, axis=-1, initial=float("inf")), axis=-1)  # (batch, n_init)
    best = ops.cast(ops.argmin(inertia, axis=1), "int32")
    inertia = ops.take_along_axis(inertia, ops.expand_dims(best, 1), axis=1)[:, 0]
    labels = ops.take_along_axis(labels, ops.reshape(best, (-1, 1, 1)), axis=1)[:, 0]
    centres = ops.take_along_axis(centres, ops.reshape(best, (-1, 1, 1, 1)), axis=1)[:, 0] + mean
    rank = _intensity_rank(centres, channels)  # new label of each old label
    order = ops.cast(ops.argsort(rank, axis=-1), "int32")  # old label of each new label
    centres = ops.take_along_axis(centres, ops.expand_dims(order, -1), axis=1)
    labels = ops.take_along_axis(rank, labels, axis=1)
    nan = ops.cast(float("nan"), dtype)
    labels = ops.where(ops.expand_dims(finite, 1), labels, 0)
    centres = ops.where(ops.reshape(finite, (-1, 1, 1)), centres, nan)
    inertia = ops.where(finite, inertia, nan)
    return labels, centres, inertia


@keras.saving.register_keras_serializable(package="kerasseg")
class KMeansSegmentation(ClassicalLayer):
    """k-means clustering of each image's pixels (k-means++ seeding, Lloyd iterations).

    Rules follow `sklearn.cluster.KMeans` (see the module docstring).

    References:
        S. P. Lloyd, "Least squares quantization in PCM", IEEE Trans. Information Theory
        28(2), 1982. D. Arthur & S. Vassilvitskii, "k-means++: the advantages of careful
        seeding", SODA 2007.

    Args:
        k: number of clusters (>= 1).
        init: "k-means++" (the only one).
        n_init: restarts run side by side; the lowest inertia wins.
        max_iter: most Lloyd iterations per restart.
        tol: stop when the squared centre shift <= `tol` * mean feature variance.
        spatial_weight: weight of the (row, col) / max(H, W) features; 0 = colour only.
        seed: integer seed of the stateless k-means++ draws (same seed, same result).
        return_inertia: also return the (batch,) inertia.

    Returns:
        A tuple (labels (batch, H, W, 1) int32 ordered by centre intensity, centres
        (batch, k, C) on scikit-image's float scale [, inertia (batch,)]).

    Example:
        >>> labels, centres = KMeansSegmentation(k=4)(images)  # (batch, H, W, 3) uint8
    """

    config_keys = (
        "k",
        "init",
        "n_init",
        "max_iter",
        "tol",
        "spatial_weight",
        "seed",
        "return_inertia",
    )

    def __init__(
        self,
        k=4,
        init="k-means++",
        n_init=1,
        max_iter=300,
        tol=1e-4,
        spatial_weight=0.0,
        seed=0,
        return_inertia=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.k = check_int(k, "k", 1)
        if init != "k-means++":
            raise ValueError(f"`init` must be 'k-means++'; got {init!r}.")
        self.init = init
        self.n_init = check_int(n_init, "n_init", 1)
        self.max_iter = check_int(max_iter, "max_iter", 1)
        self.tol = check_number(tol, "tol", 0)
        self.spatial_weight = check_number(spatial_weight, "spatial_weight", 0)
        self.seed = check_int(seed, "seed", 0, MAX_SEED)
        self.return_inertia = bool(return_inertia)
        self.supports_jit = True
        self.autocast = False  # keep float64 images float64 (and float16 ones exact)

    def call(self, images, training=None):
        x, finite, channels = clustering_features(images, type(self).__name__, self.spatial_weight)
        labels, centres, inertia = kmeans_cluster(
            x, finite, self.k, self.n_init, self.max_iter, self.tol, self.seed, channels
        )
        labels = label_image(labels, images)
        centres = centres[..., :channels]
        return (labels, centres, inertia) if self.return_inertia else (labels, centres)

    def compute_output_spec(self, images, training=None):
        dtype = compute_dtype(dtype_name(images))
        batch = images.shape[0]
        labels = keras.KerasTensor(tuple(images.shape[:3]) + (1,), dtype="int32")
        centres = keras.KerasTensor((batch, self.k, images.shape[-1]), dtype=dtype)
        if not self.return_inertia:
            return labels, centres
        return labels, centres, keras.KerasTensor((batch,), dtype=dtype)


def clustering_model(layer, name, input_dtype, channels, output_names):
    """A functional model around a clustering layer, its outputs named.

    Args:
        layer: a clustering layer (`KMeansSegmentation`, `MeanShiftSegmentation`).
        name: the model's name.
        input_dtype: the dtype of the images the model takes.
        channels: 1 or 3.
        output_names: the names of the layer's outputs, in order.

    Returns:
        A `SegmentationModel`.
    """
    images = images_input(input_dtype, channels, IMAGE_DTYPES)
    return layer_model(layer, images, output_names, name)


@register_classical(
    "kmeans",
    description="k-means colour clustering per image (k-means++, scikit-learn rules), no weights",
    reference="Lloyd 1982, IEEE Trans. Inf. Theory 28(2); Arthur & Vassilvitskii 2007",
    channels=3,
    num_classes=4,
)
def kmeans(
    k=4,
    input_dtype="uint8",
    channels=3,
    n_init=1,
    max_iter=300,
    tol=1e-4,
    spatial_weight=0.0,
    seed=0,
):
    """k-means colour clustering as a model: images -> {"labels", "centres", "inertia"}.

    Args:
        k: number of clusters; labels 0..k-1 by increasing centre intensity.
        input_dtype: dtype of the images the model takes ("uint8" default).
        channels: 1 (grey) or 3 (colour, clustered in RGB).
        n_init, max_iter, tol, spatial_weight, seed: see `KMeansSegmentation`.

    Returns:
        A `SegmentationModel`.

    Example:
        >>> out = kmeans(k=4)(images)  # out["labels"]: (batch, H, W, 1) int32
    """
    layer = KMeansSegmentation(
        k=k,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        spatial_weight=spatial_weight,
        seed=seed,
        return_inertia=True,
        name="kmeans",
    )
    return clustering_model(
        layer, "kmeans", input_dtype, channels, ("labels", "centres", "inertia")
    )
