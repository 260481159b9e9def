"""Tiled prediction (`kerasseg.inference.tiling`) against whole-image prediction, NumPy
references of per-pixel models and MONAI's sliding-window inference."""

import importlib.util
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import kerasseg
from kerasseg.inference import predict_image
from kerasseg.inference.tiling import (
    axis_weights,
    predict_tiled,
    tiled_probability_bands,
    window_count,
)
from kerasseg.inference.windows import axis_windows, tile_windows


@pytest.fixture(scope="module")
def unet():
    """A small random U-Net: total stride 4, linear "output" layer (logits), 3 classes."""
    keras.utils.set_random_seed(0)
    return kerasseg.load(
        "unet", input_shape=(None, None, 3), num_classes=3, depth=2, base_filters=8
    )


def _receptive_radius(model, channels=3, size=96):
    """The largest Chebyshev distance at which perturbing one input pixel changes an output,
    over the four phases of the stride grid (measured, not derived from the architecture)."""
    base = np.random.default_rng(1).uniform(0, 255, (size, size, channels)).astype(np.float32)
    batch = np.repeat(base[None], 5, axis=0)
    pixels = [(size // 2 - 4 + k, size // 2 - 3 + 2 * k) for k in range(4)]
    for k, (y, x) in enumerate(pixels):
        batch[k + 1, y, x] += 200.0
    outputs = np.asarray(model.predict_on_batch(batch))
    radius = 0
    for k, (y, x) in enumerate(pixels):
        rows, columns = np.nonzero(np.abs(outputs[k + 1] - outputs[0]).max(axis=-1) > 1e-6)
        assert rows.max() < size - 1 and columns.max() < size - 1, "perturbation hit the border"
        radius = max(radius, np.abs(rows - y).max(), np.abs(columns - x).max())
    return int(radius)


def _smallest_overlap(height, width, tile, overlap, divisor):
    overlaps = []
    for size in (height, width):
        spans = axis_windows(size + -size % divisor, tile, overlap, divisor)
        overlaps += [a[0] + a[1] - b[0] for a, b in zip(spans, spans[1:], strict=False)]
    return min(overlaps)


def test_tiled_equals_whole_image_where_a_quarter_overlap_covers_the_receptive_radius(unet):
    radius = _receptive_radius(unet)
    assert 8 <= radius <= 40  # two 3x3 convolutions per level over two poolings
    image = np.random.default_rng(2).integers(0, 256, (418, 390, 3), dtype=np.uint8)
    assert image.shape[0] % 192 and image.shape[1] % 192 and image.shape[0] % 4
    whole_labels, whole = predict_image(unet, image)

    assert _smallest_overlap(418, 390, 192, 0.5, 4) / 4 > radius  # 96 / 4 = 24 > radius
    labels, tiled = predict_tiled(unet, image, tile=192, overlap=0.5, batch_size=4)
    assert np.abs(tiled - whole).max() < 1e-4
    np.testing.assert_array_equal(labels, whole_labels)

    # An overlap whose quarter is below the radius: the window edges show (the test can fail).
    assert _smallest_overlap(418, 390, 192, 0.125, 4) / 4 < radius
    _, seamed = predict_tiled(unet, image, tile=192, overlap=0.125, batch_size=4)
    assert np.abs(seamed - whole).max() > 1e-4


class _Recording:
    """Forwards to a model's `predict_on_batch` and records every input shape and dtype."""

    def __init__(self, model):
        self.model = model
        self.size_divisor = model.size_divisor
        self.calls = []

    def predict_on_batch(self, images):
        self.calls.append((images.shape, images.dtype))
        return self.model.predict_on_batch(images)


@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_the_model_only_sees_full_batches_of_one_window_shape(unet, batch_size):
    image = np.random.default_rng(3).integers(0, 256, (300, 270, 3), dtype=np.uint8)
    recording = _Recording(unet)
    predict_tiled(recording, image, tile=128, batch_size=batch_size, from_logits=True)
    count = window_count(300, 270, unet, tile=128, overlap=0.25)
    assert (
        count == len(tile_windows(300, 272, 128, 0.25, 4)) == 9
    )  # rows 0, 96, 172; columns 0, 96, 144
    assert len(recording.calls) == -(-count // batch_size)
    assert set(recording.calls) == {((batch_size, 128, 128, 3), np.dtype("float32"))}


def test_image_smaller_than_the_tile_is_one_window_of_its_padded_size(unet):
    image = np.random.default_rng(4).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    recording = _Recording(unet)
    labels, probs = predict_tiled(recording, image, tile=128, batch_size=2, from_logits=True)
    assert recording.calls == [((2, 52, 72, 3), np.dtype("float32"))]
    whole_labels, whole = predict_image(unet, image)
    np.testing.assert_allclose(probs, whole, atol=1e-6)
    np.testing.assert_array_equal(labels, whole_labels)


@pytest.mark.parametrize(
    "size, tile, overlap, divisor",
    [(1000, 256, 0.25, 32), (600, 128, 0.9, 8), (257, 64, 0.5, 1), (300, 100, 0.0, 4)],
)
def test_cosine_weights_of_neighbours_sum_to_one(size, tile, overlap, divisor):
    size += -size % divisor
    spans = axis_windows(size, tile, overlap, divisor)
    total = np.zeros(size)
    for (start, length, own_start, own_stop), weight in zip(
        spans, axis_weights(spans), strict=True
    ):
        total[start : start + length] += weight
        assert weight[own_start - start : own_stop - start].min() >= 0.5  # the owner leads
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)
    for index in range(1, len(spans)):  # nothing within a quarter overlap of an inner edge
        behind, ahead = spans[index - 1], spans[index]
        quarter = int((behind[0] + behind[1] - ahead[0]) // 4)
        assert not axis_weights(spans)[index][:quarter].any()
        assert not axis_weights(spans)[index - 1][behind[1] - quarter :].any()


def _pixel_model(channels, classes, activation=None, seed=0):
    """A 1x1 convolution: every output pixel depends on its own input pixel only."""
    inputs = keras.Input((None, None, channels))
    layer = keras.layers.Conv2D(classes, 1, activation=activation, name="output")
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.02, (1, 1, channels, classes)).astype(np.float32)
    bias = rng.normal(0, 0.5, classes).astype(np.float32)
    layer.set_weights([kernel, bias])
    return model, kernel[0, 0], bias


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("blend", ["cosine", "gaussian", "constant"])
def test_every_blend_gives_the_per_pixel_answer_of_a_1x1_logits_model(blend):
    model, kernel, bias = _pixel_model(3, 4)
    image = np.random.default_rng(5).integers(0, 256, (150, 130, 3), dtype=np.uint8)
    expected = _softmax(image.astype(np.float64) @ kernel + bias)
    labels, probs = predict_tiled(model, image, tile=64, overlap=0.3, blend=blend)
    assert probs.shape == (150, 130, 4) and probs.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_allclose(probs, expected, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(labels, expected.argmax(axis=-1))


def test_sigmoid_model_with_threshold_on_grey_uint16():
    model, _, _ = _pixel_model(1, 1, activation="sigmoid")
    model.get_layer("output").set_weights(
        [np.full((1, 1, 1, 1), 1e-4, np.float32), np.array([-3.3], np.float32)]
    )
    image = np.random.default_rng(6).integers(0, 65536, (97, 83), dtype=np.uint16)
    expected = 1.0 / (1.0 + np.exp(-(image.astype(np.float64) * 1e-4 - 3.3)))[..., None]
    assert expected.max() > 0.9 and expected.min() < 0.1  # values as stored, not rescaled
    labels, probs = predict_tiled(model, image, tile=32, overlap=0.25, threshold=0.7)
    assert probs.shape == (97, 83, 1)
    np.testing.assert_allclose(probs, expected, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(labels, (expected[..., 0] > 0.7).astype(np.int32))


def test_bands_stream_the_rows_in_order_and_stay_within_a_tile(unet):
    image = np.random.default_rng(7).integers(0, 256, (333, 150, 3), dtype=np.uint8)
    _, probs = predict_tiled(unet, image, tile=64, overlap=0.25)
    bands = list(tiled_probability_bands(unet, image, tile=64, overlap=0.25))
    assert bands[0][0] == 0 and bands[-1][1] == 333
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:], strict=False))
    assert max(stop - start for start, stop, _ in bands) <= 64
    np.testing.assert_array_equal(np.concatenate([band for *_, band in bands]), probs)
    labels, none = predict_tiled(unet, image, tile=64, overlap=0.25, keep_probabilities=False)
    assert none is None
    np.testing.assert_array_equal(labels, probs.argmax(axis=-1))


def test_predict_image_delegates_with_tile_and_is_unchanged_without(unet):
    image = np.random.default_rng(8).integers(0, 256, (140, 100, 3), dtype=np.uint8)
    tiled = predict_image(unet, image, tile=64, overlap=0.5, batch_size=2)
    direct = predict_tiled(unet, image, tile=64, overlap=0.5, batch_size=2)
    np.testing.assert_array_equal(tiled[1], direct[1])
    whole_labels, whole = predict_image(unet, image)
    assert whole.shape == (140, 100, 3)
    np.testing.assert_allclose(whole.sum(axis=-1), 1.0, atol=1e-5)


MONAI_SCRIPT = """
import sys
sys.modules["tensorflow"] = None  # MONAI imports TensorFlow only for optional features
import numpy as np
import torch
from monai.inferers.utils import sliding_window_inference

data = np.load(sys.argv[1])
kernel = torch.from_numpy(data["kernel"]).permute(3, 2, 0, 1)  # HWIO -> OIHW
bias = torch.from_numpy(data["bias"])
image = torch.from_numpy(data["image"]).permute(2, 0, 1)[None]

def predictor(windows):
    return torch.nn.functional.conv2d(windows, kernel, bias, padding=2)

with torch.no_grad():
    out = sliding_window_inference(image, (64, 64), 4, predictor, 0.25, "gaussian")
np.save(sys.argv[2], out[0].permute(1, 2, 0).numpy())
"""


@pytest.mark.slow  # importing MONAI takes 10-20 s
def test_gaussian_blend_matches_monai_sliding_window_inference(tmp_path):
    """Same window layout (stride 1), same importance map, same division: MONAI's result.

    MONAI runs in a subprocess (torch and TensorFlow in one process may crash) with a torch
    convolution of the same weights as the Keras one."""
    if importlib.util.find_spec("monai") is None or importlib.util.find_spec("torch") is None:
        pytest.skip("MONAI (with torch) is not installed: `pip install monai`")
    inputs = keras.Input((None, None, 2))
    layer = keras.layers.Conv2D(3, 5, padding="same", name="output")
    model = keras.Model(inputs, layer(inputs))
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    bias = np.random.default_rng(10).normal(0, 1, 3).astype(np.float32)
    layer.set_weights([kernel, bias])
    image = np.random.default_rng(9).uniform(0, 1, (150, 130, 2)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", image=image, kernel=kernel, bias=bias)
    script = tmp_path / "monai_reference.py"
    script.write_text(MONAI_SCRIPT)
    subprocess.run(
        [sys.executable, script, tmp_path / "inputs.npz", tmp_path / "monai.npy"],
        check=True,
        timeout=120,
    )
    expected = np.load(tmp_path / "monai.npy")
    # MONAI blends the predictor's raw outputs (logits here): blend ours raw too.
    bands = tiled_probability_bands(
        model, image, tile=64, overlap=0.25, blend="gaussian", from_logits=False
    )
    blended = np.concatenate([band for *_, band in bands])
    assert window_count(150, 130, model, tile=64, overlap=0.25) == 9
    np.testing.assert_allclose(blended, expected, rtol=0, atol=1e-5)
    assert np.abs(expected).max() > 0.5
    constant = np.concatenate(
        [band for *_, band in tiled_probability_bands(model, image, tile=64, blend="constant")]
    )
    assert np.abs(constant - expected).max() > 1e-3  # the blend matters here: the test can fail


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (
            dict(tile=102),
            ValueError,
            "`tile`: tile height 102 is not a multiple of the model's total stride 4; use 100 "
            "or 104.",
        ),
        (dict(tile=0), ValueError, "`tile height` must be an integer >= 1; got 0."),
        (dict(overlap=1.0), ValueError, "`overlap` must be a fraction of the tile in [0, 1); got"),
        (dict(batch_size=0), ValueError, "`batch_size` must be an integer >= 1; got 0."),
        (
            dict(blend="gausian"),
            ValueError,
            "`blend` must be one of 'cosine', 'gaussian', 'constant'; got 'gausian'. Did you "
            "mean 'gaussian'?",
        ),
        (dict(threshold=1.5), ValueError, "`threshold` must be a number in [0, 1]; got 1.5."),
    ],
)
def test_invalid_arguments_say_what_is_accepted(unet, arguments, error, message):
    image = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(error) as raised:
        predict_tiled(unet, image, **arguments)
    assert message in str(raised.value)
    if "threshold" not in arguments:  # the band generator checks when called, not iterated
        with pytest.raises(error, match=re.escape(message)):
            tiled_probability_bands(unet, image, **arguments)


def test_a_model_with_valid_convolutions_is_refused():
    model, _, _ = _pixel_model(1, 1)
    model.size_offset = 92
    with pytest.raises(ValueError, match="size_offset=92"):
        predict_tiled(model, np.zeros((64, 64), np.uint8), tile=32)


def test_a_tile_below_the_models_smallest_input_is_refused():
    model, _, _ = _pixel_model(1, 1)
    model.min_size = 64
    with pytest.raises(ValueError, match="smaller than the model's smallest input side 64"):
        predict_tiled(model, np.zeros((100, 100), np.uint8), tile=32)


@pytest.mark.parametrize("image", [np.zeros((4, 5, 6, 1)), np.zeros((0, 5)), np.array([["a"]])])
def test_bad_images_are_refused(image):
    model, _, _ = _pixel_model(1, 1)
    with pytest.raises((ValueError, TypeError), match="`image` must"):
        predict_tiled(model, image, tile=32)
