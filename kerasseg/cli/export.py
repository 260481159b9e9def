"""`kerasseg export`: write a TF-Serving SavedModel of a registry model or a .keras file."""

import re
from pathlib import Path

import kerasseg
from kerasseg.cli.common import (
    UsageError,
    add_subcommand,
    add_tta_flag,
    check_unit_interval,
    parse_model_arguments,
    positive_int,
)
from kerasseg.cli.models import build, is_model_file, load_for_inference, with_tta

__all__ = ["HELP", "SUMMARY", "add_parser", "run"]

# A model name TF-Serving serves under and the folder it gets under --out: one plain path
# component, usable in a REST address (/v1/models/NAME).
_FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")

# The line of `kerasseg --help`, and the text of `kerasseg export --help`.
SUMMARY = "write a TF-Serving SavedModel: encoded images in, masks out"
HELP = """\
Writes DIR/NAME/VERSION/ (saved_model.pb, variables/, assets.extra/kerasseg.json), the layout
TF-Serving loads with --model_base_path=DIR/NAME. Signatures:
  serving_default  image_bytes: string [N], PNG (8-bit) or JPEG, 1 or 3 channels, any size
                   from --min-size per side up to --max-pixels
  serve_tensor     images: float32 [N, H, W, C], values as stored (0..255), C the model's
                   channels (not converted between grey and RGB, unlike image_bytes)
An empty request (N = 0) gives empty outputs; a bad one an InvalidArgument error that names
the input or the image (image_bytes[i]).
Outputs: mask (class ids at each image's size), image_size, mask_png_bytes, and with
--probabilities the class probabilities of semantic models. Registry models get the input
normalisation their entry names inside the SavedModel; .keras files from `kerasseg train`
normalise inside already.
"""


def add_parser(commands, parents):
    """Add `kerasseg export` to the subcommands `commands`."""
    parser = add_subcommand(commands, "export", parents, SUMMARY, HELP)
    parser.add_argument("name", metavar="NAME", help="registry name or path to a .keras file")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="base folder: writes DIR/NAME/VERSION/"
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder argument of a registry model, repeatable (as in `kerasseg train`)",
    )
    parser.add_argument(
        "--model-name",
        help="folder name under --out, the name TF-Serving serves it as (default: NAME, or "
        "the file name without .keras); letters, digits, '.', '_', '-'",
    )
    parser.add_argument("--version", type=positive_int, default=1, help="default 1")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument(
        "--probabilities", action="store_true", help="also output class probabilities"
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="for sigmoid models")
    parser.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32")
    add_tta_flag(parser)
    parser.add_argument(
        "--min-size", type=positive_int, default=8, help="smallest image side accepted (default 8)"
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=2048 * 2048,
        help="largest image accepted, height x width (default 4194304)",
    )


def _folder_name(model_name, name, is_file):
    """The folder under --out: --model-name, else NAME (a .keras file's name without suffix).

    Raises:
        UsageError: for a name that is not one plain folder name (a path, '.', '..', a
            leading '-' or '.', other characters): it could write outside --out, or not be
            servable under its name.
    """
    if model_name is not None:
        flag, folder = "--model-name", model_name
    elif is_file:
        flag, folder = "NAME", Path(name).stem
    else:
        return name  # a registry name (checked against the registry when the model is built)
    if not _FOLDER_NAME.fullmatch(folder):
        fix = "" if model_name is not None else "; pass --model-name"
        raise UsageError(
            f"{flag} {folder!r}: the model name must be a plain folder name of 1 to 128 "
            "letters, digits, '.', '_' or '-', not starting with '.' or '-' (no path "
            f"separators); it is created under --out{fix}."
        )
    return folder


def run(args):
    """Run `kerasseg export` with the parsed command-line `args`."""
    check_unit_interval(args.threshold, "--threshold")
    is_file = is_model_file(args.name)
    folder = _folder_name(args.model_name, args.name, is_file)
    arguments = parse_model_arguments(args.model_arg)
    num_classes, preprocessing = None, "none"
    if is_file:
        model, _ = load_for_inference(args.name, arguments, flag="NAME")
    else:
        model = build(args.name, arguments, "default", flag="NAME")
        entry = kerasseg.get_entry(args.name)
        preprocessing = entry.preprocessing_for(arguments)
        if entry.task == "classical" and not arguments:
            num_classes = entry.num_classes
    model = with_tta(model, args.tta)
    # TensorFlow-only (SavedModel): loaded when the command runs.
    from kerasseg.export import export

    try:
        path = export(
            model,
            Path(args.out) / folder,
            version=args.version,
            overwrite=args.overwrite,
            preprocessing=preprocessing,
            threshold=args.threshold,
            probabilities=args.probabilities,
            compute_dtype=args.compute_dtype,
            num_classes=num_classes,
            min_size=args.min_size,
            max_pixels=args.max_pixels,
        )
    except (ValueError, TypeError, FileExistsError) as error:
        raise UsageError(str(error)) from None
    print(f"wrote {path}")
    print(
        f"serve: tensorflow_model_server --rest_api_port=8501 --model_name={folder} "
        f"--model_base_path={path.parent.resolve()}"
    )
