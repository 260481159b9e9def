"""Classical edge detection as batched Keras layers.

Three layers, each taking a (batch, H, W, C) batch of any integer or float dtype:

* `GradientMagnitude`: Sobel, Scharr or Prewitt gradient magnitude (and direction) with
  `skimage.filters.sobel` / `scharr` / `prewitt` semantics.
* `LaplacianOfGaussian`: `scipy.ndimage.gaussian_laplace` semantics.
* `Canny`: `skimage.feature.canny` (default) or `cv2.Canny` (`compat="opencv"`) edge maps.

Images are brought to scikit-image's float scale first: integer dtypes are divided by
their dtype maximum (`skimage.util.img_as_float` for unsigned integers) and 3-channel images
become one grey channel with `kerasseg.ops.image.to_grey` (`skimage.color.rgb2gray`'s
BT.709 weights). The filters are shifted slices of a padded tensor instead of `conv2d`,
which XLA fuses into one pass; hysteresis is a bounded `keras.ops.while_loop`. Every layer
works eagerly, in `tf.function` (also with `jit_compile=True`, 5-10x faster on CPU;
`supports_jit` is True), in `tf.data` maps and in a saved `.keras` model; image sizes may
be unknown at trace time. Eager calls raise a ValueError on NaN or infinite pixels; traced calls
cannot, and there a NaN spreads to the filter outputs of its neighbourhood (NaN outputs)
and Canny marks no edge where the gradient magnitude is NaN.
"""

import keras
import numpy as np
from keras import ops

from kerasseg.classical.base import ClassicalLayer, layer_model, register_classical
from kerasseg.ops.checks import check_int, check_number, is_number
from kerasseg.ops.components import dilate_bits, pack_bits, unpack_bits
from kerasseg.ops.image import (
    DTYPE_MAX,
    IMAGE_DTYPES,
    check_finite,
    check_images,
    compute_dtype,
    dtype_name,
    images_input,
    to_float,
    to_grey,
)

__all__ = [
    "SMOOTHING",
    "Canny",
    "GradientMagnitude",
    "LaplacianOfGaussian",
    "canny",
    "hysteresis",
    "laplacian_of_gaussian",
    "prewitt",
    "scharr",
    "sobel",
]

# Smoothing weights of the 3x3 gradient kernels (scikit-image's normalised ones).
SMOOTHING = {
    "sobel": (0.25, 0.5),  # [1, 2, 1] / 4 as (side, centre)
    "scharr": (3 / 16, 10 / 16),  # [3, 10, 3] / 16
    "prewitt": (1 / 3, 1 / 3),  # [1, 1, 1] / 3
}
# cv2.Canny's tan(22.5 deg) in 15-bit fixed point (canny.cpp: CANNY_SHIFT, TG22).
_CANNY_SHIFT = 15
_TG22 = int(0.4142135623730950488016887242097 * (1 << _CANNY_SHIFT) + 0.5)


def _grey_float(images, dtype):
    """(batch, H, W) floats on scikit-image's scale: int / dtype max, colour -> rgb2gray."""
    if images.shape[-1] == 3:
        grey = to_grey(images, dtype)
    else:
        grey = to_float(images, dtype)
    return grey[..., 0]


_BITS = {"float16": "int16", "bfloat16": "int16", "float32": "int32", "float64": "int64"}


def _pad2d(x, radius, mode):
    """Pad axes 1 and 2 of a (batch, H, W[, C]) tensor of any dtype by `radius`.

    mode "constant": zeros. mode "reflect": scipy.ndimage's 'reflect' (d c b a | a b c d |
    d c b a), which is tf.pad's SYMMETRIC and cv2's BORDER_REFLECT; with radius 1 it is also
    cv2's BORDER_REPLICATE. Pads wider than the image repeat the reflection as scipy does
    (a gather, as tf.pad cannot; also used when the size is unknown at trace time).

    Pad the raw input once, before converting it: XLA then writes the padded image once
    and fuses all the shifted slices that read it. A mirror-padded float tensor is instead
    rebuilt for each group of slices (5-8x slower on CPU), so floats are padded as
    same-width integers (a bitcast, bit-exact).
    """
    widths = [[0, 0], [radius, radius], [radius, radius]] + [[0, 0]] * (len(x.shape) - 3)
    if radius == 0:
        return x
    if mode == "constant":
        return ops.pad(x, widths)
    sizes = x.shape[1:3]
    if radius == 1 or all(n is not None and n >= radius for n in sizes):
        dtype = dtype_name(x)
        if dtype in _BITS and x.shape[-1] is not None:  # keras' view needs a static last axis
            padded = ops.pad(ops.view(x, _BITS[dtype]), widths, mode="symmetric")
            return ops.view(padded, dtype)
        return ops.pad(x, widths, mode="symmetric")
    for axis in (1, 2):
        size = ops.shape(x)[axis]
        index = ops.arange(-radius, size + radius, dtype="int32")
        index = ops.mod(index, 2 * size)
        index = ops.where(index < size, index, 2 * size - 1 - index)
        x = ops.take(x, index, axis=axis)
    return x


