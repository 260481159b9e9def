"""`kerasseg predict`: segment image files and write label PNGs (and overlays)."""

import glob
import sys
import time
import warnings
from pathlib import Path

import keras

from kerasseg.cli.common import (
    UsageError,
    add_model_flags,
    add_tta_flag,
    check_unit_interval,
    parse_model_arguments,
    positive_int,
)
from kerasseg.cli.models import check_watershed_flags, load_for_inference, output_channels, with_tta
from kerasseg.data.sources import IMAGE_SUFFIXES
from kerasseg.inference import predict_file, task_of
from kerasseg.inference.colours import label_classes, model_palette
from kerasseg.inference.files import DEFAULT_MAX_PIXELS, DEFAULT_TILE
from kerasseg.inference.inputs import RESCALE_MODES, InputNote

__all__ = ["add_parser", "expand_inputs", "run"]


def add_parser(commands, parents):
    """Add `kerasseg predict` to the subcommands `commands`."""
    parser = commands.add_parser(
        "predict",
        parents=parents,
        help="segment image files, write label PNGs (and overlays); instance models write "
        "16-bit instance labels (0 background, 1..n by decreasing score)",
    )
    add_model_flags(parser, path_ok=True)
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="PNG, JPEG or TIFF files, folders (their image files) or quoted globs "
        "('scans/**/*.tif')",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--overlay",
        action="store_true",
        help="also write <stem>_overlay.png (RGB, the classes in the model's colours with a "
        "legend; instances in distinct colours with contours) and, with --instances, "
        "<stem>_instances_overlay.png",
    )
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="for sigmoid models and instance masks"
    )
    parser.add_argument(
        "--min-score",
        type=float,
        metavar="S",
        help="instance models: keep detections scoring >= S (default 0.5)",
    )
    parser.add_argument(
        "--instances",
        action="store_true",
        help="also write <stem>_instances.png: 16-bit labels of the regions of class 1",
    )
    parser.add_argument(
        "--watershed-seeds",
        type=float,
        metavar="T",
        help="with --instances, sigmoid models: cells from a seeded watershed (seeds p > T)",
    )
    parser.add_argument("--channels", type=positive_int, help="require this many image channels")
    _add_tiling_flags(parser)
    _add_conversion_flags(parser)
    add_tta_flag(parser)


def _add_tiling_flags(parser):
    parser.add_argument(
        "--tile",
        type=positive_int,
        metavar="N",
        help=f"predict in overlapping N x N tiles (default: tiles of {DEFAULT_TILE} for "
        "images above --max-pixels)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        metavar="F",
        help="overlap of neighbouring tiles, a fraction of the tile in [0, 1) (default 0.25)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="P",
        help=f"images above P pixels are tiled (default {DEFAULT_MAX_PIXELS}, 2048 x 2048)",
    )
    parser.add_argument(
        "--no-tile",
        action="store_true",
        help="never tile: images above --max-pixels are refused",
    )


def _add_conversion_flags(parser):
    parser.add_argument(
        "--flatten-alpha",
        action="store_true",
        help="composite images with a transparent alpha channel over white (default: "
        "refused; a constant alpha is dropped)",
    )
    parser.add_argument(
        "--rescale",
        choices=tuple(RESCALE_MODES),
        help="16-bit images: full (x*255/65535), minmax (each image stretched to 0..255) or "
        "keep (values as stored); required for models that take 8-bit values",
    )


def run(args):
    """Run `kerasseg predict` with the parsed command-line `args`."""
    inputs = expand_inputs(args.inputs)
    stems = _output_stems(inputs)
    check_unit_interval(args.threshold, "--threshold")
    if not 0 <= args.overlap < 1:
        raise UsageError(f"--overlap must be a fraction in [0, 1); got {args.overlap}.")
    if args.no_tile and args.tile is not None:
        raise UsageError("--tile and --no-tile contradict each other; give one.")
    model, logits = load_for_inference(args.model, parse_model_arguments(args.model_arg))
    min_score = 0.5 if args.min_score is None else args.min_score
    model = _check_model_flags(args, model, min_score)
    options = {
        "channels": args.channels,
        "threshold": args.threshold,
        "from_logits": logits,
        "min_score": min_score,
        "tile": None if args.no_tile else (args.tile or "auto"),
        "overlap": args.overlap,
        "max_pixels": args.max_pixels,
        "flatten_alpha": args.flatten_alpha,
        "rescale": args.rescale,
    }
    if task_of(model) != "instance":  # label PNGs and overlays in the preset's colours
        options["palette"] = model_palette(args.model, label_classes(model))
    started = time.perf_counter()
    written = _predict_all(args, model, inputs, stems, options)
    seconds = time.perf_counter() - started
    print(
        f"kerasseg predict: {len(inputs)} image(s) -> {args.out} ({written} file(s) written) "
        f"in {seconds:.1f} s",
        file=sys.stderr,
    )


