"""Global thresholds as batched Keras layers, with scikit-image's semantics.

One layer per method of `skimage.filters` (scikit-image 0.26): Otsu, multi-Otsu, Li, Yen,
ISODATA, triangle, mean and minimum. Each computes one threshold per image (multi-Otsu:
`classes - 1` thresholds) from the histogram scikit-image would build (see `histogram.py`),
with its tie rules, and returns the mask `image > threshold` (multi-Otsu: the label map
`np.digitize(image, thresholds)`), plus the thresholds on request.

Common behaviour:
    * Input (batch, H, W, C), C = 1 or 3, dtype uint8, int8, uint16, int16 or float.
      Integer images use one bin per value (thresholds equal scikit-image's exactly); float
      images use `nbins` bins over each image's range. Colour images are converted with
      `skimage.color.rgb2gray` (to floats in [0, 1]) first.
    * A constant image has its value as threshold and an empty mask (scikit-image agrees
      for Otsu, Li, triangle, mean; it raises or returns garbage for the others).
    * Where scikit-image raises on an image (NaN, multi-Otsu with fewer values than
      classes, minimum without two maxima), eager calls raise a ValueError; traced calls
      cannot raise, and give a NaN threshold and an empty mask for that image.
    * Thresholds are float64; masks (values 0 and 1) and labels uint8 (batch, H, W, 1).
      Models saved when masks were int32 load unchanged and give the same values.
    * Integer images are read once for the histogram (their minimum and maximum come from
      it) and once for the comparison, which writes the mask; float images are read once
      more, for their minimum and maximum.
    * Runs eagerly, in `tf.function`, under `jit_compile=True` and in `tf.data`.
"""

import inspect

import keras
import numpy as np
from keras import ops

from kerasseg.classical.base import ClassicalLayer, layer_model, register_classical
from kerasseg.classical.histogram import (
    INTEGER_RANGES,
    bin_positions,
    image_histogram,
    integer_histogram,
    value_range,
)
from kerasseg.ops.checks import check_int, check_number, is_int
from kerasseg.ops.image import (
    FLOAT_DTYPES,
    check_finite,
    check_images,
    dtype_name,
    images_input,
    is_symbolic,
    to_grey,
)

__all__ = [
    "BUILDERS",
    "SUPPORTED_DTYPES",
    "IsodataThreshold",
    "LiThreshold",
    "MeanThreshold",
    "MinimumThreshold",
    "MultiOtsuThreshold",
    "OtsuThreshold",
    "TriangleThreshold",
    "YenThreshold",
    "otsu_from_histogram",
    "threshold_builder",
]

SUPPORTED_DTYPES = tuple(INTEGER_RANGES) + FLOAT_DTYPES
NEG_INF = float("-inf")


def _first_argmax(values, valid):
    """Index of the first maximum of `values` among `valid` entries, per row (int32)."""
    masked = ops.where(valid, values, NEG_INF)
    return ops.cast(ops.argmax(masked, axis=1), "int32")


def _gather(values, index):
    return ops.take_along_axis(values, ops.expand_dims(index, 1), axis=1)[:, 0]


def _reverse_cumsum(x):
    return ops.flip(ops.cumsum(ops.flip(x, 1), axis=1), 1)


