"""Local (adaptive) thresholds as batched Keras layers: OpenCV's adaptive mean/Gaussian,
scikit-image's Niblack and Sauvola.

Every layer takes a (batch, H, W, C) batch and returns a uint8 (batch, H, W, 1) mask (0 and
1, as the global thresholds), and optionally the per-pixel threshold image. Box sums are
separable sums of shifted slices, one axis at a time, in the narrowest integer dtype that
holds them exactly (uint16 / int32 for 8-bit images, float64 otherwise); borders (replicate
or numpy "reflect") are concatenated, only the border rows gathered; the Gaussian is a
separable sum of shifted slices with OpenCV's float32 rounding. keras.ops only, no
convolution. All layers run eagerly, in `tf.function`, with XLA (`jit_compile=True`, 3-6x
faster on CPU) and in `tf.data` pipelines; `benchmarks/local_threshold.py` times them
against OpenCV and scikit-image.

References:
    OpenCV `cv::adaptiveThreshold` (imgproc, "Miscellaneous Image Transformations").
    W. Niblack, "An Introduction to Digital Image Processing", Prentice-Hall, 1986.
    J. Sauvola and M. Pietikainen, "Adaptive document image binarization", Pattern
    Recognition 33(2), 2000. F. Shafait et al., "Efficient implementation of local adaptive
    thresholding techniques using integral images", DRR XV, 2008.
"""

import math

import keras
import numpy as np
from keras import ops

from kerasseg.classical.base import ClassicalLayer, layer_model, register_classical
from kerasseg.ops.checks import check_int, is_int, is_number
from kerasseg.ops.image import (
    FLOAT_DTYPES,
    INTEGER_DTYPES,
    INTEGER_LIMITS,
    check_finite,
    check_images,
    dtype_name,
    images_input,
    materialize,
    to_grey,
)

__all__ = [
    "AdaptiveThreshold",
    "NiblackThreshold",
    "SauvolaThreshold",
    "adaptive_threshold",
    "border_index",
    "box_sum",
    "local_sum",
    "niblack",
    "opencv_gaussian_kernel",
    "pad_2d",
    "pad_axis",
    "sauvola",
    "window_sum",
]

_MAX_BLOCK = 2895  # largest odd b with 256 * b * b < 2**31: int32 box sums stay exact

_SMALL_GAUSSIAN = {  # OpenCV's fixed kernels for odd sizes <= 9 when sigma <= 0
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
    9: tuple(v / 256 for v in (4, 13, 30, 51, 60, 51, 30, 13, 4)),
}


# ----------------------------------------------------------------------------- helpers


def _source_index(index, n, mode):
    """Map positions `index` of an axis of length `n` extended beyond its ends to the source
    positions `mode` reads them from (see `border_index`)."""
    if mode == "replicate":
        return ops.clip(index, 0, n - 1)
    period = ops.maximum(2 * (n - 1), 1)
    index = ops.mod(index, period)
    return ops.where(index >= n, period - index, index)


def border_index(n, before, after, mode):
    """Source index of every position of an axis of length `n` padded by `before`/`after`.

    Args:
        n: the axis length (an int or a scalar tensor).
        before: the padding before the axis.
        after: the padding after the axis.
        mode: "replicate", OpenCV's BORDER_REPLICATE (`aaa|abc|ccc`), or "reflect",
            numpy's "reflect" (`cb|abc|ba`, mirrored without repeating the edge, periodic
            for wide pads; a length-1 axis repeats its value), which is OpenCV's
            BORDER_REFLECT_101.

    Returns:
        (n + before + after,) int32 indices into the axis.
    """
    return _source_index(ops.arange(0, n + before + after, dtype="int32") - before, n, mode)


