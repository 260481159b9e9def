"""kerasseg.data.transforms and kerasseg.data.augment: alignment, determinism, labels."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageFilter

from kerasseg.data import transforms
from kerasseg.data.augment import JointAugment, elastic_displacement_std, seeds_dataset

GEOMETRIC = dict(
    horizontal_flip=True,
    vertical_flip=True,
    rotate90=True,
    scale_range=(0.75, 1.25),
    crop_size=(384, 384),
    rotation_degrees=20.0,
    elastic_alpha=300.0,
    elastic_sigma=10.0,
)
PHOTOMETRIC = dict(brightness=0.1, contrast=0.2, gamma=0.2, noise_std=0.02)
SEEDS = [(0, 1), (5, 9), (123, 4)]


def seed(pair):
    return tf.constant(pair, tf.int64)


# ----------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def isbi(data_dir):
    """ISBI slice 00 (float32, 512x512x1) and its {0, 255} label (uint8 array)."""
    folder = data_dir / "isbi2012-membrane" / "train"
    image = np.asarray(Image.open(folder / "image" / "00.png"))
    label = np.asarray(Image.open(folder / "label" / "00.png"))
    assert image.shape == label.shape == (512, 512)
    return image, label


@pytest.fixture(scope="module")
def levels(isbi):
    """A piecewise-constant image made from the ISBI slice and the mask derived from it.

    The slice is blurred (Gaussian, radius 4) and quantised to bins of 32 grey levels
    (value 32 k + 16), so that mask = image // 32 is an integer map of the image itself:
    after a correct joint transform the mask equals the same function of the image except
    where bilinear interpolation mixes two bins at a region edge.
    """
    blurred = np.asarray(Image.fromarray(isbi[0]).filter(ImageFilter.GaussianBlur(4)))
    quantised = (blurred // 32).astype(np.float32) * 32 + 16
    mask = (quantised // 32).astype(np.int32)
    assert len(np.unique(mask)) >= 5
    return tf.constant(quantised[..., None]), tf.constant(mask[..., None])


@pytest.fixture(scope="module")
def camvid(data_dir):
    """One CamVid training pair: RGB float32 (360, 480, 3), class ids int32 (360, 480, 1)."""
    folder = data_dir / "camvid"
    name = sorted(p.name for p in (folder / "train").glob("*.png"))[0]
    image = np.asarray(Image.open(folder / "train" / name)).astype(np.float32)
    label = np.asarray(Image.open(folder / "trainannot" / name)).astype(np.int32)
    assert image.shape == (360, 480, 3) and label.shape == (360, 480)
    assert 11 in label, "the test expects a CamVid annotation with void (11) pixels"
    return tf.constant(image), tf.constant(label[..., None])


def ramps(height, width):
    """Image channels = (row, column) index maps; mask = the same maps as int32."""
    rows, cols = np.mgrid[:height, :width].astype(np.float32)
    grid = np.stack([rows, cols], -1)
    return tf.constant(grid), tf.constant(grid.astype(np.int32))


def agreement(image, mask):
    """Fraction of pixels where mask == image // 32."""
    derived = np.floor(image.numpy() / 32).astype(np.int32)
    return float(np.mean(derived == mask.numpy()))


def round_half_up(x):
    return np.floor(np.asarray(x) + 0.5).astype(np.int32)


# ------------------------------------------------------------ (1) alignment, real data


def test_deterministic_ops_keep_alignment(levels):
    image, mask = levels
    out = transforms.resize(image, mask, (300, 400))
    assert out[0].shape == (300, 400, 1) and out[1].shape == (300, 400, 1)
    assert agreement(*out) >= 0.99
    # Exact ops: padding with consistent values (16 // 32 == 0), crops.
    for out in (
        transforms.pad_to_size(image, mask, (530, 600), image_value=16.0, mask_value=0),
        transforms.pad_to_multiple(image[:500, :300], mask[:500, :300], 64, image_value=16.0),
        transforms.center_crop(image, mask, (101, 200)),
        transforms.crop(image, mask, (10, 300), (200, 212)),
    ):
        assert agreement(*out) == 1.0
    assert transforms.pad_to_multiple(image[:500, :300], mask[:500, :300], 64)[0].shape == (
        512,
        320,
        1,
    )
    cropped = transforms.crop(image, mask, (10, 300), (200, 212))
    np.testing.assert_array_equal(cropped[0].numpy(), image.numpy()[10:210, 300:512])
    centred = transforms.center_crop(image, mask, (101, 200))
    np.testing.assert_array_equal(centred[1].numpy(), mask.numpy()[205:306, 156:356])


