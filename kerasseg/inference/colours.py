"""The palette of a model: its preset's data set, its training run's data set, or generic.

    palette = kerasseg.inference.colours.model_palette("unet_camvid")    # SegNet colours
    palette = kerasseg.inference.colours.model_palette(model)            # a keras.Model
    palette = kerasseg.inference.colours.model_palette("runs/x/best.keras")

Data sets carry their class names and colours in `kerasseg.datasets.DatasetInfo`; presets
name their data set in their weights' `dataset`; `kerasseg train --dataset` records it in
the run folder's `run.json`. Anything else gets `kerasseg.palette.generic_palette`.
"""

import json
import os
import re
from pathlib import Path

from kerasseg import datasets, registry
from kerasseg.ops.checks import check_int
from kerasseg.palette import Palette, generic_palette

__all__ = [
    "OVERLAY_UNCOLOURED",
    "dataset_palette",
    "known_palette",
    "label_classes",
    "model_palette",
    "preset_dataset",
]

# Classes that overlays leave as the image, by data set. ISBI 2012 stores cell interior as
# white (255) and membrane as black (0); blended over an EM slice, white and black only
# brighten and darken the image, so the overlay would be hard to tell from the image
# itself. The overlay therefore leaves interior as the image and paints membrane in its
# palette colour (see `dataset_palette`).
OVERLAY_UNCOLOURED = {"isbi2012": (1,)}
# Overlay colour of classes whose data-set colour is black or white on a grey image.
_ISBI_MEMBRANE = (230, 25, 75)


def dataset_palette(dataset, *, ignore=False):
    """The palette of a data set of `kerasseg.datasets` (its class names and colours).

    ISBI 2012's membrane is shown in red (230, 25, 75) and its interior is left
    uncoloured: the data set's own black and white would only darken and brighten a grey
    slice. CamVid keeps SegNet's colours.

    Args:
        dataset: a `kerasseg.datasets.DatasetInfo` or a data set name ("camvid", "isbi2012").
        ignore: also name the ignore label (CamVid's void, 11): black, left uncoloured.

    Returns:
        A `kerasseg.palette.Palette`.

    Raises:
        ValueError: an unknown data set name.
    """
    info = dataset
    if not isinstance(info, datasets.DatasetInfo):
        if dataset not in datasets.DATASETS:
            raise ValueError(
                f"dataset_palette: `dataset` must be a DatasetInfo or one of "
                f"{tuple(datasets.DATASETS)}; got {dataset!r}."
            )
        info = datasets.DATASETS[dataset]
    names, colours = list(info.class_names), [tuple(c) for c in info.colours]
    if info.name == "isbi2012":
        colours[0] = _ISBI_MEMBRANE
    uncoloured = list(OVERLAY_UNCOLOURED.get(info.name, ()))
    if ignore and info.ignore_label is not None and info.ignore_label >= len(names):
        for value in range(len(names), info.ignore_label + 1):
            last = value == info.ignore_label
            names.append("void (ignored)" if last else f"unused {value}")
            colours.append((0, 0, 0))
            uncoloured.append(value)
    return Palette(names, colours, uncoloured=uncoloured)


def label_classes(model):
    """The number of label ids a model's label maps hold (2 for a 1-channel sigmoid model).

    Args:
        model: a `keras.Model` (its first output's channels), a registry name (its entry's
            `num_classes`) or a model file saved in a `kerasseg train` run folder (its
            `run.json`).

    Raises:
        ValueError: the count cannot be told; pass `num_classes`.
    """
    channels = None
    if hasattr(model, "outputs") and model.outputs:
        channels = model.outputs[0].shape[-1]
    elif isinstance(model, str) and _entry(model) is not None:
        channels = _entry(model).num_classes
    elif isinstance(model, str | os.PathLike):
        channels = (_run_record(model) or {}).get("data", {}).get("num_classes")
    if channels is None:
        raise ValueError(
            f"label_classes: cannot tell how many classes {model!r} predicts; pass `num_classes`."
        )
    return 2 if channels == 1 else int(channels)