def _views(padded, axis, radius):
    """The 2 * radius + 1 shifted views of `padded` along `axis` ("valid" positions).

    View k holds x[c + k - radius] at output position c.
    """
    views = []
    for k in range(2 * radius + 1):
        index = [slice(None)] * 3
        index[axis] = slice(k, (k - 2 * radius) or None)
        views.append(padded[tuple(index)])
    return views


def _correlate(padded, weights, axis):
    """scipy.ndimage.correlate1d with a symmetric odd kernel, in scipy's summation order,
    on an input already padded by len(weights) // 2 along `axis` (the output is not)."""
    radius = len(weights) // 2
    views = _views(padded, axis, radius)
    out = views[radius] * weights[radius]
    for j in range(radius, 0, -1):
        out = out + (views[radius - j] + views[radius + j]) * weights[radius - j]
    return out


def _difference(padded, axis):
    """x[c + 1] - x[c - 1] along `axis` (the [-1, 0, 1] correlation), padded input."""
    before, _, after = _views(padded, axis, 1)
    return after - before


def _smooth(x, axis, side=1.0, centre=2.0):
    """[side, centre, side] along `axis` of an input padded by 1 there."""
    before, middle, after = _views(x, axis, 1)
    return middle * centre + (before + after) * side


def _gradients(padded, side, centre):
    """The two 3x3 derivative filters of a (batch, H + 2, W + 2) padded image.

    Returns (g0, g1): [-1, 0, 1] down the rows smoothed by [side, centre, side] along
    the columns, and the transpose.
    """
    g0 = _smooth(_difference(padded, 1), 2, side, centre)
    return g0, _smooth(_difference(padded, 2), 1, side, centre)


def _neighbours(x):
    """The 8 neighbours of each pixel of a (batch, H, W) map, zero outside the image.

    Returns:
        (up_left, up, up_right, left, right, down_left, down, down_right), each (batch, H, W).
    """
    padded = ops.pad(x, [[0, 0], [1, 1], [1, 1]])
    up_row, _, down_row = _views(padded, 1, 1)
    up_left, up, up_right = _views(up_row, 2, 1)
    down_left, down, down_right = _views(down_row, 2, 1)
    left, _, right = _views(padded[:, 1:-1], 2, 1)
    return up_left, up, up_right, left, right, down_left, down, down_right


