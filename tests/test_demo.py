import json

import numpy as np
from PIL import Image

from kerasseg import samples
from kerasseg.demo import foreground_iou, overlay, run_demo


def test_demo_writes_overlays_and_scores(tmp_path):
    results = run_demo(tmp_path)
    assert {(r["model"], r["sample"]) for r in results} >= {
        ("otsu", "nuclei"),
        ("otsu", "membranes"),
        ("otsu", "shapes"),
    }
    for r in results:
        image = np.asarray(Image.open(r["overlay"]))
        assert image.ndim == 3 and image.shape[-1] == 3
        if r["model"] == "otsu":
            assert r["foreground_iou"] > 0.85  # Otsu separates these samples well
    assert json.loads((tmp_path / "results.json").read_text()) == results


def test_samples_are_deterministic_with_ground_truth():
    for name in samples.SAMPLES:
        image, mask = samples.load_sample(name)
        again, _ = samples.load_sample(name)
        assert image.dtype == np.uint8 and mask.dtype == np.int32
        assert np.array_equal(image, again) and 0.05 < mask.mean() < 0.95


def test_overlay_and_iou():
    image = np.zeros((4, 4), np.uint8)
    labels = np.zeros((4, 4), np.int64)
    labels[:2] = 1
    out = overlay(image, labels)
    assert out.shape == (4, 4, 3) and out[2:].sum() == 0 and out[:2].sum() > 0
    assert foreground_iou(labels, labels) == 1.0
    assert foreground_iou(labels, 1 - labels) == 0.0
