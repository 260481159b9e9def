"""The `kerasseg` command: list models, show one, run the demo, train, evaluate, predict, export,
convert."""

import argparse
import inspect
import json
import logging
import math
import os
import shlex
import sys
from pathlib import Path

DATASETS = ("isbi2012", "camvid")
# The mask value that pads images to the model's size divisor when the data have no ignore
# label of their own. No 8- or 16-bit mask file can store -1, so it never hides real pixels;
# 255 would not do for ISBI 2012, whose labels store cell interior as 255 (mapped to 1).
PADDING_LABEL = -1
MASK_SURVEY = "masks.json"  # the cached survey of the mask files, in the run folder
AUGMENTS = {
    "flip": {"horizontal_flip": True, "vertical_flip": True},
    "rot90": {"rotate90": True},
    "scale": {"scale_range": (0.75, 1.25)},
    "rotate": {"rotation_degrees": 15.0},
    "elastic": {"elastic_alpha": 300.0, "elastic_sigma": 10.0},
    "photometric": {"brightness": 0.1, "contrast": 0.2, "gamma": 0.2, "noise_std": 0.02},
}
TRAIN_HELP = """\
data: either --dataset {isbi2012,camvid} --data-root DIR (ISBI 2012: slices 00..19 train,
20..24 validate; CamVid: train / val), or --images DIR --masks DIR (pairs matched by file
name) with optional --val-images/--val-masks, --class-map (stored mask value: class id) and
--ignore-label.

classes of --images/--masks: before training, one pass over the mask files counts their
values (cached in --out/masks.json) and prints them. Without --num-classes or --class-map,
ids 0..K-1 give K classes, two values {0, v} (e.g. 0/255) give a binary model with v taken
as class 1, and anything else is refused with the class map that would fix it. With them,
any value the model would not understand is refused, naming files that hold it.

--augment NAMES (comma-separated) sets a kerasseg.data.JointAugment (fill_mode "reflect"):
  flip         horizontal_flip=True, vertical_flip=True
  rot90        rotate90=True (square --input-size or square images only)
  scale        scale_range=(0.75, 1.25)
  rotate       rotation_degrees=15
  elastic      elastic_alpha=300, elastic_sigma=10 (displacement std about 4.9 px per axis)
  photometric  brightness=0.1, contrast=0.2, gamma=0.2, noise_std=0.02, value_range=(0, 255)
               (8-bit images)
--input-size H W takes a random H x W crop (JointAugment crop_size) of every training
image; without it, whole images are used.

model: defaults are filled in where the architecture takes them and --model-arg does not
set them: input_shape=[null, null, channels of the data], num_classes = the data's class
count (kept at 1, a sigmoid/binary head, for two-class data when that is the default) and
include_preprocessing=true (the saved model takes images with values as stored, 0..255, as
`kerasseg evaluate` and `kerasseg predict` give them). A preset trains from its weights;
with another class count (--num-classes 3 --model unet_camvid) every layer but the head
keeps the preset's weights and the head starts fresh. --encoder-weights sets where an
encoder starts (imagenet, none, or a weights file). The first lines say where each part's
weights come from.

validation (and training without --input-size) uses whole images. When their size is not a
multiple of the model's size divisor (or sizes differ within a batch), they are padded at
the bottom/right and the mask padding takes the ignore label: --ignore-label, else the data
set's (CamVid: 11), else -1, a value no mask file can hold (255 cannot serve for ISBI 2012,
whose labels store cell interior as 255). Models that accept any size are not padded.

output: --out DIR gets history.csv, best.keras, best.json, final.keras, run.json (with the
exact command line), masks.json, checkpoint/ and tensorboard/; each file is replaced
atomically. One process at a time uses DIR. Running the same command again resumes an
interrupted run at the epoch after the last completed one, changes nothing in a finished
run, and with a larger --epochs continues it; other arguments than the first run's are
refused. Epochs are numbered from 1, as Keras prints them.

errors: one line on stderr and exit status 2 (a loss that becomes NaN: status 1); --debug
shows the traceback.
"""


EXPORT_HELP = """\
Writes DIR/NAME/VERSION/ (saved_model.pb, variables/, assets.extra/kerasseg.json), the layout
TF-Serving loads with --model_base_path=DIR/NAME. Signatures:
  serving_default  image_bytes: string [N], PNG (8-bit) or JPEG, 1 or 3 channels, any size
                   from --min-size per side up to --max-pixels
  serve_tensor     images: float32 [N, H, W, C], values as stored (0..255)
Outputs: mask (class ids at each image's size), image_size, mask_png_bytes, and with
--probabilities the class probabilities of semantic models. Registry models get the input
normalisation their entry names inside the SavedModel; .keras files from `kerasseg train`
normalise inside already.
"""


EVALUATE_HELP = """\
semantic models: pixel accuracy, per-class IoU and Dice (and with --instance-metrics V_rand
and V_info of the 4-connected regions of class 1).

instance models (Mask R-CNN: a registry name of task "instance", or a .keras file saved from
one): COCO box and mask AP (AP, AP50, AP75, AP small / medium / large, AR) through pycocotools
(pip install "kerasseg[coco]"), counting up to --max-detections detections per image (default
300, not COCO's 100: an ISBI 2012 slice holds 88 to 137 cells), and V_rand / V_info of the
instance map (each pixel takes the highest-scoring predicted mask over it; masks are
probabilities > --threshold; with --min-score S only detections scoring >= S, as
`kerasseg predict` draws them). Ground-truth instances:
  --dataset isbi2012          each 4-connected region of cell interior (label 255)
  --images DIR --masks DIR    each 4-connected region of one class >= 1 (after --class-map;
                              the --ignore-label is left out); with --instance-masks labels,
                              each distinct non-zero mask value (class 1)
  --coco FILE [--images DIR]  a COCO instances JSON (classes: its categories numbered 1..K in
                              increasing id order)
Model classes are compared with the ground truth's as they are; --class-agnostic scores every
detection and instance as one class. Dense images need the model's own cap raised too, e.g.
--model-arg detections_per_image=300 --model-arg rpn_post_nms_top_n=2000.
"""


