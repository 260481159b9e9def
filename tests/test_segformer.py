"""SegFormer (Xie et al. 2021, arXiv:2105.15203) in the layout of HuggingFace transformers."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomise_batch_norm

import kerasseg
from kerasseg.models.segformer import (
    DropPath,
    EfficientSelfAttention,
    MixFFN,
    min_input_size,
    mix_transformer,
    preprocessing_rule,
    segformer,
)
from kerasseg.preprocessing import IMAGENET_MEAN, IMAGENET_STD

# The design, from the paper (Sec. 3, Table 6) and HuggingFace's SegformerConfig: per variant
# the stage widths, the blocks per stage and the decoder width.
DESIGN = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3), 768),
}
KERNELS, STRIDES, REDUCTIONS, HEADS = (7, 3, 3, 3), (4, 2, 2, 2), (8, 4, 2, 1), (1, 2, 5, 8)

# Published parameter counts in millions, arXiv:2105.15203v3 (NeurIPS 2021): Table 1(a),
# "Params" of the encoder and of the decoder (ADE20K, 150 classes), and Table 2 (also Table 4
# for B5), the whole SegFormer on ADE20K. (3.7 / 14.0 / 25.4 / 45.2 / 62.6 / 82.0 M, sometimes
# quoted for MiT, are PVT v2-B0..B5's ImageNet figures, arXiv:2106.13797, a different network.)
PAPER_ENCODER = {"b0": 3.4, "b1": 13.1, "b2": 24.2, "b3": 44.0, "b4": 60.8, "b5": 81.4}
PAPER_DECODER = {"b0": 0.4, "b1": 0.6, "b2": 3.3, "b3": 3.3, "b4": 3.3, "b5": 3.3}
PAPER_TOTAL = {"b0": 3.8, "b1": 13.7, "b2": 27.5, "b3": 47.3, "b4": 64.1, "b5": 84.7}
ADE20K_CLASSES = 150


def _dense(cin, cout, bias=True):
    return cin * cout + (cout if bias else 0)


def _conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def _norm(c):
    return 2 * c  # LayerNorm / BatchNorm gamma and beta


def independent_encoder_count(widths, depths):
    """MiT parameters from the layer shapes (all trainable: no BatchNorm)."""
    total, cin = 0, 3
    for c, depth, k, r in zip(widths, depths, KERNELS, REDUCTIONS, strict=True):
        total += _conv(k, cin, c) + _norm(c)  # overlapping patch embedding: conv + LN
        attention = 4 * _dense(c, c)  # query, key, value, output projection
        if r > 1:
            attention += _conv(r, c, c) + _norm(c)  # sequence reduction conv + LN
        mix_ffn = _dense(c, 4 * c) + (9 * 4 * c + 4 * c) + _dense(4 * c, c)  # + 3x3 depthwise
        total += depth * (_norm(c) + attention + _norm(c) + mix_ffn)
        total += _norm(c)  # the stage's final LayerNorm
        cin = c
    return total


def independent_decoder_count(widths, filters, classes):
    """All-MLP decoder: a Linear per stage, 1x1 fuse (no bias) + BN, 1x1 classifier."""
    total = sum(_dense(c, filters) for c in widths)
    total += _conv(1, 4 * filters, filters, bias=False) + _norm(filters)
    return total + _conv(1, filters, classes)


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize(
    "variant",
    ["b0", "b1", "b2"] + [pytest.param(v, marks=pytest.mark.slow) for v in ("b3", "b4", "b5")],
)
def test_parameter_counts_match_the_design_and_the_paper(variant):
    widths, depths, filters = DESIGN[variant]
    model = segformer(num_classes=ADE20K_CLASSES, variant=variant)
    encoder = model.get_layer("encoder")
    expected_encoder = independent_encoder_count(widths, depths)
    expected_decoder = independent_decoder_count(widths, filters, ADE20K_CLASSES)
    assert encoder.count_params() == _trainable(encoder) == expected_encoder
    assert _trainable(model) == expected_encoder + expected_decoder
    # Keras also counts BatchNorm's moving mean and variance (PyTorch buffers, not parameters).
    assert model.count_params() == expected_encoder + expected_decoder + 2 * filters

    # Published figures, to 0.1M. The totals and decoders round to the paper's numbers; the
    # encoders agree within 0.1M (the paper's B0 encoder, 3.4, is 0.08M above the 3.32M its
    # layers hold, while its B0 decoder 0.4 and total 3.8 agree with the count here).
    total, encoder_total = _trainable(model) / 1e6, encoder.count_params() / 1e6
    assert round(total, 1) == PAPER_TOTAL[variant]
    assert round(total - encoder_total, 1) == PAPER_DECODER[variant]
    assert abs(encoder_total - PAPER_ENCODER[variant]) <= 0.1


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    built = segformer(num_classes=3, activation="softmax", include_preprocessing=True)
    randomise_batch_norm(built)
    return built


def test_layout_follows_the_design(model):
    encoder = model.get_layer("encoder")
    widths, depths, _ = DESIGN["b0"]
    for stage, (c, depth, k, s, r, heads) in enumerate(
        zip(widths, depths, KERNELS, STRIDES, REDUCTIONS, HEADS, strict=True), start=1
    ):
        proj = encoder.get_layer(f"patch_embed{stage}_proj")
        assert proj.kernel_size == (k, k) and proj.strides == (s, s) and proj.filters == c
        assert encoder.get_layer(f"patch_embed{stage}_pad").padding == ((k // 2,) * 2,) * 2
        blocks = [layer for layer in encoder.layers if layer.name.startswith(f"block{stage}_")]
        attention = [layer for layer in blocks if isinstance(layer, EfficientSelfAttention)]
        mlps = [layer for layer in blocks if isinstance(layer, MixFFN)]
        assert len(attention) == len(mlps) == depth
        assert all(a.num_heads == heads and a.sr_ratio == r for a in attention)
        assert all(m.hidden_filters == 4 * c for m in mlps)
        if r > 1:
            assert attention[0].sr.kernel_size == (r, r) and attention[0].sr.strides == (r, r)
    norms = [
        layer
        for layer in encoder._flatten_layers()
        if isinstance(layer, keras.layers.LayerNormalization)
    ]
    # Per stage: patch embedding, 2 per block, the stage's own; plus the reductions (r > 1).
    assert len(norms) == sum(2 + 2 * d for d in depths) + sum(depths[:3])
    assert {n.epsilon for n in norms} == {1e-5}  # HuggingFace: nn.LayerNorm's default
    assert model.get_layer("linear_fuse_bn").epsilon == 1e-5
    # Stochastic depth rises linearly from 0 (no layer) to 0.1 over the 8 blocks.
    rates = [layer.rate for layer in encoder.layers if layer.name.endswith("_drop_path1")]
    np.testing.assert_allclose(rates, np.linspace(0, 0.1, 8)[1:])


def test_odd_input_size_gives_the_same_size(model):
    x = np.random.default_rng(0).uniform(0, 255, (2, 67, 93, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 67, 93, 3)
    np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-5)
    features = model.get_layer("encoder")(x)
    # Stage maps: the input / 4, / 8, / 16, / 32, rounded up (padding k // 2).
    assert [tuple(f.shape[1:3]) for f in features] == [(17, 24), (9, 12), (5, 6), (3, 3)]


def test_predict_on_many_sizes_after_retracing(model):
    for height, width in [(29, 29), (40, 50), (64, 33)]:
        x = np.zeros((1, height, width, 3), "float32")
        assert model.predict(x, verbose=0).shape == (1, height, width, 3)


def test_sizes_below_the_minimum_are_refused(model):
    assert min_input_size() == 29  # ceil(29 / 4) = 8 covers stage 1's 8x8 reduction
    with pytest.raises(ValueError, match=r"`input_shape`.*at least 29.*\(28, 64, 3\)"):
        segformer(input_shape=(28, 64, 3))
    with pytest.raises(ValueError, match=r"`images`.*at least 29"):
        model(np.zeros((1, 28, 40, 3), "float32"))
    assert segformer(input_shape=(29, 31, 3)).output.shape == (None, 29, 31, 1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"variant": "b6"}, r"`variant` must be one of \('b0',.*'b5'\).*got 'b6'"),
        ({"variant": "B1"}, r"`variant`.*got 'B1'. Closest: \['b1'\]"),
        ({"variant": 0}, "`variant` must be one of"),
        ({"decoder_filters": 0}, "`decoder_filters` must be an integer >= 1; got 0"),
        ({"decoder_filters": 25.6}, "`decoder_filters` must be an integer"),
        ({"dropout": 1.0}, r"`dropout` must be a number in \[0, 1\)"),
        ({"drop_path_rate": -0.1}, r"`drop_path_rate` must be a number in \[0, 1\)"),
        ({"activation": "relu"}, "`activation` must be one of"),
        ({"num_classes": 0}, "`num_classes` must be an integer >= 1"),
        ({"input_shape": (64, 64)}, "`input_shape` must be"),
        ({"input_shape": (64.0, 64, 3)}, "`input_shape`: height and width must be None or"),
        ({"input_shape": (64, 16, 3)}, "`input_shape`: SegFormer needs .* at least 29"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        segformer(**kwargs)


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match=r"`filters` \(30\) must be divisible by `num_heads`"):
        EfficientSelfAttention(30, 4)
    with pytest.raises(ValueError, match=r"`rate` must be a number in \[0, 1\)"):
        DropPath(1.0)


def test_drop_path_drops_whole_samples_in_training_only():
    layer = DropPath(0.5, seed=1)
    x = np.ones((64, 3, 4, 5), "float32")
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = np.asarray(layer(x, training=True))
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / 0.5
    assert (per_sample.min(1) == per_sample.max(1)).all()  # whole samples
    assert 10 < (per_sample[:, 0] == 0).sum() < 54


def test_dropout_and_drop_path_only_in_training(model):
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    assert not np.allclose(model(x, training=True), model(x, training=False))


def test_include_preprocessing_is_imagenet_mean_std():
    assert preprocessing_rule({}) == "torch"
    assert preprocessing_rule({"include_preprocessing": True}) == "none"
    keras.utils.set_random_seed(2)
    inside = segformer(num_classes=2, include_preprocessing=True, dropout=0)
    outside = segformer(num_classes=2, dropout=0)
    outside.set_weights(inside.get_weights())
    x = np.random.default_rng(2).uniform(0, 255, (1, 40, 36, 3)).astype("float32")
    normalised = (x / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(
        inside(x, training=False), outside(normalised.astype("float32"), training=False), atol=1e-4
    )


def test_save_and_load_gives_identical_predictions(model, tmp_path):
    x = np.random.default_rng(3).uniform(0, 255, (2, 45, 70, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert type(restored) is type(model) and restored.min_size == 29
    np.testing.assert_array_equal(np.asarray(restored(x, training=False)), expected)
    attention = restored.get_layer("encoder").get_layer("block2_1_attention")
    assert attention.get_config()["sr_ratio"] == 4 and attention.num_heads == 2


@pytest.mark.slow
def test_export_serve_tensor_matches_predict(model, tmp_path):
    path = kerasseg.export(model, tmp_path / "model", probabilities=True)
    loaded = tf.saved_model.load(str(path))
    x = np.random.default_rng(4).uniform(0, 255, (2, 67, 93, 3)).astype("float32")
    out = loaded.signatures["serve_tensor"](images=tf.constant(x))
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), expected.argmax(-1))
    single = loaded.signatures["serve_tensor"](images=tf.constant(x[1:]))
    np.testing.assert_allclose(single["probabilities"].numpy()[0], expected[1], atol=1e-5)


def test_fit_gives_finite_loss_and_weights_and_lowers_the_loss():
    keras.utils.set_random_seed(5)
    model = segformer(num_classes=3, dropout=0, drop_path_rate=0)
    # Plain SGD: Adam's two slots per variable triple the (slow, CPU) tracing of the step.
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(5)
    # 64 x 64: every stage's reduced map has 2 x 2 keys (with one key, the softmax is constant
    # and queries and keys get no gradient).
    x = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    y = rng.integers(0, 3, (2, 64, 64)).astype("int32")
    before = [w.copy() for w in model.get_weights()]
    losses = model.fit(x, y, batch_size=2, epochs=5, verbose=0).history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    after = model.get_weights()
    assert all(np.isfinite(w).all() for w in after)
    # Every trainable weight learns, except the key biases: adding a constant to all of a
    # query's scores leaves the softmax unchanged, so their gradient is zero.
    trainable = {id(v) for v in model.trainable_weights if not v.path.endswith("key/bias")}
    unchanged = [
        v.path
        for v, b, a in zip(model.weights, before, after, strict=True)
        if id(v) in trainable and np.array_equal(b, a)
    ]
    assert len(trainable) == len(model.trainable_weights) - 8 and not unchanged


def test_encoder_freeze():
    frozen = segformer(num_classes=2, encoder_freeze=True)
    widths, depths, filters = DESIGN["b0"]
    assert _trainable(frozen) == independent_decoder_count(widths, filters, 2)


def test_mix_transformer_alone():
    encoder = mix_transformer("b1", input_shape=(64, 96, 1), drop_path_rate=0)
    assert encoder.name == "mit_b1"
    assert [tuple(o.shape[1:]) for o in encoder.outputs] == [
        (16, 24, 64),
        (8, 12, 128),
        (4, 6, 320),
        (2, 3, 512),
    ]
    assert not any(isinstance(layer, DropPath) for layer in encoder.layers)


def _split_heads(tokens, heads):
    """(B, N, C) -> (B, heads, N, C / heads), HuggingFace's `transpose_for_scores`."""
    batch, length, channels = tokens.shape
    return tokens.reshape(batch, length, heads, channels // heads).permute(0, 2, 1, 3)


def _torch_reference(model, x):
    """HuggingFace's SegformerForSemanticSegmentation forward pass (modeling_segformer.py),
    written with torch.nn.functional on the Keras model's weights, transposed to PyTorch's
    layouts as a weight converter would: logits resized to the input size."""
    import torch
    from torch.nn import functional as F

    def tensor(array):
        return torch.tensor(np.asarray(array))

    def linear(x, layer):
        kernel, bias = layer.get_weights()
        return F.linear(x, tensor(kernel).T, tensor(bias))

    def layer_norm(x, layer):
        gamma, beta = layer.get_weights()
        return F.layer_norm(x, (x.shape[-1],), tensor(gamma), tensor(beta), eps=1e-5)

    def conv(x, layer, **kwargs):
        weights = layer.get_weights()
        bias = tensor(weights[1]) if len(weights) > 1 else None
        return F.conv2d(x, tensor(weights[0]).permute(3, 2, 0, 1), bias, **kwargs)

    encoder = model.get_layer("encoder")
    widths, depths, _ = DESIGN["b0"]
    hidden = tensor(x).permute(0, 3, 1, 2)
    features = []
    for stage, (c, depth, k, s, r, heads) in enumerate(
        zip(widths, depths, KERNELS, STRIDES, REDUCTIONS, HEADS, strict=True), start=1
    ):
        hidden = conv(
            hidden, encoder.get_layer(f"patch_embed{stage}_proj"), stride=s, padding=k // 2
        )
        batch, _, height, width = hidden.shape
        tokens = layer_norm(
            hidden.flatten(2).transpose(1, 2), encoder.get_layer(f"patch_embed{stage}_norm")
        )
        for block in range(1, depth + 1):
            name = f"block{stage}_{block}"
            attention = encoder.get_layer(f"{name}_attention")
            y = layer_norm(tokens, encoder.get_layer(f"{name}_norm1"))
            source = y
            if r > 1:
                reduced = conv(
                    y.transpose(1, 2).reshape(batch, c, height, width), attention.sr, stride=r
                )
                source = layer_norm(reduced.reshape(batch, c, -1).transpose(1, 2), attention.norm)
            q, key, v = (
                _split_heads(linear(y, attention.query), heads),
                _split_heads(linear(source, attention.key), heads),
                _split_heads(linear(source, attention.value), heads),
            )
            probabilities = torch.softmax(q @ key.transpose(-1, -2) / math.sqrt(c // heads), dim=-1)
            context = (probabilities @ v).permute(0, 2, 1, 3).reshape(batch, -1, c)
            tokens = tokens + linear(context, attention.proj)
            mlp = encoder.get_layer(f"{name}_mlp")
            y = linear(layer_norm(tokens, encoder.get_layer(f"{name}_norm2")), mlp.dense1)
            y = y.transpose(1, 2).reshape(batch, 4 * c, height, width)
            depthwise, bias = mlp.dwconv.get_weights()
            y = F.conv2d(
                y, tensor(depthwise).permute(2, 3, 0, 1), tensor(bias), padding=1, groups=4 * c
            )
            y = linear(F.gelu(y.flatten(2).transpose(1, 2)), mlp.dense2)
            tokens = tokens + y
        tokens = layer_norm(tokens, encoder.get_layer(f"stage{stage}_norm"))
        hidden = tokens.reshape(batch, height, width, c).permute(0, 3, 1, 2)
        features.append(hidden)
    maps = []
    for stage, feature in enumerate(features, start=1):
        batch, _, height, width = feature.shape
        y = linear(feature.flatten(2).transpose(1, 2), model.get_layer(f"linear_c{stage}"))
        y = y.permute(0, 2, 1).reshape(batch, -1, height, width)
        maps.append(
            F.interpolate(y, size=features[0].shape[2:], mode="bilinear", align_corners=False)
        )
    y = conv(torch.cat(maps[::-1], dim=1), model.get_layer("linear_fuse"))
    gamma, beta, mean, variance = (
        tensor(w) for w in model.get_layer("linear_fuse_bn").get_weights()
    )
    y = F.relu(F.batch_norm(y, mean, variance, gamma, beta, training=False, eps=1e-5))
    logits = conv(y, model.get_layer("head"))
    logits = F.interpolate(logits, size=x.shape[1:3], mode="bilinear", align_corners=False)
    return logits.permute(0, 2, 3, 1).numpy()


def test_matches_huggingface_forward_pass_in_pytorch():
    pytest.importorskip("torch")
    keras.utils.set_random_seed(6)
    model = segformer(num_classes=5)
    # Larger weights than the initial ones, so every layer's contribution shows.
    rng = np.random.default_rng(6)
    model.set_weights(
        [w + rng.normal(0, 0.05, w.shape).astype("float32") for w in model.get_weights()]
    )
    randomise_batch_norm(model)
    x = rng.normal(size=(2, 45, 62, 3)).astype("float32")
    expected = _torch_reference(model, x)
    actual = np.asarray(model(x, training=False))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(actual, expected, atol=2e-4, rtol=1e-4)
