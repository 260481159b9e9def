import base64
import io
import json
import logging
import warnings
from argparse import Namespace
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from kerasseg import registry, samples
from kerasseg.cli import demo as demo_cli
from kerasseg.demo import SHEET_HEIGHT, foreground_iou, run_demo
from kerasseg.inference.overlay import overlay


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One demo run: (output folder, results, the Python warnings and the warnings logged
    by TensorFlow, e.g. its retracing warning, that it emitted)."""
    out = tmp_path_factory.mktemp("demo")
    handler, logger = _Records(), logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = run_demo(out)
    finally:
        logger.removeHandler(handler)
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    return out, results, messages + [r.getMessage() for r in handler.records]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.text, self.open = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag not in ("meta", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing"

    def handle_data(self, data):
        self.text.append(data)


def test_demo_runs_each_preset_on_its_domain_without_warnings(demo):
    _, results, caught = demo
    assert caught == []
    pairs = {(r["model"], r["sample"]) for r in results}
    assert {("otsu", "nuclei"), ("otsu", "membranes"), ("otsu", "shapes")} <= pairs
    assert ("unet_camvid", "street") in pairs and ("unet_isbi2012", "membranes") in pairs
    presets = {r["model"] for r in results if registry.get_entry(r["model"]).task != "classical"}
    for name in presets:  # no preset on a sample of another domain
        expected = {"unet_camvid": {"street"}}.get(name, {"membranes"})
        assert {r["sample"] for r in results if r["model"] == name} == expected
    assert not any(r["sample"] == "street" and r["model"] not in presets for r in results)
    isbi = next(r for r in results if r["model"] == "unet_isbi2012")
    assert isbi["kind"] == "binary" and isbi["score"] > 0.8  # a 1-channel binary model
    for r in results:
        if r["model"] == "otsu":
            assert r["score"] > 0.85  # Otsu separates these samples well


def test_page_shows_every_result_with_its_score(demo):
    out, results, _ = demo
    assert json.loads((out / "results.json").read_text()) == results
    parser = _Page()
    parser.feed((out / "index.html").read_text(encoding="utf-8"))
    parser.close()
    assert parser.open == []
    text = " ".join(parser.text)
    assert len(parser.images) >= len(results)
    for attrs in parser.images:
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix) and attrs.get("alt")
        picture = Image.open(io.BytesIO(base64.b64decode(attrs["src"][len(prefix) :])))
        assert picture.format == "PNG" and picture.size[0] > 0
        picture.load()
    for r in results:
        assert r["model"] in text and r["sample"] in text
        if r.get("score") is not None:
            assert f"{r['score']:.3f}" in text
        for name, iou in r.get("class_iou", {}).items():
            assert f"{name} {iou:.3f}" in text
    assert "(multi-class)" not in text


def _runs(flags):
    """(start, length) of the runs of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts, ends - starts, strict=True))


def test_contact_sheet_has_one_cell_per_result(demo):
    out, results, _ = demo
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"))
    assert (out / "contact_sheet.png").stat().st_size < 4_000_000
    ink = (sheet != 255).any(axis=-1)
    # Rows of the sheet: bands of ink separated by at least 15 white pixel rows.
    bands = _runs(ink.any(axis=1))
    pairs = zip(bands[1:], bands[:-1], strict=True)
    tops = [bands[0][0]] + [top for (top, _), (p, n) in pairs if top - p - n >= 15]
    order = [s for s in samples.SAMPLES if any(r["sample"] == s for r in results)]
    assert len(tops) == len(order)
    for top, sample in zip(tops, order, strict=True):
        cells = _runs(ink[top : top + SHEET_HEIGHT].any(axis=0))
        expected = sum(r["sample"] == sample for r in results)
        assert len(cells) == 2 + expected, sample  # the image, its mask, one per result


def test_scores_match_scikit_learn(demo):
    from skimage.filters import threshold_otsu
    from sklearn.metrics import jaccard_score

    _, results, _ = demo
    score = {(r["model"], r["sample"]): r for r in results}
    image, truth = samples.load_sample("nuclei")
    reference = jaccard_score(truth.ravel() > 0, (image > threshold_otsu(image)).ravel())
    assert score["otsu", "nuclei"]["score"] == pytest.approx(reference, abs=0.005)

    image, truth = samples.load_sample("street")
    model = registry.load("unet_camvid")
    x = registry.preprocessing_layer("unet_camvid")(image[None].astype("float32"))
    predicted = model.predict(x, verbose=0)[0].argmax(-1)
    present = np.unique(truth)
    ious = jaccard_score(truth.ravel(), predicted.ravel(), labels=present, average=None)
    record = score["unet_camvid", "street"]
    assert list(record["class_iou"].values()) == pytest.approx(list(ious), abs=0.001)
    assert record["score"] == pytest.approx(ious.mean(), abs=0.001)
    assert len(record["class_iou"]) == 7 and "sky" in record["class_iou"]


def test_cli_prints_one_line_per_model_and_the_page(demo, monkeypatch, capsys):
    out, results, _ = demo
    monkeypatch.setattr(demo_cli, "run_demo", lambda _: results)
    demo_cli.run(Namespace(out=str(out)))
    lines = capsys.readouterr().out.splitlines()
    models = list(dict.fromkeys(r["model"] for r in results))
    assert [line.split()[0] for line in lines[: len(models)]] == models
    isbi = next(line for line in lines if line.startswith("unet_isbi2012"))
    assert "(multi-class)" not in isbi and "membranes IoU 0.9" in isbi
    assert any(line.startswith("page: ") and line.endswith("index.html") for line in lines)


def test_samples_are_deterministic_with_ground_truth():
    for name in samples.SAMPLES:
        image, mask = samples.load_sample(name)
        again, _ = samples.load_sample(name)
        assert image.dtype == np.uint8 and mask.dtype == np.int32
        assert np.array_equal(image, again) and 0.05 < (mask > 0).mean() < 0.95


def test_overlay_and_iou():
    image = np.zeros((4, 4), np.uint8)
    labels = np.zeros((4, 4), np.int64)
    labels[:2] = 1
    out = overlay(image, labels)
    assert out.shape == (4, 4, 3) and out[2:].sum() == 0 and out[:2].sum() > 0
    assert foreground_iou(labels, labels) == 1.0
    assert foreground_iou(labels, 1 - labels) == 0.0
