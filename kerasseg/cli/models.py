"""Models for the `kerasseg` subcommands: registry names or .keras files, built or loaded,
wrapped for stored image values and test-time augmentation, and checked against the data."""

import zipfile
from pathlib import Path

import keras

import kerasseg
from kerasseg.cli.common import UsageError
from kerasseg.inference import output_is_logits, tta_wrap
from kerasseg.models.base import SegmentationModel
from kerasseg.preprocessing import ImagePreprocessing

__all__ = [
    "MODEL_SUFFIXES",
    "build",
    "check_classes",
    "check_watershed_flags",
    "is_model_file",
    "load_for_inference",
    "output_channels",
    "with_tta",
]


# The suffixes of the model files `keras.saving.load_model` reads (registry names have none).
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# What every archive written by `model.save("x.keras")` holds.
_ARCHIVE_MEMBERS = ("config.json", "metadata.json")


def build(name, arguments, weights, *, flag="--model"):
    """`kerasseg.load(name, weights=weights, **arguments)`; a mistake is a UsageError.

    `flag` names the argument in messages (`kerasseg export` takes NAME, not --model).
    """
    try:
        kerasseg.get_entry(name)
        return kerasseg.load(name, weights=weights, **arguments)
    except (TypeError, ValueError) as error:
        if Path(name).is_dir():
            raise UsageError(
                f"{flag} {name}: a folder, not a registry name or a .keras file (a "
                "SavedModel folder cannot be loaded back; pass the .keras file it was "
                "exported from)."
            ) from None
        raise UsageError(f"{flag} {name}: {error}") from None


def is_model_file(spec):
    """True when `--model` / NAME names a saved model file rather than a registry entry."""
    return spec.lower().endswith(MODEL_SUFFIXES) or Path(spec).is_file()


def _header(path):
    with open(path, "rb") as file:
        return file.read(8)


def _archive_problem(path):
    """Why `path` is not a .keras zip archive, or None when it looks like one."""
    head = _header(path)
    size = Path(path).stat().st_size
    if head.startswith(_HDF5_MAGIC):
        return (
            "it is an HDF5 file (weights from `save_weights`, or a legacy .h5 model); "
            "save the model with model.save('name.keras')"
        )
    if not zipfile.is_zipfile(path):
        if head.startswith(_ZIP_MAGIC):
            return f"the zip is truncated or damaged ({size} bytes, no end-of-archive record)"
        return f"the file is not a zip archive ({size} bytes starting with {head[:4]!r})"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        return f"the zip cannot be read ({error})"
    missing = [name for name in _ARCHIVE_MEMBERS if name not in names]
    if missing:
        return f"the zip holds no {' or '.join(missing)} (a zip, but not one model.save wrote)"
    return None


def _hdf5_problem(path):
    """Why `path` is not a legacy HDF5 Keras model, or None when it holds a model config."""
    if not _header(path).startswith(_HDF5_MAGIC):
        return "the file is not HDF5 (wrong header)"
    # h5py comes with Keras; imported here because only legacy .h5 models need it.
    import h5py

    try:
        with h5py.File(path, "r") as file:
            has_config = "model_config" in file.attrs
    except OSError as error:
        return f"the HDF5 file cannot be read ({' '.join(str(error).split())})"
    if not has_config:
        return (
            "it holds weights only, no model config (written by save_weights?); pass a "
            "model saved with model.save('name.keras')"
        )
    return None


def _load_model_file(spec, flag):
    """`keras.saving.load_model(spec)`, every failure a one-line UsageError naming `spec`."""
    path = Path(spec)
    if path.is_dir():
        raise UsageError(
            f"{flag} {spec}: a folder, not a .keras file (a SavedModel folder cannot be loaded "
            "back; pass the .keras file it was exported from)."
        )
    if not path.is_file():
        raise UsageError(f"{flag} {spec!r} does not exist.")
    legacy = path.suffix.lower() in (".h5", ".hdf5")
    if legacy:
        problem = _hdf5_problem(path)
        if problem is not None:
            raise UsageError(f"{flag} {spec}: not a Keras model file (.h5): {problem}.")
    else:
        problem = _archive_problem(path)
        if problem is not None:
            raise UsageError(f"{flag} {spec}: not a Keras model archive (.keras zip): {problem}.")
        if path.suffix.lower() != ".keras":
            raise UsageError(
                f"{flag} {spec}: a Keras model archive must be named *.keras (Keras reads "
                "only .keras and .h5 files); rename it."
            )
    try:
        return keras.saving.load_model(spec)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        if legacy:
            raise UsageError(
                f"{flag} {spec}: cannot load this legacy HDF5 Keras model: {reason} (save "
                "kerasseg models with model.save('name.keras'))"
            ) from None
        raise UsageError(
            f"{flag} {spec}: cannot load this Keras model archive (.keras zip): {reason}"
        ) from None


def load_for_inference(spec, arguments, *, flag="--model"):
    """The model of a registry name or a .keras file, for images with values as stored.

    A registry model whose entry names an input normalisation gets it as its first layer.

    Args:
        spec: a registry name or the path of a .keras file.
        arguments: --model-arg values (registry names only).
        flag: how messages name `spec` ("--model", or "NAME" for `kerasseg export`).

    Returns:
        (model, from_logits).

    Raises:
        UsageError: for arguments given to a file, a missing file or one that is not a
            Keras model, or a bad registry model.
    """
    if is_model_file(spec):
        if arguments:
            raise UsageError("--model-arg only applies to registry names, not to .keras files.")
        model = _load_model_file(spec, flag)
        return model, output_is_logits(model)
    model = build(spec, arguments, "default", flag=flag)
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
