"""The demo: segment the built-in samples, score every result, and show them on one page.

Every classical model of the registry runs on the samples of its kind of image (nuclei,
membranes, shapes); every preset whose weights ship with the package runs on the sample of
its own domain (a drawn street scene for CamVid, EM-like membranes for ISBI 2012). Each
result is scored against the sample's known mask and written to `<out>/results.json`,
`<out>/index.html` (a static page with every overlay embedded) and
`<out>/contact_sheet.png` (one grid: a row per sample, a column per method). No network.
"""

import json
from pathlib import Path

import numpy as np

from kerasseg import files, html_page, registry, samples, weights
from kerasseg.inference import (
    dataset_palette,
    detections_from_outputs,
    instance_map,
    instance_overlay,
    legend_entries,
    model_palette,
    output_is_logits,
    overlay,
)
from kerasseg.inference.colours import label_classes, preset_dataset
from kerasseg.inference.overlay import legend_strip
from kerasseg.palette import Palette, generic_palette

__all__ = [
    "CLASSICAL_SAMPLES",
    "DOWNSAMPLE",
    "EDGE_METHODS",
    "NOT_IMAGE_TO_MASK",
    "PRESET_SAMPLES",
    "class_iou",
    "demo_plan",
    "foreground_iou",
    "run_demo",
    "sample_palette",
    "short_score",
]

# The samples classical methods run on: one object class on a background each. The street
# scene has seven classes, which a foreground/background method cannot name.
CLASSICAL_SAMPLES = ("nuclei", "membranes", "shapes")
# The sample of each preset's domain, by the data set its weights were trained on.
PRESET_SAMPLES = {"camvid": ("street",), "isbi2012": ("membranes",)}
# Mean shift compares every pixel with every seed: it runs on a 4x downsampled sample.
DOWNSAMPLE = {"mean_shift": 4}
# These take seeds or a binary mask rather than an image alone.
NOT_IMAGE_TO_MASK = ("region_growing", "connected_components")
# Binary methods whose class 1 is a boundary, not the sample's foreground: generic colours.
EDGE_METHODS = ("canny",)
# Height in pixels of the pictures on the contact sheet, and of its caption text.
SHEET_HEIGHT, SHEET_TEXT = 160, 13


def foreground_iou(predicted, truth):
    """The IoU of the foregrounds (values > 0) of two label maps; 1.0 when both are empty."""
    predicted, truth = np.asarray(predicted) > 0, np.asarray(truth) > 0
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def class_iou(predicted, truth, class_id):
    """The IoU of one class id in two label maps; 1.0 when neither holds it."""
    predicted, truth = np.asarray(predicted) == class_id, np.asarray(truth) == class_id
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def sample_palette(sample):
    """The palette of a built-in sample's mask: CamVid for "street", ISBI 2012 for
    "membranes", a named background and object class for the others."""
    if sample == "street":
        return dataset_palette("camvid")
    if sample == "membranes":
        return dataset_palette("isbi2012")
    generic = generic_palette(2, background=True)
    name = {"nuclei": "nucleus", "shapes": "object"}.get(sample, "object")
    return Palette(["background", name], generic.colours, uncoloured=generic.uncoloured)


def _grey(image):
    """A uint8 RGB image as grey with ITU-R BT.601 weights (0.299, 0.587, 0.114)."""
    if image.ndim == 2:
        return image
    return np.round(image @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)


def _shipped_presets():
    """Registry summaries of the presets whose weights are all in the package."""
    presets = []
    for summary in registry.list_models():
        if summary["kind"] != "preset" or summary["task"] not in ("semantic", "instance"):
            continue
        names = [info["file_name"] for info in summary["weights"].values()]
        if all((weights.packaged_dir() / name).is_file() for name in names):
            presets.append(summary)
    return presets


def demo_plan():
    """`(model name, sample names)` of every demo model: the classical models that map an
    image to a mask on `CLASSICAL_SAMPLES`, then the shipped presets on the sample of their
    data set's domain (`PRESET_SAMPLES`); presets of other domains are left out."""
    plan = [
        (m["name"], CLASSICAL_SAMPLES)
        for m in registry.list_models(task="classical")
        if m["name"] not in NOT_IMAGE_TO_MASK
    ]
    for summary in _shipped_presets():
        info = preset_dataset(summary)
        if info is not None and info.name in PRESET_SAMPLES:
            plan.append((summary["name"], PRESET_SAMPLES[info.name]))
    return plan


def _numpy(outputs):
    """Model outputs (a tensor or a dict of tensors) as numpy arrays."""
    import keras  # the demo's only use of Keras itself: tensors to numpy

    return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)


