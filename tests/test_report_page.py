"""The evaluation report page (`kerasseg evaluate --report DIR`), opened in headless Chromium.

The browser tests read the page back twice: the DOM after loading (`--dump-dom`: tables,
headings, embedded PNGs) and a screenshot, whose pixels must show the heat map's colours
(computed here from the confusion matrix with matplotlib's colour map) and the error maps'
red. They skip without Chromium, except where the environment variable CI is set (`.ci/run`
installs Debian's `chromium` package), where they fail instead.
"""

import base64
import html.parser
import io
import json
import os
import shutil
import subprocess

import keras
import numpy as np
import pytest
from PIL import Image

import kerasseg
from kerasseg import cli
from kerasseg.evaluation import confusion_figure, error_map, evaluate, write_report
from kerasseg.evaluation.report_page import ERROR_COLOUR, IGNORED_COLOUR

PNG_PREFIX = "data:image/png;base64,"
# Messages Chromium logs (--enable-logging=stderr) for a page that failed to load part of itself.
BROWSER_ERRORS = ("Uncaught", "Failed to load", "Not allowed to load", "net::ERR_")


def _chromium():
    path = shutil.which("chromium")
    if path is None:
        message = "headless Chromium (Debian package `chromium`) is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, and CI is set: .ci/run installs it; install it there.")
        pytest.skip(message)
    return path


def _browse(page, tmp_path, *flags):
    """Run headless Chromium on `page` with `flags`; its stdout, after checking its log."""
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *flags,
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    problems = [line for line in done.stderr.splitlines() if any(e in line for e in BROWSER_ERRORS)]
    assert not problems, "\n".join(problems)
    return done.stdout


def _screenshot(page, tmp_path, height):
    shot = tmp_path / "screenshot.png"
    _browse(page, tmp_path, f"--screenshot={shot}", f"--window-size=1200,{height}")
    return np.asarray(Image.open(shot).convert("RGB"))


