"""Attention U-Net (Oktay et al. 2018, arXiv:1804.03999): additive gates on the U-Net skips."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomise_batch_norm

import kerasseg
from kerasseg.models.attention_unet import attention_gate, attention_unet

# MobileNetV2's features at strides 2, 4, 8, 16, 32 (Sandler et al. 2018, Table 2: the
# expansion widths 6 * (16, 24, 32, 96) and the last 1x1 conv's 1280).
MOBILENET_V2_TAPS = (96, 144, 192, 576, 1280)
# keras.applications MobileNetV2 (alpha 1.0): 3,538,984 parameters with its 1000-class top,
# a 1280 -> 1000 dense layer (https://keras.io/api/applications/mobilenet/).
MOBILENET_V2_NO_TOP = 3_538_984 - (1280 * 1000 + 1000)
DEFAULT = (256, 128, 64, 32, 16)
SMALL = (32, 16, 16, 8, 8)


def _conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def independent_attention_unet_count(taps, classes, filters=DEFAULT, attention=None):
    """Decoder + gates + head parameters from the design.

    Decoder block k (k = 1..5): 2x up-sampling, concatenation with the gated encoder feature
    at the new stride (none at full resolution), two 3x3 convs without bias + BatchNorm.
    Gate (Fig. 2): W_x 2x2 stride 2 without bias on the skip, W_g 1x1 with bias on the
    gating signal (the decoder's input at the coarser stride), psi 1x1 to one channel.
    """
    skips = [taps[3], taps[2], taps[1], taps[0], None]  # strides 16, 8, 4, 2, 1
    total, cin = 0, taps[4]
    for k, (skip, out) in enumerate(zip(skips, filters, strict=True)):
        if skip is not None:
            inter = attention[k] if attention else skip // 2
            total += _conv(2, skip, inter, False) + _conv(1, cin, inter) + _conv(1, inter, 1)
        total += _conv(3, cin + (skip or 0), out, False) + _conv(3, out, out, False) + 8 * out
        cin = out
    return total + _conv(3, cin, classes)  # the 3x3 head


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    built = attention_unet(
        encoder="mobilenet_v2", num_classes=3, activation="softmax", pad_to_fit=True
    )
    randomise_batch_norm(built)
    return built


@pytest.fixture(scope="module")
def variant():
    keras.utils.set_random_seed(1)
    return attention_unet(
        encoder="mobilenet_v2", num_classes=2, decoder_filters=SMALL, attention_filters=(8, 4, 4, 2)
    )


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def _producer(tensor):
    return tensor._keras_history.operation.name


def test_encoder_count_is_the_published_one():
    assert MOBILENET_V2_NO_TOP == 2_257_984


def test_parameter_count_matches_the_design(model):
    expected = MOBILENET_V2_NO_TOP + independent_attention_unet_count(MOBILENET_V2_TAPS, 3)
    assert model.count_params() == expected


def test_parameter_count_other_filters(variant):
    expected = MOBILENET_V2_NO_TOP + independent_attention_unet_count(
        MOBILENET_V2_TAPS, 2, SMALL, attention=(8, 4, 4, 2)
    )
    assert variant.count_params() == expected
    assert variant.get_layer("decoder4_attention_wx").kernel.shape == (2, 2, 96, 2)


def test_every_skip_is_gated_by_the_coarser_decoder_feature(model):
    gating = ["encoder", "decoder1_relu2", "decoder2_relu2", "decoder3_relu2"]
    for k in range(1, 5):
        gate = f"decoder{k}_attention"
        assert _producer(model.get_layer(f"{gate}_wx").input) == "encoder"
        assert _producer(model.get_layer(f"{gate}_wg").input) == gating[k - 1]
        concat = model.get_layer(f"decoder{k}_concat")
        assert [_producer(t) for t in concat.input] == [f"decoder{k}_upsample", f"{gate}_multiply"]
    names = {layer.name for layer in model.layers}
    assert "decoder5_concat" not in names and not any(n.startswith("decoder5_att") for n in names)


def test_gate_computes_the_papers_additive_attention():
    """`attention_gate` against numpy: alpha = sigmoid(psi(relu(W_x x + W_g g))) on g's grid,
    resampled bilinearly (half-pixel centres, tf.image.resize) to x's grid, times x."""
    skip_input, gating_input = keras.Input((None, None, 12)), keras.Input((None, None, 20))
    gated_output = attention_gate(skip_input, gating_input, 6, "gate")
    gate = keras.Model([skip_input, gating_input], gated_output)
    rng = np.random.default_rng(0)
    for layer in gate.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape) for w in layer.get_weights()])
    skip = rng.normal(size=(2, 16, 24, 12)).astype("float32")
    gating = rng.normal(size=(2, 8, 12, 20)).astype("float32")
    coefficients = keras.Model(gate.inputs, gate.get_layer("gate_resample").output)
    (wx,) = gate.get_layer("gate_wx").get_weights()
    wg, bg = gate.get_layer("gate_wg").get_weights()
    psi, bpsi = gate.get_layer("gate_psi").get_weights()
    theta = np.einsum("bhpwqc,pqci->bhwi", skip.reshape(2, 8, 2, 12, 2, 12), wx)
    phi = gating @ wg[0, 0] + bg
    alpha = 1 / (1 + np.exp(-(np.maximum(theta + phi, 0) @ psi[0, 0] + bpsi)))
    alpha = tf.image.resize(alpha, (16, 24), method="bilinear").numpy()
    assert alpha.std() > 0.1  # the coefficients vary: a wrong resampling would show
    np.testing.assert_allclose(np.asarray(coefficients([skip, gating])), alpha, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gate([skip, gating])), skip * alpha, atol=1e-5)


