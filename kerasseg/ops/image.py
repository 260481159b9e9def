"""Input checks and colour handling shared by the classical segmentation layers.

Every classical layer takes a (batch, height, width, channels) batch of any integer or
float dtype with 1 or 3 channels. Colour images are turned into one grey channel with
scikit-image's `rgb2gray` weights (ITU-R BT.709 luma: 0.2125 R + 0.7154 G + 0.0721 B, on
images scaled to [0, 1] for integer dtypes, as `skimage.util.img_as_float` does) unless a
layer says it works per channel.
"""

import warnings

import keras
from keras import ops

from kerasseg.ops.checks import is_int

__all__ = [
    "DTYPE_MAX",
    "FLOAT_DTYPES",
    "IMAGE_DTYPES",
    "INTEGER_DTYPES",
    "INTEGER_LIMITS",
    "LUMA_WEIGHTS",
    "check_finite",
    "check_float64",
    "check_images",
    "compute_dtype",
    "dtype_name",
    "images_input",
    "is_symbolic",
    "materialize",
    "to_float",
    "to_grey",
]

INTEGER_DTYPES = ("uint8", "uint16", "int8", "int16", "int32", "int64")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
IMAGE_DTYPES = INTEGER_DTYPES + FLOAT_DTYPES
LUMA_WEIGHTS = (0.2125, 0.7154, 0.0721)
# The value range of each integer dtype (skimage.util.dtype_limits).
INTEGER_LIMITS = {
    "uint8": (0, 255),
    "uint16": (0, 65535),
    "int8": (-128, 127),
    "int16": (-32768, 32767),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
# skimage.util.img_as_float divides integers by their dtype's maximum.
DTYPE_MAX = {name: float(high) for name, (_, high) in INTEGER_LIMITS.items()}


def dtype_name(x):
    """The standardized dtype name of a tensor or array ("uint8", "float32", ...)."""
    return keras.backend.standardize_dtype(x.dtype)


def check_float64(layer):
    """Refuses to run where the backend turns float64 into float32 (JAX without x64).

    Args:
        layer: the name of the layer that needs float64, for the message.

    Raises:
        RuntimeError: float64 tensors come out as float32.
    """
    if keras.backend.standardize_dtype(ops.zeros((), "float64").dtype) != "float64":
        raise RuntimeError(
            f"{layer} computes in float64, which the {keras.backend.backend()} backend turns "
            "into float32 here; set JAX_ENABLE_X64=1 (or call "
            "jax.config.update('jax_enable_x64', True)) before the first JAX computation."
        )


def compute_dtype(dtype):
    """The float dtype a layer computes in for images of `dtype`: float64 stays float64,
    everything else is float32."""
    return "float64" if dtype == "float64" else "float32"


def check_images(images, layer, channels=(1, 3), dtypes=IMAGE_DTYPES):
    """Validate a (batch, H, W, C) image batch.

    Args:
        images: the batch (a tensor or a symbolic `keras.KerasTensor`).
        layer: the name of the layer that checks, or a longer prefix, for the messages.
        channels: the accepted channel counts.
        dtypes: the accepted dtype names.

    Returns:
        The dtype name of `images`.

    Raises:
        ValueError: a rank other than 4, a channel count outside `channels` or an image of
            height or width 0.
        TypeError: a dtype outside `dtypes`.
    """
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(
            f"{layer}: `images` must have rank 4, (batch, height, width, channels); got shape "
            f"{shape}. Add a batch axis with `x[None]` for one image."
        )
    if shape[-1] is not None and shape[-1] not in channels:
        raise ValueError(
            f"{layer}: `images` must have {' or '.join(map(str, channels))} channel(s); got "
            f"shape {shape}."
        )
    if 0 in shape[1:3]:
        raise ValueError(f"{layer}: `images` must not be empty; got shape {shape}.")
    dtype = dtype_name(images)
    if dtype not in dtypes:
        raise TypeError(f"{layer}: `images` dtype must be one of {dtypes}; got {dtype}.")
    return dtype


def is_symbolic(x):
    """Whether `x` is a tensor without values (Keras symbolic or traced in a graph).

    Args:
        x: a tensor or array.

    Returns:
        True for a `keras.KerasTensor` or a tensor whose values cannot be read (inside
        `tf.function`, `jax.jit`, ...), False for an eager tensor or an array.
    """
    if isinstance(x, keras.KerasTensor):
        return True
    try:
        # NumPy warns (DeprecationWarning: no `copy` keyword) before a traced TensorFlow
        # tensor refuses the conversion; the refusal is the answer here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ops.convert_to_numpy(ops.reshape(x, (-1,))[:0])
    except Exception:
        return True
    return False


def check_finite(images, layer):
    """In eager mode, refuse a float batch that holds NaN or infinity.

    Traced calls cannot raise on values; each layer documents what NaN does there.

    Args:
        images: the image batch.
        layer: the name of the layer that checks, for the message.

    Raises:
        ValueError: an eager float batch with a NaN or infinite value.
    """
    if dtype_name(images) in FLOAT_DTYPES and not is_symbolic(images):
        if not bool(ops.all(ops.isfinite(images))):
            raise ValueError(f"{layer}: `images` contain NaN or infinite values.")


def to_float(images, dtype="float32"):
    """Images as floats on scikit-image's scale (`skimage.util.img_as_float`).

    Args:
        images: an image batch of any integer or float dtype.
        dtype: the float dtype of the result.

    Returns:
        `images` cast to `dtype`; integer images divided by their dtype's maximum (signed
        ones clipped at -1, as `img_as_float` maps the most negative value to -1).
    """
    name = dtype_name(images)
    x = ops.cast(images, dtype)
    if name in DTYPE_MAX:
        x = x / DTYPE_MAX[name]
        if not name.startswith("u"):
            x = ops.maximum(x, -1.0)  # as img_as_float: the most negative value maps to -1
    return x


def to_grey(images, dtype="float32"):
    """One grey channel, as `skimage.color.rgb2gray` for colour images.

    1-channel images are returned unchanged, keeping their dtype and values (so that
    thresholds stay in the image's units); 3-channel images become floats, in [0, 1] for
    integer dtypes (`LUMA_WEIGHTS` applied to `to_float(images)`).

    Args:
        images: a (batch, H, W, 1 or 3) image batch.
        dtype: the float dtype of a converted colour batch.

    Returns:
        A (batch, H, W, 1) batch.
    """
    if images.shape[-1] == 1:
        return images
    weights = ops.convert_to_tensor(LUMA_WEIGHTS, dtype=dtype)
    return ops.sum(to_float(images, dtype) * weights, axis=-1, keepdims=True)


def images_input(input_dtype, channels, dtypes=IMAGE_DTYPES):
    """The "images" input of a classical model, after checking the builder's arguments.

    Args:
        input_dtype: the dtype name of the images the model takes.
        channels: 1 (grey) or 3 (RGB).
        dtypes: the accepted dtype names.

    Returns:
        A `keras.Input` of shape (None, None, channels) named "images".

    Raises:
        ValueError: `input_dtype` outside `dtypes` or `channels` other than 1 or 3.
    """
    if input_dtype not in dtypes:
        raise ValueError(f"`input_dtype` must be one of {dtypes}; got {input_dtype!r}.")
    if not is_int(channels) or channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 (grey) or 3 (RGB); got {channels!r}.")
    return keras.Input((None, None, channels), dtype=input_dtype, name="images")


def materialize(x):
    """Identity that XLA cannot fuse through: a one-element scatter into a padded copy.

    XLA fuses chains of shifted slices into one loop that recomputes every producer for each
    slice (a separable b-tap filter becomes b * b work); a scatter's operand is always
    materialised. Safe for an empty batch (the scatter writes into the padding).

    Args:
        x: a tensor of any shape and dtype.

    Returns:
        A tensor equal to `x`.
    """
    rank = len(x.shape)
    padded = ops.pad(x, ((1, 0),) + ((0, 0),) * (rank - 1))
    padded = ops.scatter_update(padded, [[0] * rank], ops.zeros((1,), dtype=x.dtype))
    return padded[1:]