def pad_axis(x, before, after, mode, axis):
    """Pad one axis of `x`: the border is gathered (`border_index`), the inside is copied.

    Only the `before + after` border positions go through a gather, so padding costs little
    more than the copy (a gather of the whole padded axis is several times slower under XLA).

    Args:
        x: a tensor.
        before: the padding before the axis.
        after: the padding after the axis.
        mode: "replicate" or "reflect" (see `border_index`); any axis length >= 1.
        axis: the axis to pad.

    Returns:
        `x`, `before + after` longer along `axis`.
    """
    n = ops.shape(x)[axis]
    parts = [x]
    if before:
        index = _source_index(ops.arange(-before, 0, dtype="int32"), n, mode)
        parts.insert(0, ops.take(x, index, axis=axis))
    if after:
        index = _source_index(ops.arange(0, after, dtype="int32") + n, n, mode)
        parts.append(ops.take(x, index, axis=axis))
    return ops.concatenate(parts, axis=axis) if len(parts) > 1 else x


def pad_2d(x, before, after, mode):
    """Pad both spatial axes of (batch, H, W) `x` (see `pad_axis`).

    Args:
        x: a (batch, H, W) tensor.
        before: the padding before each axis.
        after: the padding after each axis.
        mode: "replicate" or "reflect" (see `border_index`).

    Returns:
        The (batch, H + before + after, W + before + after) padded tensor.
    """
    return pad_axis(pad_axis(x, before, after, mode, 1), before, after, mode, 2)


def _slice(x, start, stop, axis):
    """`x[start:stop]` along `axis`."""
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def window_sum(x, window, axis):
    """Sums of `window` consecutive values along `axis`, as sums of shifted slices.

    Sums of 2, 4, 8, ... values are built by doubling and the window is added up from its
    binary digits: about 2 log2(window) additions eagerly; XLA fuses the slices into one loop
    of `window - 1` additions per output, which is faster on CPU than a cumulative sum and
    exact in any dtype whose sums do not overflow (integers, integer-valued floats).

    Args:
        x: a tensor, at least `window` long along `axis`.
        window: the window length (a Python int >= 1).
        axis: the axis to sum along.

    Returns:
        The window sums, shorter than `x` by `window - 1` along `axis`.
    """
    partial, span = {1: x}, 1  # partial[s][i] = x[i] + ... + x[i + s - 1]
    while 2 * span <= window:
        pairs = partial[span]
        partial[2 * span] = _slice(pairs, 0, -span, axis) + _slice(pairs, span, None, axis)
        span *= 2
    total, offset = None, 0
    for span in sorted(partial, reverse=True):
        if window & span:
            # partial[span] is window - span longer than the output: skip the rest of the window
            term = _slice(partial[span], offset, (offset + span - window) or None, axis)
            total = term if total is None else total + term
            offset += span
    return total


def local_sum(x, size, mode, dtypes, squared=False):
    """Sums over the `size` x `size` window centred on each pixel of a (batch, H, W) tensor.

    One axis at a time: pad the rows (`pad_axis`, in the input dtype: an 8-bit image pads a
    quarter the bytes of int32), cast, sum along H (`window_sum`), then the same along W.
    Exact for integers when `dtypes` hold the sums.

    Args:
        x: a (batch, H, W) tensor.
        size: the odd window size.
        mode: the border, "replicate" or "reflect" (see `border_index`).
        dtypes: the dtypes of the column sums and of the window sums.
        squared: sum x * x (squared after the cast to `dtypes[0]`) instead of x.

    Returns:
        The (batch, H, W) window sums, of dtype `dtypes[1]`.
    """
    radius = size // 2
    for axis, dtype in zip((1, 2), dtypes, strict=True):
        x = ops.cast(pad_axis(x, radius, radius, mode, axis), dtype)
        if squared and axis == 1:
            x = x * x
        x = window_sum(x, size, axis)
    return x


def box_sum(padded, window):
    """Sums over `window` x `window` windows of a padded tensor (`window_sum` on W, then H).

    Args:
        padded: a (batch, H + window - 1, W + window - 1) tensor.
        window: the window size.

    Returns:
        The (batch, H, W) window sums.
    """
    return window_sum(window_sum(padded, window, 2), window, 1)


