"""Colours that tell the truth: palettes, palette label PNGs, overlays with legends, instance
overlays. References: SegNet's published CamVid colours and names, Trubetskoy's list of 20
distinct colours, scikit-image (CIELAB, find_boundaries) and Pillow / kerasseg.data readers."""

import json

import keras
import numpy as np
import pytest
from PIL import Image
from skimage import color, measure, segmentation

import kerasseg
from kerasseg import cli
from kerasseg.data import read_mask
from kerasseg.inference import predict_file
from kerasseg.inference.colours import dataset_palette, label_classes, model_palette
from kerasseg.inference.overlay import instance_overlay, legend_entries, overlay
from kerasseg.palette import Palette, generic_palette, instance_boundaries, instance_colours

# alexgkendall/SegNet-Tutorial (Scripts/test_segmentation_camvid.py): the CamVid classes and
# their display colours, void (11) black.
SEGNET = {
    "sky": (128, 128, 128),
    "building": (128, 0, 0),
    "pole": (192, 192, 128),
    "road": (128, 64, 128),
    "pavement": (60, 40, 222),
    "tree": (128, 128, 0),
    "sign symbol": (192, 128, 128),
    "fence": (64, 64, 128),
    "car": (64, 0, 128),
    "pedestrian": (64, 64, 0),
    "bicyclist": (0, 128, 192),
}
SEGNET_NAMES = list(SEGNET)
CAR, ROAD, VOID = 8, 3, 11
# sashamaps.net/docs/resources/20-colors/ (2017 list), without white and black.
TRUBETSKOY = (
    "e6194b 3cb44b ffe119 0082c8 f58230 911eb4 46f0f0 f032e6 d2f53c fabebe "
    "008080 e6beff aa6e28 fffac8 800000 aaffc3 808000 ffd7b4 000080 808080"
).split()


def _camvid_pair(data_dir):
    """The first CamVid validation frame and its annotation (ids 0..10, void 11)."""
    frame = sorted((data_dir / "camvid" / "val").glob("*.png"))[0]
    truth = np.asarray(Image.open(data_dir / "camvid" / "valannot" / frame.name)).astype(np.int32)
    return frame, np.asarray(Image.open(frame)), truth


def _one_hot_model(truth, classes):
    """A Keras model whose softmax output is the one-hot of a fixed label map."""
    one_hot = np.eye(classes, dtype="float32")[truth][None]
    inputs = keras.Input((None, None, 3), name="images")
    outputs = keras.layers.Lambda(lambda x: one_hot + 0.0 * x[..., :1], name="output")(inputs)
    return keras.Model(inputs, outputs)


def test_generic_palette_is_distinct_with_class_0_coloured():
    palette = generic_palette(256)
    assert len(palette) == 256 and palette.names[:2] == ("class 0", "class 1")
    expected = [tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in TRUBETSKOY]
    assert [tuple(c) for c in palette.colours[:20]] == expected
    assert len({tuple(c) for c in palette.colours}) == 256
    assert not palette.uncoloured and tuple(palette.colours[0]) != (0, 0, 0)
    lab = color.rgb2lab(palette.colours[None].astype(float) / 255)[0]
    distances = np.linalg.norm(lab[:, None] - lab[None], axis=-1) + np.eye(256) * 1e9
    assert distances.min() > 5  # CIELAB delta E: no two classes look alike
    assert generic_palette(5) == Palette(generic_palette(256).names[:5], expected[:5])
    binary = generic_palette(2, background=True)
    assert binary.uncoloured == {0} and tuple(binary.colours[0]) == (0, 0, 0)
    assert tuple(binary.colours[1]) == expected[0]
    for bad in (0, 257, 2.0):
        with pytest.raises(ValueError, match="`num_classes` must be an integer in"):
            generic_palette(bad)
    with pytest.raises(ValueError, match="integers in 0..255"):
        Palette(["a"], [(0.5, 0, 0)])
    with pytest.raises(ValueError, match="shape \\(2, 3\\)"):
        Palette(["a", "b"], [(0, 0, 0)])