class _GlobalThreshold(ClassicalLayer):
    """Shared machinery: checks, grey conversion, histogram, mask, outputs."""

    reference = ""
    default_classes = 2  # the mask's two classes; multi-Otsu overrides
    config_keys = ("nbins", "return_threshold")

    def __init__(self, nbins=256, return_threshold=False, **kwargs):
        super().__init__(**kwargs)
        self.nbins = check_int(nbins, "nbins", 2)
        self.return_threshold = bool(return_threshold)
        self.supports_jit = True
        self.autocast = False  # float64 images stay float64

    def thresholds(self, grey, dtype):
        """Each image's threshold(s), whether it has them, and its value range.

        Args:
            grey: the (batch, H, W, 1) grey images.
            dtype: their dtype name.

        Returns:
            A tuple (float64 thresholds, (batch,) bool valid, extent): `extent` is a pair of
            (batch,) float64 (smallest, largest value) for the constant-image rule, or None
            where a constant image's threshold is its value already.
        """
        histogram = image_histogram(_rows(grey), dtype, self.nbins)
        threshold, ok = self.from_histogram(histogram)
        return threshold, ok, (histogram.low, histogram.high)

    def from_histogram(self, histogram):
        raise NotImplementedError

    def _eager_failure(self, images):
        return ValueError(
            f"{type(self).__name__}: scikit-image's method has no threshold for an image of "
            "this batch (see the layer's docstring)."
        )

    def call(self, images, training=None):
        name = type(self).__name__
        check_images(images, name, dtypes=SUPPORTED_DTYPES)
        check_finite(images, name)
        if images.shape[0] == 0:  # an empty batch has empty outputs
            mask = ops.zeros(tuple(images.shape[:3]) + (1,), dtype="uint8")
            threshold = ops.zeros(self._threshold_shape(0), dtype="float64")
            return (mask, threshold) if self.return_threshold else mask
        grey = to_grey(images, "float64")
        dtype = dtype_name(grey)
        batch = ops.shape(grey)[0]
        threshold, ok, extent = self.thresholds(grey, dtype)
        if extent is not None:
            low, high = extent
            threshold, ok = self.constant_rule(threshold, ok, ops.equal(low, high), low)
        if not is_symbolic(ok) and not bool(ops.all(ok)):
            raise self._eager_failure(images)
        threshold = ops.where(
            ops.reshape(ok, (batch,) + (1,) * (len(threshold.shape) - 1)), threshold, np.nan
        )
        mask = self.apply(grey, threshold, dtype)
        return (mask, threshold) if self.return_threshold else mask

    @staticmethod
    def constant_rule(threshold, ok, constant, low):
        return ops.where(constant, low, threshold), ok | constant

    @staticmethod
    def apply(grey, threshold, dtype):
        """The uint8 mask `grey > threshold`, in one pass over the pixels."""
        t = ops.reshape(threshold, (-1, 1, 1, 1))
        if dtype in INTEGER_RANGES:
            # For integers, x > t  <=>  x > floor(t): compare exactly in the image's dtype.
            # A NaN threshold (no threshold for that image) gives an empty mask: it compares
            # against the dtype's largest value, which no pixel exceeds.
            start, size = INTEGER_RANGES[dtype]
            top = start + size - 1
            t = ops.clip(ops.floor(ops.where(ops.isnan(t), top, t)), start, top)
            return ops.cast(ops.greater(grey, ops.cast(t, dtype)), "uint8")
        return ops.cast(ops.greater(grey, ops.cast(t, dtype)), "uint8")

    def compute_output_spec(self, images, training=None):
        mask = keras.KerasTensor(images.shape[:3] + (1,), dtype="uint8")
        if not self.return_threshold:
            return mask
        return mask, keras.KerasTensor(self._threshold_shape(images.shape[0]), dtype="float64")

    def _threshold_shape(self, batch):
        return (batch,)


def _rows(grey):
    """(batch, pixels) view of a (batch, H, W, 1) batch."""
    return ops.reshape(grey, (ops.shape(grey)[0], -1))


def _integer_mean(grey, dtype):
    """Each integer image's mean in float64, bit-identical to `numpy.mean`.

    numpy sums integers in float64, exactly (every partial sum is an integer below 2**53),
    and divides once. Here the row sums are exact too, and so is their float64 total:
    8-bit rows as a product with a vector of ones in float32 (exact while width * largest
    |value| < 2**24, and 8-bit values stay exact even where a device multiplies in TF32 or
    bfloat16; the fastest reduction on CPU, vectorised and multi-threaded: 4x the int32 sum
    on the ISBI batch), other rows in int32 where no sum can overflow (width * largest
    |value| < 2**31), else in float64. The one division then gives numpy's result.
    """
    start, size = INTEGER_RANGES[dtype]
    largest = max(-start, start + size - 1)
    width = grey.shape[2]
    if width is not None and size == 256 and width * largest < 2**24:
        rows = ops.cast(grey[..., 0], "float32")  # (batch, H, W)
        row_sums = ops.matmul(rows, ops.ones((width, 1), dtype="float32"))[..., 0]
        row_sums = ops.cast(row_sums, "float64")
    elif width is not None and width * largest < 2**31:
        row_sums = ops.cast(ops.sum(ops.cast(grey, "int32"), axis=(2, 3)), "float64")
    else:
        row_sums = ops.sum(ops.cast(grey, "float64"), axis=(2, 3))
    total = ops.sum(row_sums, axis=1)
    shape = ops.shape(grey)
    count = ops.cast(shape[1], "float64") * ops.cast(shape[2], "float64")
    # TensorFlow's graph optimiser and XLA turn x / c for a constant c into x * (1 / c),
    # which can be one unit in the last place off numpy's correctly rounded quotient: adding
    # 0 * total makes the count a value known only at run time (a float 0 * x is never folded,
    # as x could be infinite or NaN), so the division stays a division.
    return total / (count + 0.0 * total)


