"""`kerasseg convert`: torchvision Mask R-CNN weights to a Keras .weights.h5 file."""

from pathlib import Path

from kerasseg.cli.common import UsageError
from kerasseg.convert.torchvision import convert_file

__all__ = ["add_parser", "run"]


def add_parser(commands, parents):
    """Add `kerasseg convert` to the subcommands `commands`."""
    parser = commands.add_parser(
        "convert",
        parents=parents,
        help="convert torchvision Mask R-CNN weights to a Keras .weights.h5 file",
    )
    parser.add_argument("source", help="torchvision state dict: .pth, .safetensors or .npz")
    parser.add_argument(
        "--model",
        default="maskrcnn_resnet50_fpn",
        help="registry name of the architecture (default maskrcnn_resnet50_fpn)",
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="a .weights.h5 file")


def run(args):
    """Run `kerasseg convert` with the parsed command-line `args`."""
    if not Path(args.source).is_file():
        raise UsageError(f"source {args.source!r} is not a file.")
    try:
        path, classes = convert_file(args.source, args.out, model=args.model)
    except (ValueError, KeyError, ImportError) as error:
        raise UsageError(str(error)) from None
    print(
        f"wrote {path} ({classes} classes); load it with kerasseg.load({args.model!r}, "
        f"num_classes={classes}, weights={path!r})"
    )