def model_palette(model, num_classes=None):
    """The palette to show a model's label maps with.

    Looked up in this order:
    1. a registry preset (by name, or a `keras.Model` loaded by `kerasseg.load` with a
       preset's weights): its own class names and colours (`ModelEntry.class_names`), else
       the data set named by its weights (`ModelEntry.summary()["dataset"]`);
    2. a model file in a `kerasseg train` run folder: the `--dataset` its `run.json`
       records, else the class names it records (with generic colours);
    3. a data set name of `kerasseg.datasets`.
    A palette found with another class count than `num_classes` (a preset fine-tuned to
    other classes) is not used. Otherwise `kerasseg.palette.generic_palette(num_classes)`,
    with class 0 as uncoloured background for 2 classes (binary models).

    Args:
        model: a `keras.Model`, a registry name, a model file path, a data set name or a
            `kerasseg.palette.Palette` (returned as it is when its length fits).
        num_classes: the label ids the maps hold; None asks `label_classes(model)`.

    Returns:
        A `kerasseg.palette.Palette` of `num_classes` entries.

    Raises:
        ValueError: more than 256 classes and no palette found (generic colours stop at
            256); build a `kerasseg.palette.Palette` of your own.
    """
    if num_classes is None:
        num_classes = label_classes(model)
    num_classes = check_int(num_classes, "num_classes", 1, context="model_palette")
    found = known_palette(model)
    if found is not None and len(found) == num_classes:
        return found
    return generic_palette(num_classes, background=num_classes == 2)


def known_palette(model):
    """The palette `model_palette` finds for `model` by steps 1..3, or None (no generic
    fallback, no class-count check)."""
    if isinstance(model, Palette):
        return model
    if isinstance(model, str) and _entry(model) is not None:
        return _preset_palette(_entry(model))
    if isinstance(model, str) and model in datasets.DATASETS:
        return dataset_palette(model)
    if isinstance(model, str | os.PathLike):
        return _run_palette(_run_record(model))
    entry = _preset_of(model)
    return None if entry is None else _preset_palette(entry)


def _entry(name):
    try:
        return registry.get_entry(name)
    except (TypeError, ValueError):
        return None


def preset_dataset(summary):
    """The `kerasseg.datasets.DatasetInfo` a registry entry's weights were trained on, or None.

    Args:
        summary: a `ModelEntry.summary()` dict; its "dataset" names the data set in its
            leading word ("camvid (11 classes, void ignored)" -> "camvid").
    """
    match = re.match(r"[a-z0-9]+", summary["dataset"].lower())
    return None if match is None else datasets.DATASETS.get(match.group())


def _preset_palette(entry):
    """The palette of a registry entry: its own class names and colours (presets of public
    checkpoints), else its weights' data set's, else None."""
    if entry.class_names:
        colours = entry.colours or generic_palette(len(entry.class_names)).colours
        background = entry.class_names[0] in ("__background__", "background")
        return Palette(entry.class_names, colours, uncoloured=(0,) if background else ())
    info = preset_dataset(entry.summary())
    return None if info is None else dataset_palette(info)


def _preset_of(model):
    """The registry preset whose shipped weights a `keras.Model` (or a model it wraps as a
    layer, as `kerasseg predict` wraps presets in their input normalisation) loaded."""
    candidates = [model, *getattr(model, "layers", ())]
    sources = [getattr(m, "weights_report", None) for m in candidates]
    names = {Path(r.source).name for r in sources if r is not None and not r.reinitialized}
    for summary in registry.list_models():
        files = {info["file_name"] for info in summary["weights"].values()}
        if summary["kind"] == "preset" and files & names:
            return registry.get_entry(summary["name"])
    return None


def _run_record(path):
    """The `run.json` beside a model file of a `kerasseg train` run folder, or None."""
    record = Path(path).parent / "run.json"
    if not Path(path).is_file() or not record.is_file():
        return None
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not a run record kerasseg can read: the generic palette


def _run_palette(run):
    if not isinstance(run, dict):
        return None
    dataset = (run.get("cli") or {}).get("dataset")
    if dataset in datasets.DATASETS:
        return dataset_palette(dataset)
    names = (run.get("data") or {}).get("class_names")
    if isinstance(names, list) and names:
        generic = generic_palette(len(names), background=len(names) == 2)
        return Palette(names, generic.colours, uncoloured=generic.uncoloured)
    return None