def otsu_from_histogram(counts, centres):
    """Otsu threshold of (batch, n) histograms: the first maximum of the criterion."""
    counts = ops.cast(counts, "float64")
    centres = ops.cast(centres, "float64")
    weight1 = ops.cumsum(counts, axis=1)
    weight2 = _reverse_cumsum(counts)
    moment = counts * centres
    mean1 = ops.divide_no_nan(ops.cumsum(moment, axis=1), weight1)
    mean2 = ops.divide_no_nan(_reverse_cumsum(moment), weight2)
    variance = weight1[:, :-1] * weight2[:, 1:] * (mean1[:, :-1] - mean2[:, 1:]) ** 2
    return _gather(centres, ops.cast(ops.argmax(variance, axis=1), "int32"))


@keras.saving.register_keras_serializable(package="kerasseg")
class OtsuThreshold(_GlobalThreshold):
    """Otsu's threshold (`skimage.filters.threshold_otsu`).

    The first maximum of the between-class variance wins. The layer returns the uint8
    (batch, H, W, 1) mask `image > threshold` (see the module docstring).

    Reference:
        N. Otsu, "A Threshold Selection Method from Gray-Level Histograms", IEEE Trans.
        SMC 9(1), 1979.

    Args:
        nbins: the number of histogram bins of float images (>= 2; integer images use one
            bin per value).
        return_threshold: also return the (batch,) float64 thresholds.

    Example:
        >>> mask = OtsuThreshold()(images)  # images: (batch, H, W, 1) uint8
    """

    reference = "Otsu 1979, IEEE Trans. SMC 9(1)"

    def from_histogram(self, histogram):
        threshold = otsu_from_histogram(histogram.counts, histogram.centres)
        return threshold, ops.ones_like(threshold, dtype="bool")


@keras.saving.register_keras_serializable(package="kerasseg")
class YenThreshold(_GlobalThreshold):
    """Yen's threshold (`skimage.filters.threshold_yen`), maximum correlation criterion.

    Reference:
        Yen, Chang & Chang, "A New Criterion for Automatic Multilevel Thresholding", IEEE
        Trans. Image Processing 4(3), 1995.

    Args:
        nbins, return_threshold: as `OtsuThreshold`.
    """

    reference = "Yen, Chang & Chang 1995, IEEE Trans. Image Processing 4(3)"

    def from_histogram(self, histogram):
        counts = ops.cast(histogram.counts, "float32")
        pmf = counts / ops.sum(counts, axis=1, keepdims=True)
        p1 = ops.cumsum(pmf, axis=1)
        p1_sq = ops.cumsum(pmf**2, axis=1)
        p2_sq = _reverse_cumsum(pmf**2)
        crit = ops.log(
            1.0 / (p1_sq[:, :-1] * p2_sq[:, 1:]) * (p1[:, :-1] * (1.0 - p1[:, :-1])) ** 2
        )
        positions, real = bin_positions(histogram)
        valid = positions[:, :-1] < ops.expand_dims(histogram.length - 1, 1)
        # numpy's argmax returns the first NaN; crit is NaN only where it is 0/0 (outside).
        index = _first_argmax(ops.where(ops.isnan(crit), NEG_INF, crit), valid)
        threshold = _gather(histogram.centres, index)
        return threshold, ops.ones_like(threshold, dtype="bool")


@keras.saving.register_keras_serializable(package="kerasseg")
class IsodataThreshold(_GlobalThreshold):
    """ISODATA / Ridler-Calvard threshold (`skimage.filters.threshold_isodata`).

    The lowest bin centre t with `0 <= (mean below + mean above) / 2 - t < bin width`.

    Reference:
        Ridler & Calvard, "Picture thresholding using an iterative selection method", IEEE
        Trans. SMC 8(8), 1978.

    Args:
        nbins, return_threshold: as `OtsuThreshold`.
    """

    reference = "Ridler & Calvard 1978, IEEE Trans. SMC 8(8)"

    def from_histogram(self, histogram):
        counts, centres = histogram.counts, histogram.centres
        work = "float32" if dtype_name(centres) == "float32" else "float64"
        below = ops.cumsum(counts, axis=1)
        above = below[:, -1:] - below
        intensity = ops.cumsum(ops.cast(counts, work) * ops.cast(centres, work), axis=1)
        lower = intensity[:, :-1] / ops.cast(below[:, :-1], work)
        higher = (intensity[:, -1:] - intensity[:, :-1]) / ops.cast(above[:, :-1], work)
        centres_w = ops.cast(centres, work)
        distances = (lower + higher) / 2.0 - centres_w[:, :-1]
        width = centres_w[:, 1:2] - centres_w[:, 0:1]
        positions, _ = bin_positions(histogram)
        valid = positions[:, :-1] < ops.expand_dims(histogram.length - 1, 1)
        hit = valid & (distances >= 0) & (distances < width)
        index = ops.cast(ops.argmax(ops.cast(hit, "int32"), axis=1), "int32")
        return _gather(centres, index), ops.any(hit, axis=1)