def test_palette_lookup_of_presets_runs_and_generic_models(tmp_path):
    camvid = dataset_palette("camvid")
    assert camvid.names == tuple(SEGNET) and [tuple(c) for c in camvid.colours] == list(
        SEGNET.values()
    )
    assert model_palette("unet_camvid") == camvid == model_palette("camvid", 11)
    isbi = model_palette("unet_isbi2012")
    assert isbi.names == ("membrane", "cell interior") and isbi.uncoloured == {1}
    preset = kerasseg.load("unet_camvid")
    assert model_palette(preset) == camvid and label_classes(preset) == 11
    wrapped = keras.Sequential([keras.Input((None, None, 3)), preset])  # as `predict` wraps it
    assert model_palette(wrapped) == camvid
    tuned = kerasseg.load("unet", num_classes=3, base_filters=4, depth=2)
    assert model_palette(tuned) == generic_palette(3)
    assert model_palette("unet_camvid", 5) == generic_palette(5)  # other class count
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(b"")
    (run / "run.json").write_text(json.dumps({"cli": {"dataset": "camvid"}, "data": {}}))
    assert model_palette(str(run / "best.keras"), 11) == camvid
    record = {"cli": {"dataset": None}, "data": {"class_names": ["a", "b", "c"], "num_classes": 3}}
    (run / "run.json").write_text(json.dumps(record))
    assert label_classes(run / "best.keras") == 3
    assert model_palette(run / "best.keras").names == ("a", "b", "c")
    with pytest.raises(ValueError, match="pass `num_classes`"):
        label_classes(tmp_path / "elsewhere.keras")


def test_camvid_label_png_and_overlay_tell_the_truth(data_dir, tmp_path):
    frame, image, truth = _camvid_pair(data_dir)
    assert {CAR, ROAD, VOID} <= set(np.unique(truth))
    palette = dataset_palette("camvid", ignore=True)
    model = _one_hot_model(truth, 12)
    labels = predict_file(
        model,
        frame,
        tmp_path / "labels.png",
        overlay_path=tmp_path / "overlay.png",
        palette=palette,
        from_logits=False,
    )
    np.testing.assert_array_equal(labels, truth)
    # The label PNG holds the ids and shows SegNet's colours.
    written = Image.open(tmp_path / "labels.png")
    assert written.mode == "P"
    np.testing.assert_array_equal(np.asarray(written), truth)
    np.testing.assert_array_equal(read_mask(str(tmp_path / "labels.png")).numpy()[..., 0], truth)
    shown = np.asarray(written.convert("RGB"))
    for index, colour in enumerate(SEGNET.values()):
        assert (shown[truth == index] == colour).all()
    # The overlay: each class blended with its SegNet colour; void left as the frame.
    picture = np.asarray(Image.open(tmp_path / "overlay.png"))
    height, width = truth.shape
    assert picture.shape[1] == width and picture.shape[0] > height
    for index, colour in ((CAR, SEGNET["car"]), (ROAD, SEGNET["road"])):
        where = truth == index
        expected = np.round(0.55 * image[where] + 0.45 * np.array(colour, np.float32))
        np.testing.assert_allclose(picture[:height, :width][where], expected, atol=1)
    np.testing.assert_array_equal(picture[:height][truth == VOID], image[truth == VOID])
    # The legend names exactly the classes present, and shows their colours.
    names = [SEGNET_NAMES[i] if i < 11 else "void (ignored)" for i in np.unique(truth)]
    entries = legend_entries(truth, palette)
    assert [e.name for e in entries] == names
    assert [e.coloured for e in entries] == [i != VOID for i in np.unique(truth)]
    strip = picture[height:]
    size = 12  # the legend's swatch size for a 480-pixel-wide picture
    for name, colour in SEGNET.items():
        count = np.all(strip == colour, axis=-1).sum()
        if name in names:
            assert count >= (size - 2) ** 2, name
        else:
            assert count < (size - 2) ** 2 // 4, name


def test_car_and_road_differ_with_the_preset(data_dir):
    _, image, truth = _camvid_pair(data_dir)
    palette = model_palette("unet_camvid")
    picture = overlay(image, np.where(truth == VOID, 0, truth), palette=palette)
    car = picture[truth == CAR].astype(int).mean(0)
    road = picture[truth == ROAD].astype(int).mean(0)
    # The old 5-colour cycle painted both yellow; now they differ in hue.
    assert np.abs(car - road).max() > 20
    assert tuple(palette.colours[CAR]) != tuple(palette.colours[ROAD])
    with pytest.raises(ValueError, match="ignore=True"):
        overlay(image, truth, palette=palette)