class UsageError(Exception):
    """A command-line mistake: reported on stderr with exit status 2."""


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def _learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be finite and > 0; got {text!r}")
    return value


def _class_count(text):
    value = _positive(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"is the data's class count, at least 2 (2 for binary masks); got {text!r}"
        )
    return value


def _add_model(parser, *, path_ok):
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


def _add_data(parser, *, training):
    parser.add_argument("--dataset", choices=DATASETS, help="a data set reader")
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


def _parser():
    parser = argparse.ArgumentParser(prog="kerasseg", description="Keras segmentation model zoo")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", parents=[common], help="list architectures and presets")
    listing.add_argument("--task", choices=("semantic", "instance", "classical"))
    listing.add_argument("--json", action="store_true", help="print JSON")
    info = commands.add_parser(
        "info", parents=[common], help="show everything the registry knows about a model"
    )
    info.add_argument("name")
    demo = commands.add_parser(
        "demo", parents=[common], help="segment built-in samples, write overlay PNGs"
    )
    demo.add_argument("--out", default="kerasseg-demo", help="output folder")

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train a model with checkpoints, logs and resume",
        description=TRAIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model(train, path_ok=False)
    _add_data(train, training=True)
    train.add_argument("--out", required=True, metavar="DIR", help="output folder")
    train.add_argument(
        "--input-size", type=_positive, nargs=2, metavar=("H", "W"), help="random crop size"
    )
    train.add_argument("--augment", default="", metavar="NAMES", help=", ".join(AUGMENTS))
    train.add_argument(
        "--loss", default="auto", help='"auto" (bce+dice or ce+dice), or e.g. "0.5*focal+dice"'
    )
    train.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    train.add_argument(
        "--num-classes",
        type=_class_count,
        metavar="N",
        help="the data's class count (2 for binary masks); default: read from the masks, "
        "or the --dataset's",
    )
    train.add_argument(
        "--encoder-weights",
        metavar="W",
        help="where a pretrained encoder starts: imagenet, none (random) or a weights file "
        "(models with an encoder; default: the builder's, random for `unet`)",
    )
    train.add_argument(
        "--lr", type=_learning_rate, default=1e-3, help="learning rate (default 1e-3)"
    )
    train.add_argument("--schedule", choices=("constant", "cosine", "poly"), default="constant")
    train.add_argument("--epochs", type=_positive, default=20, help="default 20")
    train.add_argument(
        "--steps-per-epoch", type=_positive, help="batches per epoch (default: one pass)"
    )
    train.add_argument("--batch-size", type=_positive, default=4, help="default 4")
    train.add_argument("--seed", type=int, default=0, help="default 0")
    train.add_argument("--strategy", choices=("mirrored",), help="tf.distribute strategy")
    train.add_argument("--mixed-precision", choices=("mixed_float16", "mixed_bfloat16"))
    train.add_argument("--cache", action="store_true", help="cache decoded images in memory")

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="score a model on labelled images, write STEM.json and STEM.md",
        description=EVALUATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model(evaluate, path_ok=True)
    _add_data(evaluate, training=False)
    evaluate.add_argument(
        "--coco", metavar="FILE", help="COCO instances JSON (instance models; images: --images)"
    )
    evaluate.add_argument(
        "--subset", default="validation", help="--dataset split (default validation)"
    )
    evaluate.add_argument(
        "--instance-metrics",
        action="store_true",
        help="V_rand and V_info of class 1 (semantic models; instance models always report them)",
    )
    evaluate.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="for sigmoid models, and the mask probability threshold of instance models",
    )
    evaluate.add_argument(
        "--watershed-seeds",
        type=float,
        metavar="T",
        help="with --instance-metrics, sigmoid models: cells from a seeded watershed "
        "(seeds p > T, every pixel assigned to a cell) instead of the regions of p > --threshold",
    )
    evaluate.add_argument(
        "--max-detections",
        type=_positive,
        metavar="N",
        help="instance models: detections per image COCO AP counts (default 300)",
    )
    evaluate.add_argument(
        "--min-score",
        type=float,
        metavar="S",
        help="instance models: only detections scoring >= S enter the V_rand instance map "
        "(AP counts all; default: all)",
    )
    evaluate.add_argument(
        "--class-agnostic",
        action="store_true",
        help="instance models: score every detection and instance as one class",
    )
    evaluate.add_argument(
        "--instance-masks",
        choices=("components", "labels"),
        help="instance models with --images/--masks: 4-connected regions of each class "
        "(components, default) or one instance per mask value (labels)",
    )
    _add_tta(evaluate)
    evaluate.add_argument("--batch-size", type=_positive, default=1, help="default 1")
    evaluate.add_argument("--out", required=True, metavar="STEM", help="report path stem")

    predict = commands.add_parser(
        "predict",
        parents=[common],
        help="segment image files, write label PNGs (and overlays); instance models write "
        "16-bit instance labels (0 background, 1..n by decreasing score)",
    )
    _add_model(predict, path_ok=True)
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="PNG, JPEG or TIFF files")
    predict.add_argument("--out", required=True, metavar="DIR", help="output folder")
    predict.add_argument(
        "--overlay", action="store_true", help="also write <stem>_overlay.png (RGB)"
    )
    predict.add_argument(
        "--threshold", type=float, default=0.5, help="for sigmoid models and instance masks"
    )
    predict.add_argument(
        "--min-score",
        type=float,
        metavar="S",
        help="instance models: keep detections scoring >= S (default 0.5)",
    )
    predict.add_argument(
        "--instances",
        action="store_true",
        help="also write <stem>_instances.png: 16-bit labels of the regions of class 1",
    )
    predict.add_argument(
        "--watershed-seeds",
        type=float,
        metavar="T",
        help="with --instances, sigmoid models: cells from a seeded watershed (seeds p > T)",
    )
    predict.add_argument("--channels", type=_positive, help="require this many image channels")
    _add_tta(predict)
    export = commands.add_parser(
        "export",
        parents=[common],
        help="write a TF-Serving SavedModel: encoded images in, masks out",
        description=EXPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("name", metavar="NAME", help="registry name or path to a .keras file")
    export.add_argument(
        "--out", required=True, metavar="DIR", help="base folder: writes DIR/NAME/VERSION/"
    )
    export.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder argument of a registry model, repeatable (as in `kerasseg train`)",
    )
    export.add_argument("--model-name", help="folder name under --out (default: NAME)")
    export.add_argument("--version", type=_positive, default=1, help="default 1")
    export.add_argument("--overwrite", action="store_true", help="replace an existing version")
    export.add_argument(
        "--probabilities", action="store_true", help="also output class probabilities"
    )
    export.add_argument("--threshold", type=float, default=0.5, help="for sigmoid models")
    export.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32")
    _add_tta(export)
    export.add_argument(
        "--min-size", type=_positive, default=8, help="smallest image side accepted (default 8)"
    )
    export.add_argument(
        "--max-pixels",
        type=_positive,
        default=2048 * 2048,
        help="largest image accepted, height x width (default 4194304)",
    )
    convert = commands.add_parser(
        "convert",
        parents=[common],
        help="convert torchvision Mask R-CNN weights to a Keras .weights.h5 file",
    )
    convert.add_argument(
        "source", help="torchvision state dict: .pth (needs torch), .safetensors or .npz"
    )
    convert.add_argument(
        "--model",
        default="maskrcnn_resnet50_fpn",
        help="registry name of the architecture (default maskrcnn_resnet50_fpn)",
    )
    convert.add_argument("--out", required=True, metavar="FILE", help="a .weights.h5 file")
    return parser