@keras.saving.register_keras_serializable(package="kerasseg")
class TriangleThreshold(_GlobalThreshold):
    """Triangle threshold (`skimage.filters.threshold_triangle`, the Zack/ImageJ variant).

    OpenCV's THRESH_TRIANGLE differs by one bin: it widens the range and decrements the
    result.

    Reference:
        Zack, Rogers & Latt, "Automatic measurement of sister chromatid exchange
        frequency", J. Histochem. Cytochem. 25(7), 1977.

    Args:
        nbins, return_threshold: as `OtsuThreshold`.
    """

    reference = "Zack, Rogers & Latt 1977, J. Histochem. Cytochem. 25(7)"

    def from_histogram(self, histogram):
        counts = ops.cast(histogram.counts, "float64")
        positions, _ = bin_positions(histogram)
        positions = ops.cast(positions, "int32")
        nonzero = counts > 0
        n = ops.shape(counts)[1]
        low = ops.cast(ops.argmax(ops.cast(nonzero, "int32"), axis=1), "int32")
        high = (
            n - 1 - ops.cast(ops.argmax(ops.cast(ops.flip(nonzero, 1), "int32"), axis=1), "int32")
        )
        peak = ops.cast(ops.argmax(counts, axis=1), "int32")
        peak_height = ops.max(counts, axis=1)
        flip = (peak - low) < (high - peak)
        # Distance along the triangle's base, from the far end towards the peak.
        x = ops.where(
            ops.expand_dims(flip, 1),
            ops.expand_dims(high, 1) - positions,
            positions - ops.expand_dims(low, 1),
        )
        width = ops.where(flip, high - peak, peak - low)
        norm = ops.sqrt(peak_height**2 + ops.cast(width, "float64") ** 2)
        length = (
            ops.expand_dims(peak_height / norm, 1) * ops.cast(x, "float64")
            - ops.expand_dims(ops.cast(width, "float64") / norm, 1) * counts
        )
        valid = (x >= 0) & (x < ops.expand_dims(width, 1))
        # scikit-image scans from the far end: the first maximum in order of increasing x.
        order = ops.where(valid, x, n)
        best = ops.max(ops.where(valid, length, NEG_INF), axis=1, keepdims=True)
        candidates = valid & ops.equal(length, best)
        first_x = ops.min(ops.where(candidates, order, n), axis=1)
        level = ops.where(flip, high - first_x, low + first_x)
        threshold = _gather(histogram.centres, ops.clip(level, 0, n - 1))
        return threshold, width > 0


@keras.saving.register_keras_serializable(package="kerasseg")
class MeanThreshold(_GlobalThreshold):
    """The mean intensity as threshold (`skimage.filters.threshold_mean`).

    Reference:
        Glasbey, "An analysis of histogram-based thresholding algorithms", CVGIP:
        Graphical Models and Image Processing 55(6), 1993.

    Integer images: an exact sum of the pixels divided once by their count, in float64,
    which is what `numpy.mean` computes (its float64 sum of integers is exact too), so the
    thresholds are bit-identical; no histogram is needed, and the exact mean of a constant
    image is its value. Float images: the float64 mean of the pixels (a constant image
    gets its value, as with every method).

    Args:
        nbins: unused (the mean needs no histogram); kept for a uniform signature.
        return_threshold: as `OtsuThreshold`.
    """

    reference = "Glasbey 1993, CVGIP: Graphical Models and Image Processing 55(6)"

    def thresholds(self, grey, dtype):
        if dtype in INTEGER_RANGES:
            threshold = _integer_mean(grey, dtype)
            return threshold, ops.ones_like(threshold, dtype="bool"), None
        values = _rows(grey)
        threshold = ops.mean(ops.cast(values, "float64"), axis=1)
        return threshold, ops.ones_like(threshold, dtype="bool"), value_range(values)


