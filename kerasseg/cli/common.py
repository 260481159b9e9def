"""What the `kerasseg` subcommands share: the usage error and its report, flag types and
flag groups, the parsing of --model-arg and --class-map, and the checks of the data flags."""

import argparse
import json
import math
import sys
from pathlib import Path

from PIL import Image

from kerasseg.datasets import DATASETS
from kerasseg.run_folder import RunFolderError

__all__ = [
    "UsageError",
    "add_data_flags",
    "add_model_flags",
    "add_subcommand",
    "add_tta_flag",
    "check_data_flags",
    "check_unit_interval",
    "class_count",
    "debug_flag",
    "folder",
    "given_flags",
    "image_channels",
    "image_size",
    "learning_rate",
    "mask_classes",
    "paired",
    "parse_class_map",
    "parse_model_arguments",
    "positive_int",
    "run_command",
]


class UsageError(Exception):
    """A command-line mistake: reported on stderr with exit status 2."""


# ----------------------------------------------------------------------------- flag types


def positive_int(text):
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def learning_rate(text):
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be finite and > 0; got {text!r}")
    return value


def class_count(text):
    """argparse type: a class count of the data, an int >= 2."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"is the data's class count, at least 2 (2 for binary masks); got {text!r}"
        )
    return value


# ----------------------------------------------------------------------------- flag groups


def add_subcommand(commands, name, parents, summary, description):
    """Add the subcommand `name`, with a help text of its own, to `commands`.

    Args:
        commands: the subparsers of the `kerasseg` parser.
        name: the subcommand's name.
        parents: its parent parsers (`debug_flag()`).
        summary: the one line `kerasseg --help` shows for it.
        description: the text `kerasseg NAME --help` shows before the flags, printed as it is
            written (line breaks kept).

    Returns:
        The subcommand's `argparse.ArgumentParser`.
    """
    return commands.add_parser(
        name,
        parents=parents,
        help=summary,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def debug_flag():
    """The parent parser of every subcommand: --debug."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )
    return parser


def add_model_flags(parser, *, path_ok):
    """--model (a registry name, or with `path_ok` a .keras file too) and --model-arg."""
    what = "registry name or path to a .keras file" if path_ok else "registry name"
    parser.add_argument("--model", required=True, help=f"model: {what} (`kerasseg list`)")
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder argument of a registry model, repeatable; VALUE is read as JSON when it "
        'can be (4, 0.5, [null, null, 1], null, true, "sigmoid"), else as a string',
    )


def add_data_flags(parser, *, training):
    """--dataset / --data-root, --images / --masks (and with `training` the validation
    folders), --class-map and --ignore-label."""
    parser.add_argument("--dataset", choices=tuple(DATASETS), help="a data set reader")
    parser.add_argument("--data-root", metavar="DIR", help="folder of --dataset")
    parser.add_argument("--images", metavar="DIR", help="folder of images")
    parser.add_argument("--masks", metavar="DIR", help="folder of masks (same file stems)")
    if training:
        parser.add_argument("--val-images", metavar="DIR", help="folder of validation images")
        parser.add_argument("--val-masks", metavar="DIR", help="folder of validation masks")
    parser.add_argument(
        "--class-map", metavar="MAP", help="stored mask value to class id, e.g. 0:0,255:1"
    )
    parser.add_argument("--ignore-label", type=int, metavar="N", help="mask value to ignore")


def add_tta_flag(parser):
    """--tta: test-time augmentation of semantic models."""
    parser.add_argument(
        "--tta",
        choices=("flips", "dihedral"),
        help="semantic models: average the outputs over 4 flips or all 8 flips and transposes "
        "(test-time augmentation, kerasseg.inference.tta.wrap; 4x or 8x the time)",
    )


# ----------------------------------------------------------------------------- parsing


def parse_model_arguments(items):
    """Parse --model-arg values.

    Args:
        items: ["key=value", ...] (or None).

    Returns:
        {key: value}; values are JSON where they parse, else strings.

    Raises:
        UsageError: for an item that is not KEY=VALUE, or a key given twice.
    """
    arguments = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(
                f"--model-arg must be KEY=VALUE with KEY a Python identifier (e.g. "
                f"base_filters=32, encoder=resnet50); got {item!r}."
            )
        if key in arguments:
            raise UsageError(f"--model-arg {key} is given twice.")
        try:
            arguments[key] = json.loads(text)
        except json.JSONDecodeError:
            arguments[key] = text
    return arguments


def parse_class_map(text):
    """Parse a --class-map value: "0:0,255:1" -> {0: 0, 255: 1}; None stays None.

    Raises:
        UsageError: for a malformed map or a stored value mapped twice.
    """
    if text is None:
        return None
    mapping = {}
    for part in text.split(","):
        source, sep, target = part.partition(":")
        try:
            if not sep:
                raise ValueError
            source, target = int(source), int(target)
        except ValueError:
            raise UsageError(
                f"--class-map must be STORED:CLASS pairs of ints joined by commas, e.g. "
                f"0:0,255:1; got {text!r}."
            ) from None
        if source in mapping:
            raise UsageError(f"--class-map maps {source} twice in {text!r}.")
        mapping[source] = target
    return mapping