@pytest.mark.parametrize("pair", SEEDS)
def test_flips_rot90_crop_are_exact(levels, pair):
    augment = JointAugment(
        horizontal_flip=True, vertical_flip=True, rotate90=True, crop_size=(200, 200)
    )
    out_image, out_mask = augment(*levels, seed(pair))
    assert out_image.shape == (200, 200, 1)
    assert agreement(out_image, out_mask) == 1.0
    # On an image of unique values (row * 260 + column) the output must be an exact copy
    # of a window, flipped or rotated: integral, equal to the mask, unit steps.
    index = np.arange(300 * 260).reshape(300, 260, 1)
    out_image, out_mask = augment(
        tf.constant(index, tf.float32), tf.constant(index, tf.int32), seed(pair)
    )
    values = out_mask.numpy()[..., 0]
    np.testing.assert_array_equal(out_image.numpy()[..., 0], values.astype(np.float32))
    rows, cols = np.divmod(values, 260)
    for axis in (0, 1):
        steps = {
            (int(dr), int(dc))
            for dr, dc in zip(
                np.diff(rows, axis=axis).ravel(), np.diff(cols, axis=axis).ravel(), strict=True
            )
        }
        assert len(steps) == 1 and sum(map(abs, steps.pop())) == 1


@pytest.mark.parametrize(
    "options",
    [
        dict(rotation_degrees=30.0),
        dict(scale_range=(0.6, 1.4), crop_size=(256, 320)),
        dict(elastic_alpha=300.0, elastic_sigma=10.0),
        GEOMETRIC,
        {**GEOMETRIC, "fill_mode": "nearest"},
    ],
    ids=["rotation", "scale-crop", "elastic", "all", "all-nearest-fill"],
)
def test_geometric_augmentation_keeps_alignment(levels, options):
    image, mask = levels
    augment = JointAugment(**options)
    for pair in SEEDS[:2]:
        out_image, out_mask = augment(image, mask, seed(pair))
        assert out_mask.dtype == tf.int32
        assert agreement(out_image, out_mask) >= 0.99
        # The op moved something (a no-op would also be "aligned").
        if out_image.shape == image.shape:
            assert not np.array_equal(out_image.numpy(), image.numpy())


@pytest.mark.parametrize(
    "options",
    [
        dict(rotation_degrees=40.0),
        dict(rotation_degrees=40.0, scale_range=(0.5, 0.6), fill_mode="nearest"),
        dict(scale_range=(0.7, 1.3), crop_size=(150, 170)),
        dict(elastic_alpha=300.0, elastic_sigma=8.0),
        {**GEOMETRIC, "crop_size": (180, 180)},
    ],
    ids=["rotation", "rotation-zoom-out-nearest-fill", "scale-crop", "elastic", "all"],
)
def test_coordinate_maps_stay_aligned(options):
    """Image = (row, column) maps sampled bilinearly; mask = the same maps, nearest."""
    image, mask = ramps(200, 240)
    augment = JointAugment(**options)
    for pair in SEEDS:
        out_image, out_mask = augment(image, mask, seed(pair))
        rounded = round_half_up(out_image)
        assert np.mean(rounded == out_mask.numpy()) >= 0.999
        # Everything stays inside the input's coordinate range (reflect fill).
        assert out_mask.numpy().min() >= 0
        assert out_mask.numpy()[..., 0].max() <= 199 and out_mask.numpy()[..., 1].max() <= 239


# -------------------------------------------------------------------- (2) determinism


