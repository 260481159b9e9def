"""`kerasseg train`: train a registry model on a data set or on folders of images and masks,
with checkpoints, logs and resume in a run folder."""

import contextlib
import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path

import kerasseg
from kerasseg import datasets
from kerasseg.cli.common import (
    UsageError,
    add_data_flags,
    add_model_flags,
    add_subcommand,
    check_data_flags,
    class_count,
    image_channels,
    image_size,
    learning_rate,
    mask_classes,
    paired,
    parse_class_map,
    parse_model_arguments,
    positive_int,
)
from kerasseg.cli.models import build, check_classes, output_channels
from kerasseg.inference import output_is_logits
from kerasseg.models.input_checks import check_spatial_size
from kerasseg.ops.checks import is_int
from kerasseg.run_folder import RunFolder

__all__ = ["HELP", "MASK_SURVEY", "SUMMARY", "add_parser", "run"]

MASK_SURVEY = "masks.json"  # the cached survey of the mask files, in the run folder

# The line of `kerasseg --help`, and the text of `kerasseg train --help`.
SUMMARY = "train a model with checkpoints, logs and resume"
HELP = """\
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
exact command line), masks.json, checkpoint/ and tensorboard/ (the first lines print the
`tensorboard --logdir` command that opens it); each file is replaced atomically. After every
epoch, curves.png shows the loss and every metric (training solid, validation dashed) of all
epochs so far, and samples/epoch_NNN.png the first 4 validation images with their ground
truth and the model's prediction (also in TensorBoard's Images tab, tag "samples").
One process at a time uses DIR. Running the same command again resumes an interrupted run
at the epoch after the last completed one, changes nothing in a finished run, and with a
larger --epochs continues it; other arguments than the first run's are refused. Epochs are
numbered from 1, as Keras prints them.

errors: one line on stderr and exit status 2 (a loss that becomes NaN: status 1); --debug
shows the traceback.
"""


def add_parser(commands, parents):
    """Add `kerasseg train` to the subcommands `commands`."""
    train = add_subcommand(commands, "train", parents, SUMMARY, HELP)
    add_model_flags(train, path_ok=False)
    add_data_flags(train, training=True)
    train.add_argument("--out", required=True, metavar="DIR", help="output folder")
    train.add_argument(
        "--input-size", type=positive_int, nargs=2, metavar=("H", "W"), help="random crop size"
    )
    train.add_argument(
        "--augment", default="", metavar="NAMES", help=", ".join(datasets.AUGMENT_PRESETS)
    )
    train.add_argument(
        "--loss", default="auto", help='"auto" (bce+dice or ce+dice), or e.g. "0.5*focal+dice"'
    )
    train.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    train.add_argument(
        "--num-classes",
        type=class_count,
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
        "--lr", type=learning_rate, default=1e-3, help="learning rate (default 1e-3)"
    )
    train.add_argument("--schedule", choices=("constant", "cosine", "poly"), default="constant")
    train.add_argument("--epochs", type=positive_int, default=20, help="default 20")
    train.add_argument(
        "--steps-per-epoch", type=positive_int, help="batches per epoch (default: one pass)"
    )
    train.add_argument("--batch-size", type=positive_int, default=4, help="default 4")
    train.add_argument("--seed", type=int, default=0, help="default 0")
    train.add_argument("--strategy", choices=("mirrored",), help="tf.distribute strategy")
    train.add_argument("--mixed-precision", choices=("mixed_float16", "mixed_bfloat16"))
    train.add_argument("--cache", action="store_true", help="cache decoded images in memory")


def run(args, argv):
    """Run `kerasseg train` with the parsed `args` of the command line `argv`."""
    check_data_flags(args, training=True)
    settings = _cli_settings(args)
    with _quiet_logger(), RunFolder(args.out) as folder:
        folder.check_same_run({"cli": settings}, keys=("cli",))  # before reading data
        _train_in_folder(args, argv, folder.path, settings)