def _table(rows):
    header = ("name", "kind", "task", "classes", "description")
    lines = [header] + [
        (r["name"], r["kind"], r["task"], str(r["num_classes"]), r["description"]) for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    )


# ----------------------------------------------------------------------------- arguments


def parse_model_arguments(items):
    """["key=value", ...] -> dict; values are JSON where they parse, else strings."""
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
    """ "0:0,255:1" -> {0: 0, 255: 1}."""
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


def _folder(path, flag):
    if path is None:
        return None
    if not Path(path).is_dir():
        raise UsageError(f"{flag} {path!r} is not a folder.")
    return Path(path)


def _check_data_flags(args, training):
    flags = (("--dataset", args.dataset), ("--images", args.images))
    given = [flag for flag, value in flags if value is not None]
    if len(given) != 1:
        raise UsageError(
            "give the data as --dataset NAME --data-root DIR or as --images DIR --masks DIR "
            f"(exactly one of the two); got {' and '.join(given) or 'neither'}."
        )
    if args.dataset is not None:
        if args.data_root is None:
            raise UsageError(f"--dataset {args.dataset} needs --data-root DIR.")
        extra = ["--masks", "--class-map"] + (["--val-images", "--val-masks"] if training else [])
        used = [flag for flag in extra if getattr(args, flag[2:].replace("-", "_")) is not None]
        if used:
            raise UsageError(f"{', '.join(used)} only apply with --images, not --dataset.")
        _folder(args.data_root, "--data-root")
        return
    if args.data_root is not None:
        raise UsageError("--data-root only applies with --dataset.")
    if args.masks is None:
        raise UsageError("--images needs --masks DIR.")
    _folder(args.images, "--images")
    _folder(args.masks, "--masks")
    if training and (args.val_images is None) != (args.val_masks is None):
        raise UsageError("--val-images and --val-masks go together.")
    if training and args.val_images is not None:
        _folder(args.val_images, "--val-images")
        _folder(args.val_masks, "--val-masks")


def _image_size(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.height, image.width


def _image_channels(path):
    from PIL import Image

    with Image.open(path) as image:
        return len(image.getbands())


# ----------------------------------------------------------------------------- models


def _accepted(builder):
    parameters = inspect.signature(builder).parameters.values()
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _training_arguments(entry, given, *, channels, num_classes, encoder_weights):
    """`given` plus the defaults `kerasseg train` fills in (see TRAIN_HELP)."""
    arguments = dict(given)
    accepted = _accepted(entry.builder)
    fixed = set(entry.defaults) | set(given)
    if "input_shape" in accepted and "input_shape" not in fixed:
        arguments["input_shape"] = [None, None, channels]
    if "num_classes" in accepted and "num_classes" not in given and num_classes is not None:
        default = entry.defaults.get("num_classes", entry.num_classes)
        wanted = 1 if (num_classes == 2 and default == 1) else num_classes
        if wanted != default:
            arguments["num_classes"] = wanted
    if (
        "include_preprocessing" in accepted
        and "include_preprocessing" not in fixed
        and entry.default_weights is None
    ):
        arguments["include_preprocessing"] = True
    if encoder_weights is not None:
        if "encoder_weights" not in accepted:
            raise UsageError(
                f"--encoder-weights: {entry.name} has no pretrained encoder to start from."
            )
        if "encoder_weights" in given:
            raise UsageError("give --encoder-weights or --model-arg encoder_weights, not both.")
        if encoder_weights not in ("imagenet", "none") and not Path(encoder_weights).is_file():
            raise UsageError(
                f"--encoder-weights must be imagenet, none or a weights file; {encoder_weights!r}"
                " is not a file."
            )
        path = str(Path(encoder_weights).resolve()) if Path(encoder_weights).is_file() else None
        arguments["encoder_weights"] = {"none": None, "imagenet": "imagenet"}.get(
            encoder_weights, path
        )
    return arguments


def _weights_banner(entry, arguments, model):
    """Where each part of a freshly built training model has its weights from."""
    report = getattr(model, "weights_report", None)
    if report is not None:
        return f"weights: {report.describe()}"
    accepted = _accepted(entry.builder)
    if "encoder_weights" not in accepted:
        return "weights: random initialisation (no pretrained weights)"
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(entry.builder).parameters.items()
    }
    settings = {**defaults, **entry.defaults, **arguments}
    encoder, source = settings.get("encoder"), settings.get("encoder_weights")
    if encoder is None:
        return "weights: random initialisation (no pretrained encoder)"
    if source is None:
        start = "random initialisation (--encoder-weights imagenet starts from ImageNet)"
    elif source == "imagenet":
        start = "ImageNet (keras.applications)"
    else:
        start = f"the file {source}"
    return f"weights: encoder {encoder}: {start}; decoder and head: random initialisation"