def opencv_gaussian_kernel(size):
    """`cv2.getGaussianKernel(size, 0, cv2.CV_32F)` bit for bit.

    sigma = 0.3 * ((size - 1) / 2 - 1) + 0.8; sizes up to 9 use OpenCV's fixed kernels.

    Args:
        size: the odd kernel size.

    Returns:
        The `size` weights as Python floats (float32 values).
    """
    if size in _SMALL_GAUSSIAN:
        return [float(v) for v in np.float32(_SMALL_GAUSSIAN[size])]
    sigma = size * 0.15 + 0.35  # = 0.3 * ((size - 1) * 0.5 - 1) + 0.8, as OpenCV writes it
    scale = -0.125 / (sigma * sigma)
    half = [math.exp(float(x * x) * scale) for x in range(1 - size, 0, 2)]
    total = 2 * sum(half) + 1.0
    values = [v / total for v in half]
    return [float(v) for v in np.float32(values + [1.0 / total] + values[::-1])]


def _fma32(x, weight, accumulator):
    """float32 fused multiply-add, round(x * weight + accumulator), as OpenCV's AVX2 filters.

    x * weight is exact in float64 for float32 operands; one float64 rounding then one to
    float32 (double rounding can differ from a true FMA only in vanishingly rare cases).
    """
    product = ops.cast(x, "float64") * weight
    if accumulator is not None:
        product = product + ops.cast(accumulator, "float64")
    return ops.cast(product, "float32")


def _opencv_box_mean(total, count):
    """OpenCV's normalised uint8 box filter from (batch, H, W) int32 window sums `total`.

    Windows of up to 256 pixels (`ColumnSum<ushort, uchar>`) round total / count exactly;
    larger ones (`ColumnSum<int, uchar>`) scale in float32 in the SIMD lanes,
    rint(float(total) * float(1 / count)), and in double (exactly) in the scalar tail, the
    last W % 8 columns with AVX2 (8 float32 lanes).
    """
    quotient = ops.floor_divide(total, count)
    exact = quotient + ops.cast(2 * (total - quotient * count) > count, "int32")
    if count <= 256:
        return exact
    scale = float(np.float32(1.0 / count))
    scaled = ops.cast(ops.round(ops.cast(total, "float32") * scale), "int32")
    width = ops.shape(total)[2]
    tail = ops.arange(0, width, dtype="int32") >= width - width % 8
    return ops.where(tail, exact, scaled)


def _check_window(value, name, minimum, maximum=None):
    """An odd window size in [`minimum`, `maximum`]: `check_int`, TypeError for a non-integer."""
    if not is_int(value):
        raise TypeError(f"`{name}` must be an integer; got {value!r}.")
    return check_int(value, name, minimum, maximum, odd=True)


def _check_real(value, name, positive=False):
    """A finite real number (TypeError otherwise), > 0 if `positive` (ValueError)."""
    if not is_number(value) or not math.isfinite(value):
        raise TypeError(f"`{name}` must be a finite real number; got {value!r}.")
    if positive and value <= 0:
        raise ValueError(f"`{name}` must be > 0; got {value!r}.")
    return float(value)


# ----------------------------------------------------------------------------- OpenCV