@keras.saving.register_keras_serializable(package="kerasseg")
class LiThreshold(_GlobalThreshold):
    """Li's minimum cross-entropy threshold (`skimage.filters.threshold_li`).

    Iterates `t = (m_b - m_f) / (log m_b - log m_f)` from the mean until it moves by at most
    `tolerance` (default: 0.5 for integer images, half the smallest gap between distinct
    values for float images), at most `max_iter` times. Integer images iterate on the
    histogram, float images on the pixels, as scikit-image does.

    References:
        Li & Lee, "Minimum cross entropy thresholding", Pattern Recognition 26(4), 1993.
        Li & Tam, "An iterative algorithm for minimum cross entropy thresholding", Pattern
        Recognition Letters 18(8), 1998.

    Args:
        tolerance: None or a number > 0, the step below which the iteration stops.
        max_iter: the most iterations (>= 1).
        nbins, return_threshold: as `OtsuThreshold`.
    """

    reference = "Li & Lee 1993, Pattern Recognition 26(4); Li & Tam 1998"
    config_keys = (*_GlobalThreshold.config_keys, "tolerance", "max_iter")

    def __init__(self, tolerance=None, max_iter=10000, **kwargs):
        super().__init__(**kwargs)
        self.tolerance = check_number(tolerance, "tolerance", positive=True, allow_none=True)
        self.max_iter = check_int(max_iter, "max_iter", 1)

    def thresholds(self, grey, dtype):
        values = _rows(grey)
        if dtype in INTEGER_RANGES:
            histogram = integer_histogram(values, dtype)
            low, high = histogram.low, histogram.high
            levels = ops.cast(ops.arange(ops.shape(histogram.counts)[1]), "float64")
            levels = ops.broadcast_to(ops.expand_dims(levels, 0), ops.shape(histogram.counts))
            weights = ops.cast(histogram.counts, "float64")
            tolerance = 0.5 if self.tolerance is None else self.tolerance
        else:
            low, high = value_range(values)
            levels = ops.cast(values, "float64") - ops.expand_dims(low, 1)
            weights = ops.ones_like(levels)
            tolerance = self.tolerance if self.tolerance is not None else _half_min_gap(levels)
        tolerance = ops.cast(ops.broadcast_to(tolerance, ops.shape(low)), "float64")
        start = ops.sum(levels * weights, axis=1) / ops.sum(weights, axis=1)
        threshold = _li_iterate(levels, weights, start, tolerance, self.max_iter)
        return threshold + low, ops.ones_like(threshold, dtype="bool"), (low, high)


def _half_min_gap(values):
    ordered = ops.sort(values, axis=1)
    gaps = ordered[:, 1:] - ordered[:, :-1]
    gaps = ops.concatenate([gaps, ops.full_like(ordered[:, :1], np.inf)], axis=1)  # 1 pixel
    return ops.min(ops.where(gaps > 0, gaps, np.inf), axis=1) / 2


def _li_iterate(levels, weights, start, tolerance, max_iter):
    """Li's fixed-point iteration per image, stopped per image as scikit-image stops."""

    def step(t):
        foreground = levels > ops.expand_dims(t, 1)
        wf = ops.where(foreground, weights, 0.0)
        wb = weights - wf
        mean_fore = ops.sum(wf * levels, axis=1) / ops.sum(wf, axis=1)
        mean_back = ops.sum(wb * levels, axis=1) / ops.sum(wb, axis=1)
        new = (mean_back - mean_fore) / (ops.log(mean_back) - ops.log(mean_fore))
        return new, ops.equal(mean_back, 0.0)

    def condition(i, current, following, done):
        return (i < max_iter) & ops.any(~done)

    def body(i, current, following, done):
        new, stop = step(following)
        active = ~done
        moved = ops.abs(following - current) > tolerance
        # scikit-image: while |t_next - t_curr| > tol: t_curr = t_next; ...; break if m_b == 0
        updating = active & moved
        current = ops.where(updating, following, current)
        following = ops.where(updating & ~stop, new, following)
        done = done | ~moved | (updating & stop)
        return i + 1, current, following, done

    current = -2.0 * tolerance
    done = ops.zeros_like(start, dtype="bool")
    _, _, result, _ = ops.while_loop(condition, body, (0, current, start, done))
    return result


def _running_max(x):
    """Cumulative maximum along axis 1 of (batch, n) integers >= -1, by doubling shifts."""
    n = x.shape[1]
    shift = 1
    while shift < n:
        padding = ops.full_like(x[:, :shift], -1)
        x = ops.maximum(x, ops.concatenate([padding, x[:, :-shift]], axis=1))
        shift *= 2
    return x


