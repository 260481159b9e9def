"""U-Net++ (Zhou et al. 2018, arXiv:1807.10165), decoder in smp's `UnetPlusPlus` layout."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomise_batch_norm

import kerasseg
from kerasseg.inference import output_is_logits
from kerasseg.models.unetplusplus import inference_model, unetplusplus

# MobileNetV2's features at strides 2, 4, 8, 16, 32 (Sandler et al. 2018, Table 2: the
# expansion widths 6 * (16, 24, 32, 96) and the last 1x1 conv's 1280).
MOBILENET_V2_TAPS = (96, 144, 192, 576, 1280)
# keras.applications MobileNetV2 (alpha 1.0): 3,538,984 parameters with its 1000-class top,
# a 1280 -> 1000 dense layer (https://keras.io/api/applications/mobilenet/).
MOBILENET_V2_NO_TOP = 3_538_984 - (1280 * 1000 + 1000)
SMALL = (32, 16, 16, 8, 8)
HEADS = ("output_1", "output_2", "output_3", "output_4")


def _conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def _block(cin, cout):
    """Two 3x3 convs without bias, each with BatchNorm (gamma, beta, moving mean/var)."""
    return _conv(3, cin, cout, False) + _conv(3, cout, cout, False) + 2 * 4 * cout


def node_width(taps, filters, i, j):
    """Channels of node X^{i,j} (paper notation; X^{i,0} = the encoder feature at level i).

    Diagonal nodes (i + j = 4) are the decoder proper, with decoder_filters[3 - i]; the
    other nested nodes keep the channels of their level's encoder feature (smp's layout),
    or decoder_filters[3 - i] where the encoder has no feature at that level (None).
    """
    if j == 0:
        return taps[i] or 0
    if i + j == 4 or taps[i] is None:
        return filters[3 - i]
    return taps[i]


def independent_unetplusplus_count(taps, classes, filters=(256, 128, 64, 32, 16), deep=False):
    """Decoder + head parameters from the design: X^{i,j} = H([U(X^{i+1,j-1}), X^{i,0..j-1}])."""
    total = 0
    for j in range(1, 5):
        for i in range(5 - j):
            cin = node_width(taps, filters, i + 1, j - 1)
            cin += sum(node_width(taps, filters, i, k) for k in range(j))
            total += _block(cin, node_width(taps, filters, i, j))
    total += _block(filters[3], filters[4])  # X^{0,4} (stride 2) up to the input size
    total += _conv(3, filters[4], classes)  # the 3x3 head
    if deep:  # 1x1 heads on X^{0,1}, X^{0,2}, X^{0,3}
        total += sum(_conv(1, node_width(taps, filters, 0, j), classes) for j in (1, 2, 3))
    return total


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    built = unetplusplus(
        encoder="mobilenet_v2", num_classes=3, activation="softmax", pad_to_fit=True
    )
    randomise_batch_norm(built)
    return built


@pytest.fixture(scope="module")
def supervised():
    keras.utils.set_random_seed(1)
    built = unetplusplus(
        encoder="mobilenet_v2", decoder_filters=SMALL, deep_supervision=True, pad_to_fit=True
    )
    randomise_batch_norm(built, seed=1)
    return built


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def _run(model, x):
    """Inference outputs as numpy, called eagerly: on these shared CPUs, tracing each new
    model for `predict` costs more than the call (graph mode is covered by `predict` on
    odd sizes and by the exports)."""
    return keras.tree.map_structure(np.asarray, model(x, training=False))


def test_encoder_count_is_the_published_one():
    assert MOBILENET_V2_NO_TOP == 2_257_984


def test_parameter_count_matches_the_design(model):
    expected = MOBILENET_V2_NO_TOP + independent_unetplusplus_count(MOBILENET_V2_TAPS, 3)
    assert model.count_params() == expected


def test_parameter_count_with_deep_supervision(supervised):
    expected = MOBILENET_V2_NO_TOP + independent_unetplusplus_count(
        MOBILENET_V2_TAPS, 1, SMALL, deep=True
    )
    assert supervised.count_params() == expected


def test_nested_dense_skip_pathways(model):
    def producer(tensor):
        return tensor._keras_history.operation.name

    for j in range(1, 5):
        for i in range(5 - j):
            deeper = "encoder" if j == 1 else f"x{i + 1}_{j - 1}_relu2"
            upsample = model.get_layer(f"x{i}_{j}_upsample")
            assert producer(upsample.input) == deeper
            concat = model.get_layer(f"x{i}_{j}_concat")
            same_level = [f"x{i}_{k}_relu2" for k in range(j - 1, 0, -1)]
            assert [producer(t) for t in concat.input] == [upsample.name, *same_level, "encoder"]
            assert model.get_layer(f"x{i}_{j}_relu2").output.shape[-1] == node_width(
                MOBILENET_V2_TAPS, (256, 128, 64, 32, 16), i, j
            )
    assert producer(model.get_layer("final_upsample").input) == "x0_4_relu2"
    assert model.get_layer("head").kernel.shape == (3, 3, 16, 3)


def test_pad_to_fit_takes_odd_sizes(model):
    y = model.predict(_images((2, 67, 93, 3)), verbose=0)
    assert y.shape == (2, 67, 93, 3)
    np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-5)


def test_odd_sizes_without_pad_to_fit_are_refused():
    with pytest.raises(
        ValueError, match=r"`input_shape`.*multiples of 32.*\[64, 96\] instead of 67"
    ):
        unetplusplus(encoder="mobilenet_v2", input_shape=(67, 93, 3))
    plain = unetplusplus(encoder="mobilenet_v2", decoder_filters=SMALL)
    with pytest.raises(ValueError, match=r"`images`.*multiples of 32"):
        plain(np.zeros((1, 67, 93, 3), "float32"))
    assert _run(plain, np.zeros((1, 64, 96, 3), "float32")).shape == (1, 64, 96, 1)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"encoder": None}, ValueError, "`encoder` must name"),
        ({"encoder": "resnet5"}, ValueError, r"`encoder`: unknown encoder 'resnet5'.*Closest"),
        ({"encoder_weights": 3}, ValueError, "`encoder_weights` must be None, 'imagenet'"),
        ({"decoder_filters": (256, 128)}, ValueError, "`decoder_filters` must be five integers"),
        ({"decoder_filters": (8, 8, 8, 8, 0)}, ValueError, "`decoder_filters` must be five"),
        ({"decoder_filters": "256"}, ValueError, "`decoder_filters` must be five integers"),
        ({"deep_supervision": "yes"}, TypeError, "`deep_supervision` must be True or False"),
        ({"activation": "relu"}, ValueError, "`activation` must be one of"),
        ({"num_classes": 0}, ValueError, "`num_classes` must be an integer >= 1"),
        ({"input_shape": (64, 64)}, ValueError, "`input_shape` must be"),
        ({"input_shape": (8, 8, 3), "pad_to_fit": True}, ValueError, "at least 17"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        unetplusplus(**kwargs)


def test_save_and_load_gives_identical_predictions(model, supervised, tmp_path):
    x = _images((2, 45, 70, 3), seed=2)
    restored = {}
    for built in (model, supervised):
        path = tmp_path / f"{built.name}.keras"
        built.save(path)
        restored[built.name] = keras.saving.load_model(path)
        assert type(restored[built.name]) is type(built)
        assert restored[built.name].min_size == built.min_size
        got, expected = _run(restored[built.name], x), _run(built, x)
        for a, b in zip(keras.tree.flatten(got), keras.tree.flatten(expected), strict=True):
            np.testing.assert_array_equal(a, b)
    # The single-output model of a restored deep-supervision model still works.
    averaged = inference_model(restored[supervised.name])
    np.testing.assert_allclose(_run(averaged, x), np.mean(_run(supervised, x), 0), atol=1e-6)


def test_deep_supervision_outputs(supervised):
    assert list(supervised.output_names) == list(HEADS)
    outputs = supervised.predict(_images((2, 67, 93, 3), seed=3), verbose=0)  # graph mode
    assert isinstance(outputs, list) and len(outputs) == 4
    assert all(o.shape == (2, 67, 93, 1) for o in outputs)
    # Four distinct maps: heads 1-3 on X^{0,1..3} (1x1 + 2x bilinear), head 4 on the decoder.
    assert not any(np.allclose(outputs[a], outputs[b]) for a in range(4) for b in range(a))
    for j in (1, 2, 3):
        assert supervised.get_layer(f"head_{j}").kernel.shape == (1, 1, 96, 1)
        assert supervised.get_layer(f"head_{j}").input.shape[1:] == (None, None, 96)
    assert supervised.get_layer("head_4").kernel.shape == (3, 3, 8, 1)


def test_last_head_is_the_model_without_deep_supervision(supervised):
    plain = unetplusplus(encoder="mobilenet_v2", decoder_filters=SMALL, pad_to_fit=True)
    for layer in plain.layers:
        if layer.weights:
            source = supervised.get_layer("head_4" if layer.name == "head" else layer.name)
            layer.set_weights(source.get_weights())
    x = _images((2, 40, 50, 3), seed=4)
    np.testing.assert_allclose(_run(plain, x), _run(supervised, x)[3], atol=1e-5)


def test_inference_model_average_and_single_heads(supervised):
    x = _images((2, 64, 64, 3), seed=5)
    outputs = _run(supervised, x)
    averaged = inference_model(supervised)
    assert averaged.output_names == ["output"] and output_is_logits(averaged)
    assert averaged.count_params() == supervised.count_params()  # shares, copies nothing
    np.testing.assert_allclose(_run(averaged, x), np.mean(outputs, 0), atol=1e-6)
    for j in (1, 2, 3, 4):
        single = inference_model(supervised, head=j)
        assert single.min_size == supervised.min_size and output_is_logits(single)
        np.testing.assert_allclose(_run(single, x), outputs[j - 1], atol=1e-6)
    # "Fast" mode prunes the nodes a head does not need.
    names = {layer.name for layer in inference_model(supervised, head=2).layers}
    assert "x0_2_conv1" in names and "x0_3_conv1" not in names and "x1_3_conv1" not in names


def test_inference_model_of_sigmoid_heads_reads_as_probabilities():
    built = unetplusplus(
        encoder="mobilenet_v2", decoder_filters=SMALL, deep_supervision=True, activation="sigmoid"
    )
    x = _images((1, 32, 32, 3), seed=6)
    averaged, first = inference_model(built), inference_model(built, head=1)
    assert not output_is_logits(averaged) and not output_is_logits(first)
    outputs = _run(built, x)
    assert 0 < np.min(outputs) and np.max(outputs) < 1
    np.testing.assert_allclose(_run(averaged, x), np.mean(outputs, 0), atol=1e-6)
    np.testing.assert_allclose(_run(first, x), outputs[0], atol=1e-6)


def test_inference_model_bad_arguments(model, supervised):
    with pytest.raises(ValueError, match="`model` must be a U-Net\\+\\+ built with `deep_supervi"):
        inference_model(model)
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        inference_model("unetplusplus")
    for head in (0, 5, "mean", True, 2.0):
        with pytest.raises(ValueError, match="`head` must be 'average'.*from 1 to 4"):
            inference_model(supervised, head=head)


def test_fit_trains_every_head(supervised):
    x = _images((2, 32, 32, 3), seed=7)
    y = (x[..., :1] > 127).astype("float32")
    supervised.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={name: keras.losses.BinaryCrossentropy(from_logits=True) for name in HEADS},
        loss_weights={name: 0.25 for name in HEADS},
        run_eagerly=True,  # tracing the training step costs a minute on these CPUs
    )
    before = {j: supervised.get_layer(f"head_{j}").get_weights()[0].copy() for j in (1, 2, 3, 4)}
    history = supervised.fit(x, {name: y for name in HEADS}, epochs=1, batch_size=2, verbose=0)
    for name in HEADS:
        assert np.isfinite(history.history[f"{name}_loss"][0])
    for j, kernel in before.items():
        assert not np.allclose(supervised.get_layer(f"head_{j}").get_weights()[0], kernel)


@pytest.mark.slow
def test_export_serve_tensor_matches_predict(model, tmp_path):
    path = kerasseg.export(model, tmp_path / "model", probabilities=True)
    loaded = tf.saved_model.load(str(path))
    x = _images((2, 67, 93, 3), seed=8)
    out = loaded.signatures["serve_tensor"](images=tf.constant(x))
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), expected.argmax(-1))


@pytest.mark.slow
def test_export_of_deep_supervision_takes_one_output(supervised, tmp_path):
    with pytest.raises(ValueError, match=r"4 outputs.*deep_supervision=True.*inference_model"):
        kerasseg.export(supervised, tmp_path / "refused")
    averaged = inference_model(supervised)
    path = kerasseg.export(averaged, tmp_path / "model", probabilities=True)
    loaded = tf.saved_model.load(str(path))
    x = _images((2, 67, 93, 3), seed=9)
    out = loaded.signatures["serve_tensor"](images=tf.constant(x))
    expected = 1 / (1 + np.exp(-_run(averaged, x)))  # the heads give logits
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), (expected[..., 0] > 0.5).astype("uint8"))


@pytest.mark.slow
def test_encoder_without_a_stride_2_feature():
    built = unetplusplus(encoder="convnext_tiny", decoder_filters=SMALL, deep_supervision=True)
    taps = (None, 96, 192, 384, 768)  # ConvNeXt-T: no stride-2 feature (Liu et al. 2022)
    decoder = built.count_params() - built.get_layer("encoder").count_params()
    assert decoder == independent_unetplusplus_count(taps, 1, SMALL, deep=True)
    names = {layer.name for layer in built.layers}
    assert "x0_1_concat" not in names and "x0_2_concat" in names
    outputs = _run(built, np.zeros((1, 32, 64, 3), "float32"))
    assert [o.shape for o in outputs] == [(1, 32, 64, 1)] * 4