def _classical_labels(name, model, image):
    """The label map of a classical model, or None when it gives no segmentation."""
    x = _grey(image)[..., None] if registry.get_entry(name).input_channels == 1 else image
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    step = DOWNSAMPLE.get(name, 1)
    # One eager call per model: `model.predict` would trace a function for each of the
    # demo's ~20 models, which TensorFlow reports as excessive retracing.
    out = _numpy(model(x[None, ::step, ::step], training=False))
    if isinstance(out, dict):
        keys = [key for key in ("mask", "labels", "edges") if key in out]
        if not keys:  # a filter (e.g. gradient magnitude), not a segmentation
            return None
        out = out[keys[0]]
    labels = np.repeat(np.repeat(out[0, ..., 0], step, axis=0), step, axis=1)
    return labels[: image.shape[0], : image.shape[1]].astype(np.int32)


def _semantic_labels(name, model, image):
    """The label map of a semantic preset: argmax, or class 1 where a 1-channel output
    exceeds 0.5 (0 for logits)."""
    channels = registry.get_entry(name).input_channels
    x = _grey(image)[..., None] if channels == 1 else image
    if x.shape[-1] != channels:
        x = np.repeat(x[..., :1], channels, axis=-1)
    x = registry.preprocessing_layer(name)(x[None].astype("float32"))
    scores = _numpy(model(x, training=False))[0]
    if scores.shape[-1] > 1:
        return scores.argmax(-1).astype(np.int32)
    threshold = 0.0 if output_is_logits(model) else 0.5
    return (scores[..., 0] > threshold).astype(np.int32)


def _instance_labels(model, image):
    """The instance map (0 = background, 1..n by decreasing score) of a Mask R-CNN preset:
    detections scoring >= 0.5, masks thresholded at 0.5 (torchvision's defaults)."""
    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
    inputs = {
        "images": rgb[None].astype("float32"),
        "image_sizes": np.array([image.shape[:2]], "int32"),
    }
    outputs = _numpy(model(inputs, training=False))
    detections = detections_from_outputs(outputs, image.shape[:2], mask_threshold=0.5)[0]
    painted = instance_map(detections["masks"], detections["scores"], min_score=0.5)
    _, labels = np.unique(painted, return_inverse=True)
    labels = labels.reshape(painted.shape).astype(np.int32)
    return labels if painted.min() == 0 else labels + 1


def _kind(name):
    """ "instance", "binary", "multi-class" or "clusters" (classical models whose labels
    are unnamed clusters)."""
    entry = registry.get_entry(name)
    if entry.task == "instance":
        return "instance"
    if entry.task == "classical":
        return "binary" if entry.num_classes == 2 else "clusters"
    return "binary" if label_classes(name) <= 2 else "multi-class"


def _score(record, labels, truth, palette):
    """Add the score of a label map to a result `record` (in place)."""
    kind = record["kind"]
    if kind == "clusters":
        record.update(score=None, score_name="no score: cluster ids name no class")
    elif kind == "multi-class":
        present = [int(c) for c in np.unique(truth)]
        ious = {palette.names[c]: round(class_iou(labels, truth, c), 3) for c in present}
        record.update(
            score=round(float(np.mean(list(ious.values()))), 3),
            score_name=f"mean IoU over the {len(present)} classes in the mask",
            class_iou=ious,
        )
    else:
        record.update(score=round(foreground_iou(labels, truth), 3), score_name="foreground IoU")
        if kind == "instance":
            record["instances"] = int(labels.max())
    return record


def _segment(name, model, sample, image, truth):
    """`(record, overlay picture, labels, palette)` of one model on one sample; the picture
    and labels are None when the model failed or gives no segmentation."""
    record = {"model": name, "sample": sample, "kind": _kind(name)}
    try:
        if record["kind"] == "instance":
            labels = _instance_labels(model, image)
        elif record["kind"] == "multi-class" or registry.get_entry(name).task != "classical":
            labels = _semantic_labels(name, model, image)
        else:
            labels = _classical_labels(name, model, image)
        if labels is None:
            return None, None, None, None
        if record["kind"] == "instance":
            return (
                _score(record, labels, truth, None),
                instance_overlay(image, labels),
                labels,
                None,
            )
        classes = max(label_classes(name) if record["kind"] != "clusters" else 1, labels.max() + 1)
        palette = model_palette(name, int(classes))
        if record["kind"] == "binary" and name not in EDGE_METHODS and classes == 2:
            # Foreground is class 1 of the sample's mask: show it as the ground truth is shown.
            palette = sample_palette(sample)
    except ValueError as error:  # e.g. a histogram without two modes for "minimum"
        record["error"] = str(error)
        return record, None, None, None
    picture = overlay(image, labels, palette=palette)
    return _score(record, labels, truth, sample_palette(sample)), picture, labels, palette


