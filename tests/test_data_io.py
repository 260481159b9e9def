"""kerasseg.data decode, sources and tfrecord, checked against Pillow and tifffile."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kerasseg.data.decode import (
    check_same_size,
    decode_image,
    decode_mask,
    load_pair,
    read_image,
    read_mask,
)
from kerasseg.data.sources import file_pairs, paired_files, pairs_dataset
from kerasseg.data.tfrecord import read_tfrecords, write_tfrecords

CAMVID_STEM = "0001TP_006690"


def pillow(path):
    """Trusted reference: Pillow's array with a channel axis."""
    array = np.asarray(Image.open(path))
    return array[..., None] if array.ndim == 2 else array


def error_message(function, *args, **kwargs):
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        function(*args, **kwargs)
    return info.value.message


def dataset_error_message(function, paths):
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(function)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        list(dataset)
    return info.value.message


def write_png(path, array, **options):
    Image.fromarray(array).save(path, "PNG", **options)
    return str(path)


@pytest.fixture(scope="module")
def isbi(data_dir):
    return data_dir / "isbi2012-membrane" / "train"


@pytest.fixture(scope="module")
def camvid(data_dir):
    return data_dir / "camvid"


# ---------------------------------------------------------------- decode: real files


def test_isbi_png_equals_pillow(isbi):
    for name in ("00.png", "13.png"):
        image = read_image(str(isbi / "image" / name))
        assert image.dtype == tf.uint8 and image.shape == (512, 512, 1)
        np.testing.assert_array_equal(image.numpy(), pillow(isbi / "image" / name))
        label = read_mask(isbi / "label" / name)  # a pathlib.Path works too
        assert label.dtype == tf.int32
        np.testing.assert_array_equal(label.numpy(), pillow(isbi / "label" / name))
        assert set(np.unique(label.numpy())) == {0, 255}


def test_camvid_png_equals_pillow(camvid):
    image_path = camvid / "train" / f"{CAMVID_STEM}.png"
    mask_path = camvid / "trainannot" / f"{CAMVID_STEM}.png"
    image = read_image(str(image_path), channels=3)
    assert image.shape == (360, 480, 3)
    np.testing.assert_array_equal(image.numpy(), pillow(image_path))
    mask = read_mask(str(mask_path))
    np.testing.assert_array_equal(mask.numpy(), pillow(mask_path))
    assert mask.numpy().max() <= 11


def test_dsb_tiff_equals_tifffile_as_uint16(data_dir):
    tifffile = pytest.importorskip("tifffile")
    folder = data_dir / "dsb2018-sample"
    image = read_image(str(folder / "image.tif"), dtype="uint16")
    assert image.dtype == tf.uint16 and image.shape == (512, 512, 1)
    np.testing.assert_array_equal(image.numpy()[..., 0], tifffile.imread(folder / "image.tif"))
    labels = read_mask(str(folder / "labels.tif"))
    reference = tifffile.imread(folder / "labels.tif")
    np.testing.assert_array_equal(labels.numpy()[..., 0], reference)
    assert len(np.unique(labels.numpy())) == len(np.unique(reference)) > 100


def test_16_bit_tiff_as_uint8_is_an_error(data_dir):
    path = str(data_dir / "dsb2018-sample" / "image.tif")
    message = error_message(read_image, path)
    assert path in message and "16-bit" in message and "uint16" in message


def test_8_bit_png_read_as_uint16_is_not_scaled(isbi):
    path = isbi / "image" / "00.png"
    image = read_image(str(path), dtype="uint16")
    assert image.dtype == tf.uint16
    np.testing.assert_array_equal(image.numpy(), pillow(path))
    assert image.numpy().max() <= 255


# ---------------------------------------------------------------- decode: synthetic files


def test_16_bit_png_keeps_values_above_255(tmp_path):
    array = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48, 1) * 20
    assert array.max() > 255
    path = tmp_path / "deep.png"
    path.write_bytes(tf.io.encode_png(tf.constant(array)).numpy())
    np.testing.assert_array_equal(read_image(str(path), dtype="uint16").numpy(), array)
    np.testing.assert_array_equal(read_mask(str(path)).numpy(), array.astype(np.int32))
    message = error_message(read_image, str(path), dtype="uint8")
    assert str(path) in message and "uint16" in message
    # Written by Pillow too (mode I;16), and read back by Pillow.
    pillow_path = tmp_path / "pillow16.png"
    written = Image.fromarray(array[..., 0])
    assert written.mode == "I;16"
    written.save(pillow_path)
    decoded = read_image(str(pillow_path), dtype="uint16").numpy()
    np.testing.assert_array_equal(decoded[..., 0], np.asarray(Image.open(pillow_path)))