def _predict_all(args, model, inputs, stems, options):
    """Predict every input, with a progress bar for several; each input note printed once.

    Returns:
        The number of files written.
    """
    out = Path(args.out)
    bar = keras.utils.Progbar(len(inputs), unit_name="image") if len(inputs) > 1 else None
    said, written = set(), 0
    for done, (path, stem) in enumerate(zip(inputs, stems, strict=True), start=1):
        targets = {
            "output_path": out / f"{stem}.png",
            "overlay_path": out / f"{stem}_overlay.png" if args.overlay else None,
            "instances_path": out / f"{stem}_instances.png" if args.instances else None,
            "instances_overlay_path": out / f"{stem}_instances_overlay.png"
            if args.instances and args.overlay
            else None,
        }
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InputNote)
            try:
                predict_file(
                    model, path, **targets, watershed_seeds=args.watershed_seeds, **options
                )
            except ValueError as error:
                _end_bar_line(bar, done)
                raise UsageError(str(error)) from None
        notes = [str(w.message) for w in caught if issubclass(w.category, InputNote)]
        for note in dict.fromkeys(notes):
            if note not in said:
                said.add(note)
                _end_bar_line(bar, done)
                print(f"kerasseg predict: note: {note}", file=sys.stderr)
        written += sum(target is not None for target in targets.values())
        if bar is None:
            print(f"{path} -> {', '.join(str(t) for t in targets.values() if t)}")
        else:
            bar.update(done)
    return written


def _end_bar_line(bar, done):
    """Ends the progress bar's line (once it has been drawn) so that a message printed next
    starts on a line of its own; the bar redraws below it."""
    if bar is not None and done > 1:
        sys.stdout.write("\n")
        sys.stdout.flush()


def expand_inputs(items):
    """The image files named by INPUT arguments: files, folders (their image files, sorted)
    and globs (sorted matches); each file once, in the order given.

    Raises:
        UsageError: an input that names nothing, a folder without image files, a glob
            without matches.
    """
    found = []
    for item in items:
        path = Path(item)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise UsageError(
                    f"folder {item} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                    "subfolders are not searched (use a glob such as 'DIR/**/*.png')."
                )
            found.extend(p for p in images if p.is_file())
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            matches = [p for p in matches if p.is_file()]
            if not matches:
                raise UsageError(f"no file matches {item!r}.")
            found.extend(matches)
        else:
            raise UsageError(f"input file(s) not found: {item}.")
    return [str(p) for p in dict.fromkeys(found)]


def _output_stems(inputs):
    """The file stems that name the outputs of `inputs`, unique."""
    stems = [Path(p).stem for p in inputs]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise UsageError(
            f"inputs share the file name(s) {clashes}, so their outputs in --out would clash; "
            "predict them into separate folders."
        )
    return stems


def _check_model_flags(args, model, min_score):
    """The flags that fit an instance or a semantic model; returns the model to run
    (with --tta, semantic models are wrapped)."""
    if task_of(model) == "instance":
        if args.instances or args.watershed_seeds is not None or args.tta is not None:
            raise UsageError(
                "--instances, --watershed-seeds and --tta are for semantic models; an instance "
                "model writes its instance labels as <stem>.png already."
            )
        check_unit_interval(min_score, "--min-score")
        return model
    if args.min_score is not None:
        raise UsageError("--min-score applies to instance models (Mask R-CNN) only.")
    outputs = output_channels(model)
    check_watershed_flags(args.watershed_seeds, outputs, args.instances, "--instances")
    return with_tta(model, args.tta)