@keras.saving.register_keras_serializable(package="kerasseg")
class AdaptiveThreshold(ClassicalLayer):
    """OpenCV's adaptive threshold (`cv2.adaptiveThreshold`) of a uint8 (batch, H, W, 1) batch.

    The local mean is the `block_size` x `block_size` box mean rounded to uint8 (method
    "mean", `ADAPTIVE_THRESH_MEAN_C`) or the Gaussian-weighted mean of the same block
    (method "gaussian", `ADAPTIVE_THRESH_GAUSSIAN_C`: OpenCV's kernel, sigma =
    0.3 * ((block_size - 1) / 2 - 1) + 0.8, float32 separable filter with fused multiply-adds
    as OpenCV's AVX2 code path, rounded to uint8). Border: BORDER_REPLICATE | BORDER_ISOLATED
    (edge pixels repeated; nothing outside each image is read). Then, as OpenCV:
    THRESH_BINARY keeps `src - mean > -ceil(c)`, THRESH_BINARY_INV (`inverse=True`) keeps
    `src - mean <= -floor(c)`. The mask is 1/0 (OpenCV writes `maxValue`/0).

    Args:
        block_size: odd size > 1 of the neighbourhood.
        c: OpenCV's `C`, subtracted from the mean (may be negative or fractional).
        method: "mean" or "gaussian".
        inverse: THRESH_BINARY_INV instead of THRESH_BINARY.
        return_threshold: also return the float32 (batch, H, W, 1) threshold image `t`, with
            mask = `src > t` (binary) or `src <= t` (inverse): t = mean - ceil(c), resp.
            mean - floor(c).

    Only uint8 single-channel images, like OpenCV (CV_8UC1); other dtypes raise TypeError.
    `block_size` is at most 2895: the int32 box sums and the division-free comparison of
    the mean (`total + (count + 1) // 2 <= count * (src + delta)`) stay exact up to there.
    Pixel-exact against OpenCV 5.x on x86-64 with AVX2/FMA (the Gaussian's last few columns
    of images whose width is not a multiple of 8 go through OpenCV's scalar tail, which
    rounds without FMA, and may differ by one grey level in the mean). Box means of blocks
    over 256 pixels are rounded as OpenCV's box filter does: in float32 (which differs from
    exact rounding at rare pixels of blocks of about 255 and more), exactly in the last
    W % 8 columns.

    Example:
        >>> mask = AdaptiveThreshold(block_size=11, c=2)(images)  # uint8 (batch, H, W, 1)
    """

    config_keys = ("block_size", "c", "method", "inverse", "return_threshold")

    def __init__(
        self,
        block_size=11,
        c=2.0,
        method="gaussian",
        inverse=False,
        return_threshold=False,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)  # never cast the input dtype away
        super().__init__(**kwargs)
        # the int32 window sums and comparisons of the mean stay exact up to 2895^2 pixels
        self.block_size = _check_window(block_size, "block_size", 3, _MAX_BLOCK)
        self.c = _check_real(c, "c")
        if method not in ("mean", "gaussian"):
            raise ValueError(f'`method` must be "mean" or "gaussian"; got {method!r}.')
        self.method = method
        self.inverse = bool(inverse)
        self.return_threshold = bool(return_threshold)
        self.supports_jit = True

    def call(self, images, training=None):
        check_images(images, type(self).__name__, channels=(1,), dtypes=("uint8",))
        source = images[..., 0]
        # OpenCV's lookup table covers differences -255..255, so |c| beyond that saturates.
        rounded = math.floor(self.c) if self.inverse else math.ceil(self.c)
        delta = int(max(-512, min(512, rounded)))
        if self.method == "mean":
            mask, mean = self._box_mean(source, delta)
        else:
            mean = ops.cast(ops.round(self._gaussian(source)), "int32")
            level = ops.cast(source, "int32") + delta
            mask = level <= mean if self.inverse else level > mean
        mask = ops.expand_dims(ops.cast(mask, "uint8"), -1)
        if not self.return_threshold:
            return mask
        return mask, ops.expand_dims(ops.cast(mean - delta, "float32"), -1)

    def _box_mean(self, source, delta):
        """The mask and OpenCV's uint8 box mean (`cv::boxFilter`, normalised) of `source`.

        Returns (mask, mean), mean None when neither the threshold nor OpenCV's float32
        rounding needs it: up to 256 pixels OpenCV rounds exactly (total / count, count odd,
        never a tie), so the mask needs no division: level = src + delta > round(total /
        count) exactly when total + (count + 1) // 2 <= count * level (level clipped to
        [0, 256], which keeps every comparison with a mean in [0, 255]).
        """
        count = self.block_size * self.block_size
        # uint16 column sums (255 * block_size fits) halve the memory traffic of the first pass.
        columns = "uint16" if 255 * self.block_size < 2**16 else "int32"
        total = local_sum(source, self.block_size, "replicate", (columns, "int32"))
        if count <= 256 and not self.return_threshold:
            level = ops.clip(ops.cast(source, "int32") + delta, 0, 256)
            above = total + (count + 1) // 2 <= count * level
            return (ops.logical_not(above) if self.inverse else above), None
        mean = _opencv_box_mean(total, count)
        level = ops.cast(source, "int32") + delta
        return (level <= mean if self.inverse else level > mean), mean

    def _gaussian(self, source):
        """OpenCV's float32 separable Gaussian filter of the uint8 (batch, H, W) `source`."""
        size, radius = self.block_size, self.block_size // 2
        kernel = opencv_gaussian_kernel(size)
        padded = pad_axis(source, radius, radius, "replicate", 2)  # uint8: a quarter the bytes
        # row filter: sum over taps in order, FMA into the accumulator (the first from zero,
        # a correctly rounded float32 product)
        rows = ops.cast(padded[:, :, : -2 * radius], "float32") * kernel[0]
        for i, weight in enumerate(kernel[1:], 1):
            rows = _fma32(padded[:, :, i : (i - 2 * radius) or None], weight, rows)
        # 6x faster under XLA (no fused recomputation of the row filter for every tap)
        rows = materialize(pad_axis(rows, radius, radius, "replicate", 1))
        # symmetric column filter: centre * k0, then (up + down) * k_j accumulated by FMA
        out = rows[:, radius : (-radius) or None] * kernel[radius]
        for j in range(1, radius + 1):
            pair = rows[:, radius + j : (j - radius) or None] + rows[:, radius - j : -radius - j]
            out = _fma32(pair, kernel[radius + j], out)
        return out

    def compute_output_spec(self, images, training=None):
        shape = tuple(images.shape[:3]) + (1,)
        mask = keras.KerasTensor(shape, dtype="uint8")
        if not self.return_threshold:
            return mask
        return mask, keras.KerasTensor(shape, dtype="float32")