def test_same_seed_same_bytes_different_seed_differs(camvid):
    image, mask = camvid
    augment = JointAugment(**{**GEOMETRIC, "crop_size": (256, 256)}, **PHOTOMETRIC)
    first = augment(image, mask, seed((3, 4)))
    again = augment(image, mask, tf.constant([3, 4], tf.int32))
    other = augment(image, mask, seed((3, 5)))
    assert first[0].numpy().tobytes() == again[0].numpy().tobytes()
    assert first[1].numpy().tobytes() == again[1].numpy().tobytes()
    assert not np.array_equal(first[0].numpy(), other[0].numpy())
    assert not np.array_equal(first[1].numpy(), other[1].numpy())

    seeds = tf.constant([[3, 4], [3, 5], [3, 4]], tf.int64)
    pairs = tf.data.Dataset.from_tensors((image, mask)).repeat(3)
    dataset = tf.data.Dataset.zip((pairs, tf.data.Dataset.from_tensor_slices(seeds))).map(
        lambda pair, s: augment(pair[0], pair[1], s), num_parallel_calls=2
    )
    run1 = list(dataset.as_numpy_iterator())
    run2 = list(dataset.as_numpy_iterator())
    for (i1, m1), (i2, m2) in zip(run1, run2, strict=True):
        assert i1.tobytes() == i2.tobytes() and m1.tobytes() == m2.tobytes()
    assert run1[0][0].tobytes() == run1[2][0].tobytes()
    assert not np.array_equal(run1[0][0], run1[1][0])
    # Graph mode (tf.data) draws the same parameters as eager mode.
    np.testing.assert_array_equal(run1[0][1], first[1].numpy())
    np.testing.assert_allclose(run1[0][0], first[0].numpy(), atol=1e-3)


def test_seeds_dataset_fresh_per_epoch_reproducible():
    dataset = seeds_dataset(7).take(4)
    assert dataset.element_spec == tf.TensorSpec((2,), tf.int64)
    epoch1 = np.stack(list(dataset.as_numpy_iterator()))
    epoch2 = np.stack(list(dataset.as_numpy_iterator()))
    assert len({tuple(s) for s in epoch1}) == 4
    assert not np.array_equal(epoch1, epoch2)
    np.testing.assert_array_equal(np.stack(list(seeds_dataset(7).take(4))), epoch1)
    assert not np.array_equal(np.stack(list(seeds_dataset(8).take(4))), epoch1)


# ------------------------------------------------------------------ (3) labels, CamVid


@pytest.mark.parametrize(
    "options",
    [
        dict(horizontal_flip=True, vertical_flip=True, rotate90=True),
        dict(scale_range=(0.8, 1.2)),
        dict(rotation_degrees=25.0),
        dict(elastic_alpha=200.0, elastic_sigma=8.0),
        dict(scale_range=(0.9, 1.1), rotation_degrees=15.0, elastic_alpha=100.0, **PHOTOMETRIC),
    ],
    ids=["flips", "scale", "rotation", "elastic", "all"],
)
def test_labels_stay_integer_subset_and_void_survives(camvid, options):
    image, mask = camvid
    labels_in = set(np.unique(mask.numpy()).tolist())
    void_in = float(np.mean(mask.numpy() == 11))
    out_image, out_mask = JointAugment(**options)(image, mask, seed((1, 2)))
    assert out_mask.dtype == tf.int32 and out_image.dtype == tf.float32
    assert out_image.shape[-1] == 3 and out_mask.shape[-1] == 1
    assert set(np.unique(out_mask.numpy()).tolist()) <= labels_in
    void_out = float(np.mean(out_mask.numpy() == 11))
    assert 0.5 * void_in < void_out < 2.0 * void_in


def test_constant_fill_adds_only_mask_fill(camvid):
    image, mask = camvid
    augment = JointAugment(
        rotation_degrees=30.0, scale_range=(0.6, 0.7), fill_mode="constant", mask_fill=11
    )
    labels_in = set(np.unique(mask.numpy()).tolist())
    for options in ({}, {"elastic_alpha": 100.0}):
        augment = JointAugment(**{**augment.get_config(), **options})
        out = augment(image, mask, seed((2, 2)))[1].numpy()
        assert set(np.unique(out).tolist()) <= labels_in | {11}
        assert np.mean(out == 11) > np.mean(mask.numpy() == 11) + 0.3  # scale <= 0.7 pads


# ---------------------------------------------------------------- (4) resize reference


def test_resize_matches_references(camvid):
    image, mask = camvid
    label = mask.numpy()[..., 0].astype(np.uint8)
    for size in [(180, 240), (256, 341), (512, 640)]:
        out_image, out_mask = transforms.resize(image, mask, size)
        assert out_mask.dtype == tf.int32 and out_mask.shape == (*size, 1)
        reference = np.asarray(Image.fromarray(label).resize(size[::-1], Image.NEAREST))
        assert np.mean(out_mask.numpy()[..., 0] == reference) >= 0.99
        assert set(np.unique(out_mask.numpy())) == set(np.unique(reference))
        assert set(np.unique(out_mask.numpy())) <= set(np.unique(label))
        keras_out = keras.layers.Resizing(*size)(image[None])[0]
        np.testing.assert_allclose(out_image.numpy(), np.asarray(keras_out), atol=1e-3)
    # Up-sampling by an integer factor keeps every label, including void.
    assert set(np.unique(transforms.resize(image, mask, (720, 960))[1].numpy())) == set(
        np.unique(label)
    )


