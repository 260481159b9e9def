"""Joint random augmentation of (image, mask) examples, stateless and seed-deterministic.

`JointAugment` draws every random parameter from a stateless seed (a (2,) int32/int64
tensor), so the same seed gives byte-identical outputs, eagerly and inside
`tf.data.Dataset.map`; `seeds_dataset` yields a fresh yet reproducible seed per element
and per epoch to zip with a dataset::

    augment = JointAugment(horizontal_flip=True, rotation_degrees=15, elastic_alpha=34.0)
    ds = tf.data.Dataset.zip((pairs, seeds_dataset(0))).map(
        lambda pair, seed: augment(pair[0], pair[1], seed))

Tensor conventions are those of `kerasseg.data.transforms`: image float32 (H, W, C) with
values as stored, mask int32 (H, W, K). Geometric ops use the same parameters for both
tensors, bilinear interpolation for the image and nearest neighbour for the mask (mask
values are never interpolated) and never clip; only the photometric ops clip, to
`value_range`.
"""

import math

import numpy as np
import tensorflow as tf

from kerasseg.data.transforms import _as_pair, _check_pair
from kerasseg.ops.checks import is_int, is_number

__all__ = ["JointAugment", "elastic_displacement_std", "seeds_dataset"]

_FILL_MODES = {"reflect": "REFLECT", "constant": "CONSTANT", "nearest": "NEAREST"}
# The projective-transform op takes its fill value as float32: ints above 2**24 are inexact.
_MAX_EXACT_FLOAT32_INT = 2**24
# Gaussian kernels are truncated at this many standard deviations (scipy.ndimage default).
_TRUNCATE = 4.0
# The elastic displacement field is smoothed on a grid `factor` times coarser, where
# factor = floor(sigma / _ELASTIC_COARSE_SIGMA), so that the coarse sigma stays >= this.
_ELASTIC_COARSE_SIGMA = 4.0
# Independent sub-seeds, one per op, so that switching one op on or off does not change
# the random draws of the others.
_SEED_SLOTS = ("hflip", "vflip", "rot90", "scale", "offset", "rotation", "elastic", "photo")


def seeds_dataset(seed=None):
    """An infinite dataset of stateless seeds: int64 tensors of shape (2,).

    Zip it with a dataset so that each element gets its own seed and each epoch (each new
    iteration over the zipped dataset) new seeds, all reproducible from `seed`. Built on
    ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`` (available since TF
    2.13), two draws per element.

    Args:
        seed: int seed of the sequence; None draws a non-reproducible one.

    Returns:
        A `tf.data.Dataset` of int64 (2,) tensors.

    Raises:
        TypeError: `seed` is neither an int nor None.
    """
    if seed is not None and not is_int(seed):
        raise TypeError(f"seeds_dataset: `seed` must be a Python int or None; got {seed!r}.")
    dataset = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return dataset.batch(2, drop_remainder=True).map(
        lambda pair: tf.ensure_shape(tf.cast(pair, tf.int64), [2])
    )


# ----------------------------------------------------------------------------- helpers