def _caption(record):
    """One line: the score of a result, or why it has none."""
    if "error" in record:
        return f"failed: {record['error']}"
    if record["score"] is None:
        return record["score_name"]
    text = f"{record['score_name']} {record['score']:.3f}"
    if "instances" in record:
        text += f", {record['instances']} cells"
    return text


def short_score(record):
    """A short score of a result record ("IoU 0.954", "mean IoU 0.577", "no score",
    "failed") for the contact sheet, the summary table and `kerasseg demo`'s lines."""
    if "error" in record:
        return "failed"
    if record["score"] is None:
        return "no score"
    name = "mean IoU" if record["kind"] == "multi-class" else "IoU"
    return f"{name} {record['score']:.3f}"


def _thumbnail(picture, labels=None, palette=None, height=SHEET_HEIGHT):
    """A picture scaled to `height` rows, with the legend of `labels` below it when a
    palette is given."""
    from PIL import Image  # Pillow: resampling

    width = max(1, round(picture.shape[1] * height / picture.shape[0]))
    small = np.asarray(Image.fromarray(picture).resize((width, height), Image.LANCZOS))
    if palette is None:
        return small
    strip = legend_strip(legend_entries(labels, palette), width, size=11)
    wide = max(width, strip.shape[1])
    parts = [
        np.pad(p, ((0, 0), (0, wide - p.shape[1]), (0, 0)), constant_values=255)
        for p in (small, strip)
    ]
    return np.concatenate(parts, axis=0)