# ----------------------------------------------------------------------------- scikit-image


def _float_type(dtype):
    """scikit-image's `_supported_float_type`: float64 for integers, float32 for float16/32."""
    if dtype == "float64" or dtype in INTEGER_DTYPES:
        return "float64"
    return "float32"


class _LocalMeanStdThreshold(ClassicalLayer):
    """Shared part of Niblack and Sauvola: local mean and standard deviation."""

    config_keys = ("window_size", "k", "return_threshold")

    def __init__(self, window_size=15, k=0.2, return_threshold=False, **kwargs):
        kwargs.setdefault("autocast", False)  # float64 images stay float64
        super().__init__(**kwargs)
        self.window_size = _check_window(window_size, "window_size", 1)
        self.k = _check_real(k, "k")
        self.return_threshold = bool(return_threshold)
        self.supports_jit = True

    def _prepare(self, images):
        name = type(self).__name__
        dtype = check_images(images, name)
        check_finite(images, name)
        channels = images.shape[-1]
        float_dtype = _float_type(dtype)
        if channels == 1:  # integers stay integers: their window sums may be exact in int32
            grey = (
                images[..., 0] if dtype in INTEGER_DTYPES else ops.cast(images[..., 0], float_dtype)
            )
            value_range = INTEGER_LIMITS.get(dtype, (-1.0, 1.0))
        else:  # skimage.color.rgb2gray: floats in [0, 1]
            grey = ops.cast(to_grey(images, float_dtype)[..., 0], float_dtype)
            value_range = (-1.0, 1.0)
        return grey, float_dtype, value_range, dtype in FLOAT_DTYPES

    def _mean_std(self, x, float_dtype, maybe_nan=False):
        """skimage.filters.thresholding._mean_std: window sums of the reflect-padded image.

        8-bit images sum x and x^2 in int32 (exact, like scikit-image's float64 integral
        images of integers, and several times faster); other images sum in float64, x^2
        squared in the image's float dtype as scikit-image does.
        """
        size = self.window_size
        count = size * size
        invalid = None
        if dtype_name(x) in ("uint8", "int8") and count * 255**2 < 2**31:
            sums = local_sum(x, size, "reflect", ("int32", "int32"))
            squares = local_sum(x, size, "reflect", ("int32", "int32"), squared=True)
        else:
            x = ops.cast(x, float_dtype)
            if maybe_nan:  # float input: keep a NaN or inf from spreading through the sums
                bad = ops.logical_not(ops.isfinite(x))
                invalid = local_sum(ops.cast(bad, "int32"), size, "reflect", ("int32",) * 2) > 0
                x = ops.where(bad, ops.zeros_like(x), x)
            sums = local_sum(x, size, "reflect", ("float64", "float64"))
            squares = local_sum(x * x, size, "reflect", ("float64", "float64"))
        mean = ops.cast(sums, float_dtype) / count
        mean_square = ops.cast(squares, float_dtype) / count
        std = ops.sqrt(ops.maximum(mean_square - mean * mean, 0))
        if invalid is not None:
            mean = ops.where(invalid, float("nan"), mean)
        return mean, std

    def call(self, images, training=None):
        x, float_dtype, value_range, maybe_nan = self._prepare(images)
        mean, std = self._mean_std(x, float_dtype, maybe_nan)
        threshold = self._threshold(mean, std, value_range)
        mask = ops.expand_dims(ops.cast(ops.cast(x, float_dtype) > threshold, "uint8"), -1)
        if not self.return_threshold:
            return mask
        return mask, ops.expand_dims(threshold, -1)

    def compute_output_spec(self, images, training=None):
        shape = tuple(images.shape[:3]) + (1,)
        mask = keras.KerasTensor(shape, dtype="uint8")
        if not self.return_threshold:
            return mask
        float_dtype = _float_type(dtype_name(images))
        return mask, keras.KerasTensor(shape, dtype=float_dtype)