def _build(name, arguments, weights):
    import kerasseg

    try:
        kerasseg.get_entry(name)
        return kerasseg.load(name, weights=weights, **arguments)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--model {name}: {error}") from None


def _is_model_file(spec):
    """True when `--model` / NAME names a saved model file rather than a registry entry."""
    return spec.endswith(".keras") or Path(spec).is_file()


def _load_for_inference(spec, arguments):
    """(model, from_logits) for a registry name or a .keras file; takes stored values."""
    import keras

    import kerasseg
    from kerasseg.inference.semantic import output_is_logits

    if _is_model_file(spec):
        if arguments:
            raise UsageError("--model-arg only applies to registry names, not to .keras files.")
        if not Path(spec).is_file():
            raise UsageError(f"--model {spec!r} does not exist.")
        model = keras.saving.load_model(spec)
        return model, output_is_logits(model)
    model = _build(spec, arguments, "default")
    logits = output_is_logits(model)
    mode = kerasseg.get_entry(spec).preprocessing_for(arguments)
    if mode == "none":
        return model, logits
    from kerasseg.models.base import SegmentationModel
    from kerasseg.preprocessing import ImagePreprocessing

    inputs = keras.Input(tuple(model.inputs[0].shape[1:]), name="images")
    wrapped = SegmentationModel(
        inputs,
        model(ImagePreprocessing(mode)(inputs)),
        size_divisor=getattr(model, "size_divisor", 1),
        size_offset=getattr(model, "size_offset", 0),
        min_size=getattr(model, "min_size", 1),
    )
    return wrapped, logits


def _add_tta(parser):
    parser.add_argument(
        "--tta",
        choices=("flips", "dihedral"),
        help="semantic models: average the outputs over 4 flips or all 8 flips and transposes "
        "(test-time augmentation, kerasseg.inference.tta.wrap; 4x or 8x the time)",
    )


def _with_tta(model, transforms):
    """`model` averaged over `transforms` (--tta), or `model` itself when none is asked."""
    if transforms is None:
        return model
    from kerasseg import tta

    try:
        return tta.wrap(model, transforms)
    except ValueError as error:
        raise UsageError(f"--tta {transforms}: {error}") from None


def _output_channels(model):
    shape = getattr(model, "output_shape", None)
    if not isinstance(shape, tuple) or not shape or not isinstance(shape[-1], int):
        raise UsageError(
            "--model must have one output of shape (batch, height, width, classes); got output "
            f"shape {shape!r}."
        )
    return shape[-1]


def _check_classes(channels, num_classes, what):
    if channels == 1 and num_classes != 2:
        raise UsageError(
            f"the model has 1 output channel (binary, sigmoid) but {what} has {num_classes} "
            f"classes; pass --model-arg num_classes={num_classes}."
        )
    if channels > 1 and channels != num_classes:
        raise UsageError(
            f"the model has {channels} output channels but {what} has {num_classes} classes."
        )


# ----------------------------------------------------------------------------- train


def _augment(args, mask_fill):
    from kerasseg.data import JointAugment

    names = [n.strip() for n in args.augment.split(",") if n.strip()]
    unknown = [n for n in names if n not in AUGMENTS]
    if unknown:
        raise UsageError(f"--augment: unknown {unknown}; accepted: {', '.join(AUGMENTS)}.")
    options = {}
    for name in names:
        options.update(AUGMENTS[name])
    if args.input_size is not None:
        options["crop_size"] = tuple(args.input_size)
    if not options:
        return None
    return JointAugment(**options, mask_fill=mask_fill)


def _mask_classes(command, pairs, num_classes, class_map, ignore_label, cache=None):
    """(num_classes, class_map) of mask files by `MaskSurvey.resolve`, the survey and any
    decision printed; a refusal is a UsageError. With `cache`, the survey is kept there and
    shown with a progress bar."""
    from kerasseg.data import survey_masks

    survey = survey_masks(pairs, cache=cache, progress=cache is not None)
    print(f"kerasseg {command}: {survey.summary()}", file=sys.stderr)
    try:
        num_classes, class_map, note = survey.resolve(num_classes, class_map, ignore_label)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if note:
        print(f"kerasseg {command}: {note}", file=sys.stderr)
    return num_classes, class_map


