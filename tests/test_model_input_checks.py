"""`SegmentationModel` checks its images on every call, whatever ran before.

Keras traces `predict`/`fit`/`evaluate` once with the sizes relaxed to unknown, so a check
inside the traced call alone misses a wrong size (or channel count) on later calls, and
reads no values. These tests call the models in the orders users do and expect the clear
one-line messages, with hand-derived sizes and indices; NaN handling is compared with plain
Keras on the same weights.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from skimage.color import rgb2gray

import kerasseg
from kerasseg.models.base import SegmentationModel

SIZE = r"multiples of 4 .*at least 4; e\.g\. \[28, 32\] instead of 30\."
IMAGES = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")


def small_unet(**kwargs):
    return kerasseg.load("unet", base_filters=4, depth=2, **kwargs)  # total stride 4


@pytest.fixture(scope="module")
def unet():
    return small_unet()


@pytest.fixture(scope="module")
def compiled():
    model = small_unet()
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    return model


def with_non_finite():
    images = IMAGES.copy()
    images[1, 3, 4, 0] = np.nan  # the first in C order: (batch, row, column) = (1, 3, 4)
    images[1, 5, 5, 2] = np.inf
    return images


NON_FINITE = r"`images` hold 2 non-finite value\(s\) .*\(batch, row, column\) = \(1, 3, 4\)"


# ---------------------------------------------------------------------- after earlier calls


def test_size_is_checked_after_earlier_calls():
    model = small_unet()
    for size in (32, 64):  # the second call retraces with unknown sizes
        assert model.predict(np.zeros((1, size, size, 3), "float32"), verbose=0).shape == (
            1,
            size,
            size,
            1,
        )
    with pytest.raises(ValueError, match=r"`images`: spatial size \(30, 30\) .*" + SIZE):
        model.predict(np.zeros((1, 30, 30, 3), "float32"), verbose=0)
    with pytest.raises(ValueError, match=r"at least 4; e\.g\. \[4\] instead of 1\."):
        model.predict(np.zeros((1, 1, 1, 3), "float32"), verbose=0)
    with pytest.raises(ValueError, match=r"must have 3 channel\(s\)"):
        model.predict(np.zeros((1, 32, 32, 1), "float32"), verbose=0)
    with pytest.raises(ValueError, match=SIZE):
        model.predict_on_batch(np.zeros((1, 30, 32, 3), "float32"))
    # The refusals left the model working.
    np.testing.assert_allclose(model.predict(IMAGES, verbose=0), model(IMAGES), atol=1e-6)


@pytest.mark.parametrize("method", ["fit", "evaluate", "train_on_batch", "test_on_batch"])
def test_training_methods_check_size_after_earlier_calls(compiled, method):
    run = getattr(compiled, method)
    kwargs = {"verbose": 0} if method in ("fit", "evaluate") else {}
    for size in (32, 64):
        run(np.zeros((2, size, size, 3), "float32"), np.zeros((2, size, size, 1)), **kwargs)
    with pytest.raises(ValueError, match=SIZE):
        run(np.zeros((2, 30, 30, 3), "float32"), np.zeros((2, 30, 30, 1)), **kwargs)


def test_mobilenet_v2_encoder_at_100_pixels():
    model = kerasseg.load("unet", encoder="mobilenet_v2", encoder_weights=None, num_classes=2)
    assert model.predict(np.zeros((1, 96, 96, 3), "float32"), verbose=0).shape == (1, 96, 96, 2)
    with pytest.raises(ValueError, match=r"multiples of 32 .*\[96, 128\] instead of 100\."):
        model.predict(np.zeros((1, 100, 100, 3), "float32"), verbose=0)


# ---------------------------------------------------------------------- tf.data


def from_generator(array, shape):
    return tf.data.Dataset.from_generator(
        lambda: iter([array]), output_signature=tf.TensorSpec(shape, tf.float32)
    )


def test_unbatched_dataset_is_told_to_batch(unet):
    unbatched = tf.data.Dataset.from_tensor_slices(IMAGES)
    with pytest.raises(
        ValueError, match=r"got rank 3 with shape \(32, 32, 3\)\. .*`dataset\.batch"
    ):
        unet.predict(unbatched, verbose=0)
    # The same at run time when the spec does not know the rank.
    unknown = from_generator(IMAGES[0], None)
    with pytest.raises(
        ValueError, match=r"got rank 3 with shape \(32, 32, 3\)\. .*`dataset\.batch"
    ):
        unet.predict(unknown, verbose=0)
    np.testing.assert_allclose(
        unet.predict(unbatched.batch(2), verbose=0), unet.predict(IMAGES, verbose=0), atol=1e-6
    )
    np.testing.assert_allclose(
        unet.predict(from_generator(IMAGES, None), verbose=0), unet.predict(IMAGES, verbose=0)
    )


def test_dataset_sizes_unknown_in_the_spec_are_checked_per_batch(unet):
    for size in (32, 64):  # traced twice: the model's step now takes any size
        unet.predict(from_generator(np.zeros((1, size, size, 3), "float32"), None), verbose=0)
    bad = np.zeros((1, 30, 32, 3), "float32")
    with pytest.raises(ValueError) as eager:
        unet.predict(bad, verbose=0)
    for shape in [(None, None, None, 3), (None, None, None, None), None]:
        with pytest.raises(ValueError) as batch:
            unet.predict(from_generator(bad, shape), verbose=0)
        assert str(batch.value) == str(eager.value)  # the same one-line message
    assert "e.g. [28, 32] instead of 30." in str(eager.value)
    grey = np.zeros((1, 32, 32, 1), "float32")
    with pytest.raises(ValueError) as eager:
        unet.predict(grey, verbose=0)
    with pytest.raises(ValueError) as batch:
        unet.predict(from_generator(grey, (None, None, None, None)), verbose=0)
    assert str(batch.value) == str(eager.value)


def test_fit_and_evaluate_check_datasets_of_pairs(compiled):
    images, masks = np.zeros((2, 30, 30, 3), "float32"), np.zeros((2, 30, 30, 1), "float32")
    known = tf.data.Dataset.from_tensors((images, masks))
    with pytest.raises(ValueError, match=SIZE):  # from the element_spec, before any batch
        compiled.fit(known, verbose=0)
    weights = np.ones((2, 30, 30), "float32")
    unknown = tf.data.Dataset.from_generator(
        lambda: iter([(images, masks, weights)]),
        output_signature=(
            tf.TensorSpec((None, None, None, 3)),
            tf.TensorSpec((None, None, None, 1)),
            tf.TensorSpec((None, None, None)),
        ),
    )
    with pytest.raises(ValueError, match=SIZE):
        compiled.evaluate(unknown, verbose=0)
    good = (np.zeros((2, 32, 32, 3), "float32"), np.zeros((2, 32, 32, 1), "float32"))
    with pytest.raises(ValueError, match=SIZE):
        compiled.fit(*good, validation_data=known, verbose=0)
    with pytest.raises(ValueError, match=SIZE):
        compiled.fit(*good, validation_data=(images, masks), verbose=0)
    history = compiled.fit(
        *good, validation_data=tf.data.Dataset.from_tensors(good), epochs=2, verbose=0
    )
    assert len(history.history["val_loss"]) == 2


# ---------------------------------------------------------------------- empty batch


def test_empty_batch_gives_an_empty_output(unet, compiled):
    one = unet.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)
    for empty in (
        unet.predict(np.zeros((0, 64, 64, 3), "float32"), verbose=0),
        unet.predict_on_batch(np.zeros((0, 64, 64, 3), "float32")),
        np.asarray(unet(np.zeros((0, 64, 64, 3), "float32"))),
    ):
        assert empty.shape == (0,) + one.shape[1:] and empty.dtype == one.dtype
    otsu = kerasseg.load("otsu")  # dict outputs of two ranks and dtypes
    one = otsu.predict(np.zeros((1, 8, 8, 1), "uint8"), verbose=0)
    empty = otsu.predict(np.zeros((0, 8, 8, 1), "uint8"), verbose=0)
    assert set(empty) == set(one)
    for key in one:
        assert empty[key].shape == (0,) + one[key].shape[1:]
        assert empty[key].dtype == one[key].dtype
    with pytest.raises(ValueError, match=r"`x` holds no images .*`evaluate` needs at least one"):
        compiled.evaluate(np.zeros((0, 32, 32, 3)), np.zeros((0, 32, 32, 1)), verbose=0)
    with pytest.raises(ValueError, match=r"`x` holds no images .*`fit` needs at least one"):
        compiled.fit(np.zeros((0, 32, 32, 3)), np.zeros((0, 32, 32, 1)), verbose=0)


# ---------------------------------------------------------------------- NaN and infinity


def test_non_finite_images_are_refused_with_count_and_index(unet):
    images = with_non_finite()
    for run in (
        lambda: unet.predict(images, verbose=0),
        lambda: unet.predict_on_batch(images),
        lambda: unet(images),
        lambda: unet(tf.constant(images)),
        lambda: unet.predict(tf.data.Dataset.from_tensors(images), verbose=0),
    ):
        with pytest.raises(ValueError, match=NON_FINITE):
            run()
    # Accepted on request: what plain Keras gives on the same weights.
    plain = keras.Model.predict(unet, images, verbose=0)
    np.testing.assert_allclose(unet.predict(images, verbose=0, allow_nan=True), plain, atol=1e-6)
    dataset = tf.data.Dataset.from_tensors(images)
    np.testing.assert_allclose(unet.predict(dataset, verbose=0, allow_nan=True), plain, atol=1e-6)
    # Traced calls do not read values.
    assert tf.function(unet)(tf.constant(images)).shape == (2, 32, 32, 1)
    with pytest.raises(TypeError, match="`allow_nan` must be True or False; got 1"):
        unet.predict(images, allow_nan=1)


def test_training_follows_the_allow_nan_attribute(compiled):
    images, masks = with_non_finite(), np.zeros((2, 32, 32, 1), "float32")
    for method in ("fit", "evaluate", "train_on_batch", "test_on_batch"):
        with pytest.raises(ValueError, match=NON_FINITE):
            getattr(compiled, method)(images, masks)
    model = small_unet()
    model.compile(optimizer="sgd", loss="mse")
    model.allow_nan = True
    model.train_on_batch(images, masks)  # accepted; the loss may well be NaN
    assert "allow_nan" not in model.get_config()  # not saved: the config is unchanged
    with pytest.raises(TypeError, match="`allow_nan` must be True or False; got 'yes'"):
        model.allow_nan = "yes"


def test_finite_values_whose_sum_overflows_are_not_refused(unet):
    # The fast path sums in float64; 1e308 * 2 overflows, yet every value is finite.
    huge = np.full((1, 32, 32, 3), 1e308, "float64")
    huge[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"hold 1 non-finite value\(s\) .*= \(0, 0, 0\)"):
        unet.predict(huge, verbose=0)
    huge[0, 0, 0, 0] = 1e308
    unet.predict(huge, verbose=0, allow_nan=False)  # not refused by the check


# ---------------------------------------------------------------------- channels


def test_channel_message_says_how_to_convert(unet):
    grey = IMAGES[..., :1]
    with pytest.raises(ValueError, match=r"must have 3 channel\(s\)") as error:
        unet.predict(grey, verbose=0)
    message = str(error.value)
    assert "\n" not in message
    assert message.index("np.repeat(x, 3, axis=-1)") < message.index("input_shape=")
    assert "Only for a model you build yourself" in message
    unet.predict(np.repeat(grey, 3, axis=-1), verbose=0)  # the advice works
    with pytest.raises(ValueError, match=r"Drop the alpha channel with `x\[\.\.\., :3\]`"):
        unet(np.zeros((1, 32, 32, 4), "float32"))

    grey_model = small_unet(input_shape=(None, None, 1))
    rgb = (IMAGES * 255).astype("uint8")
    with pytest.raises(ValueError, match=r"kerasseg\.ops\.image\.to_grey\(np\.float32\(x\)\)"):
        grey_model.predict(rgb, verbose=0)
    converted = np.asarray(kerasseg.ops.image.to_grey(np.float32(rgb)))
    # "keeps its value range": scikit-image's luma on the same 0..255 values.
    np.testing.assert_allclose(converted[..., 0], rgb2gray(rgb / 255.0) * 255, rtol=1e-5)
    grey_model.predict(converted, verbose=0)


# ---------------------------------------------------------------------- odd inputs


def test_unknown_rank_lists_and_ragged_get_clear_messages(unet):
    unknown = tf.function(unet, input_signature=[tf.TensorSpec(None, tf.float32)])
    with pytest.raises(ValueError, match="got a traced tensor of unknown rank"):
        unknown.get_concrete_function()
    with pytest.raises(TypeError, match=r"got a Python list of numbers\. Convert it"):
        unet.predict([[[[0.0, 0.0, 0.0]]]], verbose=0)
    with pytest.raises(TypeError, match=r"got a Python list of numbers"):
        unet([[[[0.0, 0.0, 0.0]]]])
    ragged = tf.RaggedTensor.from_row_lengths(tf.zeros((6, 4, 3)), [2, 4])  # (2, None, 4, 3)
    with pytest.raises(TypeError, match=r"got a tf\.RaggedTensor\. .*`x\.to_tensor\(\)`"):
        unet.predict(ragged, verbose=0)
    ragged_dataset = tf.data.Dataset.from_tensors(tf.ragged.constant([[[1.0]], [[1.0], [2.0]]]))
    with pytest.raises(TypeError, match=r"yields a RaggedTensorSpec"):
        unet.predict(ragged_dataset, verbose=0)
    # What worked before still does: a one-array list, dicts, generators.
    expected = unet.predict(IMAGES, verbose=0)
    np.testing.assert_array_equal(unet.predict([IMAGES], verbose=0), expected)
    np.testing.assert_array_equal(unet.predict({"images": IMAGES}, verbose=0), expected)
    batches = (b for b in [(IMAGES,)])
    np.testing.assert_array_equal(unet.predict(batches, verbose=0), expected)


def test_loaded_model_keeps_checking(tmp_path, unet):
    path = tmp_path / "unet.keras"
    unet.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SegmentationModel) and "allow_nan" not in loaded.get_config()
    rule = ("size_divisor", "size_offset", "min_size")
    assert [loaded.get_config()[k] for k in rule] == [unet.get_config()[k] for k in rule]
    assert loaded.allow_nan is False
    for size in (32, 64):
        loaded.predict(np.zeros((1, size, size, 3), "float32"), verbose=0)
    with pytest.raises(ValueError, match=SIZE):
        loaded.predict(np.zeros((1, 30, 30, 3), "float32"), verbose=0)


def test_classical_models_take_their_own_input_dtype():
    """A classical model loaded for int8 images or bool masks predicts them (they are not
    among the usual image dtypes), with scikit-image's results."""
    from skimage.filters import threshold_mean
    from skimage.measure import label

    rng = np.random.default_rng(5)
    masks = rng.random((2, 12, 10, 1)) < 0.5
    model = kerasseg.load("connected_components", input_dtype="bool", connectivity=1)
    got = model.predict(masks, verbose=0)["labels"][..., 0]
    np.testing.assert_array_equal(got, np.stack([label(m[..., 0], connectivity=1) for m in masks]))
    images = rng.integers(-128, 128, (2, 12, 10, 1)).astype(np.int8)
    mask = kerasseg.load("mean_threshold", input_dtype="int8").predict(images, verbose=0)["mask"]
    expected = np.stack([m > threshold_mean(m) for m in images])
    np.testing.assert_array_equal(mask.astype(bool), expected)