def test_1_bit_png_keeps_stored_values(tmp_path):
    bits = np.random.default_rng(0).random((20, 30)) > 0.5
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)  # mode "1": a 1-bit greyscale PNG
    mask = read_mask(str(path)).numpy()[..., 0]
    np.testing.assert_array_equal(mask, bits.astype(np.int32))
    np.testing.assert_array_equal(read_image(str(path)).numpy()[..., 0], bits.astype(np.uint8))


def test_palette_png_mask_gives_indices(tmp_path):
    indices = np.random.default_rng(1).integers(0, 5, (16, 16)).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] * 1)
    path = tmp_path / "palette.png"
    image.save(path)
    np.testing.assert_array_equal(read_mask(str(path)).numpy()[..., 0], indices)
    as_image = read_image(str(path)).numpy()
    np.testing.assert_array_equal(as_image, np.asarray(Image.open(path).convert("RGB")))


def test_jpeg_decodes_like_pillow(tmp_path, camvid):
    rgb = pillow(camvid / "train" / f"{CAMVID_STEM}.png")
    for name, array in (("rgb.jpg", rgb), ("grey.jpg", rgb[..., 1])):
        path = tmp_path / name
        Image.fromarray(array).save(path, "JPEG", quality=90)
        decoded = read_image(str(path)).numpy().astype(int)
        reference = pillow(path).astype(int)
        assert decoded.shape == reference.shape
        assert np.abs(decoded - reference).max() <= 2
        assert read_image(str(path), dtype="uint16").dtype == tf.uint16


def test_compressed_tiffs(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    path = tmp_path / "rgb_deflate.tif"
    Image.fromarray(rgb).save(path, compression="tiff_deflate")
    np.testing.assert_array_equal(read_image(str(path), channels=3).numpy(), rgb)
    grey = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    path = tmp_path / "grey_lzw.tif"
    Image.fromarray(grey).save(path, compression="tiff_lzw")
    np.testing.assert_array_equal(read_image(str(path)).numpy()[..., 0], grey)
    deep = rng.integers(0, 60000, (40, 50), dtype=np.uint16)
    path = tmp_path / "deep_big_endian.tif"
    tifffile.imwrite(path, deep.astype(">u2"), compression="zlib")
    assert path.read_bytes()[:4] == b"MM\x00*"
    np.testing.assert_array_equal(read_image(str(path), dtype="uint16").numpy()[..., 0], deep)
    assert str(path) in error_message(read_image, str(path))


def test_unsupported_tiffs_name_the_file(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((4, 4), np.float32)).save(path)
    message = error_message(read_image, str(path))
    assert str(path) in message and "'F'" in message
    path = tmp_path / "rgb16.tif"  # Pillow would reduce it to 8 bits; refuse instead
    tifffile.imwrite(path, np.full((4, 5, 3), 1000, np.uint16), photometric="rgb")
    assert "(16, 16, 16)" in error_message(read_image, str(path), dtype="uint16")
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 5), np.uint8), photometric="minisblack")
    assert "has 3 pages" in error_message(read_image, str(path))


def test_channel_mismatch_names_the_file(isbi, camvid):
    rgb = str(camvid / "train" / f"{CAMVID_STEM}.png")
    message = error_message(read_image, rgb, channels=1)
    assert rgb in message and "has 3 channels; the model takes 1" in message
    grey = str(isbi / "image" / "00.png")
    assert "has 1 channels; the model takes 3" in error_message(read_image, grey, channels=3)


def test_alpha_is_an_error_unless_asked_for(tmp_path):
    rgba = np.random.default_rng(3).integers(0, 256, (8, 9, 4), dtype=np.uint8)
    path = write_png(tmp_path / "rgba.png", rgba)
    message = error_message(read_image, path)
    assert path in message and "4 channels" in message and "channels=4" in message
    np.testing.assert_array_equal(read_image(path, channels=4).numpy(), rgba)
    la_path = tmp_path / "la.png"
    Image.fromarray(rgba[..., :2], mode="LA").save(la_path)
    assert "2 channels" in error_message(read_image, str(la_path))