def _training_data(args, out):
    """Train / validation sources, channels, classes and names, from the data flags; mask
    folders are surveyed (cached in `out`/masks.json) and their classes resolved."""
    import kerasseg

    if args.dataset is not None:
        root = Path(args.data_root)
        if args.dataset == "isbi2012":
            info = kerasseg.datasets.ISBI2012
            folder = root / "train" / "image"
            train_files = val_files = sorted(folder.glob("*.png"))
        else:
            info = kerasseg.datasets.CAMVID
            train_files = sorted((root / "train").glob("*.png"))
            val_files = sorted((root / "val").glob("*.png"))
        if not train_files:
            raise UsageError(f"--data-root {str(root)!r} holds no {args.dataset} images.")
        if args.num_classes not in (None, info.num_classes):
            raise UsageError(
                f"--dataset {args.dataset} has {info.num_classes} classes; --num-classes "
                f"{args.num_classes} applies to --images/--masks folders."
            )
        ignore = info.ignore_label if args.ignore_label is None else args.ignore_label
        return {
            "train_files": train_files,
            "val_files": val_files,
            "channels": info.channels,
            "num_classes": info.num_classes,
            "class_names": list(info.class_names),
            "ignore_label": ignore,
            "class_map": info.class_map,
        }
    from kerasseg.data import paired_files

    try:
        train_pairs = paired_files(args.images, args.masks)
        val_pairs = (
            paired_files(args.val_images, args.val_masks) if args.val_images is not None else []
        )
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None
    given = parse_model_arguments(args.model_arg).get("num_classes")
    explicit = args.num_classes
    if explicit is None and isinstance(given, int) and not isinstance(given, bool):
        explicit = 2 if given == 1 else given
    num_classes, class_map = _mask_classes(
        "train",
        train_pairs + val_pairs,
        explicit,
        parse_class_map(args.class_map),
        args.ignore_label,
        cache=out / MASK_SURVEY,
    )
    return {
        "train_pairs": train_pairs,
        "val_pairs": val_pairs,
        "train_files": [p[0] for p in train_pairs],
        "val_files": [p[0] for p in val_pairs],
        "channels": _image_channels(train_pairs[0][0]),
        "num_classes": num_classes,
        "class_names": None,
        "ignore_label": args.ignore_label,
        "class_map": class_map,
    }


def _padding(files, divisor, batch_size):
    """(pad multiple or None, whether an ignore label is needed) for whole images."""
    sizes = {_image_size(f) for f in files}
    misfit = divisor > 1 and any(h % divisor or w % divisor for h, w in sizes)
    ragged = len(sizes) > 1 and batch_size > 1
    return (divisor if misfit else None), bool(misfit or ragged)


def _datasets(args, data, *, divisor, preprocessing, num_classes):
    import kerasseg
    from kerasseg.data import segmentation_dataset

    ignore = data["ignore_label"]
    train_pad, train_needs = (None, False)
    if args.input_size is None:
        train_pad, train_needs = _padding(data["train_files"], divisor, args.batch_size)
    val_pad, val_needs = (None, False)
    if data["val_files"]:
        val_pad, val_needs = _padding(data["val_files"], divisor, args.batch_size)
    if ignore is None and (train_needs or val_needs):
        ignore = PADDING_LABEL
    augment = _augment(args, ignore)
    if augment is not None and augment.rotate90:
        sizes = (
            {tuple(args.input_size)}
            if args.input_size
            else {_image_size(f) for f in data["train_files"]}
        )
        if any(h != w for h, w in sizes):
            raise UsageError(
                "--augment rot90 needs square training examples (a quarter turn swaps height "
                f"and width); pass a square --input-size. Sizes: {sorted(sizes)}."
            )
    common = dict(batch_size=args.batch_size, preprocessing=preprocessing, cache=args.cache)
    if preprocessing is not None:
        common["channels"] = data["channels"]
    train_options = dict(
        common,
        ignore_label=ignore,
        augment=augment,
        pad_to_multiple=train_pad,
        shuffle=True,
        seed=args.seed,
        repeat=args.steps_per_epoch is not None,
    )
    val_options = dict(common, ignore_label=ignore, pad_to_multiple=val_pad)
    if args.dataset is None:
        for options in (train_options, val_options):
            options.update(
                channels=data["channels"], class_map=data["class_map"], num_classes=num_classes
            )
    if args.dataset == "isbi2012":
        reader = kerasseg.datasets.isbi2012
        train, _ = reader(args.data_root, subset="train", **train_options)
        val, _ = reader(args.data_root, subset="validation", **val_options)
    elif args.dataset == "camvid":
        reader = kerasseg.datasets.camvid
        train, _ = reader(args.data_root, subset="train", **train_options)
        val, _ = reader(args.data_root, subset="val", **val_options)
    else:
        train = segmentation_dataset(data["train_pairs"], **train_options)
        val = segmentation_dataset(data["val_pairs"], **val_options) if data["val_pairs"] else None
    settings = {
        "augment": None if augment is None else augment.get_config(),
        "ignore_label": ignore,
        "train_pad_to_multiple": train_pad,
        "validation_pad_to_multiple": val_pad,
    }
    return train, val, ignore, settings


def _cli_settings(args):
    """The parsed `kerasseg train` arguments a resume must repeat: all but --epochs, --out
    and --debug, with folders made absolute."""
    settings = {k: v for k, v in vars(args).items() if k not in ("epochs", "out", "debug")}
    for key in ("data_root", "images", "masks", "val_images", "val_masks"):
        if settings.get(key) is not None:
            settings[key] = str(Path(settings[key]).resolve())
    return settings


