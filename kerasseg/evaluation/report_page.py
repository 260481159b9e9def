"""The evaluation report page: one static `index.html` that shows what the numbers mean.

    results = kerasseg.evaluation.evaluate(model, dataset, num_classes=11, keep_examples=3)
    kerasseg.evaluation.write_report_page(results, "runs/camvid_val", palette=palette)

The page (`kerasseg.html_page`: inline CSS, pictures embedded as PNG, no scripts, no network)
holds, for a semantic model: the overall and per-class tables, a per-class IoU bar chart,
the confusion matrix as a heat map (rows: true class, normalised per row) and, when the
results kept examples, the worst and the best images by per-image mean IoU, each as its
ground truth and its prediction over the image (with a legend) and an error map. For an
instance model (`evaluate_instances`): the COCO box / mask AP table, the instance-map scores
and the worst and best images by per-image V_rand with their true and predicted instances
drawn over them. Charts are drawn by matplotlib on its Agg canvas (no `pyplot`).
"""

from pathlib import Path

import numpy as np

from kerasseg import html_page
from kerasseg.evaluation.report import INSTANCE_METRICS, cell
from kerasseg.inference.overlay import instance_overlay, legend_strip, overlay
from kerasseg.palette import LegendEntry, Palette, generic_palette

__all__ = [
    "ERROR_COLOUR",
    "IGNORED_COLOUR",
    "MAX_ANNOTATED_CLASSES",
    "REPORT_FILE",
    "confusion_figure",
    "error_map",
    "iou_figure",
    "report_parts",
    "write_report_page",
]

REPORT_FILE = "index.html"
# Error maps: wrong pixels in pure red, ignored pixels in flat mid grey, correct pixels as
# the image faded towards white (`_FADE` of its contrast kept), so that errors stand out
# while the picture stays recognisable.
ERROR_COLOUR = (255, 0, 0)
IGNORED_COLOUR = (128, 128, 128)
_FADE = 0.25
_CORRECT_SWATCH = (224, 224, 224)
# The heat map writes its percentages and counts in the cells up to this many classes.
MAX_ANNOTATED_CLASSES = 20
# Display width (CSS pixels) of each example picture: three fit side by side on the page.
_EXAMPLE_WIDTH = 360
_LABELS = {
    "pixel_accuracy": "pixel accuracy",
    "mean_iou": "mean IoU",
    "mean_dice": "mean Dice",
    "v_rand": "V_rand",
    "v_info": "V_info",
}


