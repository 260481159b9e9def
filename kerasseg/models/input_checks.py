"""The checks and messages of `kerasseg.models.base.SegmentationModel`'s image input.

Each message is built from parts (`size_message`, `rank_message`, ...) that are either all
strings (an eager check: `join_message` joins them) or partly string tensors (a check traced
inside a `tf.data` map: `join_message` joins them with `tf.strings.join`), so that a batch of
a dataset fails with the same words as an array. TensorFlow is imported only inside the
functions that run in a `tf.data` map.
"""

import contextlib
import contextvars

import keras
import numpy as np

__all__ = [
    "ACCEPTED_DTYPES",
    "CHANNEL_CONVERSIONS",
    "FLOAT_DTYPES",
    "VALUES_CHECKED",
    "assert_finite",
    "channel_message",
    "check_allow_nan",
    "check_spatial_size",
    "dtype_name",
    "is_dataset",
    "is_python_numbers",
    "join_message",
    "nan_message",
    "non_finite",
    "rank_advice",
    "rank_message",
    "shape_tensor_text",
    "size_message",
    "size_rule_text",
    "values_checked",
]

# The image dtypes a `SegmentationModel` takes.
ACCEPTED_DTYPES = (
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "uint8",
    "uint16",
    "int32",
    "int64",
)
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

# True while `predict`, `fit`, ... run on input they have already checked for NaN, so that
# an eager `__call__` inside them (`run_eagerly=True`) follows their `allow_nan`.
VALUES_CHECKED = contextvars.ContextVar("kerasseg_values_checked", default=False)

# How to convert images with the wrong channel count: {(expected, given): advice}.
CHANNEL_CONVERSIONS = {
    (3, 1): "Convert grey images to RGB with `np.repeat(x, 3, axis=-1)`. ",
    (1, 3): "Convert RGB images to grey with `kerasseg.ops.image.to_grey(np.float32(x))` (float "
    "input keeps its value range). ",
    (3, 4): "Drop the alpha channel with `x[..., :3]`. ",
}


def join_message(parts):
    """The message of `parts`: strings, or (in a traced dataset check) string tensors."""
    if all(isinstance(part, str) for part in parts):
        return "".join(parts)
    import tensorflow as tf  # only reached from the tf.data check, where TensorFlow runs

    return tf.strings.join(list(parts))


def size_message(argument, size, rule, minimum, example, given):
    """The parts of the message for a spatial size that does not fit the network."""
    return [
        f"`{argument}`: spatial size ",
        size,
        f" does not fit the network: sizes must be {rule} (the total stride of the network), at "
        f"least {minimum}; e.g. ",
        example,
        " instead of ",
        given,
        ". Pad or resize the images.",
    ]


def size_rule_text(divisor, offset):
    """The accepted sizes in words: "multiples of 32" or "92 + k * 16"."""
    return f"multiples of {divisor}" if offset == 0 else f"{offset} + k * {divisor}"


def check_spatial_size(size, divisor, argument="input_shape", offset=0, minimum=None):
    """Check that each known spatial size is `offset + k * divisor` and at least `minimum`.

    With the default offset 0 the sizes must be multiples of the network's total stride.

    Args:
        size: the spatial sizes (height, width); None for an unknown one.
        divisor: the network's total stride.
        argument: the argument named in the message ("input_shape", "images").
        offset: accepted sizes are `offset + k * divisor` (0: multiples of `divisor`).
        minimum: the smallest accepted size (default `divisor`).

    Raises:
        ValueError: a size that does not fit, with the nearest sizes that do.
    """
    minimum = divisor if minimum is None else minimum
    for s in size:
        if s is None or (s >= minimum and (s - offset) % divisor == 0):
            continue
        below = max(minimum, s - (s - offset) % divisor)
        above = below + divisor if below <= s else below
        rule = size_rule_text(divisor, offset)
        example = str(sorted({below, above}))
        raise ValueError(
            join_message(size_message(argument, str(tuple(size)), rule, minimum, example, str(s)))
        )