@keras.saving.register_keras_serializable(package="kerasseg")
class NiblackThreshold(_LocalMeanStdThreshold):
    """Niblack's local threshold T = m - k * s with `skimage.filters.threshold_niblack`'s rules.

    m and s are the mean and standard deviation over a `window_size` x `window_size` window
    of the image padded with numpy's "reflect" mode (mirror without repeating the edge);
    s = sqrt(max(E[x^2] - m^2, 0)). The window sums of x and x^2 are exact int32 sums for
    8-bit images (window_size <= 181), float64 sums otherwise, as scikit-image's float64
    integral images. The statistics of integer images are float64, of float32/float16 images
    float32 (scikit-image's `_supported_float_type`). Colour images are converted with
    `rgb2gray` first. The mask is 1 where `image > T`.

    Args:
        window_size: odd window size (>= 1).
        k: weight of the standard deviation (skimage's default 0.2; Niblack used -0.2 for
            dark text, skimage keeps the sign as given).
        return_threshold: also return the threshold image (float64 for integer images).

    NaN/inf: eager calls raise ValueError; traced calls give a NaN threshold (and mask 0) for
    every pixel whose window holds a NaN or inf (scikit-image's integral images would spread
    it over the rest of the image).

    Exactness: eagerly and in `tf.function`, thresholds of integer images equal scikit-image's
    to the last bit; float images agree to ~1e-7 of their range (scikit-image's whole-image
    integral image carries that much rounding noise). Under XLA, the CPU compiler contracts
    multiply-adds into FMAs and rewrites x / n as x * (1 / n): thresholds move by a few ulps,
    so a mask can differ where a pixel equals scikit-image's threshold to ~1e-12.

    Example:
        >>> mask = NiblackThreshold(window_size=25, k=0.8)(images)
    """

    def _threshold(self, mean, std, value_range):
        return mean - self.k * std