def _train(args, argv):
    from kerasseg.run_folder import RunFolder

    _check_data_flags(args, training=True)
    settings = _cli_settings(args)
    # `kerasseg.load` logs re-initialised layers; the weights banner says it once instead.
    logger = logging.getLogger("kerasseg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with RunFolder(args.out) as folder:
            folder.check_same_run({"cli": settings}, keys=("cli",))  # before reading data
            _train_in_folder(args, argv, folder.path, settings)
    finally:
        logger.setLevel(level)


def _train_in_folder(args, argv, out, settings):
    import kerasseg
    from kerasseg import training
    from kerasseg.inference.semantic import output_is_logits

    given = parse_model_arguments(args.model_arg)
    try:
        entry = kerasseg.get_entry(args.model)
    except ValueError as error:
        raise UsageError(f"--model: {error}") from None
    data = _training_data(args, out)
    arguments = _training_arguments(
        entry,
        given,
        channels=data["channels"],
        num_classes=data["num_classes"],
        encoder_weights=args.encoder_weights,
    )
    probe = _build(args.model, arguments, "default")
    outputs = _output_channels(probe)
    num_classes = data["num_classes"] or (2 if outputs == 1 else outputs)
    _check_classes(outputs, num_classes, "the data")
    inputs = probe.inputs[0].shape[-1]
    if inputs != data["channels"]:
        raise UsageError(
            f"the model takes {inputs}-channel images but the data have {data['channels']}; "
            f"pass --model-arg input_shape=[null,null,{data['channels']}]."
        )
    divisor = int(getattr(probe, "size_divisor", 1))
    offset = int(getattr(probe, "size_offset", 0))
    if offset:
        raise UsageError(
            "models with unpadded convolutions (output smaller than input, e.g. "
            "padding='valid') cannot be trained with `kerasseg train`."
        )
    if args.input_size is not None:
        from kerasseg.models.base import check_spatial_size

        try:
            check_spatial_size(
                args.input_size, divisor, "--input-size", 0, getattr(probe, "min_size", divisor)
            )
        except ValueError as error:
            raise UsageError(str(error)) from None
    logits = output_is_logits(probe)
    banner = _weights_banner(entry, arguments, probe)
    del probe
    print(f"kerasseg train: {banner}", file=sys.stderr)
    preprocessing = None
    mode = entry.preprocessing_for(arguments)
    if mode != "none":
        preprocessing = kerasseg.preprocessing_layer(args.model, **arguments)
        print(
            f"kerasseg train: the images are normalised ({mode!r}) in the input pipeline, so "
            "the saved model takes normalised images, not stored values.",
            file=sys.stderr,
        )
    train_data, val_data, ignore, data_settings = _datasets(
        args, data, divisor=divisor, preprocessing=preprocessing, num_classes=num_classes
    )
    if args.loss != "auto":
        try:
            training.loss_from_spec(
                args.loss,
                num_classes=1 if outputs == 1 else outputs,
                from_logits=logits,
                ignore_label=ignore,
            )
        except (TypeError, ValueError) as error:
            raise UsageError(str(error)) from None
    run = training.train(
        args.model,
        train_data,
        output_dir=out,
        epochs=args.epochs,
        model_arguments=arguments,
        validation_data=val_data,
        loss=args.loss,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        schedule=args.schedule,
        steps_per_epoch=args.steps_per_epoch,
        monitor="val_loss" if val_data is not None else "loss",
        strategy=args.strategy,
        mixed_precision=args.mixed_precision,
        ignore_label=ignore,
        seed=args.seed,
        run_config={
            "argv": ["kerasseg", *argv],
            "command": shlex.join(["kerasseg", *argv]),
            "cli": settings,
            "data": {
                "class_map": data["class_map"],
                "class_names": data["class_names"],
                "num_classes": num_classes,
                **data_settings,
            },
        },
    )
    best = out / "best.json"
    best_epoch = json.loads(best.read_text())["epoch"] if best.is_file() else None
    files = ", ".join(path.name for path in (run.best_path, run.final_path) if path.is_file())
    print(
        f"{args.model}: {run.trained_epochs} epoch(s) trained now, {len(run.history)} in all, "
        f"in {out}"
        + (f"; best epoch {best_epoch}" if best_epoch is not None else "")
        + (f"; holds {files}" if files else "")
    )


# ----------------------------------------------------------------------------- evaluate


INSTANCE_FLAGS = (
    "--coco",
    "--max-detections",
    "--min-score",
    "--class-agnostic",
    "--instance-masks",
)


def _given(args, flags):
    """The flags of `flags` set on the command line (neither None nor a false switch)."""
    values = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in flags}
    return [flag for flag, value in values.items() if value is not None and value is not False]


def _registry_task(spec):
    """The registry task of a --model name; None for a model file or an unknown name."""
    import kerasseg

    if _is_model_file(spec):
        return None
    try:
        return kerasseg.get_entry(spec).task
    except ValueError:
        return None  # `_load_for_inference` reports it


def _refuse_instance_flags(args):
    used = _given(args, INSTANCE_FLAGS)
    if used:
        raise UsageError(
            f"{', '.join(used)} only apply to instance models (Mask R-CNN); --model "
            f"{args.model} is a semantic model."
        )


def _check_coco_flags(args):
    used = _given(args, ("--dataset", "--data-root", "--masks", "--class-map", "--ignore-label"))
    if used:
        raise UsageError(
            f"--coco FILE takes its images from --images DIR (or the paths in the file); "
            f"{', '.join(used)} do not apply."
        )
    if not Path(args.coco).is_file():
        raise UsageError(f"--coco {args.coco!r} is not a file.")
    _folder(args.images, "--images")