@contextlib.contextmanager
def _quiet_logger():
    """`kerasseg.load` logs re-initialised layers; the weights banner says it once instead."""
    logger = logging.getLogger("kerasseg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _cli_settings(args):
    """The parsed `kerasseg train` arguments a resume must repeat: all but --epochs, --out
    and --debug, with folders made absolute."""
    settings = {k: v for k, v in vars(args).items() if k not in ("epochs", "out", "debug")}
    for key in ("data_root", "images", "masks", "val_images", "val_masks"):
        if settings.get(key) is not None:
            settings[key] = str(Path(settings[key]).resolve())
    return settings


def _train_in_folder(args, argv, out, settings):
    """Train in the run folder `out`: read the data, check the model against them, build
    the input pipeline and run `kerasseg.training.train`."""
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
    model = _inspect_model(args.model, entry, arguments)
    num_classes = data["num_classes"] or (2 if model.outputs == 1 else model.outputs)
    _check_model(model, num_classes, data["channels"], args.input_size)
    print(f"kerasseg train: {model.banner}", file=sys.stderr)
    preprocessing = _preprocessing(args.model, entry, arguments)
    train_data, val_data, ignore, data_settings = _datasets(
        args, data, divisor=model.size_divisor, preprocessing=preprocessing, num_classes=num_classes
    )
    _check_loss(args.loss, model, ignore)
    # TensorFlow-only (tf.data, tf.distribute): loaded when a training run starts.
    from kerasseg import training

    result = training.train(
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
    _print_summary(args.model, result, out)


def _print_summary(name, result, out):
    best = out / "best.json"
    best_epoch = json.loads(best.read_text())["epoch"] if best.is_file() else None
    files = ", ".join(path.name for path in (result.best_path, result.final_path) if path.is_file())
    print(
        f"{name}: {result.trained_epochs} epoch(s) trained now, {len(result.history)} in all, "
        f"in {out}"
        + (f"; best epoch {best_epoch}" if best_epoch is not None else "")
        + (f"; holds {files}" if files else "")
    )


# ----------------------------------------------------------------------------- data


def _training_data(args, out):
    """Train / validation sources, channels, classes and names, from the data flags; mask
    folders are surveyed (cached in `out`/masks.json) and their classes resolved."""
    if args.dataset is not None:
        return _dataset_data(args)
    train_pairs = paired(args.images, args.masks)
    val_pairs = paired(args.val_images, args.val_masks) if args.val_images is not None else []
    given = parse_model_arguments(args.model_arg).get("num_classes")
    explicit = args.num_classes
    if explicit is None and is_int(given):
        explicit = 2 if given == 1 else given
    num_classes, class_map = mask_classes(
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
        "channels": image_channels(train_pairs[0][0]),
        "num_classes": num_classes,
        "class_names": None,
        "ignore_label": args.ignore_label,
        "class_map": class_map,
    }


def _dataset_data(args):
    """What `_training_data` gives for --dataset: the data set's files and labels."""
    info = datasets.DATASETS[args.dataset]
    train_files = datasets.split_images(args.dataset, args.data_root, "train")
    if not train_files:
        root = str(Path(args.data_root))
        raise UsageError(f"--data-root {root!r} holds no {args.dataset} images.")
    if args.num_classes not in (None, info.num_classes):
        raise UsageError(
            f"--dataset {args.dataset} has {info.num_classes} classes; --num-classes "
            f"{args.num_classes} applies to --images/--masks folders."
        )
    return {
        "train_files": train_files,
        "val_files": datasets.split_images(args.dataset, args.data_root, "validation"),
        "channels": info.channels,
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "ignore_label": info.ignore_label if args.ignore_label is None else args.ignore_label,
        "class_map": info.class_map,
    }


def _padding(files, divisor, batch_size):
    """(pad multiple or None, whether an ignore label is needed) for whole images."""
    sizes = {image_size(f) for f in files}
    misfit = divisor > 1 and any(h % divisor or w % divisor for h, w in sizes)
    ragged = len(sizes) > 1 and batch_size > 1
    return (divisor if misfit else None), bool(misfit or ragged)


def _augment(args, data, mask_fill):
    """The --augment / --input-size `JointAugment` (or None); rot90 needs square examples."""
    names = [n.strip() for n in args.augment.split(",") if n.strip()]
    try:
        augment = datasets.augment_preset(names, crop_size=args.input_size, mask_fill=mask_fill)
    except ValueError as error:
        if any(name not in datasets.AUGMENT_PRESETS for name in names):
            raise UsageError(f"--augment: {error}") from None
        raise
    if augment is not None and augment.rotate90:
        sizes = (
            {tuple(args.input_size)}
            if args.input_size
            else {image_size(f) for f in data["train_files"]}
        )
        if any(h != w for h, w in sizes):
            raise UsageError(
                "--augment rot90 needs square training examples (a quarter turn swaps height "
                f"and width); pass a square --input-size. Sizes: {sorted(sizes)}."
            )
    return augment


def _datasets(args, data, *, divisor, preprocessing, num_classes):
    """(train, validation or None, ignore label, settings for run.json) as tf.data datasets."""
    ignore = data["ignore_label"]
    train_pad, train_needs = (None, False)
    if args.input_size is None:
        train_pad, train_needs = _padding(data["train_files"], divisor, args.batch_size)
    val_pad, val_needs = (None, False)
    if data["val_files"]:
        val_pad, val_needs = _padding(data["val_files"], divisor, args.batch_size)
    if ignore is None and (train_needs or val_needs):
        ignore = datasets.PADDING_LABEL
    augment = _augment(args, data, ignore)
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
    if args.dataset is not None:
        train, _ = datasets.read(args.dataset, args.data_root, subset="train", **train_options)
        val, _ = datasets.read(args.dataset, args.data_root, subset="validation", **val_options)
    else:
        # TensorFlow-only (tf.data): loaded when a training run starts.
        from kerasseg.data import segmentation_dataset

        for options in (train_options, val_options):
            options.update(
                channels=data["channels"], class_map=data["class_map"], num_classes=num_classes
            )
        train = segmentation_dataset(data["train_pairs"], **train_options)
        val = segmentation_dataset(data["val_pairs"], **val_options) if data["val_pairs"] else None
    settings = {
        "augment": None if augment is None else augment.get_config(),
        "ignore_label": ignore,
        "train_pad_to_multiple": train_pad,
        "validation_pad_to_multiple": val_pad,
    }
    return train, val, ignore, settings


# ----------------------------------------------------------------------------- model


def _training_arguments(entry, given, *, channels, num_classes, encoder_weights):
    """`given` plus the defaults `kerasseg train` fills in (see HELP)."""
    arguments = dict(given)
    accepted = entry.accepted_arguments()
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
        arguments["encoder_weights"] = _encoder_weights(entry, given, encoder_weights)
    return arguments


def _encoder_weights(entry, given, encoder_weights):
    """The `encoder_weights` argument of --encoder-weights (imagenet, none or a file)."""
    if "encoder_weights" not in entry.accepted_arguments():
        raise UsageError(
            f"--encoder-weights: {entry.name} has no pretrained encoder to start from."
        )
    if "encoder_weights" in given:
        raise UsageError("give --encoder-weights or --model-arg encoder_weights, not both.")
    path = Path(encoder_weights)
    if encoder_weights not in ("imagenet", "none") and not path.is_file():
        raise UsageError(
            f"--encoder-weights must be imagenet, none or a weights file; {encoder_weights!r}"
            " is not a file."
        )
    resolved = str(path.resolve()) if path.is_file() else None
    return {"none": None, "imagenet": "imagenet"}.get(encoder_weights, resolved)


@dataclasses.dataclass(frozen=True)
class _Model:
    """What `kerasseg train` checks the data and its pipeline against."""

    outputs: int  # output channels; 1: sigmoid (binary)
    channels: int  # input channels
    size_divisor: int
    size_offset: int
    min_size: int
    from_logits: bool
    banner: str  # where each part's weights come from


def _inspect_model(name, entry, arguments):
    """Build the model once, before the data pipeline, for what only a built model knows:
    its output shape and activation, the image sizes it accepts and where its weights came
    from. (`kerasseg.training.train` builds its own in the distribution strategy's scope.)"""
    model = build(name, arguments, "default")
    outputs = output_channels(model)
    divisor = int(getattr(model, "size_divisor", 1))
    return _Model(
        outputs=outputs,
        channels=model.inputs[0].shape[-1],
        size_divisor=divisor,
        size_offset=int(getattr(model, "size_offset", 0)),
        min_size=getattr(model, "min_size", divisor),
        from_logits=output_is_logits(model),
        banner=_weights_banner(entry, arguments, model),
    )


def _check_model(model, num_classes, channels, input_size):
    """A UsageError unless `model` fits the data's classes and channels and --input-size."""
    check_classes(model.outputs, num_classes, "the data")
    if model.channels != channels:
        raise UsageError(
            f"the model takes {model.channels}-channel images but the data have {channels}; "
            f"pass --model-arg input_shape=[null,null,{channels}]."
        )
    if model.size_offset:
        raise UsageError(
            "models with unpadded convolutions (output smaller than input, e.g. "
            "padding='valid') cannot be trained with `kerasseg train`."
        )
    if input_size is not None:
        try:
            check_spatial_size(input_size, model.size_divisor, "--input-size", 0, model.min_size)
        except ValueError as error:
            raise UsageError(str(error)) from None


def _weights_banner(entry, arguments, model):
    """Where each part of a freshly built training model has its weights from."""
    report = getattr(model, "weights_report", None)
    if report is not None:
        return f"weights: {report.describe()}"
    if "encoder_weights" not in entry.accepted_arguments():
        return "weights: random initialisation (no pretrained weights)"
    settings = {**entry.argument_defaults(), **arguments}
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


def _preprocessing(name, entry, arguments):
    """The input normalisation layer the pipeline applies (None when there is none)."""
    mode = entry.preprocessing_for(arguments)
    if mode == "none":
        return None
    layer = kerasseg.preprocessing_layer(name, **arguments)
    print(
        f"kerasseg train: the images are normalised ({mode!r}) in the input pipeline, so "
        "the saved model takes normalised images, not stored values.",
        file=sys.stderr,
    )
    return layer


def _check_loss(loss, model, ignore):
    """A UsageError for a --loss spec that `kerasseg.training.loss_from_spec` refuses."""
    if loss == "auto":
        return
    # TensorFlow-only (training imports it): loaded when a training run starts.
    from kerasseg.training import loss_from_spec

    try:
        loss_from_spec(
            loss,
            num_classes=1 if model.outputs == 1 else model.outputs,
            from_logits=model.from_logits,
            ignore_label=ignore,
        )
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