def write_report_page(results, folder, *, title="Evaluation", palette=None):
    """Write the report page of `evaluate` or `evaluate_instances` results to
    `folder/index.html` (the folder is made if needed; the page is written atomically).

    Args:
        results: the results of `kerasseg.evaluation.evaluate` or `evaluate_instances`,
            with "examples" (``keep_examples=k``) for the worst and best images.
        folder: the folder of the page.
        title: the page's title.
        palette: a `kerasseg.palette.Palette` naming at least the model's classes (e.g.
            `kerasseg.inference.colours.model_palette(model)`), or None for generic colours
            and the results' class names. Semantic results only.

    Returns:
        The path of `index.html`.

    Raises:
        ValueError: `folder` is an existing file, or a palette with fewer colours than
            classes.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"write_report_page: `folder` {str(folder)!r} is a file; give a folder for "
            f"{REPORT_FILE}."
        )
    parts = report_parts(results, palette=palette)
    folder.mkdir(parents=True, exist_ok=True)
    return html_page.write_page(folder / REPORT_FILE, title, parts)


def report_parts(results, *, palette=None):
    """The HTML blocks of the report page (see `write_report_page`)."""
    if results.get("task") == "instance":
        return _instance_parts(results)
    return _semantic_parts(results, palette)


# ----------------------------------------------------------------------------- semantic


def _semantic_parts(results, palette):
    names = list(results["per_class"])
    examples = results.get("examples")
    ignore = None if examples is None else examples.get("ignore_label")
    palette = _label_palette(palette, names, ignore)
    overall = results["overall"]
    parts = [
        html_page.paragraph(
            f"{results['images']} images. Scores count every pixel of the data set together "
            "(one confusion matrix); means are over the classes present in the ground truth "
            "or the prediction."
        ),
        html_page.heading("Overall"),
        html_page.table(
            ["metric", "value"],
            [[_LABELS.get(key, key), cell(value)] for key, value in overall.items()]
            + [["images", results["images"]]],
        ),
        html_page.heading("Per class"),
        _class_table(results),
        html_page.heading("Per-class IoU"),
        html_page.figure(
            iou_figure(results["per_class"], overall.get("mean_iou")),
            "bar chart of the IoU of each class",
        ),
        html_page.heading("Confusion matrix"),
        html_page.figure(
            confusion_figure(results["confusion_matrix"], names),
            "confusion matrix heat map, rows true class, columns predicted class",
            caption="Each row is a true class, normalised to its own pixels: a cell is the "
            "share of that class's pixels predicted as the column's class"
            + (
                " (percentage and pixel count written in it)."
                if len(names) <= MAX_ANNOTATED_CLASSES
                else "."
            )
            + " Grey rows: no true pixels of the class.",
        ),
    ]
    if examples is not None:
        parts += _semantic_examples(examples, palette, results["images"])
    return parts


def _class_table(results):
    rows = [
        [name, cell(scores["iou"]), cell(scores["dice"]), scores["pixels"]]
        for name, scores in results["per_class"].items()
    ]
    overall = results["overall"]
    total = sum(scores["pixels"] for scores in results["per_class"].values())
    rows.append(["mean", cell(overall["mean_iou"]), cell(overall["mean_dice"]), total])
    return html_page.table(["class", "IoU", "Dice", "true pixels"], rows)


def _label_palette(palette, names, ignore_label):
    """The palette of the label maps: `palette` (or generic colours named as the results
    name the classes), with an "ignored" entry for an ignore label beyond its ids."""
    if palette is None:
        generic = generic_palette(len(names), background=len(names) == 2)
        palette = Palette(names, generic.colours, uncoloured=generic.uncoloured)
    if not isinstance(palette, Palette) or len(palette) < len(names):
        raise ValueError(
            f"write_report_page: `palette` must be a kerasseg.palette.Palette with at least "
            f"{len(names)} colours (one per class); got {palette!r}."
        )
    if ignore_label is None or ignore_label < len(palette):
        return palette
    extra = range(len(palette), ignore_label + 1)
    return Palette(
        [*palette.names, *("ignored" if i == ignore_label else f"unused {i}" for i in extra)],
        [*palette.colours.tolist(), *([0, 0, 0] for _ in extra)],
        uncoloured=[*palette.uncoloured, *extra],
    )


def _semantic_examples(examples, palette, count):
    label = _LABELS[examples["score"]]
    parts = [
        html_page.heading("Worst and best images"),
        html_page.paragraph(
            f"Images are ranked by their own {label}: the {label} of the image's pixels alone "
            "(ignored pixels left out; mean over the classes present in the image's ground "
            "truth or prediction). Each shows the ground truth and the prediction over the "
            "image, and an error map: wrong pixels red, "
            + ("ignored pixels grey, " if examples.get("ignore_label") is not None else "")
            + "correct pixels the image faded."
        ),
    ]
    for side, title in (("worst", "Worst images"), ("best", "Best images")):
        parts.append(html_page.heading(f"{title} by {label}"))
        parts += _none_left(examples, side)
        for example in examples[side]:
            parts += _semantic_example(example, palette, examples.get("ignore_label"), count)
    return parts


def _none_left(examples, side):
    """A paragraph saying why a side shows no image (nothing when it shows some)."""
    if examples[side]:
        return []
    ranked = sum(scores[examples["score"]] is not None for scores in examples["per_image"])
    if ranked == 0:
        return [html_page.paragraph("No image has a score, so none is ranked.")]
    return [
        html_page.paragraph(
            f"No image left to show: the {ranked} ranked image(s) are all among the worst above."
        )
    ]


def _semantic_example(example, palette, ignore_label, count):
    number = example["index"] + 1
    image, mask, prediction = example["image"], example["mask"], example["prediction"]
    return [
        html_page.heading(
            f"image {number} of {count}: mean IoU {cell(example['mean_iou'])}, pixel accuracy "
            f"{cell(example['pixel_accuracy'])}",
            level=3,
        ),
        html_page.image(
            overlay(image, mask, palette=palette, legend=True),
            f"ground truth of image {number} over it",
            caption="ground truth",
            width=_EXAMPLE_WIDTH,
        ),
        html_page.image(
            overlay(image, prediction, palette=palette, legend=True),
            f"prediction of image {number} over it",
            caption="prediction",
            width=_EXAMPLE_WIDTH,
        ),
        html_page.image(
            _with_error_legend(
                error_map(image, mask, prediction, ignore_label), mask, ignore_label
            ),
            f"error map of image {number}",
            caption="errors: red wrong" + (", grey ignored" if ignore_label is not None else ""),
            width=_EXAMPLE_WIDTH,
        ),
    ]


def error_map(image, mask, prediction, ignore_label=None):
    """A picture of where a prediction is wrong.

    Args:
        image: uint8 (H, W) or (H, W, 3) (`kerasseg.inference.display_image`).
        mask: integer (H, W) true class ids.
        prediction: integer (H, W) predicted class ids.
        ignore_label: the true label left out of the scores, or None.

    Returns:
        uint8 (H, W, 3): wrong pixels `ERROR_COLOUR`, ignored pixels `IGNORED_COLOUR`,
        the other (correct) pixels the image in grey faded towards white.

    Raises:
        ValueError: arrays of other types or of different heights and widths.
    """
    image, mask, prediction = np.asarray(image), np.asarray(mask), np.asarray(prediction)
    fits = (
        image.dtype == np.uint8
        and (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3))
        and mask.ndim == 2
        and mask.shape == prediction.shape == image.shape[:2]
        and mask.dtype.kind in "iu"
        and prediction.dtype.kind in "iu"
    )
    if not fits:
        raise ValueError(
            "error_map: `image` must be uint8 (H, W) or (H, W, 3) and `mask` and `prediction` "
            f"integer (H, W) maps of its size; got {image.dtype} {image.shape}, "
            f"{mask.dtype} {mask.shape} and {prediction.dtype} {prediction.shape}."
        )
    grey = image.astype(np.float32) if image.ndim == 2 else image.astype(np.float32).mean(-1)
    faded = np.round(255 - (255 - grey) * _FADE).astype(np.uint8)
    picture = np.repeat(faded[..., None], 3, axis=-1)
    picture[mask != prediction] = ERROR_COLOUR
    if ignore_label is not None:
        picture[mask == ignore_label] = IGNORED_COLOUR
    return picture


def _with_error_legend(picture, mask, ignore_label):
    """The error map above a legend strip: correct, wrong and (if any) ignored."""
    entries = [
        LegendEntry(0, "correct (image, faded)", _CORRECT_SWATCH, True),
        LegendEntry(1, "wrong", ERROR_COLOUR, True),
    ]
    if ignore_label is not None and np.any(mask == ignore_label):
        entries.append(LegendEntry(2, "ignored", IGNORED_COLOUR, True))
    strip = legend_strip(entries, picture.shape[1])
    width = max(picture.shape[1], strip.shape[1])
    parts = [
        np.pad(part, ((0, 0), (0, width - part.shape[1]), (0, 0)), constant_values=255)
        for part in (picture, strip)
    ]
    return np.concatenate(parts, axis=0)


# ----------------------------------------------------------------------------- charts


def _new_figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chart = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(chart)
    return chart


def iou_figure(per_class, mean_iou=None):
    """A horizontal bar chart of the IoU of each class, its value written at the bar's end
    ("n/a" for a class absent from the ground truth and the prediction), and the mean IoU as
    a dashed line.

    Args:
        per_class: {name: {"iou": float or None, ...}} (`evaluate`'s "per_class").
        mean_iou: the mean IoU, or None.

    Returns:
        A `matplotlib.figure.Figure` with an Agg canvas.
    """
    names = list(per_class)
    values = [per_class[name]["iou"] for name in names]
    small = len(names) <= 40
    chart = _new_figure(8.0, min(0.3 * len(names) + 1.4, 60.0))
    axes = chart.add_subplot()
    rows = np.arange(len(names))
    axes.barh(rows, [0.0 if v is None else v for v in values], color="#4878cf", height=0.7)
    for row, value in zip(rows, values, strict=True):
        text = "n/a (absent)" if value is None else f"{value:.4f}"
        axes.text((value or 0.0) + 0.01, row, text, va="center", fontsize=8 if small else 5)
    axes.set_yticks(rows, names, fontsize=9 if small else 5)
    axes.invert_yaxis()  # the first class on top, as in the table
    axes.set_xlim(0.0, 1.15)
    axes.set_xticks(np.linspace(0.0, 1.0, 6))
    axes.set_xlabel("IoU")
    if mean_iou is not None:
        axes.axvline(mean_iou, color="#d62728", linestyle="--", linewidth=1.2)
        axes.set_title(f"dashed line: mean IoU {mean_iou:.4f}", fontsize=10)
    return chart


def confusion_figure(confusion, names):
    """The confusion matrix as a heat map, normalised per row (true class).

    Cells are coloured by the share of the row's pixels (0 white to 1 dark blue; rows
    without pixels grey); up to `MAX_ANNOTATED_CLASSES` classes each cell also shows its
    percentage and pixel count.

    Args:
        confusion: (C, C) pixel counts, rows true, columns predicted.
        names: the C class names.

    Returns:
        A `matplotlib.figure.Figure` with an Agg canvas.

    Raises:
        ValueError: a matrix that is not (C, C) for the C names.
    """
    import matplotlib

    counts = np.asarray(confusion, dtype=np.float64)
    size = len(names)
    if counts.shape != (size, size):
        raise ValueError(
            f"confusion_figure: `confusion` must be ({size}, {size}) for the {size} names; "
            f"got shape {counts.shape}."
        )
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    side = min(max(4.5, 0.65 * size + 2.5), 40.0)
    chart = _new_figure(side + 1.5, side)
    axes = chart.add_subplot()
    colours = matplotlib.colormaps["Blues"].with_extremes(bad="#d9d9d9")
    shown = axes.imshow(np.ma.masked_invalid(shares), cmap=colours, vmin=0.0, vmax=1.0)
    chart.colorbar(shown, ax=axes, shrink=0.8, label="share of the true class's pixels")
    ticks = np.arange(size)
    font = 9 if size <= 12 else 7 if size <= 40 else 4
    axes.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor", fontsize=font)
    axes.set_yticks(ticks, names, fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if size <= MAX_ANNOTATED_CLASSES:
        _annotate_cells(axes, counts, shares, 8 if size <= 12 else 6)
    return chart


def _annotate_cells(axes, counts, shares, font):
    for (row, column), count in np.ndenumerate(counts):
        share = shares[row, column]
        if np.isnan(share):
            text, colour = ("no pixels", "black") if row == column else ("", "black")
        else:
            text = f"{100 * share:.1f}%\n{int(count):,}"
            colour = "white" if share > 0.5 else "black"
        axes.text(column, row, text, ha="center", va="center", fontsize=font, color=colour)


# ----------------------------------------------------------------------------- instance


def _instance_parts(results):
    overall = results["overall"]
    max_detections = results.get("settings", {}).get("max_detections", "max")
    names = {"AR": f"AR@{max_detections}"}
    coco_rows = [
        [
            names.get(metric, metric),
            cell(overall.get(f"box_{metric}")),
            cell(overall.get(f"mask_{metric}")),
        ]
        for metric in INSTANCE_METRICS
    ]
    rows = [["V_rand", cell(overall.get("v_rand"))], ["V_info", cell(overall.get("v_info"))]]
    rows += [
        [key.replace("_", " "), results[key]]
        for key in ("images", "instances", "crowd_instances", "detections")
        if key in results
    ]
    parts = [
        html_page.heading("COCO average precision"),
        html_page.table(["metric", "box", "mask"], coco_rows),
        html_page.paragraph(
            f"COCO AP (IoU 0.50:0.05:0.95) with up to {max_detections} detections per image; "
            "n/a: no ground truth defines the value."
        ),
        html_page.heading("Instance maps"),
        html_page.table(["metric", "value"], rows),
    ]
    parts += [html_page.paragraph(f"Warning: {text}") for text in results.get("warnings", ())]
    if "examples" in results:
        parts += _instance_examples(results["examples"], results["images"])
    return parts


def _instance_examples(examples, count):
    parts = [
        html_page.heading("Worst and best images"),
        html_page.paragraph(
            "Images are ranked by their own V_rand (the instance map of the predicted masks "
            "against the ground-truth instances; images without ground-truth instances are "
            "not ranked). Each instance is drawn in its own colour with its contour."
        ),
    ]
    for side, title in (("worst", "Worst images"), ("best", "Best images")):
        parts.append(html_page.heading(f"{title} by V_rand"))
        parts += _none_left(examples, side)
        for example in examples[side]:
            parts += _instance_example(example, count)
    return parts


def _instance_example(example, count):
    number = example["index"] + 1
    image = example["image"]
    drawn = len(np.unique(example["prediction"][example["prediction"] > 0]))
    return [
        html_page.heading(
            f"image {number} of {count}: V_rand {cell(example['v_rand'])}, V_info "
            f"{cell(example['v_info'])}",
            level=3,
        ),
        html_page.image(
            instance_overlay(image, example["truth"]),
            f"ground-truth instances of image {number}",
            caption=f"ground truth: {example['instances']} instances",
            width=_EXAMPLE_WIDTH,
        ),
        html_page.image(
            instance_overlay(image, example["prediction"]),
            f"predicted instances of image {number}",
            caption=f"prediction: {example['detections']} detections, {drawn} in the map",
            width=_EXAMPLE_WIDTH,
        ),
    ]
