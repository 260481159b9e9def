"""`kerasseg predict`: segment image files and write label PNGs (and overlays)."""

from pathlib import Path

from kerasseg.cli.common import (
    UsageError,
    add_model_flags,
    add_tta_flag,
    check_unit_interval,
    parse_model_arguments,
    positive_int,
)
from kerasseg.cli.models import check_watershed_flags, load_for_inference, output_channels, with_tta
from kerasseg.inference import predict_file, task_of

__all__ = ["add_parser", "run"]


def add_parser(commands, parents):
    """Add `kerasseg predict` to the subcommands `commands`."""
    parser = commands.add_parser(
        "predict",
        parents=parents,
        help="segment image files, write label PNGs (and overlays); instance models write "
        "16-bit instance labels (0 background, 1..n by decreasing score)",
    )
    add_model_flags(parser, path_ok=True)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="PNG, JPEG or TIFF files")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--overlay", action="store_true", help="also write <stem>_overlay.png (RGB)"
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
    add_tta_flag(parser)


def run(args):
    """Run `kerasseg predict` with the parsed command-line `args`."""
    stems = _output_stems(args.inputs)
    check_unit_interval(args.threshold, "--threshold")
    model, logits = load_for_inference(args.model, parse_model_arguments(args.model_arg))
    min_score = 0.5 if args.min_score is None else args.min_score
    model = _check_model_flags(args, model, min_score)
    out = Path(args.out)
    for path, stem in zip(args.inputs, stems, strict=True):
        overlay = out / f"{stem}_overlay.png" if args.overlay else None
        instances = out / f"{stem}_instances.png" if args.instances else None
        try:
            predict_file(
                model,
                path,
                out / f"{stem}.png",
                overlay_path=overlay,
                instances_path=instances,
                watershed_seeds=args.watershed_seeds,
                channels=args.channels,
                threshold=args.threshold,
                from_logits=logits,
                min_score=min_score,
            )
        except ValueError as error:
            raise UsageError(str(error)) from None
        extra = "".join(f", {file}" for file in (overlay, instances) if file)
        print(f"{path} -> {out / f'{stem}.png'}{extra}")


def _output_stems(inputs):
    """The file stems that name the outputs of `inputs`: files that exist, stems unique."""
    missing = [p for p in inputs if not Path(p).is_file()]
    if missing:
        raise UsageError(f"input file(s) not found: {', '.join(missing)}.")
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