def test_truncated_png_names_the_file(tmp_path, isbi):
    contents = (isbi / "image" / "00.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(contents[: len(contents) // 2])
    message = error_message(read_image, str(path))
    assert "truncated or corrupt PNG" in message and str(path) in message
    message = dataset_error_message(read_image, [str(path)])
    assert "truncated or corrupt PNG" in message and "cut.png" in message
    tiny = tmp_path / "tiny.png"
    tiny.write_bytes(contents[:20])
    assert "tiny.png" in error_message(read_image, str(tiny))


def test_truncated_jpeg_names_the_file(tmp_path, isbi):
    full = tmp_path / "full.jpg"
    Image.open(isbi / "image" / "00.png").save(full, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(full.read_bytes()[:-500])
    message = dataset_error_message(read_image, [str(path)])
    assert "truncated or corrupt JPEG" in message and "cut.jpg" in message
    # Bytes after the end marker (some cameras append data) are not truncation.
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(full.read_bytes() + b"trailing")
    np.testing.assert_array_equal(read_image(str(padded)).numpy(), read_image(str(full)).numpy())


def test_unknown_format_names_the_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    message = error_message(read_image, str(path))
    assert str(path) in message and "not a PNG, JPEG or TIFF" in message
    assert "(in-memory bytes)" in error_message(decode_image, tf.constant(b"BM1234567890"))


def test_colour_and_jpeg_masks_are_errors(tmp_path, camvid):
    rgb = str(camvid / "train" / f"{CAMVID_STEM}.png")
    message = error_message(read_mask, rgb)
    assert rgb in message and "3 channels" in message and "palette mapping" in message
    jpeg = tmp_path / "mask.jpg"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(jpeg)
    assert "lossy" in error_message(read_mask, str(jpeg))


def test_argument_errors():
    with pytest.raises(ValueError, match="channels must be"):
        decode_image(tf.constant(b""), channels=5)
    with pytest.raises(ValueError, match="dtype must be 'uint8' or 'uint16'; got 'float32'"):
        decode_image(tf.constant(b""), dtype="float32")
    with pytest.raises(ValueError, match="scalar string tensor"):
        decode_mask(tf.constant([b"a", b"b"]))


def test_static_shapes_in_a_dataset(camvid):
    image = str(camvid / "train" / f"{CAMVID_STEM}.png")
    mask = str(camvid / "trainannot" / f"{CAMVID_STEM}.png")
    dataset = tf.data.Dataset.from_tensor_slices(([image], [mask]))
    dataset = dataset.map(lambda i, m: load_pair(i, m, channels=3))
    assert dataset.element_spec[0].shape.as_list() == [None, None, 3]
    assert dataset.element_spec[1].shape.as_list() == [None, None, 1]
    ((loaded, labels),) = list(dataset)
    assert loaded.dtype == tf.float32 and labels.dtype == tf.int32
    np.testing.assert_array_equal(loaded.numpy(), pillow(image).astype(np.float32))
    np.testing.assert_array_equal(labels.numpy(), pillow(mask))


def test_load_pair_size_mismatch_names_both(tmp_path, isbi):
    image = str(isbi / "image" / "00.png")
    small = write_png(tmp_path / "small.png", np.zeros((100, 120), np.uint8))
    message = error_message(load_pair, image, small)
    assert image in message and small in message
    assert "512x512" in message and "100x120" in message
    dataset = tf.data.Dataset.from_tensor_slices(([image], [small])).map(load_pair)
    with pytest.raises(tf.errors.InvalidArgumentError, match="small.png"):
        list(dataset)

    def decode_bytes(image_bytes, mask_bytes, image_name, mask_name):
        decoded, mask = decode_image(image_bytes), decode_mask(mask_bytes)
        check_same_size(decoded, mask, image_name, mask_name)  # runs without a control dep
        return decoded, mask

    encoded = tf.data.Dataset.from_tensors(
        (tf.io.read_file(image), tf.io.read_file(small), "00.png", "small.png")
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"00.png is 512x512.*small.png"):
        list(encoded.map(decode_bytes))


# ---------------------------------------------------------------- sources


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")
    return folder


def test_paired_files_on_camvid(camvid):
    pairs = paired_files(camvid / "train", camvid / "trainannot")
    assert len(pairs) == 367
    assert pairs == sorted(pairs)
    for image, mask in pairs[:5] + pairs[-5:]:
        assert image.split("/")[-1] == mask.split("/")[-1]
        assert "/train/" in image and "/trainannot/" in mask


def test_paired_files_lists_unmatched_files(tmp_path):
    images = touch(tmp_path / "images", "a.png", "b.jpg", "extra.png", "notes.txt")
    masks = touch(tmp_path / "masks", "a.png", "b.tif", "orphan.png")
    with pytest.raises(ValueError) as info:
        paired_files(images, masks)
    message = str(info.value)
    assert "extra.png" in message and "orphan.png" in message
    assert "1 of 3 images" in message and "1 of 3 masks" in message
    assert "b.jpg" not in message and "b.tif" not in message and "notes.txt" not in message
    (images / "extra.png").unlink()
    (masks / "orphan.png").unlink()
    pairs = paired_files(images, masks)
    assert [(p[0].split("/")[-1], p[1].split("/")[-1]) for p in pairs] == [
        ("a.png", "a.png"),
        ("b.jpg", "b.tif"),
    ]


def test_paired_files_many_unmatched_are_shortened(tmp_path):
    images = touch(tmp_path / "images", *[f"{i:02d}.png" for i in range(25)])
    masks = touch(tmp_path / "masks", "00.png")
    with pytest.raises(ValueError, match=r"24 of 25 images.*and 14 more"):
        paired_files(images, masks)


def test_paired_files_duplicate_stems(tmp_path):
    images = touch(tmp_path / "images", "a.png")
    masks = touch(tmp_path / "masks", "a.png", "a.tif")
    with pytest.raises(ValueError, match=r"a\.png and a\.tif"):
        paired_files(images, masks)


def test_paired_files_folder_errors(tmp_path):
    masks = touch(tmp_path / "masks", "a.png")
    with pytest.raises(FileNotFoundError, match="images_dir"):
        paired_files(tmp_path / "missing", masks)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="images_dir.*it is empty"):
        paired_files(empty, masks)
    other = touch(tmp_path / "other", "a.bmp")
    with pytest.raises(ValueError, match="masks_dir.*a.bmp"):
        paired_files(masks, other)


def test_paired_files_with_mask_stem_suffix(tmp_path):
    folder = touch(tmp_path / "both", "cell1.tif", "cell1_mask.png", "cell2.tif", "cell2_mask.png")
    pairs = paired_files(folder, folder, mask_stem_suffix="_mask")
    assert [p[1].split("/")[-1] for p in pairs] == ["cell1_mask.png", "cell2_mask.png"]
    with pytest.raises(ValueError, match="mask_stem_suffix"):
        paired_files(folder, folder)


def test_file_pairs_and_dataset(tmp_path):
    folder = touch(tmp_path, "b.png", "a.png", "b_m.png", "a_m.png")
    images, masks = [folder / "b.png", folder / "a.png"], [folder / "b_m.png", folder / "a_m.png"]
    pairs = file_pairs(images, masks)
    assert pairs == [(str(images[0]), str(masks[0])), (str(images[1]), str(masks[1]))]
    got = [(i.numpy().decode(), m.numpy().decode()) for i, m in pairs_dataset(pairs)]
    assert got == pairs
    with pytest.raises(ValueError, match="images has 2 paths but masks has 1"):
        file_pairs(images, masks[:1])
    with pytest.raises(FileNotFoundError, match="gone.png"):
        file_pairs(images, [masks[0], folder / "gone.png"])


# ---------------------------------------------------------------- tfrecord


def test_tfrecord_round_trip(tmp_path, isbi):
    pairs = paired_files(isbi / "image", isbi / "label")[:7]
    paths = write_tfrecords(pairs, str(tmp_path / "isbi"), num_shards=3)
    assert [p.split("/")[-1] for p in paths] == [
        f"isbi-0000{i}-of-00003.tfrecord" for i in range(3)
    ]
    expected = {
        (open(i, "rb").read(), open(m, "rb").read(), i.split("/")[-1], m.split("/")[-1])
        for i, m in pairs
    }
    pattern = str(tmp_path / "isbi-*.tfrecord")
    for options in ({}, {"shuffle_files": True, "seed": 1, "deterministic": False}):
        records = [tuple(t.numpy() for t in r) for r in read_tfrecords(pattern, **options)]
        assert len(records) == 7
        assert {(a, b, c.decode(), d.decode()) for a, b, c, d in records} == expected
    ordered = [r[2].numpy().decode() for r in read_tfrecords(pattern, cycle_length=1)]
    assert ordered == ["00.png", "03.png", "06.png", "01.png", "04.png", "02.png", "05.png"]
    image_bytes, mask_bytes, name, _ = next(iter(read_tfrecords(pattern)))
    np.testing.assert_array_equal(
        decode_image(image_bytes, path=name).numpy(), pillow(isbi / "image" / "00.png")
    )
    np.testing.assert_array_equal(
        decode_mask(mask_bytes).numpy(), pillow(isbi / "label" / "00.png")
    )


def test_tfrecord_errors(tmp_path, isbi):
    pairs = paired_files(isbi / "image", isbi / "label")[:2]
    with pytest.raises(ValueError, match="num_shards must be between 1 and .* \\(2\\); got 3"):
        write_tfrecords(pairs, str(tmp_path / "x"), num_shards=3)
    with pytest.raises(ValueError, match="got 0"):
        write_tfrecords(pairs, str(tmp_path / "x"), num_shards=0)
    with pytest.raises(FileNotFoundError, match="no files match pattern"):
        read_tfrecords(str(tmp_path / "nothing-*.tfrecord"))
    write_tfrecords(pairs, str(tmp_path / "x"), num_shards=2)
    write_tfrecords(pairs, str(tmp_path / "x"), num_shards=2)  # overwriting is fine
    with pytest.raises(FileExistsError, match="x-00000-of-00002"):
        write_tfrecords(pairs, str(tmp_path / "x"), num_shards=1)
    text = tmp_path / "a.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="a.txt.*not a PNG"):
        write_tfrecords([(str(text), pairs[0][1])], str(tmp_path / "y"), num_shards=1)
