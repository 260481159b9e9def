"""`kerasseg evaluate`: score a semantic or an instance model on labelled images and write
a report (STEM.json and STEM.md, and with --report DIR a page, DIR/index.html)."""

from pathlib import Path

import numpy as np

from kerasseg import datasets, get_entry
from kerasseg.cli.common import (
    UsageError,
    add_data_flags,
    add_model_flags,
    add_subcommand,
    add_tta_flag,
    check_data_flags,
    check_unit_interval,
    folder,
    given_flags,
    mask_classes,
    paired,
    parse_class_map,
    parse_model_arguments,
    positive_int,
)
from kerasseg.cli.models import (
    check_classes,
    check_watershed_flags,
    is_model_file,
    load_for_inference,
    output_channels,
    with_tta,
)
from kerasseg.evaluation import (
    evaluate,
    evaluate_instances,
    format_markdown,
    write_report,
    write_report_page,
)
from kerasseg.inference import dataset_palette, model_palette, task_of

__all__ = ["HELP", "INSTANCE_FLAGS", "REPORT_EXAMPLES", "SUMMARY", "add_parser", "run"]

# The worst and the best images each that a --report page shows.
REPORT_EXAMPLES = 3

# The line of `kerasseg --help`, and the text of `kerasseg evaluate --help`.
SUMMARY = "score a model on labelled images, write STEM.json and STEM.md"
HELP = """\
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

--report DIR also writes DIR/index.html, one self-contained page (no scripts, no network):
the tables, a per-class IoU bar chart, the confusion matrix as a heat map and the 3 worst
and 3 best images by per-image mean IoU, with their ground truth, prediction and error map
(wrong pixels red, ignored grey); for instance models the COCO table and the worst and best
images by per-image V_rand with their true and predicted instances drawn.
"""

INSTANCE_FLAGS = (
    "--coco",
    "--max-detections",
    "--min-score",
    "--class-agnostic",
    "--instance-masks",
)


def add_parser(commands, parents):
    """Add `kerasseg evaluate` to the subcommands `commands`."""
    parser = add_subcommand(commands, "evaluate", parents, SUMMARY, HELP)
    add_model_flags(parser, path_ok=True)
    add_data_flags(parser, training=False)
    parser.add_argument(
        "--coco", metavar="FILE", help="COCO instances JSON (instance models; images: --images)"
    )
    parser.add_argument(
        "--subset", default="validation", help="--dataset split (default validation)"
    )
    parser.add_argument(
        "--instance-metrics",
        action="store_true",
        help="V_rand and V_info of class 1 (semantic models; instance models always report them)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="for sigmoid models, and the mask probability threshold of instance models",
    )
    parser.add_argument(
        "--watershed-seeds",
        type=float,
        metavar="T",
        help="with --instance-metrics, sigmoid models: cells from a seeded watershed "
        "(seeds p > T, every pixel assigned to a cell) instead of the regions of p > --threshold",
    )
    _add_instance_flags(parser)
    add_tta_flag(parser)
    parser.add_argument("--batch-size", type=positive_int, default=1, help="default 1")
    parser.add_argument("--out", required=True, metavar="STEM", help="report path stem")
    parser.add_argument(
        "--report",
        metavar="DIR",
        help="also write DIR/index.html: tables, charts, the worst and best images",
    )


def _add_instance_flags(parser):
    parser.add_argument(
        "--max-detections",
        type=positive_int,
        metavar="N",
        help="instance models: detections per image COCO AP counts (default 300)",
    )
    parser.add_argument(
        "--min-score",
        type=float,
        metavar="S",
        help="instance models: only detections scoring >= S enter the V_rand instance map "
        "(AP counts all; default: all)",
    )
    parser.add_argument(
        "--class-agnostic",
        action="store_true",
        help="instance models: score every detection and instance as one class",
    )
    parser.add_argument(
        "--instance-masks",
        choices=("components", "labels"),
        help="instance models with --images/--masks: 4-connected regions of each class "
        "(components, default) or one instance per mask value (labels)",
    )


def run(args):
    """Run `kerasseg evaluate` with the parsed command-line `args`."""
    _check_report_folder(args.report)
    if args.coco is not None:
        _check_coco_flags(args)
    else:
        check_data_flags(args, training=False)
    task = _registry_task(args.model)
    if task not in (None, "instance"):
        _refuse_instance_flags(args)
    # Registry instance models: check the data flags before building the model.
    data = _instance_data(args) if task == "instance" else None
    model, logits = load_for_inference(args.model, parse_model_arguments(args.model_arg))
    if task == "instance" or task_of(model) == "instance":
        if args.watershed_seeds is not None or args.tta is not None:
            raise UsageError("--watershed-seeds and --tta are for semantic models.")
        _evaluate_instance_model(args, model, data or _instance_data(args))
        return
    _refuse_instance_flags(args)
    model = with_tta(model, args.tta)
    outputs = output_channels(model)
    check_watershed_flags(
        args.watershed_seeds, outputs, args.instance_metrics, "--instance-metrics"
    )
    dataset, num_classes, names, ignore = _semantic_data(args, outputs)
    check_classes(outputs, num_classes, "the data")
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
        progress=True,
        keep_examples=REPORT_EXAMPLES if args.report else 0,
    )
    _report(results, args, _label_palette(args, num_classes))


def _report(results, args, palette=None):
    """Write STEM.json and STEM.md (and the --report page) and print the report (with its
    warnings, if any)."""
    title = f"{args.model} on {args.dataset or args.coco or args.images}"
    json_path, markdown_path = write_report(results, args.out, title=title)
    print(format_markdown(results, title=title))
    print(f"wrote {json_path} and {markdown_path}")
    if args.report:
        page = Path(args.report) / "index.html"
        replaced = " (replacing the page that was there)" if page.exists() else ""
        write_report_page(results, args.report, title=title, palette=palette)
        print(f"wrote {page}{replaced}")


