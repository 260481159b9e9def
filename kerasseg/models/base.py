"""The model class every kerasseg builder returns: a functional model that checks its input.

Keras converts whatever it is given to the input's dtype and reports a wrong rank or
channel count with a long, unhelpful message. `SegmentationModel` checks the image batch
first and raises an error that names the argument, what was given and what is accepted.
"""

import keras
import numpy as np

__all__ = ["ACCEPTED_DTYPES", "SegmentationModel", "check_spatial_size", "dtype_name"]

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
        rule = f"multiples of {divisor}" if offset == 0 else f"{offset} + k * {divisor}"
        raise ValueError(
            f"`{argument}`: spatial size {tuple(size)} does not fit the network: sizes must be "
            f"{rule} (the network's total stride), at least {minimum}; e.g. "
            f"{sorted({below, above})} instead of {s}. Pad or resize the images."
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


@keras.saving.register_keras_serializable(package="kerasseg")
class SegmentationModel(keras.Model):
    """Functional segmentation model with input validation.

    Built like any functional model, `SegmentationModel(inputs, outputs, name=...)`, plus the
    sizes it accepts: `offset + k * size_divisor`, at least `min_size` (1, 0, 1 = any size).
    Images are checked on every call (eager or traced) for rank 4, the channel count of
    the model's input, a numeric dtype and, where the size is known, divisibility.
    """

    def __init__(self, *args, size_divisor=1, size_offset=0, min_size=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.size_divisor = int(size_divisor)
        self.size_offset = int(size_offset)
        self.min_size = int(size_divisor if min_size is None else min_size)

    def __call__(self, *args, **kwargs):
        if args:
            self._check_images(args[0])
        return super().__call__(*args, **kwargs)

    def _check_images(self, images):
        if isinstance(images, dict | list | tuple) or len(self.inputs) != 1:
            return
        expected = tuple(self.inputs[0].shape)
        shape = tuple(getattr(images, "shape", np.shape(images)))
        if len(shape) != len(expected):
            raise ValueError(
                f"`images` must have rank {len(expected)}, (batch, height, width, channels) = "
                f"{expected}; got rank {len(shape)} with shape {shape}. Add a batch axis with "
                f"`x[None]` for a single image."
            )
        if expected[-1] is not None and shape[-1] is not None and shape[-1] != expected[-1]:
            raise ValueError(
                f"`images` must have {expected[-1]} channel(s) (last axis); got shape {shape}. "
                f"Build the model with `input_shape=(None, None, {shape[-1]})` to accept "
                f"{shape[-1]}-channel images."
            )
        dtype = dtype_name(images)
        if dtype not in ACCEPTED_DTYPES:
            raise TypeError(
                f"`images` must have a numeric image dtype, one of {ACCEPTED_DTYPES}; got "
                f"{dtype}. Convert explicitly (e.g. `x.astype('float32')`)."
            )
        wanted = keras.backend.standardize_dtype(self.inputs[0].dtype)
        if "int" in wanted and dtype != wanted:
            raise TypeError(
                f"`images` must be {wanted} for this model, whose thresholds follow that dtype's "
                f"values; got {dtype}. Convert explicitly, or load the model with a matching "
                f"input dtype."
            )
        if self.size_divisor > 1 or self.min_size > 1:
            check_spatial_size(
                shape[1:3], self.size_divisor, "images", self.size_offset, self.min_size
            )

    def get_config(self):
        config = super().get_config()
        config.update(self._size_rule())
        return config

    def _size_rule(self):
        return {
            "size_divisor": self.size_divisor,
            "size_offset": self.size_offset,
            "min_size": self.min_size,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        rule = {
            key: config.pop(key)
            for key in ("size_divisor", "size_offset", "min_size")
            if key in config
        }
        model = super().from_config(config, custom_objects=custom_objects)
        model.size_divisor = int(rule.get("size_divisor", 1))
        model.size_offset = int(rule.get("size_offset", 0))
        model.min_size = int(rule.get("min_size", model.size_divisor))
        return model