def _evaluate(args):
    import kerasseg
    from kerasseg.evaluation.semantic import evaluate, format_markdown, write_report
    from kerasseg.inference.semantic import is_instance_model

    if args.coco is not None:
        _check_coco_flags(args)
    else:
        _check_data_flags(args, training=False)
    task = _registry_task(args.model)
    if task not in (None, "instance"):
        _refuse_instance_flags(args)
    # Registry instance models: check the data flags before building the model.
    data = _instance_data(args) if task == "instance" else None
    model, logits = _load_for_inference(args.model, parse_model_arguments(args.model_arg))
    if task == "instance" or is_instance_model(model):
        if args.watershed_seeds is not None or args.tta is not None:
            raise UsageError("--watershed-seeds and --tta are for semantic models.")
        _evaluate_instance_model(args, model, data or _instance_data(args))
        return
    _refuse_instance_flags(args)
    model = _with_tta(model, args.tta)
    outputs = _output_channels(model)
    _check_watershed_flags(
        args.watershed_seeds, outputs, args.instance_metrics, "--instance-metrics"
    )
    options = dict(batch_size=args.batch_size)
    if args.dataset is not None:
        if args.dataset == "isbi2012":
            reader, info = kerasseg.datasets.isbi2012, kerasseg.datasets.ISBI2012
            subsets = ("train", "validation", "all")
            subset = args.subset
        else:
            reader, info = kerasseg.datasets.camvid, kerasseg.datasets.CAMVID
            subsets = ("train", "validation", "val", "trainval", "test")
            subset = "val" if args.subset == "validation" else args.subset
        if args.subset not in subsets:
            raise UsageError(
                f"--subset for {args.dataset} must be one of {subsets}; got {args.subset!r}."
            )
        ignore = info.ignore_label if args.ignore_label is None else args.ignore_label
        if ignore is not None:
            options["ignore_label"] = ignore
        try:
            dataset, _ = reader(args.data_root, subset=subset, **options)
        except (ValueError, OSError) as error:
            raise UsageError(str(error)) from None
        num_classes, names = info.num_classes, list(info.class_names)
    else:
        from kerasseg.data import paired_files, segmentation_dataset

        class_map = parse_class_map(args.class_map)
        try:
            pairs = paired_files(args.images, args.masks)
        except (ValueError, OSError) as error:
            raise UsageError(str(error)) from None
        ignore = args.ignore_label
        num_classes, class_map = _mask_classes(
            "evaluate", pairs, 2 if outputs == 1 else outputs, class_map, ignore
        )
        dataset = segmentation_dataset(
            pairs, class_map=class_map, ignore_label=ignore, num_classes=num_classes, **options
        )
        names = None
    _check_classes(outputs, num_classes, "the data")
    results = evaluate(
        model,
        dataset,
        num_classes=num_classes,
        class_names=names,
        ignore_label=ignore,
        instance_metrics=args.instance_metrics,
        threshold=args.threshold,
        watershed_seeds=args.watershed_seeds,
        from_logits=logits,
    )
    title = f"{args.model} on {args.dataset or args.images}"
    json_path, markdown_path = write_report(results, args.out, title=title)
    print(format_markdown(results, title=title))
    print(f"wrote {json_path} and {markdown_path}")


def _instance_targets(mask, mode, ignore):
    """Instance targets (numpy) of one (H, W) int mask: per-class 4-connected regions, or
    one instance per distinct non-zero value (`mode` "labels", class 1)."""
    import numpy as np

    from kerasseg.data.instances import (
        instances_from_binary_mask,
        instances_from_label_image,
    )

    if ignore is not None:
        mask = np.where(mask == ignore, 0, mask)
    if mode == "labels":
        return {k: v.numpy() for k, v in instances_from_label_image(mask).items()}
    parts = [
        instances_from_binary_mask(mask == value, connectivity=4, class_id=int(value))
        for value in np.unique(mask)
        if value >= 1
    ]
    height, width = mask.shape
    if not parts:
        return {
            "boxes": np.zeros((0, 4), np.float32),
            "class_ids": np.zeros(0, np.int32),
            "masks": np.zeros((0, height, width), np.uint8),
        }
    return {
        key: np.concatenate([part[key].numpy() for part in parts])
        for key in ("boxes", "class_ids", "masks")
    }


def _instance_data(args):
    """(iterable of (image, targets), {class id: name}) for an instance model."""
    import kerasseg

    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1]; got {args.threshold}.")

    if args.coco is not None:
        from kerasseg.data import read_coco, read_image

        try:
            dataset, info = read_coco(args.coco, image_dir=args.images)
        except (ValueError, KeyError, OSError) as error:
            raise UsageError(f"--coco: {error}") from None

        def coco_pairs():
            for element in dataset:
                image = read_image(element["image_path"], dtype="uint8")
                targets = {key: element[key] for key in ("boxes", "class_ids", "masks", "is_crowd")}
                yield image, targets

        return coco_pairs(), dict(enumerate(info.class_names))
    if args.dataset is not None:
        if args.dataset != "isbi2012":
            raise UsageError(
                f"--dataset {args.dataset} has no instance labels; instance models are "
                "evaluated on --dataset isbi2012, --images/--masks or --coco FILE."
            )
        if args.instance_masks is not None:
            raise UsageError("--instance-masks only applies with --images/--masks.")
        subsets = ("train", "validation", "all")
        if args.subset not in subsets:
            raise UsageError(
                f"--subset for isbi2012 instances must be one of {subsets}; got {args.subset!r}."
            )
        try:
            dataset, info = kerasseg.datasets.isbi2012_instances(args.data_root, subset=args.subset)
        except (ValueError, OSError) as error:
            raise UsageError(str(error)) from None
        return dataset, {1: info.class_names[1]}
    from kerasseg.data import paired_files, segmentation_dataset

    mode = args.instance_masks or "components"
    class_map = parse_class_map(args.class_map)
    if mode == "labels" and class_map is not None:
        raise UsageError("--instance-masks labels reads instance ids as stored; drop --class-map.")
    try:
        pairs = paired_files(args.images, args.masks)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None
    ignore = args.ignore_label
    dataset = segmentation_dataset(pairs, class_map=class_map, ignore_label=ignore, batch_size=1)

    def folder_pairs():
        for images, masks in dataset:
            yield images[0], _instance_targets(masks[0, ..., 0].numpy(), mode, ignore)

    return folder_pairs(), None