# --------------------------------------------------------------------- (5) remapping


def test_remap_isbi_labels(isbi):
    label = tf.constant(isbi[1].astype(np.int32)[..., None])
    out = transforms.remap_classes(label, {0: 0, 255: 1})
    assert out.dtype == tf.int32 and out.shape == label.shape
    np.testing.assert_array_equal(out.numpy()[..., 0], (isbi[1] == 255).astype(np.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"accepted values: \[0\]"):
        transforms.remap_classes(label, {0: 0})
    dataset = tf.data.Dataset.from_tensors(label).map(
        lambda m: transforms.remap_classes(m, {255: 1})
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="accepted values: \\[255\\]"):
        list(dataset)


def test_remap_ignore_label_and_sparse_keys(camvid):
    mask = camvid[1]
    source = mask.numpy()
    dropped = int(max(v for v in np.unique(source) if v != 11))  # a class present here
    identity = {k: k for k in range(11) if k != dropped}
    out = transforms.remap_classes(mask, identity, ignore_label=11, unmapped="ignore").numpy()
    np.testing.assert_array_equal(out[source == 11], 11)
    np.testing.assert_array_equal(out[source == dropped], 11)
    kept = (source != dropped) & (source != 11)
    np.testing.assert_array_equal(out[kept], source[kept])
    with pytest.raises(tf.errors.InvalidArgumentError, match="Offending"):
        transforms.remap_classes(mask, identity, ignore_label=11)
    # Keys spanning more than the dense table: binary-search path.
    sparse = transforms.remap_classes(
        tf.constant([[[0], [100000]], [[-5], [0]]], tf.int32), {0: 2, 100000: 3, -5: 4}
    )
    np.testing.assert_array_equal(sparse.numpy()[..., 0], [[2, 3], [4, 2]])
    with pytest.raises(ValueError, match="ignore_label"):
        transforms.remap_classes(mask, {0: 0, 11: 1}, ignore_label=11)
    explicit = transforms.remap_classes(mask, {k: k for k in range(12)}, ignore_label=11)
    np.testing.assert_array_equal(explicit.numpy(), source)
    with pytest.raises(ValueError, match="requires `ignore_label`"):
        transforms.remap_classes(mask, identity, unmapped="ignore")
    with pytest.raises(TypeError, match="mask"):
        transforms.remap_classes(tf.cast(mask, tf.uint8), identity)


# ---------------------------------------------------------------- (6) constant fill


def test_rotation_constant_fill_uses_mask_fill():
    image = tf.fill([64, 80, 2], 100.0)
    mask = tf.ones([64, 80, 1], tf.int32)
    augment = JointAugment(
        rotation_degrees=45.0, fill_mode="constant", image_fill=7.0, mask_fill=255
    )
    for pair in SEEDS:
        out_image, out_mask = augment(image, mask, seed(pair))
        values = out_mask.numpy()
        assert set(np.unique(values).tolist()) == {1, 255}
        # Fill = outside the rotated rectangle: at least a corner, image there = image_fill.
        filled = values[..., 0] == 255
        assert filled.mean() > 0.01
        inner = filled & ~region_edges(filled)
        np.testing.assert_allclose(out_image.numpy()[inner], 7.0, atol=1e-4)
    reflect = JointAugment(rotation_degrees=45.0)(image, mask, seed(SEEDS[0]))
    np.testing.assert_array_equal(reflect[1].numpy(), 1)  # reflect mode: no unknown pixels


def region_edges(region):
    """Pixels on either side of the boundary of a boolean `region`."""
    edge = np.zeros_like(region)
    edge[1:] |= region[1:] != region[:-1]
    edge[:-1] |= region[1:] != region[:-1]
    edge[:, 1:] |= region[:, 1:] != region[:, :-1]
    edge[:, :-1] |= region[:, 1:] != region[:, :-1]
    return edge


# ------------------------------------------------------------------- (7) elastic


@pytest.mark.parametrize("alpha, sigma", [(100.0, 3.0), (200.0, 8.0), (300.0, 12.0)])
def test_elastic_displacement_size_and_smoothness(alpha, sigma):
    """Per-axis displacement std matches alpha * sum(k^2) / sqrt(3); the field is smooth.

    sigma >= 8 uses the coarse-grid smoothing path, sigma 3 the full-resolution one.
    """
    image, _ = ramps(256, 256)
    mask = tf.zeros([256, 256, 1], tf.int32)
    augment = JointAugment(elastic_alpha=alpha, elastic_sigma=sigma)
    predicted = elastic_displacement_std(alpha, sigma)
    assert predicted == pytest.approx(alpha / (2 * np.sqrt(3 * np.pi) * sigma), rel=0.02)
    stds, steps = [], []
    rows = np.arange(256, dtype=np.float32)[:, None]
    for pair in SEEDS:
        out = augment(image, mask, seed(pair))[0].numpy()
        dy = (out[..., 0] - rows)[24:-24, 24:-24]  # away from the reflecting border
        stds.append(dy.std())
        steps.append(np.diff(dy, axis=1).std())
    assert np.mean(stds) == pytest.approx(predicted, rel=0.15)
    # A Gaussian-correlated field changes by ~std / (sqrt(2) sigma) per pixel; white noise
    # would change by ~sqrt(2) std.
    assert np.mean(steps) == pytest.approx(predicted / (np.sqrt(2) * sigma), rel=0.25)


# ----------------------------------------------------------------- (8) photometric


def test_photometric_leaves_mask_and_stays_in_range(camvid):
    image, mask = camvid
    augment = JointAugment(brightness=0.3, contrast=0.5, gamma=0.5, noise_std=0.1)
    for pair in SEEDS:
        out_image, out_mask = augment(image, mask, seed(pair))
        np.testing.assert_array_equal(out_mask.numpy(), mask.numpy())
        values = out_image.numpy()
        assert values.min() >= 0.0 and values.max() <= 255.0
        assert np.abs(values - image.numpy()).mean() > 1.0
    unit = JointAugment(brightness=0.2, value_range=(0.0, 1.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="value_range"):
        unit(image, mask, seed((0, 0)))  # 0..255 image, (0, 1) range: no silent clip
    out = unit(image / 255.0, mask, seed((0, 0)))[0].numpy()
    assert 0.0 <= out.min() and out.max() <= 1.0


# -------------------------------------------------------------------- (9) bad input


@pytest.mark.parametrize(
    "options, error, match",
    [
        (dict(elastic_sigma=-1.0), ValueError, "elastic_sigma"),
        (dict(elastic_alpha=-5.0), ValueError, "elastic_alpha"),
        (dict(scale_range=(1.25, 0.75)), ValueError, "scale_range"),
        (dict(scale_range=(0.0, 1.0)), ValueError, "scale_range"),
        (dict(scale_range=1.2), TypeError, "scale_range"),
        (dict(crop_size=(0, 128)), ValueError, "crop_size"),
        (dict(crop_size=(128.0, 128)), TypeError, "crop_size"),
        (dict(rotation_degrees=-3.0), ValueError, "rotation_degrees"),
        (dict(fill_mode="wrap"), ValueError, "fill_mode"),
        (dict(fill_mode="constant"), ValueError, "mask_fill"),
        (dict(horizontal_flip=1), TypeError, "horizontal_flip"),
        (dict(contrast=1.0), ValueError, "contrast"),
        (dict(value_range=(255, 0)), ValueError, "value_range"),
        (
            dict(brightness=0.1, fill_mode="constant", mask_fill=0, image_fill=-1.0),
            ValueError,
            "image_fill",
        ),
    ],
)
def test_bad_config_names_the_option(options, error, match):
    with pytest.raises(error, match=match):
        JointAugment(**options)


def test_bad_call_arguments_name_the_argument():
    augment = JointAugment(horizontal_flip=True)
    image, mask = tf.zeros([8, 8, 1]), tf.zeros([8, 8, 1], tf.int32)
    with pytest.raises(ValueError, match=r"`seed`.*shape \(2,\)"):
        augment(image, mask, tf.constant([1, 2, 3]))
    with pytest.raises(TypeError, match="`seed`"):
        augment(image, mask, tf.constant([1.0, 2.0]))
    with pytest.raises(TypeError, match="`image` must be float32"):
        augment(tf.zeros([8, 8, 1], tf.uint8), mask, seed((0, 0)))
    with pytest.raises(TypeError, match="`mask` must be int32"):
        augment(image, tf.zeros([8, 8, 1], tf.uint8), seed((0, 0)))
    with pytest.raises(ValueError, match="same height"):
        augment(image, tf.zeros([9, 8, 1], tf.int32), seed((0, 0)))
    with pytest.raises(ValueError, match="`size`"):
        transforms.resize(image, mask, (0, 4))
    with pytest.raises(ValueError, match="larger than `size`"):
        transforms.pad_to_size(image, mask, (4, 16))
    with pytest.raises(ValueError, match="smaller than `size`"):
        transforms.center_crop(image, mask, (16, 4))
    with pytest.raises(ValueError, match="leaves the image"):
        transforms.crop(image, mask, (4, 4), (5, 2))


def test_config_round_trip():
    augment = JointAugment(**GEOMETRIC, **PHOTOMETRIC, fill_mode="constant", mask_fill=11)
    config = augment.get_config()
    json.dumps(config)
    assert JointAugment.from_config(config).get_config() == config
    assert augment.describe() == config
    assert config["crop_size"] == [384, 384] and config["mask_fill"] == 11


# ------------------------------------------------------------ (10) dynamic shapes


def test_tf_data_pipeline_with_dynamic_shapes(isbi):
    slice_ = isbi[0].astype(np.float32)
    label = (isbi[1] // 255).astype(np.int32)
    sizes = [(300, 260), (512, 400), (200, 333)]

    def generate():
        for h, w in sizes:
            yield slice_[:h, :w, None], label[:h, :w, None]

    signature = (
        tf.TensorSpec([None, None, 1], tf.float32),
        tf.TensorSpec([None, None, 1], tf.int32),
    )
    pairs = tf.data.Dataset.from_generator(generate, output_signature=signature)
    augment = JointAugment(**{**GEOMETRIC, "crop_size": (128, 160)}, **PHOTOMETRIC)
    dataset = tf.data.Dataset.zip((pairs, seeds_dataset(0))).map(
        lambda pair, s: augment(pair[0], pair[1], s), num_parallel_calls=2
    )
    assert dataset.element_spec[0].shape.as_list() == [128, 160, 1]
    assert dataset.element_spec[1].shape.as_list() == [128, 160, 1]
    batch = next(iter(dataset.batch(3)))
    assert batch[0].shape == (3, 128, 160, 1) and batch[1].dtype == tf.int32
    assert set(np.unique(batch[1].numpy())) <= {0, 1}

    # No crop: the size follows each input; deterministic ops keep unknown sizes too.
    keep = JointAugment(rotation_degrees=10.0, elastic_alpha=50.0, horizontal_flip=True)
    dataset = (
        tf.data.Dataset.zip((pairs, seeds_dataset(1)))
        .map(lambda pair, s: keep(pair[0], pair[1], s))
        .map(lambda i, m: transforms.pad_to_multiple(i, m, 32, mask_value=255))
    )
    assert dataset.element_spec[0].shape.as_list() == [None, None, 1]
    for (h, w), (image, mask) in zip(sizes, dataset, strict=True):
        assert image.shape == (-(-h // 32) * 32, -(-w // 32) * 32, 1)
        assert set(np.unique(mask.numpy())) <= {0, 1, 255}
    too_small = pairs.map(lambda i, m: transforms.pad_to_size(i, m, (256, 512)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="never crops"):
        list(too_small)


def test_instance_masks_and_empty_instance_stack():
    """K = N instance masks travel as channels; N = 0 keeps its static shape."""
    image = tf.random.stateless_uniform([64, 64, 3], (0, 0), 0, 255)
    masks = tf.cast(tf.random.stateless_uniform([64, 64, 4], (0, 1)) > 0.5, tf.int32)
    augment = JointAugment(horizontal_flip=True, rotation_degrees=20.0, elastic_alpha=40.0)
    out_image, out_masks = augment(image, masks, seed((1, 1)))
    assert out_masks.shape == (64, 64, 4)
    assert set(np.unique(out_masks.numpy())) <= {0, 1}
    for options in (dict(rotation_degrees=20.0), dict(elastic_alpha=40.0)):
        empty = JointAugment(**options)(image, tf.zeros([64, 64, 0], tf.int32), seed((1, 1)))
        assert empty[1].shape == (64, 64, 0) and empty[0].shape == (64, 64, 3)
