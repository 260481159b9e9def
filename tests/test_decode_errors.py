"""A PNG or JPEG damaged inside (end marker intact) is reported with its file name.

The completeness checks (`png_is_complete`, `jpeg_is_complete`) pass on such files, so the
failure comes from TensorFlow's decoder, whose own message ("Invalid PNG data, size N")
names no file. Each case here asserts the name of the damaged file is in the error.
"""

import io
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasseg import cli
from kerasseg.data import load_pair, read_image, segmentation_dataset
from kerasseg.data.decode import error_text, jpeg_is_complete, png_is_complete

SIZE = 32
DAMAGED = "cannot decode {kind} {path}: the file is damaged"


def _noise(seed, channels=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (SIZE, SIZE, channels), dtype=np.uint8).squeeze()


def _encoded(array, kind):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, kind, **({"quality": 90} if kind == "JPEG" else {}))
    return bytearray(buffer.getvalue())


def _damaged_png():
    """A valid PNG with 8 bytes flipped in the middle of its IDAT data (CRC now wrong)."""
    data = _encoded(_noise(1), "PNG")
    start = data.index(b"IDAT") + 4
    middle = start + int.from_bytes(data[start - 8 : start - 4], "big") // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    return bytes(data)


def _damaged_jpeg():
    """A valid JPEG with a Huffman-table marker written into the middle of its scan data.

    (Bytes of the scan merely flipped are not enough: libjpeg warns "Corrupt JPEG data" and
    returns a garbled image without failing, which no decoder error can report.)
    """
    data = _encoded(_noise(2), "JPEG")
    scan = data.index(b"\xff\xda")
    middle = (scan + len(data)) // 2
    data[middle : middle + 2] = b"\xff\xc4"
    return bytes(data)


@pytest.fixture
def files(tmp_path):
    """Paths of good and damaged files: {"png", "jpeg", "bad_png", "bad_jpeg", "mask"}."""
    paths = {
        "png": tmp_path / "good.png",
        "jpeg": tmp_path / "good.jpg",
        "mask": tmp_path / "mask.png",
        "bad_png": tmp_path / "damaged.png",
        "bad_jpeg": tmp_path / "damaged.jpg",
    }
    Image.fromarray(_noise(3)).save(paths["png"])
    Image.fromarray(_noise(4)).save(paths["jpeg"], quality=95)
    Image.fromarray((_noise(5, 1) > 127).astype(np.uint8)).save(paths["mask"])
    paths["bad_png"].write_bytes(_damaged_png())
    paths["bad_jpeg"].write_bytes(_damaged_jpeg())
    # The damage reproduces the problem: the completeness checks pass, and TensorFlow's
    # decoders fail with a message that names no file.
    for key, complete, decoder in (
        ("bad_png", png_is_complete, tf.io.decode_png),
        ("bad_jpeg", jpeg_is_complete, tf.io.decode_jpeg),
    ):
        contents = tf.io.read_file(str(paths[key]))
        assert bool(complete(contents)), key
        with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid (PNG|JPEG) data"):
            decoder(contents)
    return {key: str(path) for key, path in paths.items()}


def _kind(key):
    return "JPEG" if "jpeg" in key else "PNG"


@pytest.mark.parametrize("key", ["bad_png", "bad_jpeg"])
def test_read_image_names_the_damaged_file(files, key):
    path = files[key]
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        read_image(path)
    assert error_text(raised.value).startswith(DAMAGED.format(kind=_kind(key), path=path))


@pytest.mark.parametrize("key", ["bad_png", "bad_jpeg"])
def test_read_image_in_a_graph_names_the_damaged_file(files, key):
    path = files[key]
    dataset = tf.data.Dataset.from_tensor_slices([files["png"], path]).map(read_image)
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        list(dataset)
    assert error_text(raised.value).startswith(DAMAGED.format(kind=_kind(key), path=path))


def test_load_pair_names_the_damaged_mask(files):
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        load_pair(files["png"], files["bad_png"])
    assert error_text(raised.value).startswith(DAMAGED.format(kind="PNG", path=files["bad_png"]))


@pytest.mark.parametrize("key", ["bad_png", "bad_jpeg"])
def test_segmentation_dataset_names_the_damaged_image(files, key):
    # Good files still come out as Pillow reads them (PNG exactly; JPEG decoders may differ
    # by IDCT rounding), then the damaged one is named.
    good = [(files["png"], files["mask"]), (files["jpeg"], files["mask"])]
    for (path, _), (image, _) in zip(good, segmentation_dataset(good, batch_size=1), strict=True):
        difference = np.abs(image[0].numpy() - np.asarray(Image.open(path), np.float32))
        assert difference.max() <= (0 if path.endswith(".png") else 2), path
    pairs = [*good, (files[key], files["mask"])]
    dataset = segmentation_dataset(pairs, batch_size=1, class_map={0: 0, 1: 1}, num_classes=2)
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        list(dataset)
    assert error_text(raised.value).startswith(DAMAGED.format(kind=_kind(key), path=files[key]))


def test_segmentation_dataset_names_the_damaged_mask(files):
    dataset = segmentation_dataset([(files["png"], files["bad_png"])], batch_size=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(files["bad_png"])):
        list(dataset)


def test_cli_evaluate_names_the_damaged_image(files, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(_noise(6)).save(images / "a.png")
    (images / "b.png").write_bytes(_damaged_png())
    for name in ("a", "b"):
        Image.fromarray((_noise(7, 1) > 127).astype(np.uint8)).save(masks / f"{name}.png")
    argv = ["evaluate", "--model", "unet", "--model-arg", "base_filters=4"]
    argv += ["--model-arg", "depth=2", "--images", str(images), "--masks", str(masks)]
    assert cli.main([*argv, "--out", str(tmp_path / "report")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    damaged = DAMAGED.format(kind="PNG", path=images / "b.png")
    assert lines[-1].startswith(f"kerasseg evaluate: error: {damaged}"), lines
    assert "Traceback" not in "\n".join(lines)