def test_pad_to_fit_takes_odd_sizes(model):
    y = model.predict(_images((2, 67, 93, 3)), verbose=0)
    assert y.shape == (2, 67, 93, 3)
    np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-5)


def test_odd_sizes_without_pad_to_fit_are_refused(variant):
    with pytest.raises(
        ValueError, match=r"`input_shape`.*multiples of 32.*\[64, 96\] instead of 67"
    ):
        attention_unet(encoder="mobilenet_v2", input_shape=(67, 93, 3))
    with pytest.raises(ValueError, match=r"`images`.*multiples of 32"):
        variant(np.zeros((1, 67, 93, 3), "float32"))
    assert variant(np.zeros((1, 64, 96, 3), "float32")).shape == (1, 64, 96, 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"encoder": None}, "`encoder` must name"),
        ({"encoder": "resnet5"}, r"`encoder`: unknown encoder 'resnet5'.*Closest"),
        ({"encoder_weights": 3}, "`encoder_weights` must be None, 'imagenet' or a path"),
        ({"decoder_filters": (256, 128)}, "`decoder_filters` must be five integers >= 1"),
        ({"decoder_filters": (8, 8, 8, 8, True)}, "`decoder_filters` must be five integers"),
        ({"attention_filters": 16}, r"`attention_filters` must be None .* or 4 integers"),
        ({"attention_filters": (8, 8, 8)}, "`attention_filters` must be None"),
        ({"attention_filters": (8, 8, 8, 0)}, "`attention_filters` must be None"),
        ({"activation": "relu"}, "`activation` must be one of"),
        ({"num_classes": 0}, "`num_classes` must be an integer >= 1"),
        ({"input_shape": (64, 64)}, "`input_shape` must be"),
        ({"input_shape": (8, 8, 3), "pad_to_fit": True}, "at least 17"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attention_unet(**kwargs)


def test_save_and_load_gives_identical_predictions(model, tmp_path):
    x = _images((2, 45, 70, 3), seed=2)
    expected = np.asarray(model(x, training=False))
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert type(restored) is type(model) and restored.min_size == model.min_size
    np.testing.assert_array_equal(np.asarray(restored(x, training=False)), expected)


def test_fit_trains_the_gates(variant):
    x = _images((2, 32, 32, 3), seed=3)
    y = (x[..., 0] > 127).astype("int32")
    variant.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,  # tracing the training step costs a minute on these CPUs
    )
    gates = [f"decoder{k}_attention_{part}" for k in range(1, 5) for part in ("wx", "wg", "psi")]
    before = {name: variant.get_layer(name).get_weights()[0].copy() for name in gates}
    history = variant.fit(x, y, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for name, kernel in before.items():
        assert not np.allclose(variant.get_layer(name).get_weights()[0], kernel), name


@pytest.mark.slow
def test_export_serve_tensor_matches_predict(model, tmp_path):
    path = kerasseg.export(model, tmp_path / "model", probabilities=True)
    loaded = tf.saved_model.load(str(path))
    x = _images((2, 67, 93, 3), seed=4)
    out = loaded.signatures["serve_tensor"](images=tf.constant(x))
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), expected.argmax(-1))


@pytest.mark.slow
def test_encoder_without_a_stride_2_feature():
    built = attention_unet(encoder="convnext_tiny", decoder_filters=SMALL)
    taps = (None, 96, 192, 384, 768)  # ConvNeXt-T: no stride-2 feature (Liu et al. 2022)
    decoder = built.count_params() - built.get_layer("encoder").count_params()
    assert decoder == independent_attention_unet_count(taps, 1, SMALL)
    names = {layer.name for layer in built.layers}
    assert "decoder3_attention_multiply" in names and "decoder4_attention_wx" not in names
    assert built(np.zeros((1, 32, 64, 3), "float32")).shape == (1, 32, 64, 1)