def _contact_sheet(rows):
    """One picture: per row, the cells `(picture, [text lines])` side by side, each with
    its lines below it; rows and cells separated by white space."""
    from PIL import Image, ImageDraw, ImageFont  # Pillow: composing and text

    font, gap, line = ImageFont.load_default(size=SHEET_TEXT), 10, SHEET_TEXT + 4
    layout, y = [], gap
    for cells in rows:
        widths = [
            max(p.shape[1], *(int(np.ceil(font.getlength(t))) for t in texts)) for p, texts in cells
        ]
        height = max(p.shape[0] + line * len(texts) for p, texts in cells)
        layout.append((y, widths))
        y += height + 2 * gap
    width = max(sum(w) + gap * (len(w) + 1) for _, w in layout)
    sheet = Image.new("RGB", (width, y), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for cells, (top, widths) in zip(rows, layout, strict=True):
        x = gap
        for (picture, texts), cell_width in zip(cells, widths, strict=True):
            sheet.paste(Image.fromarray(picture), (x, top))
            for number, text in enumerate(texts):
                where = (x, top + picture.shape[0] + 2 + number * line)
                draw.text(where, text, fill=(0, 0, 0), font=font)
            x += cell_width + gap
    return np.asarray(sheet)


def _intro(results):
    models = sorted({r["model"] for r in results})
    return [
        html_page.paragraph(
            "Every method below ran on built-in sample images that kerasseg draws itself "
            "(kerasseg.samples: no downloads), each with a known mask, so every result has "
            f"a score. {len(models)} models, {len(results)} results. Classical methods run "
            "on nuclei, membranes and shapes; each preset runs on the sample of its own "
            "domain: the CamVid preset on a drawn street scene, the ISBI 2012 presets on "
            "EM-like membranes."
        ),
        html_page.paragraph(
            "Scores: foreground IoU (the IoU of the predicted and the true non-zero pixels) "
            "for binary methods and instance models (the union of their cells); for "
            "multi-class presets the mean IoU over the classes present in the sample's mask, "
            "with per-class IoU in the tables below. Clustering methods (k-means, mean "
            "shift, multi-Otsu) give cluster ids that name no class, so they get no score; "
            "edge detectors (Canny) mark boundaries, not regions, so their IoU is low by "
            "design. "
            "The samples are drawings, not photographs or EM slices: a preset trained on "
            "real images scores lower on them than on its data set (see its model card)."
        ),
    ]


def _summary_table(results):
    sample_names = [s for s in samples.SAMPLES if any(r["sample"] == s for r in results)]
    cells = {(r["model"], r["sample"]): short_score(r) for r in results}
    models = list(dict.fromkeys(r["model"] for r in results))
    rows = [[m] + [cells.get((m, s), "") for s in sample_names] for m in models]
    caption = "Scores by model and sample (blank: not run, the sample is of another domain)"
    return html_page.table(["model"] + sample_names, rows, caption=caption)


def _sample_section(sample, image, truth, entries):
    """Blocks of one sample: its image and mask, each result's overlay with its score, and
    the per-class IoU of multi-class results."""
    parts = [html_page.heading(f"Sample: {sample}")]
    if any(registry.get_entry(r["model"]).task == "classical" for r, *_ in entries):
        parts.append(
            html_page.paragraph(
                "Classical methods are shown at half size, in the colours of the ground truth "
                "(their foreground is the mask's class 1); edge detectors mark edges in red and "
                "clustering methods colour every cluster."
            )
        )
    parts.append(html_page.image(image, f"{sample} image", caption=f"{sample}: the image"))
    mask = overlay(image, truth, palette=sample_palette(sample), legend=True)
    parts.append(html_page.image(mask, f"{sample} ground truth", caption="ground truth"))
    for record, picture, labels, palette in entries:
        if picture is None:
            parts.append(html_page.paragraph(f"{record['model']}: {_caption(record)}"))
            continue
        if registry.get_entry(record["model"]).task == "classical":
            # Half size: ~40 noisy full-size pictures would make a page of about 12 MB.
            picture = _thumbnail(picture, height=image.shape[0] // 2)
            text = f"{record['model']}: {short_score(record)}"
        else:
            if palette is not None:
                picture = overlay(image, labels, palette=palette, legend=True)
            text = f"{record['model']}: {_caption(record)}"
        parts.append(html_page.image(picture, f"{record['model']} on {sample}", caption=text))
    for record, *_ in entries:
        if "class_iou" in record:
            rows = [[name, f"{iou:.3f}"] for name, iou in record["class_iou"].items()]
            caption = f"{record['model']} on {sample}: IoU per class present in the mask"
            parts.append(html_page.table(["class", "IoU"], rows, caption=caption))
    return parts


def run_demo(out_dir="kerasseg-demo"):
    """Segment the built-in samples with every demo model (`demo_plan`) and show the results.

    Writes `results.json` (the list returned), `index.html` (a static page: a score table,
    and per sample its image, ground truth and every overlay with its score) and
    `contact_sheet.png` (a row per sample: image, ground truth, then one cell per result
    with the method's name and score).

    Args:
        out_dir: the output folder (created if missing; files of earlier runs replaced).

    Returns:
        A list with one dict per model and sample: "model", "sample", "kind" ("binary",
        "multi-class", "clusters" or "instance"), "score" (None for clusters),
        "score_name", and "class_iou" (multi-class), "instances" (cells found), or "error"
        when the model could not segment the sample.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {name: samples.load_sample(name) for name in samples.SAMPLES}
    entries = {name: [] for name in samples.SAMPLES}
    for name, sample_names in demo_plan():
        model = registry.load(name)
        for sample in sample_names:
            image, truth = data[sample]
            entry = _segment(name, model, sample, image, truth)
            if entry[0] is not None:
                entries[sample].append(entry)
    results = [entry[0] for name in samples.SAMPLES for entry in entries[name]]
    _write_outputs(out, results, data, entries)
    return results


def _sheet_rows(data, entries):
    rows = []
    for sample, results in entries.items():
        if not results:
            continue
        image, truth = data[sample]
        picture = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
        truth_picture = overlay(image, truth, palette=sample_palette(sample))
        cells = [
            (_thumbnail(picture), [sample, "image"]),
            (_thumbnail(truth_picture, truth, sample_palette(sample)), ["ground truth", ""]),
        ]
        for record, picture, labels, palette in results:
            if picture is None:
                picture = np.full((image.shape[0], image.shape[1], 3), 255, np.uint8)
            named = palette is not None and registry.get_entry(record["model"]).task != "classical"
            cell = _thumbnail(picture, labels, palette) if named else _thumbnail(picture)
            cells.append((cell, [record["model"], short_score(record)]))
        rows.append(cells)
    return rows


def _write_outputs(out, results, data, entries):
    """Write results.json, contact_sheet.png and index.html into the folder `out`."""
    from PIL import Image  # Pillow: the PNG encoder

    with files.atomic_path(out / "results.json") as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    with files.atomic_path(out / "contact_sheet.png") as temporary:
        Image.fromarray(_contact_sheet(_sheet_rows(data, entries))).save(temporary, format="PNG")
    parts = _intro(results) + [_summary_table(results)]
    for sample, sample_entries in entries.items():
        if sample_entries:
            parts += _sample_section(sample, *data[sample], sample_entries)
    parts.append(
        html_page.paragraph(
            "The same results side by side: contact_sheet.png; the numbers: results.json "
            "(both in this folder)."
        )
    )
    html_page.write_page(out / "index.html", "kerasseg demo", parts)
