import hashlib

import keras
import numpy as np
import pytest
import skimage.io
import tensorflow as tf

import kerasseg
from kerasseg import datasets
from kerasseg.data import (
    JointAugment,
    augment_instances,
    instances_from_label_image,
    paired_files,
    read_tfrecords,
    segmentation_dataset,
    write_tfrecords,
)


def _batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def _camvid_pairs(data_dir, count):
    root = data_dir / "camvid"
    return paired_files(root / "train", root / "trainannot")[:count]


def test_camvid_reader_shapes_dtypes_and_labels(data_dir):
    dataset, info = datasets.camvid(data_dir / "camvid", subset="val", batch_size=16)
    batches = _batches(dataset)
    assert sum(len(x) for x, _ in batches) == 101
    images, masks = batches[0]
    assert images.shape == (16, 360, 480, 3) and images.dtype == np.float32
    assert masks.shape == (16, 360, 480, 1) and masks.dtype == np.int32
    # Values as stored: the first frame equals the file read by scikit-image.
    first = sorted((data_dir / "camvid" / "val").glob("*.png"))[0]
    np.testing.assert_array_equal(images[0], skimage.io.imread(first).astype(np.float32))
    labels = np.unique(np.concatenate([m.ravel() for _, m in batches]))
    assert set(labels) <= set(range(12)) and 11 in labels
    assert info.num_classes == 11 and info.ignore_label == 11 and len(info.colours) == 11


def test_isbi_reader_splits_and_class_map(data_dir):
    root = data_dir / "isbi2012-membrane"
    counts, first = {}, {}
    for subset in ("train", "validation", "all"):
        dataset, info = datasets.isbi2012(root, subset=subset, batch_size=5)
        batches = _batches(dataset)
        counts[subset] = sum(len(x) for x, _ in batches)
        images, masks = first[subset] = batches[0]
        assert images.shape[1:] == (512, 512, 1) and masks.shape[1:] == (512, 512, 1)
        assert set(np.unique(masks)) == {0, 1}
    assert counts == {"train": 20, "validation": 5, "all": 25}
    # Validation starts at slice 20; class 1 is the cell interior (255 in the files).
    label = skimage.io.imread(root / "train" / "label" / "20.png")
    np.testing.assert_array_equal(first["validation"][1][0, ..., 0], label == 255)
    test, _ = datasets.isbi2012(root, subset="test", batch_size=10)
    assert sum(len(x) for x in test) == 30
    assert info.class_names == ("membrane", "cell interior")
    with pytest.raises(ValueError, match="validation_slices"):
        datasets.isbi2012(root, validation_slices=(99,))
    with pytest.raises(ValueError, match="subset"):
        datasets.isbi2012(root, subset="val")


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        datasets.camvid(tmp_path / "nowhere")


def test_same_seed_same_batches_and_fresh_augmentation_each_epoch(data_dir):
    pairs = _camvid_pairs(data_dir, 6)
    augment = JointAugment(horizontal_flip=True, scale_range=(0.8, 1.2), crop_size=(96, 128))

    def build(seed):
        return segmentation_dataset(
            pairs, batch_size=3, image_size=(180, 240), augment=augment, shuffle=True,
            seed=seed, ignore_label=11, cache=True,
        )  # fmt: skip

    first, again, other = build(1), build(1), build(2)
    epoch_a, epoch_b = _batches(first), _batches(first)
    for (xa, ya), (xb, yb) in zip(epoch_a, _batches(again), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(epoch_a, epoch_b, strict=True))
    assert not all(
        np.array_equal(a[0], b[0]) for a, b in zip(epoch_a, _batches(other), strict=True)
    )


def test_ignore_label_survives_resize_and_augmentation(data_dir):
    pairs = _camvid_pairs(data_dir, 8)
    augment = JointAugment(
        horizontal_flip=True, rotation_degrees=20, fill_mode="constant", mask_fill=11,
        elastic_alpha=20, elastic_sigma=8, brightness=0.1,
    )  # fmt: skip
    dataset = segmentation_dataset(
        pairs, batch_size=8, image_size=(128, 160), augment=augment, seed=3, ignore_label=11
    )
    images, masks = next(iter(dataset))
    raw = np.stack([skimage.io.imread(m) for _, m in pairs])
    values = np.unique(masks.numpy())
    assert set(values) <= set(np.unique(raw)) | {11}
    assert masks.dtype == tf.int32 and images.shape == (8, 128, 160, 3)


def test_preprocessing_comes_from_the_registry(data_dir):
    pairs = _camvid_pairs(data_dir, 2)
    raw, _ = next(iter(segmentation_dataset(pairs, batch_size=2)))
    unit, _ = next(
        iter(segmentation_dataset(pairs, batch_size=2, channels=3, preprocessing="unet"))
    )
    np.testing.assert_allclose(unit.numpy(), raw.numpy() / 255.0, rtol=1e-6)
    layer = kerasseg.preprocessing_layer("unet", encoder="resnet50")
    caffe, _ = next(
        iter(segmentation_dataset(pairs, batch_size=2, channels=3, preprocessing=layer))
    )
    expected = keras.applications.resnet50.preprocess_input(raw.numpy().copy())
    np.testing.assert_allclose(caffe.numpy(), expected, atol=1e-4)
    with pytest.raises(TypeError, match="preprocessing"):
        segmentation_dataset(pairs, preprocessing=3)
    with pytest.raises(ValueError, match="channels"):
        segmentation_dataset(pairs, preprocessing="unet")