# ----------------------------------------------------------------------------- checks


def folder(path, flag):
    """`path` as a Path (None stays None); a UsageError naming `flag` unless it is a folder."""
    if path is None:
        return None
    if not Path(path).is_dir():
        raise UsageError(f"{flag} {path!r} is not a folder.")
    return Path(path)


def given_flags(args, flags):
    """The flags of `flags` set on the command line (neither None nor a false switch)."""
    values = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in flags}
    return [flag for flag, value in values.items() if value is not None and value is not False]


def check_unit_interval(value, flag):
    """A UsageError unless `value` (of `flag`) is in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"{flag} must be in [0, 1]; got {value}.")


def check_data_flags(args, training):
    """Exactly one of --dataset / --images, with the flags that go with it, and folders
    that exist."""
    given = given_flags(args, ("--dataset", "--images"))
    if len(given) != 1:
        raise UsageError(
            "give the data as --dataset NAME --data-root DIR or as --images DIR --masks DIR "
            f"(exactly one of the two); got {' and '.join(given) or 'neither'}."
        )
    if args.dataset is not None:
        if args.data_root is None:
            raise UsageError(f"--dataset {args.dataset} needs --data-root DIR.")
        extra = ["--masks", "--class-map"] + (["--val-images", "--val-masks"] if training else [])
        used = given_flags(args, extra)
        if used:
            raise UsageError(f"{', '.join(used)} only apply with --images, not --dataset.")
        folder(args.data_root, "--data-root")
        return
    if args.data_root is not None:
        raise UsageError("--data-root only applies with --dataset.")
    if args.masks is None:
        raise UsageError("--images needs --masks DIR.")
    folder(args.images, "--images")
    folder(args.masks, "--masks")
    if training and (args.val_images is None) != (args.val_masks is None):
        raise UsageError("--val-images and --val-masks go together.")
    if training and args.val_images is not None:
        folder(args.val_images, "--val-images")
        folder(args.val_masks, "--val-masks")


# ----------------------------------------------------------------------------- data


def image_size(path):
    """(height, width) of an image file, read from its header."""
    with Image.open(path) as image:
        return image.height, image.width


def image_channels(path):
    """The channel count of an image file, read from its header."""
    with Image.open(path) as image:
        return len(image.getbands())


def paired(images, masks):
    """`kerasseg.data.paired_files(images, masks)`; a problem is a UsageError."""
    from kerasseg.data import paired_files  # TensorFlow-only (tf.data), loaded on use

    try:
        return paired_files(images, masks)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None


def mask_classes(command, pairs, num_classes, class_map, ignore_label, cache=None):
    """The classes of mask files, by `kerasseg.data.MaskSurvey.resolve`.

    The survey and any decision it takes are printed on stderr.

    Args:
        command: the subcommand, for the printed lines.
        pairs: (image, mask) file pairs.
        num_classes: the class count asked for, or None.
        class_map: the --class-map, or None.
        ignore_label: the --ignore-label, or None.
        cache: a file that keeps the survey (shown with a progress bar), or None.

    Returns:
        (num_classes, class_map).

    Raises:
        UsageError: when the masks do not fit the classes asked for.
    """
    from kerasseg.data import survey_masks  # TensorFlow-only (tf.data), loaded on use

    survey = survey_masks(pairs, cache=cache, progress=cache is not None)
    print(f"kerasseg {command}: {survey.summary()}", file=sys.stderr)
    try:
        num_classes, class_map, note = survey.resolve(num_classes, class_map, ignore_label)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if note:
        print(f"kerasseg {command}: {note}", file=sys.stderr)
    return num_classes, class_map


# ----------------------------------------------------------------------------- errors


def _one_line(error):
    """An exception as one line: TensorFlow's graph details cut, the rest joined."""
    # TensorFlow's error types and message cleaning: only loaded once an error is reported.
    import tensorflow as tf

    from kerasseg.data.decode import error_text

    if isinstance(error, tf.errors.OpError):
        return error_text(error)
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    return " ".join(text.split())


def _user_errors():
    """Exception types that report a problem with the user's input, files or disk."""
    import tensorflow as tf  # tf.errors.OpError: only loaded once an error is reported

    return (UsageError, RunFolderError, ValueError, TypeError, OSError, tf.errors.OpError)


def run_command(command, run, *, debug):
    """Call `run()` for the subcommand `command` and return the exit status.

    Errors are one line on stderr (`kerasseg COMMAND: error: ...`): status 2 for a problem
    with the input (arguments, files, data, disk), 1 for a training run whose loss became
    NaN or anything unexpected; an interrupt is status 130. With `debug`, errors are raised
    instead, with their traceback.
    """
    try:
        run()
    except KeyboardInterrupt:
        print(f"kerasseg {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        # TensorFlow-only (training imports it): loaded once an error is reported.
        from kerasseg.training import TrainingDiverged

        diverged = isinstance(error, TrainingDiverged)
        user = isinstance(error, _user_errors()) and not diverged
        kind = "error" if user or diverged else "internal error"
        hint = "" if user or diverged else " (--debug: traceback)"
        print(f"kerasseg {command}: {kind}: {_one_line(error)}{hint}", file=sys.stderr)
        return 2 if user else 1
    return 0
