"""The demo: segment the built-in sample images and write overlay PNGs.

Runs every classical model in the registry on the samples and every preset whose weights
are shipped with the package, measures IoU against the samples' known ground truth, and
writes `<out>/<sample>_<model>.png` overlays and `<out>/results.json`. No network.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from kerasseg import registry, samples, weights
from kerasseg.inference.overlay import OVERLAY_COLOURS, overlay

__all__ = [
    "DOWNSAMPLE",
    "NOT_IMAGE_TO_MASK",
    "OVERLAY_COLOURS",
    "foreground_iou",
    "overlay",
    "run_demo",
]


def foreground_iou(predicted, truth):
    """The IoU of the foregrounds (values > 0) of two label maps; 1.0 when both are empty."""
    predicted, truth = predicted > 0, truth > 0
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def _grey(image):
    """A uint8 RGB image as grey with ITU-R BT.601 weights (0.299, 0.587, 0.114)."""
    if image.ndim == 2:
        return image
    return np.round(image @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)


# Mean shift compares every pixel with every seed: it runs on a 4x downsampled sample.
DOWNSAMPLE = {"mean_shift": 4}
# These take seeds or a binary mask rather than an image alone.
NOT_IMAGE_TO_MASK = ("region_growing", "connected_components")


def _demo_models():
    """Names of the classical models and of the presets with shipped weights."""
    names = [
        m["name"]
        for m in registry.list_models(task="classical")
        if m["name"] not in NOT_IMAGE_TO_MASK
    ]
    for summary in registry.list_models():
        if summary["kind"] != "preset" or summary["task"] != "semantic":
            continue
        files = [info["file_name"] for info in summary["weights"].values()]
        if all((weights.packaged_dir() / f).is_file() for f in files):
            names.append(summary["name"])
    return names


def _predict(name, model, image):
    """The label map of `model` (registered as `name`) for a sample; None when the model
    does not take the sample's channels or gives no segmentation."""
    entry = registry.get_entry(name)
    channels = entry.input_channels
    if channels == 1:
        x = _grey(image)[..., None]
    elif image.ndim == 2:
        x = np.repeat(image[..., None], channels, axis=-1)
    else:
        x = image
    if x.shape[-1] != channels:
        return None
    if entry.task == "classical":
        step = DOWNSAMPLE.get(name, 1)
        out = model.predict(x[None, ::step, ::step], verbose=0)
        if isinstance(out, dict):
            keys = [key for key in ("mask", "labels", "edges") if key in out]
            if not keys:  # a filter (e.g. gradient magnitude), not a segmentation
                return None
            out = out[keys[0]]
        labels = np.repeat(np.repeat(out[0, ..., 0], step, axis=0), step, axis=1)
        return labels[: image.shape[0], : image.shape[1]]
    x = registry.preprocessing_layer(name)(x[None].astype("float32"))
    scores = np.asarray(model.predict(x, verbose=0))[0]
    return (scores[..., 0] > 0).astype(np.int32) if scores.shape[-1] == 1 else scores.argmax(-1)


def run_demo(out_dir="kerasseg-demo"):
    """Segment every built-in sample with every demo model.

    Args:
        out_dir: the folder for the overlay PNGs and `results.json` (created if missing).

    Returns:
        A list with one dict per model and sample: "model", "sample", and "foreground_iou"
        (None for multi-class models) and "overlay" (the PNG's path), or "error" when the
        model could not segment the sample.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in _demo_models():
        model = registry.load(name)
        for sample in samples.SAMPLES:
            image, truth = samples.load_sample(sample)
            try:
                predicted = _predict(name, model, image)
            except ValueError as error:  # e.g. a histogram without two modes for "minimum"
                results.append({"model": name, "sample": sample, "error": str(error)})
                continue
            if predicted is None:
                continue
            path = out / f"{sample}_{name}.png"
            Image.fromarray(overlay(image, predicted)).save(path)
            results.append(
                {
                    "model": name,
                    "sample": sample,
                    # Only two-class results are comparable with the samples' masks.
                    "foreground_iou": round(foreground_iou(predicted, truth), 4)
                    if registry.get_entry(name).num_classes == 2
                    else None,
                    "overlay": str(path),
                }
            )
    with open(out / "results.json", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return results