def test_pad_to_multiple_pads_masks_with_the_ignore_label(data_dir):
    pairs = _camvid_pairs(data_dir, 2)
    images, masks = next(iter(segmentation_dataset(pairs, pad_to_multiple=32, ignore_label=11)))
    assert images.shape == (2, 384, 480, 3)
    assert np.all(masks.numpy()[:, 360:] == 11) and np.all(images.numpy()[:, 360:] == 0)
    with pytest.raises(ValueError, match="ignore_label"):
        segmentation_dataset(pairs, pad_to_multiple=32)


def test_ragged_sizes_pad_per_batch_or_raise(data_dir, tmp_path):
    root = data_dir / "isbi2012-membrane" / "train"
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem, size in (("a", 64), ("b", 80)):
        image = skimage.io.imread(root / "image" / "00.png")[:size, :size]
        label = skimage.io.imread(root / "label" / "00.png")[:size, :size]
        skimage.io.imsave(tmp_path / "images" / f"{stem}.png", image, check_contrast=False)
        skimage.io.imsave(tmp_path / "masks" / f"{stem}.png", label, check_contrast=False)
    pairs = paired_files(tmp_path / "images", tmp_path / "masks")
    images, masks = next(iter(segmentation_dataset(pairs, batch_size=2, ignore_label=7)))
    assert images.shape == (2, 80, 80, 1)
    assert np.all(masks.numpy()[0, 64:] == 7) and np.all(masks.numpy()[0, :, 64:] == 7)
    with pytest.raises(tf.errors.InvalidArgumentError):
        next(iter(segmentation_dataset(pairs, batch_size=2)))


def test_tfrecord_source_gives_the_same_pairs(data_dir, tmp_path):
    pairs = _camvid_pairs(data_dir, 5)
    write_tfrecords(pairs, str(tmp_path / "camvid"), num_shards=2)
    from_files = _batches(segmentation_dataset(pairs, batch_size=1))
    from_records = _batches(
        segmentation_dataset(read_tfrecords(str(tmp_path / "camvid-*")), batch_size=1)
    )
    key = [x.sum() for x, _ in from_files]
    order = [key.index(x.sum()) for x, _ in from_records]
    assert sorted(order) == list(range(5))
    for (x, y), index in zip(from_records, order, strict=True):
        np.testing.assert_array_equal(x, from_files[index][0])
        np.testing.assert_array_equal(y, from_files[index][1])


def test_bad_arguments_name_themselves(data_dir):
    pairs = _camvid_pairs(data_dir, 2)
    with pytest.raises(ValueError, match="batch_size"):
        segmentation_dataset(pairs, batch_size=0)
    with pytest.raises(TypeError, match="augment"):
        segmentation_dataset(pairs, augment=lambda x, y, s: (x, y))
    with pytest.raises(ValueError, match="image_size"):
        segmentation_dataset(pairs, image_size=(0, 5))
    with pytest.raises(TypeError, match="source"):
        segmentation_dataset("folder")


def test_camvid_download_manifest_matches_the_files(data_dir):
    manifest = datasets.camvid_files()
    assert manifest["base_url"].startswith("https://raw.githubusercontent.com/")
    assert manifest["commit"] in manifest["base_url"]
    root = data_dir / "camvid"
    local = sorted(p for p in root.rglob("*.png"))
    assert len(manifest["files"]) == len(local) == 936
    for path in local:
        relative = path.relative_to(root).as_posix()
        assert manifest["files"][relative] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_pipeline_feeds_model_fit_without_handwritten_preprocessing(data_dir):
    dataset, info = datasets.isbi2012(
        data_dir / "isbi2012-membrane", image_size=(64, 64), preprocessing="unet",
        augment=JointAugment(horizontal_flip=True, rotate90=True), seed=0,
    )  # fmt: skip
    model = kerasseg.load("unet", num_classes=1, input_shape=(64, 64, 1), base_filters=4, depth=2)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(dataset.take(2), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_instance_targets_follow_a_flip(data_dir):
    labels = skimage.io.imread(data_dir / "dsb2018-sample" / "labels.tif").astype(np.int32)
    image = tf.constant(labels[..., None].astype(np.float32))
    targets = instances_from_label_image(tf.constant(labels))
    flip = JointAugment(horizontal_flip=True)
    for seed in range(8):
        moved_image, moved = augment_instances(flip, image, targets, tf.constant([seed, 0]))
        flipped = not np.array_equal(moved_image.numpy(), image.numpy())
        boxes = targets["boxes"].numpy()
        if flipped:
            width = labels.shape[1]
            boxes = np.stack(
                [boxes[:, 0], width - boxes[:, 3], boxes[:, 2], width - boxes[:, 1]], axis=1
            )
        np.testing.assert_allclose(moved["boxes"].numpy(), boxes)
        np.testing.assert_array_equal(moved["class_ids"].numpy(), targets["class_ids"].numpy())
        # Each instance mask still covers exactly the pixels of its id in the moved image.
        ids = np.unique(labels)[1:]
        for index in (0, len(ids) // 2, len(ids) - 1):
            expected = moved_image.numpy()[..., 0] == ids[index]
            np.testing.assert_array_equal(moved["masks"].numpy()[index].astype(bool), expected)