@keras.saving.register_keras_serializable(package="kerasseg")
class MinimumThreshold(_GlobalThreshold):
    """Minimum between the two histogram modes (`skimage.filters.threshold_minimum`).

    The histogram is smoothed with a 3-bin running mean (reflect border) until it has at
    most two local maxima (at most `max_iter` times); the threshold is the lowest bin
    between them. Images whose histogram never has exactly two maxima have no threshold.

    Reference:
        Prewitt & Mendelsohn, "The analysis of cell images", Annals of the New York Academy
        of Sciences 128, 1966.

    Args:
        max_iter: the most smoothing passes (>= 1).
        nbins, return_threshold: as `OtsuThreshold`.
    """

    reference = "Prewitt & Mendelsohn 1966, Ann. N. Y. Acad. Sci. 128"
    config_keys = (*_GlobalThreshold.config_keys, "max_iter")

    def __init__(self, max_iter=10000, **kwargs):
        super().__init__(**kwargs)
        self.max_iter = check_int(max_iter, "max_iter", 1)

    def from_histogram(self, histogram):
        positions, real = bin_positions(histogram)
        last = ops.expand_dims(histogram.length - 1, 1)
        steps = real & (positions < last)  # bins i with a successor i + 1 in the histogram

        def smooth(h):
            h64 = ops.cast(h, "float64")
            left = ops.concatenate([h64[:, :1], h64[:, :-1]], axis=1)
            right = ops.concatenate([h64[:, 1:], h64[:, -1:]], axis=1)
            right = ops.where(positions == last, h64, right)
            return ops.where(real, ops.cast((left + h64 + right) / 3.0, "float32"), 0.0)

        def maxima(h):
            # scikit-image walks the histogram with a direction flag: a maximum is where a
            # fall follows a rise, plateaus keep the flag, and the walk starts rising.
            up = ops.concatenate([h[:, 1:], h[:, -1:]], axis=1)
            change = ops.where(steps, ops.sign(up - h), 0.0)
            # The last change strictly before each bin (-1: none), and its sign.
            last = _running_max(ops.where(change != 0, positions, -1))
            before = ops.concatenate([ops.full_like(last[:, :1], -1), last[:, :-1]], axis=1)
            previous = ops.take_along_axis(change, ops.maximum(before, 0), axis=1)
            direction = ops.where(before < 0, 1.0, previous)
            return steps & (direction > 0) & (change < 0)

        def condition(i, h, done):
            return (i < self.max_iter) & ops.any(~done)

        def body(i, h, done):
            smoothed = smooth(h)
            h = ops.where(ops.expand_dims(done, 1), h, smoothed)
            count = ops.sum(ops.cast(maxima(h), "int32"), axis=1)
            return i + 1, h, done | (count < 3)

        start = ops.cast(histogram.counts, "float32")
        done = ops.zeros_like(histogram.length, dtype="bool")
        _, h, done = ops.while_loop(condition, body, (0, start, done))
        peaks = maxima(h)
        ok = done & ops.equal(ops.sum(ops.cast(peaks, "int32"), axis=1), 2)
        n = ops.shape(h)[1]
        first = ops.min(ops.where(peaks, positions, n), axis=1)
        second = ops.min(
            ops.where(peaks & (positions > ops.expand_dims(first, 1)), positions, n), axis=1
        )
        between = (positions >= ops.expand_dims(first, 1)) & (
            positions <= ops.expand_dims(second, 1)
        )
        lowest = ops.min(ops.where(between, h, np.inf), axis=1, keepdims=True)
        index = ops.min(ops.where(between & ops.equal(h, lowest), positions, n), axis=1)
        threshold = _gather(histogram.centres, ops.clip(index, 0, n - 1))
        return threshold, ok


