"""Models for the `kerasseg` subcommands: registry names or .keras files, built or loaded,
wrapped for stored image values and test-time augmentation, and checked against the data."""

from pathlib import Path

import keras

import kerasseg
from kerasseg.cli.common import UsageError
from kerasseg.inference import output_is_logits, tta_wrap
from kerasseg.models.base import SegmentationModel
from kerasseg.preprocessing import ImagePreprocessing

__all__ = [
    "build",
    "check_classes",
    "check_watershed_flags",
    "is_model_file",
    "load_for_inference",
    "output_channels",
    "with_tta",
]


def build(name, arguments, weights):
    """`kerasseg.load(name, weights=weights, **arguments)`; a mistake is a UsageError."""
    try:
        kerasseg.get_entry(name)
        return kerasseg.load(name, weights=weights, **arguments)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--model {name}: {error}") from None


def is_model_file(spec):
    """True when `--model` / NAME names a saved model file rather than a registry entry."""
    return spec.endswith(".keras") or Path(spec).is_file()


def load_for_inference(spec, arguments):
    """The model of a registry name or a .keras file, for images with values as stored.

    A registry model whose entry names an input normalisation gets it as its first layer.

    Args:
        spec: a registry name or the path of a .keras file.
        arguments: --model-arg values (registry names only).

    Returns:
        (model, from_logits).

    Raises:
        UsageError: for arguments given to a file, a missing file or a bad registry model.
    """
    if is_model_file(spec):
        if arguments:
            raise UsageError("--model-arg only applies to registry names, not to .keras files.")
        if not Path(spec).is_file():
            raise UsageError(f"--model {spec!r} does not exist.")
        model = keras.saving.load_model(spec)
        return model, output_is_logits(model)
    model = build(spec, arguments, "default")
    logits = output_is_logits(model)
    mode = kerasseg.get_entry(spec).preprocessing_for(arguments)
    if mode == "none":
        return model, logits
    inputs = keras.Input(tuple(model.inputs[0].shape[1:]), name="images")
    wrapped = SegmentationModel(
        inputs,
        model(ImagePreprocessing(mode)(inputs)),
        size_divisor=getattr(model, "size_divisor", 1),
        size_offset=getattr(model, "size_offset", 0),
        min_size=getattr(model, "min_size", 1),
    )
    return wrapped, logits


def with_tta(model, transforms):
    """`model` averaged over `transforms` (--tta), or `model` itself when none is asked."""
    if transforms is None:
        return model
    try:
        return tta_wrap(model, transforms)
    except ValueError as error:
        raise UsageError(f"--tta {transforms}: {error}") from None


def output_channels(model):
    """The class channels of a dense model's one output; a UsageError for other models."""
    shape = getattr(model, "output_shape", None)
    if not isinstance(shape, tuple) or not shape or not isinstance(shape[-1], int):
        raise UsageError(
            "--model must have one output of shape (batch, height, width, classes); got output "
            f"shape {shape!r}."
        )
    return shape[-1]


def check_classes(channels, num_classes, what):
    """A UsageError unless a model with `channels` outputs fits `num_classes` classes of
    `what` (1 channel: a binary, sigmoid model for 2 classes)."""
    if channels == 1 and num_classes != 2:
        raise UsageError(
            f"the model has 1 output channel (binary, sigmoid) but {what} has {num_classes} "
            f"classes; pass --model-arg num_classes={num_classes}."
        )
    if channels > 1 and channels != num_classes:
        raise UsageError(
            f"the model has {channels} output channels but {what} has {num_classes} classes."
        )


def check_watershed_flags(seeds, outputs, enabled, needed):
    """--watershed-seeds: a value in (0, 1], a 1-channel model, and the flag it serves."""
    if seeds is None:
        return
    if not 0.0 < seeds <= 1.0:
        raise UsageError(f"--watershed-seeds must be in (0, 1]; got {seeds}.")
    if outputs != 1:
        raise UsageError(
            f"--watershed-seeds needs a 1-channel (sigmoid) model; this one has {outputs}."
        )
    if not enabled:
        raise UsageError(f"--watershed-seeds needs {needed}.")