@keras.saving.register_keras_serializable(package="kerasseg")
class SauvolaThreshold(_LocalMeanStdThreshold):
    """Sauvola's local threshold T = m * (1 + k * (s / r - 1)), as `threshold_sauvola`.

    Same local statistics as `NiblackThreshold`. `r` defaults to half the image dtype's
    range (`dtype_limits(image, clip_negative=False)`: uint8 127.5, uint16 32767.5, float
    images 1.0; colour images are converted to grey floats, so 1.0).

    Args:
        window_size: odd window size (>= 1).
        k: positive weight of the standard deviation term (default 0.2).
        r: dynamic range of the standard deviation, or None for the dtype's default.
        return_threshold: also return the threshold image.

    NaN: as `NiblackThreshold`.

    Example:
        >>> mask = SauvolaThreshold(window_size=15, k=0.2)(images)
    """

    config_keys = (*_LocalMeanStdThreshold.config_keys, "r")

    def __init__(self, window_size=15, k=0.2, r=None, return_threshold=False, **kwargs):
        super().__init__(window_size=window_size, k=k, return_threshold=return_threshold, **kwargs)
        self.r = None if r is None else _check_real(r, "r", positive=True)

    def _threshold(self, mean, std, value_range):
        r = self.r
        if r is None:
            r = 0.5 * (float(value_range[1]) - float(value_range[0]))
        return mean * (1 + self.k * ((std / r) - 1))


# ----------------------------------------------------------------------------- builders


def _local_model(layer_class, name, input_dtype, channels, return_threshold, **arguments):
    """A functional model around a local threshold layer: images -> mask [, threshold]."""
    images = images_input(input_dtype, channels)
    layer = layer_class(return_threshold=return_threshold, name=name, **arguments)
    return layer_model(layer, images, ("mask", "threshold") if return_threshold else None)


@register_classical(
    "adaptive_threshold",
    description="OpenCV adaptiveThreshold (mean or Gaussian), pixel-exact on uint8, no weights",
    reference="OpenCV cv::adaptiveThreshold",
    num_classes=2,
)
def adaptive_threshold(
    block_size=11, c=2.0, method="gaussian", inverse=False, return_threshold=True
):
    """OpenCV-compatible adaptive threshold as a model: uint8 (batch, H, W, 1) -> mask.

    Args:
        block_size, c, method, inverse: as `AdaptiveThreshold`.
        return_threshold: outputs {"mask", "threshold"} if True, else the mask alone.

    Returns:
        A `SegmentationModel`.
    """
    return _local_model(
        AdaptiveThreshold,
        "adaptive_threshold",
        "uint8",
        1,
        return_threshold,
        block_size=block_size,
        c=c,
        method=method,
        inverse=inverse,
    )


@register_classical(
    "niblack",
    description="Niblack local threshold (scikit-image semantics), no weights",
    reference="Niblack 1986, An Introduction to Digital Image Processing",
    num_classes=2,
)
def niblack(input_dtype="uint8", window_size=15, k=0.2, channels=1, return_threshold=True):
    """Niblack local thresholding (scikit-image semantics) as a model.

    Args:
        input_dtype: dtype of the images the model takes (integer or float).
        window_size, k: as `NiblackThreshold`.
        channels: 1 (grey) or 3 (converted with rgb2gray).
        return_threshold: outputs {"mask", "threshold"} if True, else the mask alone.

    Returns:
        A `SegmentationModel`.
    """
    return _local_model(
        NiblackThreshold,
        "niblack",
        input_dtype,
        channels,
        return_threshold,
        window_size=window_size,
        k=k,
    )


@register_classical(
    "sauvola",
    description="Sauvola local threshold (scikit-image semantics), no weights",
    reference="Sauvola & Pietikainen 2000, Pattern Recognition 33(2)",
    num_classes=2,
)
def sauvola(input_dtype="uint8", window_size=15, k=0.2, r=None, channels=1, return_threshold=True):
    """Sauvola local thresholding (scikit-image semantics) as a model.

    Args:
        window_size, k, r: as `SauvolaThreshold`.
        input_dtype, channels, return_threshold: as `niblack`.

    Returns:
        A `SegmentationModel`.
    """
    return _local_model(
        SauvolaThreshold,
        "sauvola",
        input_dtype,
        channels,
        return_threshold,
        window_size=window_size,
        k=k,
        r=r,
    )