@keras.saving.register_keras_serializable(package="kerasseg")
class MultiOtsuThreshold(_GlobalThreshold):
    """Multi-level Otsu (`skimage.filters.threshold_multiotsu`), 2 to 5 classes.

    Maximises the between-class variance over all ordered threshold tuples, as scikit-image
    does (Liao, Chen & Chung 2001, in float32 with its moment convention). The label map is
    `np.digitize(image, thresholds)`: a pixel equal to a threshold goes to the upper class.
    `classes` <= 3 evaluate every tuple in scikit-image's order (ties resolve identically);
    4 and 5 classes use an exact dynamic programme over the same objective (ties between
    equal-variance tuples resolve to the lexicographically first, like scikit-image, up to
    float32 rounding of near-ties). Integer images must be 8-bit (16-bit: convert to float).

    Reference:
        Liao, Chen & Chung, "A fast algorithm for multilevel thresholding", J. Information
        Science and Engineering 17(5), 2001.

    Args:
        classes: the number of classes, 2 to 5 (`classes - 1` thresholds).
        nbins: as `OtsuThreshold`, at most 1024.
        return_threshold: also return the (batch, classes - 1) float64 thresholds.
    """

    reference = "Liao, Chen & Chung 2001, J. Inf. Sci. Eng. 17(5)"
    default_classes = 3
    config_keys = (*_GlobalThreshold.config_keys, "classes")

    def __init__(self, classes=3, **kwargs):
        super().__init__(**kwargs)
        if not is_int(classes) or not 2 <= classes <= 5:
            raise ValueError(f"`classes` must be an integer from 2 to 5; got {classes!r}.")
        if self.nbins > 1024:
            raise ValueError(f"`nbins` must be <= 1024 for multi-Otsu; got {self.nbins}.")
        self.classes = int(classes)

    def _threshold_shape(self, batch):
        return (batch, self.classes - 1)

    def thresholds(self, grey, dtype):
        if dtype in ("uint16", "int16"):
            raise TypeError(
                "MultiOtsuThreshold: 16-bit images would need 65536 x 65536 tables; convert "
                "them to float (the layer then uses `nbins` bins)."
            )
        return super().thresholds(grey, dtype)

    def from_histogram(self, histogram):
        counts = ops.cast(histogram.counts, "float64")
        prob = ops.cast(counts / ops.sum(counts, axis=1, keepdims=True), "float32")
        positions, real = bin_positions(histogram)
        index = ops.cast(positions, "float32")
        p = ops.cumsum(prob, axis=1)
        s = ops.cumsum(ops.where(positions == 0, prob, index * prob), axis=1)  # s[0] = prob[0]
        table = _variance_table(p, s)  # table[b, i, j] = variance of class [i, j]
        length = histogram.length
        nvalues = ops.sum(ops.cast(prob > 0, "int32"), axis=1)
        thresholds = _best_thresholds(table, length, self.classes)
        # As scikit-image: with exactly `classes` values, thresholds are all but the last.
        occupied = ops.where(prob > 0, positions, ops.shape(prob)[1])
        exact = ops.sort(occupied, axis=1)[:, : self.classes - 1]
        thresholds = ops.where(ops.expand_dims(nvalues == self.classes, 1), exact, thresholds)
        centres = ops.take_along_axis(histogram.centres, thresholds, axis=1)
        return centres, nvalues >= self.classes

    @staticmethod
    def constant_rule(threshold, ok, constant, low):
        return threshold, ok & ~constant

    @staticmethod
    def apply(grey, threshold, dtype):
        """The uint8 label map `np.digitize(grey, thresholds)` (0 where a threshold is NaN)."""
        batch = ops.shape(threshold)[0]
        nan = ops.reshape(ops.any(ops.isnan(threshold), axis=1), (batch, 1, 1, 1))
        labels = None
        for k in range(threshold.shape[1]):
            t = ops.reshape(threshold[:, k], (batch, 1, 1, 1))
            above = ops.cast(ops.greater_equal(grey, ops.cast(t, dtype)) & ~nan, "uint8")
            labels = above if labels is None else labels + above
        return labels

    def _eager_failure(self, images):
        return ValueError(
            f"MultiOtsuThreshold: an image of this batch has fewer than {self.classes} distinct "
            "values after binning, so it cannot be split into that many classes."
        )


def _variance_table(p, s):
    """(batch, n, n) table of S^2 / P per class [i, j], as scikit-image's LUT (float32).

    Row 0 uses the cumulative moments themselves and its [0, 0] entry stays 0; other rows use
    differences of cumulative moments; empty classes give 0.
    """
    p_prev = ops.concatenate([ops.zeros_like(p[:, :1]), p[:, :-1]], axis=1)
    s_prev = ops.concatenate([ops.zeros_like(s[:, :1]), s[:, :-1]], axis=1)
    zeroth = ops.expand_dims(p, 1) - ops.expand_dims(p_prev, 2)
    first = ops.expand_dims(s, 1) - ops.expand_dims(s_prev, 2)
    n = ops.shape(p)[1]
    rows = ops.expand_dims(ops.arange(n), 1)
    cols = ops.expand_dims(ops.arange(n), 0)
    # Row 0 is the cumulative moment itself (no subtraction), as in scikit-image.
    zeroth = ops.where(rows == 0, ops.expand_dims(p, 1), zeroth)
    first = ops.where(rows == 0, ops.expand_dims(s, 1), first)
    value = ops.where(zeroth > 0, first * first / ops.where(zeroth > 0, zeroth, 1.0), 0.0)
    value = ops.where((rows == 0) & (cols == 0), 0.0, value)
    return ops.where(cols >= rows, value, 0.0)