def test_palette_pngs_round_trip_ids_through_predict_file(tmp_path):
    image = np.zeros((20, 23, 3), np.uint8)
    truth = np.arange(20 * 23).reshape(20, 23) % 7
    predict_file(_one_hot_model(truth, 7), _save(image, tmp_path), tmp_path / "l.png")
    written = Image.open(tmp_path / "l.png")
    assert written.mode == "P"
    np.testing.assert_array_equal(np.asarray(written), truth)
    np.testing.assert_array_equal(read_mask(str(tmp_path / "l.png")).numpy()[..., 0], truth)
    assert written.getpalette()[:21] == [int(v) for v in generic_palette(7).colours.ravel()]
    with pytest.raises(ValueError, match="naming the model's 7 classes"):
        predict_file(
            _one_hot_model(truth, 7),
            tmp_path / "in.png",
            tmp_path / "x.png",
            palette=generic_palette(3),
        )
    many = np.arange(20 * 23).reshape(20, 23) % 300  # more than 256 classes: 16-bit grey
    predict_file(_one_hot_model(many, 300), tmp_path / "in.png", tmp_path / "m.png")
    stored = Image.open(tmp_path / "m.png")
    assert stored.mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(stored), many)


def _save(image, tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(image).save(path)
    return path


def test_instance_overlay_colours_and_contours(data_dir):
    grey = np.asarray(Image.open(data_dir / "isbi2012-membrane" / "train" / "image" / "00.png"))
    label = np.asarray(Image.open(data_dir / "isbi2012-membrane" / "train" / "label" / "00.png"))
    # Cells grown over their membranes until they touch: many adjacent instances.
    cells = segmentation.expand_labels(measure.label(label == 255, connectivity=1), 4)
    reference = segmentation.find_boundaries(cells, mode="inner")
    np.testing.assert_array_equal(instance_boundaries(cells), reference)
    picture = instance_overlay(grey, cells, rows=37)  # bands that split cells
    colours = instance_colours(cells)
    np.testing.assert_array_equal(picture[reference], colours[reference])
    fill = (cells > 0) & ~reference
    blended = np.round(0.55 * grey[fill][:, None] + 0.45 * colours[fill].astype(np.float32))
    np.testing.assert_allclose(picture[fill], blended, atol=1)
    np.testing.assert_array_equal(picture[cells == 0], np.repeat(grey[cells == 0, None], 3, -1))
    # Touching cells: different colours; consecutive ids: far apart in CIELAB.
    pairs = np.concatenate(
        [
            np.stack([cells[1:].ravel(), cells[:-1].ravel()], 1),
            np.stack([cells[:, 1:].ravel(), cells[:, :-1].ravel()], 1),
        ]
    )
    pairs = pairs[(pairs[:, 0] != pairs[:, 1]) & (pairs.min(1) > 0)]
    assert len(pairs) > 100
    table = instance_colours(np.arange(cells.max() + 1))
    assert (table[pairs[:, 0]] != table[pairs[:, 1]]).any(axis=1).all()
    lab = color.rgb2lab(table[1:][None].astype(float) / 255)[0]
    assert np.linalg.norm(lab[1:] - lab[:-1], axis=1).min() > 40


def test_cli_writes_the_instance_overlay(data_dir, tmp_path, capsys):
    stored = np.asarray(Image.open(data_dir / "isbi2012-membrane" / "test" / "00.png"))
    source = tmp_path / "slice.png"
    Image.fromarray(stored[:192, :160]).save(source)
    out = tmp_path / "out"
    argv = ["predict", "--model", "unet_isbi2012", str(source), "--out", str(out)]
    assert cli.main([*argv, "--overlay", "--instances"]) == 0
    labels = np.asarray(Image.open(out / "slice.png"))
    assert Image.open(out / "slice.png").mode == "L" and set(np.unique(labels)) <= {0, 255}
    cells = np.asarray(Image.open(out / "slice_instances.png")).astype(np.int64)
    np.testing.assert_array_equal(cells, measure.label(labels == 255, connectivity=1))
    drawn = np.asarray(Image.open(out / "slice_instances_overlay.png"))
    np.testing.assert_array_equal(drawn, instance_overlay(stored[:192, :160], cells))
    picture = np.asarray(Image.open(out / "slice_overlay.png"))
    red = np.array((230, 25, 75), np.float32)
    membrane = labels == 0
    expected = np.round(0.55 * stored[:192, :160][membrane][:, None] + 0.45 * red)
    np.testing.assert_allclose(picture[:192, :160][membrane], expected, atol=1)
    assert picture.shape[0] > 192  # the legend strip below the slice
    entries = legend_entries((labels == 255).astype(int), model_palette("unet_isbi2012"))
    assert [(e.name, e.coloured) for e in entries] == [
        ("membrane", True),
        ("cell interior", False),
    ]
    capsys.readouterr()