class _Dom(html.parser.HTMLParser):
    """Tables (rows of cell texts), headings by level and <img> sources of a DOM dump."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.headings, self.images = [], {1: [], 2: [], 3: []}, []
        self._text = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th", "h1", "h2", "h3"):
            self._text = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._text).strip())
        elif tag in ("h1", "h2", "h3"):
            self.headings[int(tag[1])].append("".join(self._text).strip())
        if tag in ("td", "th", "h1", "h2", "h3"):
            self._text = None


def _decoded(sources):
    """Every <img> source must be an embedded PNG; the pictures, decoded with Pillow."""
    assert all(source.startswith(PNG_PREFIX) for source in sources)
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(s[len(PNG_PREFIX) :])))) for s in sources
    ]


def _pixels_near(screenshot, colour, tolerance=2):
    return int(np.all(np.abs(screenshot.astype(int) - colour) <= tolerance, axis=-1).sum())


def _rgb255(colour):
    return np.round(np.asarray(colour[:3]) * 255).astype(int)


# ----------------------------------------------------------------------------- semantic


def _sklearn_image_scores(data_dir):
    """Per-image mean IoU (scikit-learn's macro Jaccard) of unet_isbi2012 on the validation
    slices, predicted here apart from `kerasseg evaluate`."""
    from sklearn.metrics import jaccard_score

    model = kerasseg.load("unet_isbi2012")
    dataset, _ = kerasseg.datasets.isbi2012(
        data_dir / "isbi2012-membrane", subset="validation", batch_size=5
    )
    ((images, masks),) = list(dataset)
    predicted = (model.predict(images, verbose=0)[..., 0] > 0.5).astype(int)
    truth = masks.numpy().reshape(predicted.shape)
    return [
        jaccard_score(t.ravel(), p.ravel(), average="macro")
        for t, p in zip(truth, predicted, strict=True)
    ]


def test_semantic_report_page_in_chromium(data_dir, tmp_path, capsys):
    _chromium()
    folder = tmp_path / "page"
    argv = ["evaluate", "--model", "unet_isbi2012", "--dataset", "isbi2012"]
    argv += ["--data-root", str(data_dir / "isbi2012-membrane")]
    assert cli.main([*argv, "--out", str(tmp_path / "val"), "--report", str(folder)]) == 0
    assert f"wrote {folder / 'index.html'}" in capsys.readouterr().out
    assert [p.name for p in folder.iterdir()] == ["index.html"]  # one self-contained file
    results = json.loads((tmp_path / "val.json").read_text())

    dom = _Dom(_browse(folder / "index.html", tmp_path, "--dump-dom"))
    overall, per_class = dom.tables[0], dom.tables[1]
    assert overall[0] == ["metric", "value"]
    shown = {row[0]: float(row[1]) for row in overall[1:]}
    assert shown["images"] == results["images"] == 5
    for key, label in [("pixel_accuracy", "pixel accuracy"), ("mean_iou", "mean IoU")]:
        assert shown[label] == pytest.approx(results["overall"][key], abs=5e-5)
    assert [row[0] for row in per_class[1:]] == ["membrane", "cell interior", "mean"]
    for name, iou, dice, pixels in per_class[1:3]:
        scores = results["per_class"][name]
        assert float(iou) == pytest.approx(scores["iou"], abs=5e-5)
        assert float(dice) == pytest.approx(scores["dice"], abs=5e-5)
        assert int(pixels) == scores["pixels"]

    # 5 images: the 3 worst and the 2 others as the best, each by its own mean IoU, which
    # must order the images as scikit-learn's per-image scores do.
    reference = _sklearn_image_scores(data_dir)
    order = np.argsort(reference)
    expected = [*order[:3], *order[::-1][:2]]
    assert [h.split(":")[0] for h in dom.headings[3]] == [f"image {i + 1} of 5" for i in expected]
    for heading, index in zip(dom.headings[3], expected, strict=True):
        assert float(heading.split("mean IoU ")[1].split(",")[0]) == pytest.approx(
            reference[index], abs=2e-4
        )
    pictures = _decoded(dom.images)
    assert len(pictures) == 2 + 5 * 3  # two charts; truth, prediction and errors per image
    assert all(p.shape[0] > 512 and p.shape[1] == 512 for p in pictures[2:])  # legend below

    screenshot = _screenshot(folder / "index.html", tmp_path, 5200)
    assert (screenshot[:300] < 200).any()  # the title and tables are drawn
    # The heat map's colours follow the row-normalised confusion matrix.
    import matplotlib

    cm = np.asarray(results["confusion_matrix"], float)
    shares = cm / cm.sum(axis=1, keepdims=True)
    for share in (shares[0, 0], shares[0, 1], shares[1, 1]):
        colour = _rgb255(matplotlib.colormaps["Blues"](share))
        assert _pixels_near(screenshot, colour) > 5_000, (share, colour)
    # The error maps are drawn: their red, scaled with whole pixels (image-rendering).
    assert _pixels_near(screenshot, ERROR_COLOUR) > 5 * 2_000
    assert (screenshot[-200:] == 255).all()  # and the page ends within the window


def test_examples_are_the_worst_and_best_by_per_image_mean_iou():
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, (7, 16, 16))
    truth[:, 0] = 3  # the ignore label
    flips = rng.random((7, 16, 16)) < np.linspace(0.05, 0.6, 7)[rng.permutation(7), None, None]
    predicted = np.where(flips, rng.integers(0, 3, truth.shape), np.minimum(truth, 2))
    probabilities = np.eye(3, dtype=np.float32)[predicted]  # the model is the identity
    batches = [(probabilities[i : i + 2], truth[i : i + 2, ..., None]) for i in range(0, 7, 2)]
    results = evaluate(lambda x: x, batches, num_classes=3, ignore_label=3, keep_examples=3)
    valid = truth != 3
    reference = [
        jaccard_score(t[v], p[v], average="macro")
        for t, p, v in zip(truth, predicted, valid, strict=True)
    ]
    examples = results["examples"]
    assert [s["mean_iou"] for s in examples["per_image"]] == pytest.approx(reference, abs=1e-9)
    order = list(np.argsort(reference))
    assert [e["index"] for e in examples["worst"]] == order[:3]
    assert [e["index"] for e in examples["best"]] == order[::-1][:3]
    worst = examples["worst"][0]
    np.testing.assert_array_equal(worst["mask"], truth[order[0]])
    np.testing.assert_array_equal(worst["prediction"], predicted[order[0]])


def test_json_report_keeps_example_scores_not_pictures(tmp_path):
    probabilities = np.eye(2, dtype=np.float32)[np.array([[[0, 1], [1, 1]], [[0, 0], [1, 1]]])]
    masks = np.array([[[0, 1], [0, 1]], [[0, 0], [1, 1]]])[..., None]
    results = evaluate(lambda x: x, [(probabilities, masks)], num_classes=2, keep_examples=1)
    # Image 1 (all right) is the best, image 0 (one pixel of four wrong) the worst.
    assert [e["index"] for e in results["examples"]["worst"]] == [0]
    assert [e["index"] for e in results["examples"]["best"]] == [1]
    assert results["examples"]["per_image"][1] == {"mean_iou": 1.0, "pixel_accuracy": 1.0}
    json_path, _ = write_report(results, tmp_path / "r")
    saved = json.loads(json_path.read_text())
    # IoU 1/2 (class 0) and 2/3 (class 1); 3 of 4 pixels right.
    (worst,) = saved["examples"]["worst"]
    assert set(worst) == {"index", "mean_iou", "pixel_accuracy"}
    assert worst["mean_iou"] == pytest.approx(7 / 12) and worst["pixel_accuracy"] == 0.75
    assert "image" in results["examples"]["worst"][0]  # the results themselves keep them


def test_error_map_colours_and_heat_map_cells():
    image = np.full((2, 3), 100, np.uint8)
    mask = np.array([[0, 1, 2], [1, 1, 9]])
    prediction = np.array([[0, 2, 2], [1, 0, 0]])
    picture = error_map(image, mask, prediction, ignore_label=9)
    faded = (round(255 - (255 - 100) * 0.25),) * 3  # correct: the image at a quarter contrast
    expected = [[faded, ERROR_COLOUR, faded], [faded, ERROR_COLOUR, IGNORED_COLOUR]]
    assert picture.tolist() == [[list(colour) for colour in row] for row in expected]
    with pytest.raises(ValueError, match="error_map: `image` must be uint8"):
        error_map(image.astype(np.float32), mask, prediction)

    chart = confusion_figure([[3, 1], [0, 0]], ["a", "b"])
    axes = chart.axes[0]
    shown = axes.images[0].get_array()
    assert shown[0].tolist() == [0.75, 0.25] and shown.mask[1].all()
    texts = [t.get_text() for t in axes.texts]
    assert texts == ["75.0%\n3", "25.0%\n1", "", "no pixels"]
    with pytest.raises(ValueError, match=r"must be \(2, 2\) for the 2 names"):
        confusion_figure([[1, 2, 3]], ["a", "b"])


def test_report_folder_that_is_a_file_is_refused(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("x")
    argv = ["evaluate", "--model", "unet", "--images", str(tmp_path), "--masks", str(tmp_path)]
    assert cli.main([*argv, "--out", str(tmp_path / "r"), "--report", str(taken)]) == 2
    error = capsys.readouterr().err
    assert f"--report '{taken}' is a file; give a folder for the page" in error
    assert not (tmp_path / "r.json").exists()


# ----------------------------------------------------------------------------- instance


def test_instance_report_page_in_chromium(data_dir, tmp_path, capsys):
    from skimage.measure import label

    _chromium()
    slices = data_dir / "isbi2012-membrane" / "train"
    for kind in ("image", "label"):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "22.png").symlink_to(slices / kind / "22.png")
    folder = tmp_path / "page"
    argv = ["evaluate", "--model", "maskrcnn_resnet18_isbi2012", "--class-map", "0:0,255:1"]
    argv += ["--images", str(tmp_path / "image"), "--masks", str(tmp_path / "label")]
    assert cli.main([*argv, "--out", str(tmp_path / "val"), "--report", str(folder)]) == 0
    capsys.readouterr()
    results = json.loads((tmp_path / "val.json").read_text())

    dom = _Dom(_browse(folder / "index.html", tmp_path, "--dump-dom"))
    coco = dom.tables[0]
    assert coco[0] == ["metric", "box", "mask"] and len(coco) == 8
    for name, box, mask in coco[1:7]:
        assert float(box) == pytest.approx(results["overall"][f"box_{name}"], abs=5e-5)
        assert float(mask) == pytest.approx(results["overall"][f"mask_{name}"], abs=5e-5)
    rows = {row[0]: row[1] for row in dom.tables[1][1:]}
    assert float(rows["V_rand"]) == pytest.approx(results["overall"]["v_rand"], abs=5e-5)
    # One image: shown once, as the worst, with as many true instances as scikit-image
    # finds 4-connected regions of cell interior.
    truth = np.asarray(Image.open(slices / "label" / "22.png")) == 255
    regions = int(label(truth, connectivity=1).max())
    assert dom.headings[3] == [
        f"image 1 of 1: V_rand {results['overall']['v_rand']:.4f}, "
        f"V_info {results['overall']['v_info']:.4f}"
    ]
    pictures = _decoded(dom.images)
    assert len(pictures) == 2 and all(p.shape == (512, 512, 3) for p in pictures)
    page = (folder / "index.html").read_text()
    assert f"ground truth: {regions} instances" in page
    assert f"prediction: {results['detections']} detections" in page
    assert "No image left to show" in page

    screenshot = _screenshot(folder / "index.html", tmp_path, 1600)
    overlays = screenshot[900:1400]  # below the tables: the two instance overlays
    assert (overlays != 255).any(axis=-1).mean() > 0.2


@pytest.fixture(autouse=True)
def _clear_session():
    yield
    keras.backend.clear_session()