def _gaussian_kernel(sigma):
    """Normalised 1-D Gaussian truncated at `_TRUNCATE` sigma (numpy float32)."""
    radius = max(1, int(_TRUNCATE * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def elastic_displacement_std(alpha, sigma):
    """Predicted standard deviation (pixels, per axis) of the elastic displacement field.

    Uniform(-1, 1) noise (std 1/sqrt(3)) smoothed by the separable kernel k has std
    ``sum(k**2) / sqrt(3)`` (the 2-D kernel's squared sum is ``sum(k**2)**2``); the field
    is scaled by `alpha`. The mean absolute displacement per axis is this times
    sqrt(2/pi).
    """
    kernel = _gaussian_kernel(sigma).astype(np.float64)
    return float(alpha * np.sum(kernel**2) / math.sqrt(3.0))


def _band_matrix(size, kernel):
    """(size, size + len(kernel) - 1) matrix whose row i holds `kernel` from column i.

    ``band(H) @ noise @ band(W).T`` is the separable 'valid' convolution of a
    (H + 2r, W + 2r) noise field; as two matrix products it is ~10x faster on CPU than
    `tf.nn.conv2d` with one channel and a long kernel.
    """
    taps = kernel.size
    rows = tf.range(size)[:, None]
    cols = tf.range(size + taps - 1)[None, :]
    lag = cols - rows
    inside = (lag >= 0) & (lag < taps)
    values = tf.gather(tf.constant(kernel), tf.clip_by_value(lag, 0, taps - 1))
    return tf.where(inside, values, tf.zeros_like(values))


def _elastic_field(seed, height, width, alpha, sigma):
    """(dy, dx) displacement fields of shape (H, W), float32, in pixels.

    Simard et al. (2003): uniform(-1, 1) noise per axis, Gaussian-smoothed, times alpha.
    The noise is drawn on a margin of the kernel radius and convolved 'valid', so the
    field has the same statistics everywhere (no damping at the border). For sigma >=
    2 * _ELASTIC_COARSE_SIGMA it is smoothed on a coarser grid (factor
    floor(sigma / _ELASTIC_COARSE_SIGMA)), rescaled to the full-resolution amplitude and
    resized up bilinearly; the Gaussian removes the frequencies this grid cannot hold.
    """
    factor = max(1, int(sigma // _ELASTIC_COARSE_SIGMA))
    kernel = _gaussian_kernel(sigma / factor)
    full = _gaussian_kernel(sigma).astype(np.float64)
    gain = alpha * np.sum(full**2) / np.sum(kernel.astype(np.float64) ** 2)
    coarse_h = (height + factor - 1) // factor
    coarse_w = (width + factor - 1) // factor
    margin = kernel.size - 1
    noise = tf.random.stateless_uniform(
        tf.stack([2, coarse_h + margin, coarse_w + margin]), seed, -1.0, 1.0
    )
    rows = _band_matrix(coarse_h, kernel)
    cols = _band_matrix(coarse_w, kernel)
    field = tf.matmul(tf.matmul(rows[None], noise), cols[None], transpose_b=True)
    field = field * tf.constant(gain, tf.float32)
    if factor > 1:
        field = tf.image.resize(field[..., None], tf.stack([height, width]), "bilinear")[..., 0]
    return field[0], field[1]


def _map_coordinate(coord, size, fill_mode):
    """Bring a continuous pixel coordinate inside [0, size - 1] as the fill mode says.

    "reflect" mirrors about the outer pixel edges (d c b a | a b c d | d c b a), as
    `tf.raw_ops.ImageProjectiveTransformV3` does; "nearest" clamps; "constant" leaves the
    coordinate (out-of-range samples take the fill value).
    """
    if fill_mode == "reflect":
        period = 2.0 * size
        t = tf.math.floormod(coord + 0.5, period)
        t = tf.where(t >= size, period - t, t)
        return tf.clip_by_value(t - 0.5, 0.0, size - 1.0)
    if fill_mode == "nearest":
        return tf.clip_by_value(coord, 0.0, size - 1.0)
    return coord


def _gather(flat, rows, cols, width, height, fill_value, fill_mode):
    """flat[(rows * width + cols)] with out-of-range taps replaced by fill_value."""
    if fill_mode == "constant":
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        rows = tf.clip_by_value(rows, 0, height - 1)
        cols = tf.clip_by_value(cols, 0, width - 1)
        values = tf.gather(flat, rows * width + cols)
        fill = tf.cast(fill_value, flat.dtype)
        return tf.where(inside[..., None], values, fill)
    rows = tf.clip_by_value(rows, 0, height - 1)
    cols = tf.clip_by_value(cols, 0, width - 1)
    return tf.gather(flat, rows * width + cols)


def _sample_bilinear(image, y, x, fill_mode, fill_value):
    """Bilinear samples of `image` at coordinates already passed through _map_coordinate."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    flat = tf.reshape(image, [-1, tf.shape(image)[2]])
    y0f, x0f = tf.floor(y), tf.floor(x)
    wy, wx = (y - y0f)[..., None], (x - x0f)[..., None]
    y0, x0 = tf.cast(y0f, tf.int32), tf.cast(x0f, tf.int32)
    y1, x1 = y0 + 1, x0 + 1

    def tap(rows, cols):
        return _gather(flat, rows, cols, width, height, fill_value, fill_mode)

    top = (1.0 - wx) * tap(y0, x0) + wx * tap(y0, x1)
    bottom = (1.0 - wx) * tap(y1, x0) + wx * tap(y1, x1)
    return (1.0 - wy) * top + wy * bottom


def _sample_nearest(mask, y, x, fill_mode, fill_value):
    """Nearest samples (ties round up) at coordinates already passed through _map_coordinate."""
    height, width = tf.shape(mask)[0], tf.shape(mask)[1]
    flat = tf.reshape(mask, [-1, tf.shape(mask)[2]])
    rows = tf.cast(tf.floor(y + 0.5), tf.int32)
    cols = tf.cast(tf.floor(x + 0.5), tf.int32)
    return _gather(flat, rows, cols, width, height, fill_value, fill_mode)


def _uniform(seed, low, high):
    return tf.random.stateless_uniform([], seed, low, high, dtype=tf.float32)


def _coin(seed):
    return tf.random.stateless_uniform([], seed, 0.0, 1.0) < 0.5


def _random_flip(image, mask, seed, axis):
    """Both tensors reversed along `axis`, or both unchanged, with probability 1/2 each."""
    return tf.cond(
        _coin(seed),
        lambda: (tf.reverse(image, [axis]), tf.reverse(mask, [axis])),
        lambda: (image, mask),
    )


# ----------------------------------------------------------------------- option checks

_NAME = "JointAugment"


def _number_pair(value, key, accepted):
    """`value` as a (low, high) pair of floats; a TypeError saying `accepted` otherwise."""
    if not isinstance(value, tuple | list) or len(value) != 2 or not all(map(is_number, value)):
        raise TypeError(f"{_NAME}: `{key}` must be {accepted}; got {value!r}.")
    return float(value[0]), float(value[1])


def _check_scale_range(scale_range):
    if scale_range is None:
        return None
    accepted = "None or a (low, high) pair of numbers, e.g. (0.75, 1.25)"
    low, high = _number_pair(scale_range, "scale_range", accepted)
    if not (0.0 < low <= high and math.isfinite(high)):
        raise ValueError(
            f"{_NAME}: `scale_range` must satisfy 0 < low <= high (finite); got {scale_range!r}."
        )
    return low, high


def _check_value_range(value_range):
    low, high = _number_pair(value_range, "value_range", "a (low, high) pair of numbers")
    if not (math.isfinite(low) and low < high < math.inf):
        raise ValueError(
            f"{_NAME}: `value_range` must satisfy low < high (finite); got {value_range!r}."
        )
    return low, high


def _option_number(key, value, low, high, *, high_open=False):
    """`value` as a float in [low, high] ([low, high) when `high_open`)."""
    if not is_number(value):
        raise TypeError(f"{_NAME}: `{key}` must be a number; got {value!r}.")
    value = float(value)
    if not (low <= value and (value < high if high_open else value <= high)):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{_NAME}: `{key}` must be in [{low}, {high}{bracket}; got {value!r}.")
    return value


def _check_elastic_sigma(elastic_sigma):
    if not is_number(elastic_sigma):
        raise TypeError(f"{_NAME}: `elastic_sigma` must be a number; got {elastic_sigma!r}.")
    elastic_sigma = float(elastic_sigma)
    if not (0.0 < elastic_sigma < math.inf):
        raise ValueError(
            f"{_NAME}: `elastic_sigma` must be a positive finite number of pixels; got "
            f"{elastic_sigma!r}."
        )
    return elastic_sigma


def _check_fill(fill_mode, image_fill, mask_fill):
    """The checks of `fill_mode`, `image_fill` and `mask_fill`; returns `image_fill` as a float."""
    if fill_mode not in _FILL_MODES:
        raise ValueError(
            f"{_NAME}: `fill_mode` must be one of {tuple(_FILL_MODES)}; got {fill_mode!r}."
        )
    if not is_number(image_fill):
        raise TypeError(f"{_NAME}: `image_fill` must be a number; got {image_fill!r}.")
    if mask_fill is not None and (not is_int(mask_fill) or abs(mask_fill) > _MAX_EXACT_FLOAT32_INT):
        raise TypeError(
            f"{_NAME}: `mask_fill` must be None or a Python int with |mask_fill| <= 2**24 "
            f"(e.g. the ignore label); got {mask_fill!r}."
        )
    if fill_mode == "constant" and mask_fill is None:
        raise ValueError(
            f'{_NAME}: fill_mode="constant" requires `mask_fill` (normally the ignore '
            f'label); got None. Or use fill_mode="reflect".'
        )
    return float(image_fill)


# ------------------------------------------------------------------------ the class


class JointAugment:
    """Random joint augmentation of an (image, mask) example from a stateless seed.

    Calling ``augment(image, mask, seed)`` applies, in this order: flips / rot90 ->
    scale + crop -> rotation -> elastic deformation -> photometric ops. All options are
    off by default (the call is then the identity). Each op draws from its own sub-seed of
    ``tf.random.experimental.stateless_split(seed, 8)``.

    Args:
        horizontal_flip: bool, flip left-right with probability 1/2.
        vertical_flip: bool, flip up-down with probability 1/2.
        rotate90: bool, rotate by a random multiple of 90 degrees. For non-square examples a
            quarter turn swaps height and width, so examples of one batch can differ in
            shape: use it with square images or a square `crop_size` (the crop comes
            after), or when the caller accepts the swap.
        scale_range: optional (low, high) of positive floats: a random zoom factor s uniform
            in [low, high]; the example is resized to round(s * H) x round(s * W) (the
            resize of `transforms.resize`) and a random window of the output size is taken
            from it; where the resized example is smaller, it is placed at a random position
            and the rest comes from `fill_mode`.
        crop_size: optional (height, width) of positive ints: output size of the scale +
            crop step (a random crop, padded by `fill_mode` where the example is smaller).
            None keeps the input size.
        rotation_degrees: float, rotation by an angle uniform in [-d, d] degrees about the
            output centre. Scale, crop and rotation are one affine map applied by a single
            `tf.raw_ops.ImageProjectiveTransformV3` call per tensor (image "BILINEAR", mask
            "NEAREST", same matrix), so the image is interpolated once; a crop at scale 1
            without rotation copies pixels exactly. With elastic deformation on, the affine
            map and the displacement field are composed and sampled in one pass by a gather
            sampler with the same interpolation and fill rules (the result of the affine
            step followed by the elastic step, without a second interpolation).
        elastic_alpha: float, the scale in pixels of the elastic deformation; off when 0.
            Per axis, uniform(-1, 1) noise is smoothed by a Gaussian of `elastic_sigma`
            pixels (truncated at 4 sigma) and scaled by `elastic_alpha` pixels; the image is
            sampled bilinearly and the mask by nearest neighbour at the same displaced
            coordinates. The per-axis displacement std is
            `elastic_displacement_std(alpha, sigma)`, about alpha / (2 sqrt(3 pi) sigma),
            e.g. alpha=34, sigma=4 (Simard's MNIST values) gives 1.4 px.
        elastic_sigma: float, the smoothing of the elastic deformation in pixels.
        fill_mode: "reflect", "constant" or "nearest": where scale, crop, rotation or
            elastic sample outside the example, "reflect" mirrors it (d c b a | a b c d), so
            no unknown pixels appear; "nearest" repeats the border; "constant" uses
            `image_fill` and `mask_fill`.
        image_fill: float, image value of "constant" fill.
        mask_fill: optional int, mask value of "constant" fill, normally the ignore label
            (required then; |mask_fill| <= 2**24 because the transform op takes a float32
            fill value).
        brightness: float in [0, 1]: add a delta uniform in [-b, b] * (high - low) of
            `value_range`.
        contrast: float in [0, 1): scale deviations from the image mean (per channel, as
            `tf.image.adjust_contrast`) by a factor uniform in [1 - c, 1 + c].
        gamma: float in [0, 1): gamma correction low + (high - low) * ((x - low) / (high -
            low)) ** g, with g uniform in [1 - gamma, 1 + gamma].
        noise_std: float >= 0: add Gaussian noise of std noise_std * (high - low).
        value_range: (low, high), the sensor range of the image. Only the photometric ops
            use it: they require the image inside it (a `tf.debugging` assertion, rather
            than a silent clip of values of another scale) and clip their results to it.
            Geometric ops never clip.

    Raises:
        TypeError: an option of the wrong type, naming it, what was given and what is
            accepted.
        ValueError: an option out of range, likewise.

    References:
        P. Y. Simard, D. Steinkraus and J. C. Platt, "Best practices for convolutional
        neural networks applied to visual document analysis", ICDAR 2003 (elastic
        deformation); used for U-Net training by O. Ronneberger, P. Fischer and T. Brox,
        "U-Net: Convolutional networks for biomedical image segmentation", MICCAI 2015.
    """

    def __init__(
        self,
        *,
        horizontal_flip=False,
        vertical_flip=False,
        rotate90=False,
        scale_range=None,
        crop_size=None,
        rotation_degrees=0.0,
        elastic_alpha=0.0,
        elastic_sigma=10.0,
        fill_mode="reflect",
        image_fill=0.0,
        mask_fill=None,
        brightness=0.0,
        contrast=0.0,
        gamma=0.0,
        noise_std=0.0,
        value_range=(0, 255),
    ):
        for key, value in (
            ("horizontal_flip", horizontal_flip),
            ("vertical_flip", vertical_flip),
            ("rotate90", rotate90),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{_NAME}: `{key}` must be True or False; got {value!r}.")
        scale_range = _check_scale_range(scale_range)
        crop_size = _as_pair(crop_size, "crop_size", _NAME, allow_none=True)
        rotation_degrees = _option_number("rotation_degrees", rotation_degrees, 0.0, 180.0)
        elastic_alpha = _option_number(
            "elastic_alpha", elastic_alpha, 0.0, math.inf, high_open=True
        )
        elastic_sigma = _check_elastic_sigma(elastic_sigma)
        image_fill = _check_fill(fill_mode, image_fill, mask_fill)
        brightness = _option_number("brightness", brightness, 0.0, 1.0)
        contrast = _option_number("contrast", contrast, 0.0, 1.0, high_open=True)
        gamma = _option_number("gamma", gamma, 0.0, 1.0, high_open=True)
        noise_std = _option_number("noise_std", noise_std, 0.0, math.inf, high_open=True)
        value_range = _check_value_range(value_range)
        photometric = any(v > 0 for v in (brightness, contrast, gamma, noise_std))
        if (
            photometric
            and fill_mode == "constant"
            and not (value_range[0] <= image_fill <= value_range[1])
        ):
            raise ValueError(
                f"{_NAME}: `image_fill` {image_fill} lies outside `value_range` {value_range}; "
                f"the photometric ops require the image inside it."
            )

        self.horizontal_flip = horizontal_flip
        self.vertical_flip = vertical_flip
        self.rotate90 = rotate90
        self.scale_range = scale_range
        self.crop_size = crop_size
        self.rotation_degrees = rotation_degrees
        self.elastic_alpha = elastic_alpha
        self.elastic_sigma = elastic_sigma
        self.fill_mode = fill_mode
        self.image_fill = image_fill
        self.mask_fill = mask_fill
        self.brightness = brightness
        self.contrast = contrast
        self.gamma = gamma
        self.noise_std = noise_std
        self.value_range = value_range

    # ------------------------------------------------------------------ config

    def get_config(self):
        """The options as a plain dict (JSON-serialisable), for logs and model cards."""
        return {
            "horizontal_flip": self.horizontal_flip,
            "vertical_flip": self.vertical_flip,
            "rotate90": self.rotate90,
            "scale_range": None if self.scale_range is None else list(self.scale_range),
            "crop_size": None if self.crop_size is None else list(self.crop_size),
            "rotation_degrees": self.rotation_degrees,
            "elastic_alpha": self.elastic_alpha,
            "elastic_sigma": self.elastic_sigma,
            "fill_mode": self.fill_mode,
            "image_fill": self.image_fill,
            "mask_fill": self.mask_fill,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "gamma": self.gamma,
            "noise_std": self.noise_std,
            "value_range": list(self.value_range),
        }

    describe = get_config

    @classmethod
    def from_config(cls, config):
        """Inverse of `get_config`."""
        return cls(**config)

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"JointAugment({options})"

    # ------------------------------------------------------------------- call

    def __call__(self, image, mask, seed):
        """Augment one example.

        Args:
            image: float32 tensor (H, W, C).
            mask: int32 tensor (H, W, K).
            seed: int32 or int64 tensor of shape (2,), a stateless seed, e.g. an element of
                `seeds_dataset`.

        Returns:
            (image, mask), float32 and int32, of size `crop_size` (or the input size; H and
            W swapped by an odd quarter turn of `rotate90`), channels unchanged.

        Raises:
            TypeError: a tensor or the seed has the wrong dtype.
            ValueError: a tensor or the seed has the wrong shape.
        """
        fn = _NAME
        image, mask = _check_pair(image, mask, fn)
        seed = tf.convert_to_tensor(seed)
        if seed.dtype not in (tf.int32, tf.int64):
            raise TypeError(
                f"{fn}: `seed` must be an int32 or int64 tensor of shape (2,); got dtype "
                f"{seed.dtype.name}."
            )
        if not seed.shape.is_compatible_with([2]):
            raise ValueError(
                f"{fn}: `seed` must be an int32 or int64 tensor of shape (2,) (a stateless "
                f"seed); got shape {seed.shape}."
            )
        # int64 before splitting: stateless_split keeps the dtype, so an int32 seed would
        # otherwise give other sub-seeds than the same values as int64.
        seed = tf.cast(tf.ensure_shape(seed, [2]), tf.int64)
        seeds = tf.random.experimental.stateless_split(seed, num=len(_SEED_SLOTS))
        seeds = dict(zip(_SEED_SLOTS, tf.unstack(seeds), strict=True))
        channels, classes = image.shape[-1], mask.shape[-1]

        image, mask = self._flips(image, mask, seeds)
        affine = self.scale_range is not None or self.crop_size is not None
        affine = affine or self.rotation_degrees > 0
        if self.elastic_alpha > 0:
            image, mask = self._elastic(image, mask, seeds, affine)
        elif affine:
            image, mask = self._affine(image, mask, seeds)
        image = self._photometric(image, seeds["photo"])
        image.set_shape([None, None, channels])
        mask.set_shape([None, None, classes])
        return image, mask

    # ------------------------------------------------------------------- ops

    def _flips(self, image, mask, seeds):
        if self.horizontal_flip:
            image, mask = _random_flip(image, mask, seeds["hflip"], axis=1)
        if self.vertical_flip:
            image, mask = _random_flip(image, mask, seeds["vflip"], axis=0)
        if self.rotate90:
            k = tf.random.stateless_uniform([], seeds["rot90"], 0, 4, dtype=tf.int32)
            image, mask = tf.image.rot90(image, k), tf.image.rot90(mask, k)
        return image, mask

    def _affine_map(self, image, seeds):
        """Scale + crop + rotation as one inverse affine map (output pixel -> input pixel).

        Returns the 8 parameters of `tf.raw_ops.ImageProjectiveTransformV3` (last two 0),
        the output height and width (ints or scalar tensors) and the static output size.
        """
        shape = tf.shape(image)
        height, width = shape[0], shape[1]
        fh, fw = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        if self.crop_size is not None:
            out_h, out_w = self.crop_size
            static_hw = self.crop_size
        else:
            out_h, out_w = height, width
            static_hw = (image.shape[0], image.shape[1])

        if self.scale_range is not None:
            scale = _uniform(seeds["scale"], *self.scale_range)
            scaled_h = tf.maximum(1, tf.cast(tf.round(fh * scale), tf.int32))
            scaled_w = tf.maximum(1, tf.cast(tf.round(fw * scale), tf.int32))
        else:
            scaled_h, scaled_w = height, width
        # Input pixels per scaled pixel (1 exactly without scaling).
        ay = fh / tf.cast(scaled_h, tf.float32)
        ax = fw / tf.cast(scaled_w, tf.float32)

        # Integer offset of the window in the scaled example; negative where the scaled
        # example is smaller than the window (it is then placed inside the window).
        u = tf.random.stateless_uniform([2], seeds["offset"], 0.0, 1.0)

        def offset(slack, draw):
            low, high = tf.minimum(0, slack), tf.maximum(0, slack)
            span = tf.cast(high - low + 1, tf.float32)
            step = tf.minimum(tf.cast(draw * span, tf.int32), high - low)
            return tf.cast(low + step, tf.float32)

        oy = offset(scaled_h - out_h, u[0])
        ox = offset(scaled_w - out_w, u[1])

        if self.rotation_degrees:
            limit = math.radians(self.rotation_degrees)
            angle = _uniform(seeds["rotation"], -limit, limit)
            cos, sin = tf.cos(angle), tf.sin(angle)
        else:
            cos, sin = tf.constant(1.0), tf.constant(0.0)
        cy = (tf.cast(out_h, tf.float32) - 1.0) / 2.0
        cx = (tf.cast(out_w, tf.float32) - 1.0) / 2.0
        # Output (x, y) -> rotated about the centre -> + offset -> scaled back to the input
        # with half-pixel centres, as tf.image.resize does.
        transform = tf.stack(
            [
                ax * cos,
                -ax * sin,
                ax * (cx - cos * cx + sin * cy + ox + 0.5) - 0.5,
                ay * sin,
                ay * cos,
                ay * (cy - sin * cx - cos * cy + oy + 0.5) - 0.5,
                0.0,
                0.0,
            ]
        )
        return transform, out_h, out_w, static_hw

    def _affine(self, image, mask, seeds):
        """Apply the affine map with ImageProjectiveTransformV3 (image bilinear, mask nearest)."""
        transform, out_h, out_w, static_hw = self._affine_map(image, seeds)
        output_shape = tf.stack([out_h, out_w])
        fill_mode = _FILL_MODES[self.fill_mode]
        mask_fill = 0.0 if self.mask_fill is None else float(self.mask_fill)
        out_image = tf.raw_ops.ImageProjectiveTransformV3(
            images=image[None],
            transforms=transform[None],
            output_shape=output_shape,
            fill_value=tf.constant(self.image_fill, tf.float32),
            interpolation="BILINEAR",
            fill_mode=fill_mode,
        )[0]
        out_mask = tf.raw_ops.ImageProjectiveTransformV3(
            images=mask[None],
            transforms=transform[None],
            output_shape=output_shape,
            fill_value=tf.constant(mask_fill, tf.float32),
            interpolation="NEAREST",
            fill_mode=fill_mode,
        )[0]
        out_image.set_shape([*static_hw, image.shape[-1]])
        out_mask.set_shape([*static_hw, mask.shape[-1]])
        return out_image, out_mask

    def _elastic(self, image, mask, seeds, affine):
        """Elastic deformation, composed with the affine map when there is one.

        Output pixel p samples the affine-mapped point A(p + d(p)), d the elastic field on
        the output grid: the same result as the affine step followed by the elastic step,
        but with one interpolation of the image (no double blur) and one nearest-neighbour
        lookup of the mask (so image and mask stay aligned to half a pixel).
        """
        shape = tf.shape(image)
        height, width = shape[0], shape[1]
        if affine:
            transform, out_h, out_w, static_hw = self._affine_map(image, seeds)
        else:
            out_h, out_w, static_hw = height, width, (image.shape[0], image.shape[1])
        dy, dx = _elastic_field(
            seeds["elastic"], out_h, out_w, self.elastic_alpha, self.elastic_sigma
        )
        y = tf.cast(tf.range(out_h), tf.float32)[:, None] + dy
        x = tf.cast(tf.range(out_w), tf.float32)[None, :] + dx
        if affine:
            x, y = (
                transform[0] * x + transform[1] * y + transform[2],
                transform[3] * x + transform[4] * y + transform[5],
            )
        y = _map_coordinate(y, tf.cast(height, tf.float32), self.fill_mode)
        x = _map_coordinate(x, tf.cast(width, tf.float32), self.fill_mode)
        mask_fill = 0 if self.mask_fill is None else self.mask_fill
        out_image = _sample_bilinear(image, y, x, self.fill_mode, self.image_fill)
        out_mask = _sample_nearest(mask, y, x, self.fill_mode, mask_fill)
        out_image.set_shape([*static_hw, image.shape[-1]])
        out_mask.set_shape([*static_hw, mask.shape[-1]])
        return out_image, out_mask

    def _photometric(self, image, seed):
        if not any(v > 0 for v in (self.brightness, self.contrast, self.gamma, self.noise_std)):
            return image
        low, high = self.value_range
        extent = high - low
        check = tf.debugging.Assert(
            (tf.reduce_min(image) >= low) & (tf.reduce_max(image) <= high),
            [
                f"JointAugment: the photometric ops need the image inside `value_range` "
                f"{self.value_range}; got min, max:",
                tf.reduce_min(image),
                tf.reduce_max(image),
            ],
        )
        with tf.control_dependencies([check]):
            image = tf.identity(image)
        brightness_seed, contrast_seed, gamma_seed, noise_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=4)
        )
        if self.brightness > 0:
            delta = _uniform(brightness_seed, -self.brightness, self.brightness) * extent
            image = tf.clip_by_value(image + delta, low, high)
        if self.contrast > 0:
            factor = _uniform(contrast_seed, 1.0 - self.contrast, 1.0 + self.contrast)
            mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
            image = tf.clip_by_value((image - mean) * factor + mean, low, high)
        if self.gamma > 0:
            exponent = _uniform(gamma_seed, 1.0 - self.gamma, 1.0 + self.gamma)
            image = low + extent * tf.pow((image - low) / extent, exponent)
            image = tf.clip_by_value(image, low, high)
        if self.noise_std > 0:
            noise = tf.random.stateless_normal(tf.shape(image), noise_seed)
            image = tf.clip_by_value(image + noise * (self.noise_std * extent), low, high)
        return image