def dtype_name(x):
    """The standardized dtype name of a tensor, array or nested list ("uint8", "float32", ...).

    A dtype Keras does not know (NumPy strings or objects) comes back under its NumPy name.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    try:
        return keras.backend.standardize_dtype(dtype)
    except ValueError:  # not a dtype Keras knows, e.g. numpy strings or objects
        return str(dtype)


def rank_message(expected, rank, shape, advice):
    """The parts of the message for an image batch of the wrong rank."""
    return [
        f"`images` must have rank {len(expected)}, (batch, height, width, channels) = "
        f"{expected}; got rank ",
        rank,
        " with shape ",
        shape,
        ". ",
        advice,
    ]


def rank_advice(expected, rank, dataset):
    """How to fix a wrong rank: add a batch axis, batch the dataset, or give one array."""
    if rank != len(expected) - 1:
        return "Give one (batch, height, width, channels) array."
    if dataset:
        return "The tf.data.Dataset yields single images: batch it with `dataset.batch(n)`."
    return "Add a batch axis with `x[None]` for a single image."


def channel_message(expected, shape, given, advice):
    """The parts of the message for images with the wrong channel count."""
    return [
        f"`images` must have {expected} channel(s) (last axis) for this model; got shape ",
        shape,
        ". ",
        advice,
        "Only for a model you build yourself: build it for ",
        given,
        "-channel images with `input_shape=(None, None, ",
        given,
        ")` (`channels=",
        given,
        "` for a classical method).",
    ]


def nan_message(count, batch, row, column):
    """The parts of the message for images holding NaN or infinity."""
    return [
        "`images` hold ",
        count,
        " non-finite value(s) (NaN or infinity), the first at (batch, row, column) = (",
        batch,
        ", ",
        row,
        ", ",
        column,
        "); replace them (e.g. `np.nan_to_num(x)`) or leave those pixels out, or accept them "
        "with `predict(..., allow_nan=True)` (`model.allow_nan = True` for fit, evaluate and "
        "direct calls).",
    ]


def non_finite(images):
    """(count, first (batch, row, column)) of the NaN and infinite values of an eager float
    batch, or None when all are finite. A NumPy array is first summed (no copy): only a
    non-finite sum pays for the element-wise test."""
    if isinstance(images, np.ndarray):
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.sum(images, dtype=np.float64)):
                return None
        bad = ~np.isfinite(images)
    else:
        if bool(keras.ops.all(keras.ops.isfinite(images))):
            return None
        bad = ~np.isfinite(keras.ops.convert_to_numpy(images))
    count = int(np.count_nonzero(bad))
    if count == 0:
        return None
    first = np.unravel_index(int(np.argmax(bad)), bad.shape)
    return count, tuple(int(i) for i in first[:3])


def is_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (told without importing TensorFlow)."""
    return type(x).__module__.startswith("tensorflow") and hasattr(x, "element_spec")


def is_python_numbers(x):
    """Whether `x` is a (nested) list or tuple of Python numbers rather than of arrays."""
    while isinstance(x, list | tuple):
        if not x:
            return True
        x = x[0]
    return isinstance(x, bool | int | float | complex)


def check_allow_nan(value, name):
    """`value` as a bool; a TypeError for anything but True or False."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be True or False; got {value!r}.")
    return bool(value)


@contextlib.contextmanager
def values_checked():
    """Run Keras on checked input: eager calls inside skip the NaN check, and a failed
    dataset assertion of this module comes out as the `ValueError` an eager check gives."""
    token = VALUES_CHECKED.set(True)
    try:
        yield
    except Exception as error:
        message = _assertion_message(error)
        if message is None:
            raise
        raise ValueError(message) from None
    finally:
        VALUES_CHECKED.reset(token)


# How the messages of the dataset assertions begin (see `_assert_batch`).
_MESSAGE_STARTS = ("`images` must have ", "`images`: spatial size ", "`images` hold ")


def _assertion_message(error):
    """The message of a failed `_assert_batch` assertion in a TensorFlow error, or None."""
    if type(error).__name__ != "InvalidArgumentError":
        return None
    text = getattr(error, "message", None) or str(error)
    marker = "assertion failed: ["
    if marker not in text:
        return None
    message = text.split(marker, 1)[1].split("]\n", 1)[0]
    return message if message.startswith(_MESSAGE_STARTS) else None


def shape_tensor_text(tf, shape):
    """A shape tensor as Python prints a tuple: "(2, 32, 32, 3)", "(5,)", "()"."""
    inner = tf.strings.reduce_join(tf.strings.as_string(shape), separator=", ")
    comma = tf.where(tf.size(shape) == 1, ",", "")
    return tf.strings.join(["(", inner, comma, ")"])


def assert_finite(tf, images):
    """`images` after an assertion that a float batch holds no NaN or infinity, with the
    count and the first (batch, row, column) in its message (computed only when it fails)."""
    finite = tf.math.is_finite(images)

    def passed():
        return tf.identity(images)

    def failed():
        bad = tf.logical_not(finite)
        count = tf.reduce_sum(tf.cast(bad, tf.int64))
        first = [tf.strings.as_string(i) for i in tf.unstack(tf.where(bad)[0][:3], num=3)]
        assertion = tf.debugging.Assert(
            False, [join_message(nan_message(tf.strings.as_string(count), *first))]
        )
        with tf.control_dependencies([assertion]):
            return tf.identity(images)

    return tf.cond(tf.reduce_all(finite), passed, failed)
