"""Image files as a model takes them: channels matched, alpha handled, 16-bit values rescaled.

    image, notes = fit_to_model(image, input_contract(model), bits=16, rescale="full")

Users' files come in every form: grey scans for RGB models, RGB photos for grey models,
RGBA screenshots, 16-bit microscopy. Each conversion here is one that the exported
SavedModel makes too, or one the user asked for; each is reported as a note (one sentence
without the file's name, so that a folder of such files gives the note once), and anything
that would change the data silently is refused with the flag that allows it:

- grey -> RGB for a 3-channel model: the grey value repeated;
- RGB -> grey for a 1-channel model: BT.709 luma (`kerasseg.ops.image.LUMA_WEIGHTS`, the
  export's rule), on the stored scale;
- an alpha channel (grey + alpha, RGBA): dropped when constant; otherwise refused unless
  `flatten_alpha`, which composites the image over white;
- 16-bit files for a model that takes 8-bit values (it normalises 0..255 inside, or is an
  instance model): refused unless `rescale` is "full" (x * 255 / 65535), "minmax" (each
  image stretched from its min..max to 0..255) or "keep" (values as stored, e.g. 16-bit
  files that hold 8-bit data).
"""

from typing import NamedTuple

import keras
import numpy as np

from kerasseg.inference.task import task_of
from kerasseg.ops.image import LUMA_WEIGHTS
from kerasseg.preprocessing import ImagePreprocessing

__all__ = ["RESCALE_MODES", "InputContract", "InputNote", "fit_to_model", "input_contract"]

RESCALE_MODES = {
    "full": "x * 255 / 65535, the 16-bit range onto 0..255",
    "minmax": "each image stretched from its minimum..maximum to 0..255",
    "keep": "the values as stored (16-bit files that hold 8-bit data)",
}


class InputNote(UserWarning):
    """A conversion made to fit an image to its model (`kerasseg.inference.predict_file`
    warns with it; the `kerasseg predict` command prints each one once)."""


class InputContract(NamedTuple):
    """What a model takes: `channels` (1, 3, or None for any) and whether it takes 8-bit
    values (`eight_bit`: it normalises 0..255 inside, or it is an instance model)."""

    channels: int | None
    eight_bit: bool


def _layers(model):
    """Every layer of `model`, nested models included."""
    for layer in getattr(model, "layers", ()):
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def input_contract(model):
    """The `InputContract` of a kerasseg model (or a wrapper of one).

    A model with an `ImagePreprocessing` layer of any mode but "none", and every instance
    model (Mask R-CNN normalises 0..255 images inside), takes 8-bit values.
    """
    instance = task_of(model) == "instance"
    channels = 3 if instance else None
    inputs = getattr(model, "inputs", None) or ()
    if not instance and len(inputs) == 1:
        channels = inputs[0].shape[-1]
    normalised = any(
        isinstance(layer, ImagePreprocessing) and layer.mode != "none" for layer in _layers(model)
    )
    return InputContract(channels, bool(instance or normalised))


def _alpha_dropped(image, flatten_alpha, notes):
    """`image` without its alpha channel (the last of 2 or 4)."""
    colour, alpha = image[..., :-1], image[..., -1:]
    top = 65535 if image.dtype == np.uint16 else 255
    if alpha.size == 0 or (alpha == alpha.flat[0]).all():
        notes.append("the image's alpha channel is constant: dropped")
        return colour
    if not flatten_alpha:
        raise ValueError(
            f"the image has a transparent alpha channel ({np.mean(alpha < top):.1%} of pixels "
            "not opaque); composite it over white with --flatten-alpha (Python: "
            "flatten_alpha=True), or remove the alpha channel first."
        )
    notes.append("the image's alpha channel was composited over white (--flatten-alpha)")
    weight = alpha.astype(np.float32) / top
    return colour.astype(np.float32) * weight + top * (1.0 - weight)


def _channels_matched(image, channels, notes):
    """`image` with `channels` channels: grey repeated to RGB, RGB to grey by BT.709 luma."""
    have = image.shape[-1]
    if channels is None or have == channels:
        return image
    if have == 1 and channels == 3:
        notes.append("grey image repeated to RGB for a 3-channel model")
        return np.repeat(image, 3, axis=-1)
    if have == 3 and channels == 1:
        notes.append(
            "RGB image converted to grey for a 1-channel model (BT.709 luma, as the "
            "exported model does)"
        )
        grey = image.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, np.float32)
        return grey[..., None]
    raise ValueError(
        f"the image has {have} channels and the model takes {channels}; convert the image "
        "to grey or RGB first."
    )


def _rescaled(image, rescale, notes):
    """A 16-bit image on the 8-bit scale, as `rescale` says."""
    if rescale is None:
        raise ValueError(
            "16-bit image for a model that takes 8-bit values (0..255); say how to rescale "
            f"it with --rescale (Python: rescale=): {', '.join(RESCALE_MODES)}."
        )
    notes.append(f"16-bit image rescaled to 8-bit values: {RESCALE_MODES[rescale]}")
    if rescale == "keep":
        return image
    image = image.astype(np.float32)
    if rescale == "full":
        return image * np.float32(255.0 / 65535.0)
    low, high = float(image.min()), float(image.max())
    return (image - low) * np.float32(255.0 / (high - low)) if high > low else image * 0


def fit_to_model(image, contract, *, bits=8, flatten_alpha=False, rescale=None):
    """An (H, W, C) image as the model with `contract` takes it.

    Args:
        image: (H, W, C) uint8 or uint16 array, the file's values as stored.
        contract: the model's `InputContract`.
        bits: the file's bit depth, 8 or 16.
        flatten_alpha: composite a transparent image over white instead of refusing it.
        rescale: how to bring a 16-bit image to an 8-bit model: one of `RESCALE_MODES`.

    Returns:
        (image, notes): the image (its own dtype when unchanged, else float32) and the list
        of conversions made, in words.

    Raises:
        ValueError: a transparent alpha channel without `flatten_alpha`, a 16-bit image for
            an 8-bit model without `rescale`, or channels that cannot be matched.
    """
    if rescale is not None and rescale not in RESCALE_MODES:
        raise ValueError(f"`rescale` must be one of {list(RESCALE_MODES)}; got {rescale!r}.")
    notes = []
    if image.shape[-1] in (2, 4):
        image = _alpha_dropped(image, flatten_alpha, notes)
    elif flatten_alpha:
        notes.append("--flatten-alpha: the image has no alpha channel")
    if bits == 16 and (rescale is not None or contract.eight_bit):
        image = _rescaled(image, rescale, notes)
    elif bits == 16:
        notes.append(
            "16-bit image given with its values as stored (0..65535): the model has no "
            "0..255 normalisation inside (--rescale converts it)"
        )
    elif rescale is not None:
        notes.append(f"--rescale {rescale} ignored: the image is {bits}-bit")
    return _channels_matched(image, contract.channels, notes), notes