def _check_report_folder(path):
    """A UsageError, before any work, when --report names an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise UsageError(
            f"--report {path!r} is a file; give a folder for the page (DIR/index.html)."
        )


def _label_palette(args, num_classes):
    """The colours of the --report page's label maps: the --dataset's, else the model's
    (a preset's data set, a run folder's record, or generic colours)."""
    if not args.report:
        return None
    if args.dataset is not None:
        return dataset_palette(args.dataset)
    return model_palette(args.model, num_classes)


def _registry_task(spec):
    """The registry task of a --model name; None for a model file or an unknown name."""
    if is_model_file(spec):
        return None
    try:
        return get_entry(spec).task
    except ValueError:
        return None  # `load_for_inference` reports it


def _refuse_instance_flags(args):
    used = given_flags(args, INSTANCE_FLAGS)
    if used:
        raise UsageError(
            f"{', '.join(used)} only apply to instance models (Mask R-CNN); --model "
            f"{args.model} is a semantic model."
        )


def _check_coco_flags(args):
    used = given_flags(
        args, ("--dataset", "--data-root", "--masks", "--class-map", "--ignore-label")
    )
    if used:
        raise UsageError(
            f"--coco FILE takes its images from --images DIR (or the paths in the file); "
            f"{', '.join(used)} do not apply."
        )
    if not Path(args.coco).is_file():
        raise UsageError(f"--coco {args.coco!r} is not a file.")
    folder(args.images, "--images")


# ----------------------------------------------------------------------------- semantic


def _semantic_data(args, outputs):
    """(dataset, num_classes, class names or None, ignore label) of a semantic model's
    evaluation, from the data flags; mask folders are surveyed for their classes."""
    options = dict(batch_size=args.batch_size)
    if args.dataset is not None:
        info = datasets.DATASETS[args.dataset]
        subsets = info.subset_choices()
        if args.subset not in subsets:
            raise UsageError(
                f"--subset for {args.dataset} must be one of {subsets}; got {args.subset!r}."
            )
        ignore = info.ignore_label if args.ignore_label is None else args.ignore_label
        if ignore is not None:
            options["ignore_label"] = ignore
        try:
            dataset, _ = datasets.read(args.dataset, args.data_root, subset=args.subset, **options)
        except (ValueError, OSError) as error:
            raise UsageError(str(error)) from None
        return dataset, info.num_classes, list(info.class_names), ignore
    # TensorFlow-only (tf.data): loaded when the data are read.
    from kerasseg.data import segmentation_dataset

    class_map = parse_class_map(args.class_map)
    pairs = paired(args.images, args.masks)
    ignore = args.ignore_label
    num_classes, class_map = mask_classes(
        "evaluate", pairs, 2 if outputs == 1 else outputs, class_map, ignore
    )
    dataset = segmentation_dataset(
        pairs, class_map=class_map, ignore_label=ignore, num_classes=num_classes, **options
    )
    return dataset, num_classes, None, ignore


# ----------------------------------------------------------------------------- instance


def _evaluate_instance_model(args, model, data):
    data, names = data
    if args.min_score is not None:
        check_unit_interval(args.min_score, "--min-score")
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
            progress=True,
            keep_examples=REPORT_EXAMPLES if args.report else 0,
        )
    except ImportError as error:
        raise UsageError(str(error)) from None
    except (ValueError, KeyError) as error:
        raise UsageError(f"the data: {error}") from None
    _report(results, args)


def _instance_data(args):
    """(iterable of (image, targets), {class id: name} or None) for an instance model."""
    check_unit_interval(args.threshold, "--threshold")
    if args.coco is not None:
        return _coco_instances(args)
    if args.dataset is not None:
        return _dataset_instances(args)
    return _folder_instances(args)


def _coco_instances(args):
    # TensorFlow-only (tf.data): loaded when the data are read.
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


def _dataset_instances(args):
    if args.dataset != "isbi2012":
        raise UsageError(
            f"--dataset {args.dataset} has no instance labels; instance models are "
            "evaluated on --dataset isbi2012, --images/--masks or --coco FILE."
        )
    if args.instance_masks is not None:
        raise UsageError("--instance-masks only applies with --images/--masks.")
    subsets = datasets.ISBI2012.labelled_subsets
    if args.subset not in subsets:
        raise UsageError(
            f"--subset for isbi2012 instances must be one of {subsets}; got {args.subset!r}."
        )
    try:
        dataset, info = datasets.isbi2012_instances(args.data_root, subset=args.subset)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None
    return dataset, {1: info.class_names[1]}


def _folder_instances(args):
    # TensorFlow-only (tf.data): loaded when the data are read.
    from kerasseg.data import segmentation_dataset

    mode = args.instance_masks or "components"
    class_map = parse_class_map(args.class_map)
    if mode == "labels" and class_map is not None:
        raise UsageError("--instance-masks labels reads instance ids as stored; drop --class-map.")
    pairs = paired(args.images, args.masks)
    ignore = args.ignore_label
    dataset = segmentation_dataset(pairs, class_map=class_map, ignore_label=ignore, batch_size=1)

    def folder_pairs():
        for images, masks in dataset:
            yield images[0], _instance_targets(masks[0, ..., 0].numpy(), mode, ignore)

    return folder_pairs(), None


def _instance_targets(mask, mode, ignore):
    """Instance targets (numpy) of one (H, W) int mask: per-class 4-connected regions, or
    one instance per distinct non-zero value (`mode` "labels", class 1)."""
    # TensorFlow-only (the data package): loaded when the data are read.
    from kerasseg.data import instances_from_binary_mask, instances_from_label_image

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