def _evaluate_instance_model(args, model, data):
    from kerasseg.evaluation.coco import evaluate_instances
    from kerasseg.evaluation.semantic import format_markdown, write_report

    data, names = data
    if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:
        raise UsageError(f"--min-score must be in [0, 1]; got {args.min_score}.")
    try:
        results = evaluate_instances(
            model,
            data,
            max_detections=args.max_detections or 300,
            mask_threshold=args.threshold,
            min_score=args.min_score,
            class_agnostic=args.class_agnostic,
            batch_size=args.batch_size,
            category_names=names,
        )
    except ImportError as error:
        raise UsageError(str(error)) from None
    except (ValueError, KeyError) as error:
        raise UsageError(f"the data: {error}") from None
    title = f"{args.model} on {args.dataset or args.coco or args.images}"
    json_path, markdown_path = write_report(results, args.out, title=title)
    print(format_markdown(results, title=title))  # with the warnings, if any
    print(f"wrote {json_path} and {markdown_path}")


# ----------------------------------------------------------------------------- predict


def _check_watershed_flags(seeds, outputs, enabled, needed):
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


def _predict(args):
    from kerasseg.inference.semantic import is_instance_model, predict_file

    missing = [p for p in args.inputs if not Path(p).is_file()]
    if missing:
        raise UsageError(f"input file(s) not found: {', '.join(missing)}.")
    stems = [Path(p).stem for p in args.inputs]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise UsageError(
            f"inputs share the file name(s) {clashes}, so their outputs in --out would clash; "
            "predict them into separate folders."
        )
    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1]; got {args.threshold}.")
    model, logits = _load_for_inference(args.model, parse_model_arguments(args.model_arg))
    min_score = 0.5 if args.min_score is None else args.min_score
    if is_instance_model(model):
        if args.instances or args.watershed_seeds is not None or args.tta is not None:
            raise UsageError(
                "--instances, --watershed-seeds and --tta are for semantic models; an instance "
                "model writes its instance labels as <stem>.png already."
            )
        if not 0.0 <= min_score <= 1.0:
            raise UsageError(f"--min-score must be in [0, 1]; got {min_score}.")
    else:
        if args.min_score is not None:
            raise UsageError("--min-score applies to instance models (Mask R-CNN) only.")
        outputs = _output_channels(model)
        _check_watershed_flags(args.watershed_seeds, outputs, args.instances, "--instances")
        model = _with_tta(model, args.tta)
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


# ----------------------------------------------------------------------------- export


def _export(args):
    import kerasseg
    from kerasseg.export import export

    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1]; got {args.threshold}.")
    arguments = parse_model_arguments(args.model_arg)
    is_file = _is_model_file(args.name)
    num_classes, preprocessing = None, "none"
    if is_file:
        model, _ = _load_for_inference(args.name, arguments)
    else:
        model = _build(args.name, arguments, "default")
        entry = kerasseg.get_entry(args.name)
        preprocessing = entry.preprocessing_for(arguments)
        if entry.task == "classical" and not arguments:
            num_classes = entry.num_classes
    model = _with_tta(model, args.tta)
    folder = args.model_name or (Path(args.name).stem if is_file else args.name)
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


# ----------------------------------------------------------------------------- convert


def _convert(args):
    from kerasseg.convert.torchvision import convert_file

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


# ----------------------------------------------------------------------------- main


def _list(args):
    import kerasseg

    rows = kerasseg.list_models(task=args.task)
    print(json.dumps(rows, indent=2, default=str) if args.json else _table(rows))


def _info(args):
    import kerasseg

    try:
        entry = kerasseg.get_entry(args.name)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(json.dumps(entry.summary(), indent=2, default=str))


def _demo(args):
    from kerasseg.demo import run_demo

    results = run_demo(args.out)
    for r in results:
        if "error" in r:
            outcome = f"no result: {r['error']}"
        elif r["foreground_iou"] is None:
            outcome = f"(multi-class)  {r['overlay']}"
        else:
            outcome = f"foreground IoU {r['foreground_iou']:.3f}  {r['overlay']}"
        print(f"{r['sample']:<10} {r['model']:<16} {outcome}")
    print(f"overlays and results.json written to {args.out}")


def _one_line(error):
    """An exception as one line: TensorFlow's graph details cut, the rest joined."""
    import tensorflow as tf

    if isinstance(error, tf.errors.OpError):
        from kerasseg.data.decode import error_text

        return error_text(error)
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    return " ".join(text.split())


def _user_errors():
    """Exception types that report a problem with the user's input, files or disk."""
    import tensorflow as tf

    from kerasseg.run_folder import RunFolderError

    return (UsageError, RunFolderError, ValueError, TypeError, OSError, tf.errors.OpError)


def main(argv=None):
    """Run one `kerasseg` command; returns the exit status.

    Errors are one line on stderr (`kerasseg COMMAND: error: ...`): status 2 for a problem
    with the input (arguments, files, data, disk), 1 for a training run whose loss became
    NaN or anything unexpected. `--debug` raises instead, with the traceback.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    commands = {
        "list": lambda: _list(args),
        "info": lambda: _info(args),
        "demo": lambda: _demo(args),
        "train": lambda: _train(args, argv),
        "evaluate": lambda: _evaluate(args),
        "predict": lambda: _predict(args),
        "export": lambda: _export(args),
        "convert": lambda: _convert(args),
    }
    try:
        commands[args.command]()
    except KeyboardInterrupt:
        print(f"kerasseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        from kerasseg.training import TrainingDiverged

        user = isinstance(error, _user_errors()) and not isinstance(error, TrainingDiverged)
        kind = "error" if user or isinstance(error, TrainingDiverged) else "internal error"
        hint = "" if user or isinstance(error, TrainingDiverged) else " (--debug: traceback)"
        print(f"kerasseg {args.command}: {kind}: {_one_line(error)}{hint}", file=sys.stderr)
        return 2 if user else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