def _gaussian_kernels(sigma, truncate):
    """scipy.ndimage's sampled Gaussian and its second derivative (float64 numpy)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype="float64")
    sigma2 = sigma * sigma
    phi = np.exp(-0.5 / sigma2 * x**2)
    phi = phi / phi.sum()
    second = (-1.0 / sigma2 + x**2 / (sigma2 * sigma2)) * phi
    return phi, second


def hysteresis(strong, candidates, max_iterations=None):
    """8-connected hysteresis: the `candidates` pixels connected to a `strong` pixel.

    Grows `strong & candidates` by one 3x3 dilation restricted to `candidates` per
    iteration of a `keras.ops.while_loop`, until nothing changes. The masks are bit-packed
    along the width (32 pixels per uint32 word, `kerasseg.ops.components.pack_bits`), so a
    step costs about 1/32 of a boolean one. (Unrolling several steps per iteration does not
    help here: XLA fuses the chain and recomputes the shared inputs.) Convergence takes as
    many steps as the longest geodesic path from a strong pixel inside the candidates (at
    most H * W; 10-40 on 512x512 photos and micrographs with cv2's 50/150).

    Args:
        strong: (batch, H, W) bool, the pixels above the high threshold.
        candidates: (batch, H, W) bool, the pixels above the low threshold.
        max_iterations: the most dilation steps, or None to run until convergence.

    Returns:
        (batch, H, W) bool edges.
    """
    width = ops.shape(candidates)[2]
    allowed = pack_bits(candidates)
    edges = pack_bits(strong & candidates)
    if max_iterations is None:
        shape = ops.shape(candidates)
        limit = ops.cast(shape[1], "int32") * ops.cast(width, "int32")
    else:
        limit = ops.convert_to_tensor(int(max_iterations), dtype="int32")

    def cond(edges, changed, steps):
        return changed & (steps < limit)

    def body(edges, changed, steps):
        grown = dilate_bits(edges, 2) & allowed
        return grown, ops.any(ops.not_equal(grown, edges)), steps + 1

    start = (edges, ops.any(ops.not_equal(edges, 0)), ops.convert_to_tensor(0, dtype="int32"))
    edges, _, _ = ops.while_loop(cond, body, start)
    return unpack_bits(edges, width)


def _check_float(value, name, positive=False, allow_none=False):
    """`check_number`, with a TypeError for a value that is not a number at all (NaN,
    infinity and values out of bounds give a ValueError)."""
    if not (value is None and allow_none) and not is_number(value):
        raise TypeError(f"`{name}` must be a number; got {value!r}.")
    return check_number(value, name, positive=positive, allow_none=allow_none)


@keras.saving.register_keras_serializable(package="kerasseg")
class GradientMagnitude(ClassicalLayer):
    """Sobel, Scharr or Prewitt gradient magnitude, as `skimage.filters.sobel/scharr/prewitt`.

    The two 3x3 derivative kernels are scikit-image's normalised ones ([1, 0, -1] times the
    smoothing [1, 2, 1] / 4, [3, 10, 3] / 16 or [1, 1, 1] / 3), the border is scipy's
    'reflect' (tf.pad SYMMETRIC), and the magnitude is `sqrt((g0**2 + g1**2) / 2)`, where
    g0 = `skimage.filters.sobel(image, axis=0)` (down the rows) and g1 the same along
    columns. Integer images are divided by their dtype maximum first; 3-channel images are
    converted to grey (`kerasseg.ops.image.to_grey`, rgb2gray weights). A constant image
    gives 0.

    References:
        I. Sobel and G. Feldman, "A 3x3 isotropic gradient operator for image processing",
        Stanford AI Project talk, 1968. J. M. S. Prewitt, "Object enhancement and extraction",
        Picture Processing and Psychopictorics, 1970. H. Scharr, "Optimale Operatoren in der
        digitalen Bildverarbeitung", PhD thesis, Heidelberg, 2000.

    Args:
        kernel: "sobel" (default), "scharr" or "prewitt".
        return_direction: also return the gradient direction `arctan2(g0, g1)` in radians,
            in [-pi, pi], 0 for a gradient pointing along +columns (and for no gradient),
            pi/2 along +rows.

    Returns:
        (batch, H, W, 1) float32 magnitude (float64 for float64 input); with
        `return_direction=True`, `(magnitude, direction)`.

    Example:
        >>> magnitude = GradientMagnitude("sobel")(images)  # images: (batch, H, W, 1)
    """

    config_keys = ("kernel", "return_direction")

    def __init__(self, kernel="sobel", return_direction=False, **kwargs):
        super().__init__(**kwargs)
        if kernel not in SMOOTHING:
            raise ValueError(f"`kernel` must be one of {tuple(SMOOTHING)}; got {kernel!r}.")
        self.kernel = kernel
        self.return_direction = bool(return_direction)
        self.supports_jit = True
        self.autocast = False  # keep float64 images float64 (and float16 ones exact)

    def call(self, images, training=None):
        dtype = check_images(images, type(self).__name__)
        check_finite(images, type(self).__name__)
        x = _grey_float(_pad2d(images, 1, "reflect"), compute_dtype(dtype))
        g0, g1 = _gradients(x, *SMOOTHING[self.kernel])
        magnitude = ops.sqrt(g0 * g0 + g1 * g1) / np.sqrt(2.0)
        magnitude = ops.expand_dims(magnitude, -1)
        if not self.return_direction:
            return magnitude
        # Signed zeros would put direction -pi for +pi and pi for a zero gradient.
        g0 = ops.where(ops.equal(g0, 0), ops.zeros_like(g0), g0)
        g1 = ops.where(ops.equal(g1, 0), ops.zeros_like(g1), g1)
        return magnitude, ops.expand_dims(ops.arctan2(g0, g1), -1)

    def compute_output_spec(self, images, training=None):
        dtype = compute_dtype(dtype_name(images))
        shape = tuple(images.shape[:3]) + (1,)
        magnitude = keras.KerasTensor(shape, dtype=dtype)
        if not self.return_direction:
            return magnitude
        return magnitude, keras.KerasTensor(shape, dtype=dtype)


@keras.saving.register_keras_serializable(package="kerasseg")
class LaplacianOfGaussian(ClassicalLayer):
    """Laplacian of Gaussian, as `scipy.ndimage.gaussian_laplace(image, sigma)`.

    The sum of the second derivatives of a Gaussian along rows and columns: each term is a
    separable 1-D filter pair (scipy's sampled second-derivative-of-Gaussian kernel along one
    axis, its normalised Gaussian along the other), truncated at `truncate * sigma` pixels,
    with scipy's 'reflect' border. Integer images are divided by their dtype maximum first
    (scipy itself would keep the integer dtype), 3-channel images are converted to grey.
    Not scale-normalised (multiply by sigma**2 for `skimage.feature.blob_log`'s response).
    The sampled kernel does not sum to exactly zero, so a constant image c gives the small
    constant `c * k(sigma)` that scipy gives too (k = -1.4e-4 for sigma 1, -1.12 for 0.5).

    Reference:
        D. Marr and E. Hildreth, "Theory of edge detection", Proc. R. Soc. Lond. B 207, 1980.

    Args:
        sigma: Gaussian standard deviation in pixels, > 0.
        truncate: kernel radius in standard deviations (radius `int(truncate * sigma + 0.5)`).

    Returns:
        (batch, H, W, 1) float32 response (float64 for float64 input).

    Example:
        >>> response = LaplacianOfGaussian(sigma=2.0)(images)  # zero crossings are edges
    """

    config_keys = ("sigma", "truncate")

    def __init__(self, sigma=1.0, truncate=4.0, **kwargs):
        super().__init__(**kwargs)
        self.sigma = _check_float(sigma, "sigma", positive=True)
        self.truncate = _check_float(truncate, "truncate", positive=True)
        self.supports_jit = True
        self.autocast = False  # keep float64 images float64 (and float16 ones exact)

    def call(self, images, training=None):
        dtype = check_images(images, type(self).__name__)
        check_finite(images, type(self).__name__)
        compute = compute_dtype(dtype)
        gauss, second = (w.astype(compute) for w in _gaussian_kernels(self.sigma, self.truncate))
        x = _grey_float(_pad2d(images, len(gauss) // 2, "reflect"), compute)
        # Each term: the row filter over the padded width, whose columns are then the
        # reflect-padded input of the column filter, as in scipy's sequential 1-D passes.
        rows = _correlate(_correlate(x, second, 1), gauss, 2)
        cols = _correlate(_correlate(x, gauss, 1), second, 2)
        return ops.expand_dims(rows + cols, -1)

    def compute_output_spec(self, images, training=None):
        shape = tuple(images.shape[:3]) + (1,)
        return keras.KerasTensor(shape, dtype=compute_dtype(dtype_name(images)))


@keras.saving.register_keras_serializable(package="kerasseg")
class Canny(ClassicalLayer):
    """Canny edge detector with scikit-image's (default) or OpenCV's semantics.

    compat="skimage" follows `skimage.feature.canny(image, sigma, low, high)`: the image on
    scikit-image's float scale (integers / dtype max; colour -> grey), Gaussian smoothing
    (`truncate` 4, zero border renormalised by the smoothed all-ones image, skimage's
    default mode='constant'), unnormalised `scipy.ndimage.sobel` gradients (reflect border),
    L2 magnitude, non-maximum suppression with bilinear interpolation between the two
    neighbours along the gradient, candidates `magnitude >= low`, strong `>= high`,
    8-connected hysteresis, and the 1-pixel image border never an edge. Thresholds are in
    the input dtype's units and divided by its maximum like scikit-image does (defaults 0.1
    and 0.2 of the float scale); for colour input this equals
    `canny(rgb2gray(image), sigma, low / dtype_max, high / dtype_max)`.

    compat="opencv" reproduces `cv2.Canny(image, low, high, apertureSize=3, L2gradient)` on
    uint8 grey images (no smoothing; integer 3x3 Sobel with BORDER_REPLICATE; L1 `|dx|+|dy|`
    or, with `l2_gradient`, `dx**2 + dy**2` against squared thresholds; 4-sector
    non-maximum suppression with cv2's fixed-point tan(22.5 deg) rule and its tie rule;
    candidates `magnitude > low`, strong `> high`, swapped if low > high; 8-connected
    hysteresis; border pixels can be edges). Only uint8 1-channel input is accepted, as
    cv2.Canny does (it also takes colour, by max-norm channel, which is not reproduced).

    compat="skimage" computes in scikit-image's precision (float32 for float16/32 images,
    float64 otherwise) and rounds after each 1-D filter pass as scipy.ndimage does, so it
    breaks exact ties the same way: the edge maps are pixel-identical to scikit-image's in
    the tests (ISBI slices, sample images, synthetic shapes). Hysteresis runs in a
    `keras.ops.while_loop` (see `hysteresis`), by default until convergence;
    `max_iterations` caps the dilation steps, which can only drop weak edges that are
    further (in pixels along the edge) from a strong one.

    Reference:
        J. Canny, "A Computational Approach to Edge Detection", IEEE TPAMI 8(6), 1986.

    Args:
        low_threshold, high_threshold: hysteresis thresholds. skimage: in the input dtype's
            units, defaults 10% and 20% of the dtype maximum (1.0 for floats); low must not
            exceed high. opencv: required, in Sobel magnitude units (0..2040 for L1).
        sigma: Gaussian standard deviation, > 0 (skimage only; default 1.0).
        compat: "skimage" (default) or "opencv".
        l2_gradient: L2 magnitude for compat="opencv" (skimage always uses L2).
        max_iterations: None (until convergence) or the maximum hysteresis dilation steps.

    Returns:
        (batch, H, W, 1) int32 edge map, 1 = edge.

    Example:
        >>> edges = Canny(sigma=2.0)(images)  # images: (batch, H, W, 1) any dtype
    """

    config_keys = (
        "low_threshold",
        "high_threshold",
        "sigma",
        "compat",
        "l2_gradient",
        "max_iterations",
    )

    def __init__(
        self,
        low_threshold=None,
        high_threshold=None,
        sigma=None,
        compat="skimage",
        l2_gradient=False,
        max_iterations=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if compat not in ("skimage", "opencv"):
            raise ValueError(f"`compat` must be 'skimage' or 'opencv'; got {compat!r}.")
        self.compat = compat
        self.low_threshold = _check_float(low_threshold, "low_threshold", allow_none=True)
        self.high_threshold = _check_float(high_threshold, "high_threshold", allow_none=True)
        self.l2_gradient = bool(l2_gradient)
        self.max_iterations = check_int(max_iterations, "max_iterations", 1, allow_none=True)
        if compat == "opencv":
            if sigma is not None:
                raise ValueError(
                    "`sigma` applies to compat='skimage'; cv2.Canny does not smooth (blur the "
                    f"image first if needed); got sigma={sigma!r}."
                )
            if self.low_threshold is None or self.high_threshold is None:
                raise ValueError(
                    "compat='opencv' needs `low_threshold` and `high_threshold` (cv2.Canny's "
                    "threshold1 and threshold2 have no defaults), e.g. 50 and 150."
                )
            self.sigma = None
        else:
            if self.l2_gradient:
                raise ValueError(
                    "`l2_gradient` applies to compat='opencv'; scikit-image's Canny always uses "
                    "the L2 gradient magnitude."
                )
            self.sigma = _check_float(1.0 if sigma is None else sigma, "sigma", positive=True)
            low, high = self.low_threshold, self.high_threshold
            if low is not None and high is not None and high < low:
                raise ValueError(
                    f"`low_threshold` ({low}) must not exceed `high_threshold` ({high})."
                )
        self.supports_jit = True
        self.autocast = False  # keep float64 images float64 (and float16 ones exact)

    def call(self, images, training=None):
        name = type(self).__name__
        if self.compat == "opencv":
            check_images(
                images,
                f"{name}(compat='opencv'), like cv2.Canny, takes uint8 grey images and",
                channels=(1,),
                dtypes=("uint8",),
            )
            edges = self._opencv(images)
        else:
            dtype = check_images(images, name)
            check_finite(images, name)
            edges = self._skimage(images, dtype)
        return ops.expand_dims(ops.cast(edges, "int32"), -1)

    def _thresholds_skimage(self, dtype):
        scale = DTYPE_MAX.get(dtype, 1.0)
        low = 0.1 if self.low_threshold is None else self.low_threshold / scale
        high = 0.2 if self.high_threshold is None else self.high_threshold / scale
        if high < low:
            raise ValueError(
                f"`low_threshold` ({low * scale}) must not exceed `high_threshold` "
                f"({high * scale}); the defaults are 0.1 and 0.2 of the dtype maximum."
            )
        # skimage's NMS takes the low threshold as a C float, and bumps 0 to 1e-14.
        low = float(np.float32(low)) or 1e-14
        return low, high

    def _skimage(self, images, dtype):
        low, high = self._thresholds_skimage(dtype)
        # scikit-image works in float32 for float16/32 images and float64 otherwise, and
        # scipy.ndimage filters in float64 internally, rounding to that precision after each
        # 1-D pass. Reproduce both: exact ties (synthetic images) then break the same way.
        single = dtype in ("float16", "bfloat16", "float32")

        def rounded(x):
            return ops.cast(ops.cast(x, "float32"), "float64") if single else x

        gauss, _ = _gaussian_kernels(self.sigma, 4.0)
        radius = len(gauss) // 2
        x = _grey_float(_pad2d(images, radius, "constant"), "float64")
        smoothed = rounded(_correlate(rounded(_correlate(x, gauss, 1)), gauss, 2))
        # Bleed-over of the zero border: the smoothed all-ones image, computed like scipy.
        ones = _pad2d(ops.ones_like(images[:1, :, :, 0], dtype="float64"), radius, "constant")
        bleed = rounded(_correlate(rounded(_correlate(ones, gauss, 1)), gauss, 2))
        smoothed = self._cast(smoothed, single) / (
            self._cast(bleed, single) + np.finfo("float32" if single else "float64").eps
        )
        padded = ops.cast(_pad2d(smoothed, 1, "reflect"), "float64")
        # scipy.ndimage.sobel: [-1, 0, 1] along one axis, then [1, 2, 1] along the other.
        isobel = self._cast(rounded(_smooth(rounded(_difference(padded, 1)), 2)), single)
        jsobel = self._cast(rounded(_smooth(rounded(_difference(padded, 2)), 1)), single)
        magnitude = ops.sqrt(isobel * isobel + jsobel * jsobel)
        keep = _nms_bilinear(isobel, jsobel, magnitude) & (magnitude >= low)
        # The 1-pixel image border is never an edge.
        shape = ops.shape(magnitude)
        i = ops.expand_dims(ops.arange(shape[1], dtype="int32"), 1)
        j = ops.expand_dims(ops.arange(shape[2], dtype="int32"), 0)
        inside = (i > 0) & (i < shape[1] - 1) & (j > 0) & (j < shape[2] - 1)
        candidates = keep & ops.expand_dims(inside, 0)
        return hysteresis(candidates & (magnitude >= high), candidates, self.max_iterations)

    @staticmethod
    def _cast(x, single):
        return ops.cast(x, "float32") if single else x

    def _opencv(self, images):
        low, high = sorted((self.low_threshold, self.high_threshold))
        if self.l2_gradient:
            low, high = (min(32767.0, t) for t in (low, high))
            low, high = (t * t if t > 0 else t for t in (low, high))
        low, high = int(np.floor(low)), int(np.floor(high))
        # With a 1-pixel pad, tf.pad SYMMETRIC is cv2's BORDER_REPLICATE.
        x = ops.cast(_pad2d(images[..., 0], 1, "reflect"), "int32")
        dy, dx = _gradients(x, 1, 2)
        if self.l2_gradient:
            magnitude = dx * dx + dy * dy
        else:
            magnitude = ops.abs(dx) + ops.abs(dy)
        up_left, up, up_right, left, right, down_left, down, down_right = _neighbours(magnitude)
        m = magnitude
        ax = ops.abs(dx)
        ay = ops.abs(dy) * (1 << _CANNY_SHIFT)
        tg22x = ax * _TG22
        tg67x = tg22x + ax * (1 << (_CANNY_SHIFT + 1))
        same_sign = ops.equal(dx < 0, dy < 0)  # (dx ^ dy) >= 0
        horizontal = (m > left) & (m >= right)
        vertical = (m > up) & (m >= down)
        diagonal = ops.where(
            same_sign, (m > up_left) & (m > down_right), (m > up_right) & (m > down_left)
        )
        keep = ops.where(ay < tg22x, horizontal, ops.where(ay > tg67x, vertical, diagonal))
        candidates = keep & (m > low)
        return hysteresis(candidates & (m > high), candidates, self.max_iterations)

    def compute_output_spec(self, images, training=None):
        return keras.KerasTensor(tuple(images.shape[:3]) + (1,), dtype="int32")


def _nms_bilinear(isobel, jsobel, magnitude):
    """scikit-image's non-maximum suppression with bilinear interpolation (bool mask).

    Axis 0 is `i` (rows), axis 1 is `j`. The neighbours along the gradient are interpolated
    between an axis neighbour and a diagonal one with weight w = min(|i|, |j|) / max(...);
    a pixel survives when neither interpolated neighbour exceeds it. The magnitude is
    zero-padded (the border is masked out afterwards anyway).
    """
    m = magnitude
    up_left, up, up_right, left, right, down_left, down, down_right = _neighbours(m)
    abs_i, abs_j = ops.abs(isobel), ops.abs(jsobel)
    # Case 1: gradient in the 1st/3rd quadrant (i > 0 and j > 0, or i <= 0 and j <= 0).
    quadrant13 = ops.equal(isobel > 0, jsobel > 0)
    rows_major = ops.where(quadrant13, abs_i > abs_j, abs_i >= abs_j)
    w = ops.where(rows_major, abs_j, abs_i) / ops.where(rows_major, abs_i, abs_j)
    plus1 = ops.where(
        quadrant13, ops.where(rows_major, down, right), ops.where(rows_major, up, right)
    )
    plus2 = ops.where(quadrant13, down_right, up_right)
    minus1 = ops.where(
        quadrant13, ops.where(rows_major, up, left), ops.where(rows_major, down, left)
    )
    minus2 = ops.where(quadrant13, up_left, down_left)
    # skimage's Cython evaluates `n2 * w + n1 * (1.0 - w) <= m` with a double literal: the
    # first product in the image's precision, the rest in float64.
    double = ops.cast(w, "float64")

    def interpolated(n1, n2):
        return ops.cast(n2 * w, "float64") + ops.cast(n1, "float64") * (1.0 - double)

    m = ops.cast(m, "float64")
    return (interpolated(plus1, plus2) <= m) & (interpolated(minus1, minus2) <= m)


def _gradient_model(kernel, input_dtype, channels, return_direction):
    """The model of the `GradientMagnitude` of `kernel`: images -> magnitude [, direction]."""
    images = images_input(input_dtype, channels, IMAGE_DTYPES)
    layer = GradientMagnitude(kernel, return_direction=return_direction, name=kernel)
    names = ("magnitude", "direction") if return_direction else ("magnitude",)
    return layer_model(layer, images, names)


def sobel(input_dtype="uint8", channels=1, return_direction=False):
    """Sobel gradient magnitude as a model: images -> {"magnitude"[, "direction"]}.

    Same values as `skimage.filters.sobel` (see `GradientMagnitude`).

    Args:
        input_dtype: dtype of the images the model takes (any integer or float dtype).
        channels: 1 (grey) or 3 (RGB, converted with rgb2gray weights).
        return_direction: also output the gradient direction in radians.

    Returns:
        A `SegmentationModel`.
    """
    return _gradient_model("sobel", input_dtype, channels, return_direction)


def scharr(input_dtype="uint8", channels=1, return_direction=False):
    """Scharr gradient magnitude as a model (`skimage.filters.scharr`); see `sobel`.

    Args:
        input_dtype, channels, return_direction: as `sobel`.

    Returns:
        A `SegmentationModel`.
    """
    return _gradient_model("scharr", input_dtype, channels, return_direction)


def prewitt(input_dtype="uint8", channels=1, return_direction=False):
    """Prewitt gradient magnitude as a model (`skimage.filters.prewitt`); see `sobel`.

    Args:
        input_dtype, channels, return_direction: as `sobel`.

    Returns:
        A `SegmentationModel`.
    """
    return _gradient_model("prewitt", input_dtype, channels, return_direction)


# The three gradient models differ only in their kernel.
for _builder, _title, _reference in (
    (sobel, "Sobel", "Sobel & Feldman 1968"),
    (scharr, "Scharr", "Scharr 2000, PhD thesis, Univ. Heidelberg"),
    (prewitt, "Prewitt", "Prewitt 1970, Picture Processing and Psychopictorics"),
):
    register_classical(
        _builder.__name__,
        _builder,
        description=f"{_title} gradient magnitude (scikit-image semantics), no weights",
        reference=_reference,
    )


@register_classical(
    "laplacian_of_gaussian",
    description="Laplacian of Gaussian (scipy gaussian_laplace semantics), no weights",
    reference="Marr & Hildreth 1980, Proc. R. Soc. Lond. B 207",
)
def laplacian_of_gaussian(sigma=1.0, input_dtype="uint8", channels=1, truncate=4.0):
    """Laplacian of Gaussian as a model: images -> {"response"}.

    Same values as `scipy.ndimage.gaussian_laplace(img_as_float(image), sigma)` (see
    `LaplacianOfGaussian`).

    Args:
        sigma: Gaussian standard deviation in pixels, > 0.
        input_dtype: dtype of the images the model takes (any integer or float dtype).
        channels: 1 (grey) or 3 (RGB, converted with rgb2gray weights).
        truncate: kernel radius in standard deviations.

    Returns:
        A `SegmentationModel`.
    """
    images = images_input(input_dtype, channels, IMAGE_DTYPES)
    layer = LaplacianOfGaussian(sigma=sigma, truncate=truncate, name="laplacian_of_gaussian")
    return layer_model(layer, images, ("response",))


@register_classical(
    "canny",
    description="Canny edges, scikit-image or OpenCV (compat=) semantics, no weights",
    reference="Canny 1986, IEEE TPAMI 8(6)",
    num_classes=2,
)
def canny(
    compat="skimage",
    low_threshold=None,
    high_threshold=None,
    sigma=None,
    l2_gradient=False,
    input_dtype="uint8",
    channels=1,
    max_iterations=None,
):
    """Canny edge detection as a model: images -> {"edges"} (int32, 1 = edge).

    Args:
        compat: "skimage" (`skimage.feature.canny`, default) or "opencv" (`cv2.Canny`, uint8
            grey input only, thresholds required).
        low_threshold, high_threshold, sigma, l2_gradient, max_iterations: see `Canny`.
        input_dtype: dtype of the images the model takes.
        channels: 1 (grey) or 3 (RGB, converted with rgb2gray weights; skimage only).

    Returns:
        A `SegmentationModel`.

    Raises:
        ValueError: compat="opencv" with images other than uint8 grey.
    """
    images = images_input(input_dtype, channels, IMAGE_DTYPES)
    if compat == "opencv" and (input_dtype != "uint8" or channels != 1):
        raise ValueError(
            "compat='opencv' takes uint8 grey images, like cv2.Canny: use input_dtype='uint8' "
            f"and channels=1; got input_dtype={input_dtype!r}, channels={channels!r}."
        )
    layer = Canny(
        low_threshold=low_threshold,
        high_threshold=high_threshold,
        sigma=sigma,
        compat=compat,
        l2_gradient=l2_gradient,
        max_iterations=max_iterations,
        name="canny",
    )
    return layer_model(layer, images, ("edges",))