def _best_thresholds(table, length, classes):
    """Lexicographically first threshold tuple maximising the sum of class variances."""
    n = ops.shape(table)[1]
    positions = ops.expand_dims(ops.arange(n, dtype="int32"), 0)
    last = ops.expand_dims(length - 1, 1)
    # tail[b, s] = variance of the last class [s + 1, length - 1].
    last_column = ops.take_along_axis(
        table, ops.reshape(length - 1, (-1, 1, 1)) * ops.ones((1, n, 1), dtype="int32"), axis=2
    )[:, :, 0]
    tail = ops.concatenate([last_column[:, 1:], ops.zeros_like(last_column[:, :1])], axis=1)
    usable = positions < last  # a threshold index leaves at least one bin above it
    if classes == 2:
        return ops.expand_dims(_first_argmax(table[:, 0, :] + tail, usable), 1)
    # middle[b, s, t] = variance of the class [s + 1, t].
    middle = ops.concatenate([table[:, 1:, :], ops.zeros_like(table[:, :1, :])], axis=1)
    rows = ops.expand_dims(positions, 2)
    cols = ops.expand_dims(positions, 1)
    if classes == 3:
        sigma = (ops.expand_dims(table[:, 0, :], 2) + ops.expand_dims(tail, 1)) + middle
        valid = (cols > rows) & ops.expand_dims(usable, 1) & ops.expand_dims(usable, 2)
        flat = _first_argmax(ops.reshape(sigma, (-1, n * n)), ops.reshape(valid, (-1, n * n)))
        return ops.stack([flat // n, flat % n], axis=1)
    # Suffix dynamic programme: best[c][s] = best sum of c classes covering [s + 1, end].
    pair_valid = (cols > rows) & ops.expand_dims(usable, 1)
    best = [None, ops.where(usable, tail, NEG_INF)]
    for _ in range(2, classes):
        options = ops.where(pair_valid, middle + ops.expand_dims(best[-1], 1), NEG_INF)
        best.append(ops.max(options, axis=2))
    chosen = [_first_argmax(table[:, 0, :] + best[classes - 1], usable)]
    for k in range(1, classes - 1):
        previous = ops.expand_dims(chosen[-1], 1)
        row = ops.take_along_axis(
            middle, ops.reshape(chosen[-1], (-1, 1, 1)) * ops.ones((1, 1, n), dtype="int32"), axis=1
        )[:, 0, :]
        chosen.append(_first_argmax(row + best[classes - 1 - k], usable & (positions > previous)))
    return ops.stack(chosen, axis=1)


def _threshold_model(layer, input_dtype, channels):
    """A functional model around a global threshold layer (see `threshold_builder`)."""
    images = images_input(input_dtype, channels, SUPPORTED_DTYPES)
    key = "labels" if isinstance(layer, MultiOtsuThreshold) else "mask"
    return layer_model(layer, images, (key, "threshold") if layer.return_threshold else None)


def threshold_builder(name):
    """The model builder of the global threshold registered as `name` (see `BUILDERS`)."""
    layer_class, _ = BUILDERS[name]

    def build(input_dtype="uint8", channels=1, return_threshold=True, **options):
        """A global threshold as a model: (batch, H, W, channels) images -> mask, threshold.

        Args:
            input_dtype: dtype of the images the model takes ("uint8" default). Integer
                images are thresholded exactly like scikit-image does; float images use
                `nbins` bins.
            channels: 1 (grey) or 3 (converted like `skimage.color.rgb2gray`).
            return_threshold: outputs {"mask" ("labels" for multi-Otsu), "threshold"} if
                True, else the mask alone.
            **options: the options of the threshold layer (`BUILDERS` names it), with its
                defaults:
            nbins: the number of histogram bins of float images (default 256; integer
                images use one bin per value; "mean_threshold" uses none, "multiotsu" at
                most 1024).
            classes: "multiotsu" only: the number of classes, 2 to 5 (default 3).
            tolerance: "li" only: None or a number > 0, the step below which the iteration
                stops (default None: 0.5 for integer images, half the smallest gap between
                values for float images).
            max_iter: "li" and "minimum" only: the most iterations ("li") or smoothing
                passes ("minimum"), at least 1 (default 10000).

        Returns:
            A `SegmentationModel`.
        """
        layer = layer_class(return_threshold=return_threshold, name=name, **options)
        return _threshold_model(layer, input_dtype, channels)

    build.__name__ = build.__qualname__ = name  # shows as `otsu`, not `build`, in tracebacks
    return build


def _builder_arguments(layer_class):
    """The builder's own keywords plus every option of the layer's constructors."""
    names = ["input_dtype", "channels", "return_threshold"]
    for cls in layer_class.__mro__:
        if not issubclass(cls, _GlobalThreshold) or "__init__" not in vars(cls):
            continue
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.kind == p.POSITIONAL_OR_KEYWORD and p.name not in ("self", *names):
                names.append(p.name)
    return tuple(names)


BUILDERS = {
    "otsu": (OtsuThreshold, "Otsu's threshold"),
    "multiotsu": (MultiOtsuThreshold, "Multi-level Otsu (2 to 5 classes)"),
    "li": (LiThreshold, "Li's minimum cross-entropy threshold"),
    "yen": (YenThreshold, "Yen's threshold"),
    "isodata": (IsodataThreshold, "The ISODATA threshold"),
    "triangle": (TriangleThreshold, "The triangle threshold"),
    "mean_threshold": (MeanThreshold, "The mean-intensity threshold"),
    "minimum": (MinimumThreshold, "The minimum-between-modes threshold"),
}

for _name, (_layer_class, _method) in BUILDERS.items():
    register_classical(
        _name,
        threshold_builder(_name),
        description=f"{_method} per image (scikit-image semantics), no weights",
        reference=_layer_class.reference,
        num_classes=_layer_class.default_classes,
        arguments=_builder_arguments(_layer_class),
    )
