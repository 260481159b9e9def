"""SegFormer (Xie et al. 2021, arXiv:2105.15203) in the layout of HuggingFace transformers, and
its checkpoints converted by kerasseg.convert.huggingface, against transformers' own models."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomise_batch_norm

import kerasseg
from kerasseg.convert.huggingface import mit_encoder_weights, segformer_config, segformer_weights
from kerasseg.convert.torchvision import load_state_dict
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


# Parity with Hugging Face transformers' SegformerForSemanticSegmentation and
# SegformerForImageClassification (random weights, saved by `save_pretrained` as the Hub's
# checkpoints are), converted by kerasseg.convert.huggingface without torch.


def _transformers():
    """transformers, or a skip when torch or transformers is not installed."""
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


def _hf_model(variant, num_classes, seed, classification=False):
    """A transformers SegFormer of `variant` (MiT-B0..B5 settings) with random weights: every
    parameter moved off its initial value (norms included) and BatchNorm statistics far from
    (0, 1), so that a weight assigned to the wrong layer shows."""
    transformers = _transformers()
    import torch

    widths, depths, filters = DESIGN[variant]
    config = transformers.SegformerConfig(
        hidden_sizes=list(widths),
        depths=list(depths),
        decoder_hidden_size=filters,
        num_labels=num_classes,
    )
    torch.manual_seed(seed)
    kind = (
        transformers.SegformerForImageClassification
        if classification
        else transformers.SegformerForSemanticSegmentation
    )
    model = kind(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def _saved(hf_model, folder):
    """`save_pretrained` into `folder` (model.safetensors, the Hub's key layout)."""
    hf_model.save_pretrained(folder)
    return folder / "model.safetensors"


@pytest.fixture(scope="module")
def hf_b0(tmp_path_factory):
    """A random B0 for ADE20K's 150 classes and its saved checkpoint."""
    model = _hf_model("b0", ADE20K_CLASSES, seed=7)
    return model, _saved(model, tmp_path_factory.mktemp("segformer_b0"))


@pytest.fixture(scope="module")
def hf_b2(tmp_path_factory):
    """A random B2 for Cityscapes' 19 classes and its saved checkpoint."""
    model = _hf_model("b2", 19, seed=8)
    return model, _saved(model, tmp_path_factory.mktemp("segformer_b2"))


@pytest.fixture(scope="module")
def camvid_frame(data_dir):
    """A real road scene: the first CamVid validation frame, (360, 480, 3) uint8."""
    from PIL import Image

    path = sorted((data_dir / "camvid" / "val").glob("*.png"))[0]
    return np.asarray(Image.open(path).convert("RGB"))


def _resized(image, height, width):
    from PIL import Image

    return np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _pixel_values(image):
    """transformers' SegformerImageProcessor on an image already at its size (no resize)."""
    processor = _transformers().SegformerImageProcessor(do_resize=False)
    return processor(images=image, return_tensors="pt")["pixel_values"]


def _relative_difference(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def _assert_same_argmax(actual, expected):
    """Equal class maps, except where the reference's two best logits are closer than the
    logits' largest difference (a tie within rounding)."""
    top2 = np.sort(expected, axis=-1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 2 * np.abs(actual - expected).max()
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(actual.argmax(-1)[decided], expected.argmax(-1)[decided])


def test_the_image_processor_defaults_are_the_preprocessing_rule(camvid_frame):
    """SegformerImageProcessor: 512x512 bilinear resize, x / 255, ImageNet mean and std, no
    label reduction; without its resize it equals kerasseg's "torch" preprocessing."""
    transformers = _transformers()
    processor = transformers.SegformerImageProcessor()
    from PIL import Image

    assert (processor.size["height"], processor.size["width"]) == (512, 512)
    assert processor.resample == Image.Resampling.BILINEAR
    assert processor.do_resize and processor.do_rescale and processor.do_normalize
    assert processor.rescale_factor == pytest.approx(1 / 255)
    np.testing.assert_allclose(processor.image_mean, IMAGENET_MEAN)
    np.testing.assert_allclose(processor.image_std, IMAGENET_STD)
    assert not processor.do_reduce_labels
    image = _resized(camvid_frame, 45, 61)
    expected = _pixel_values(image).numpy().transpose(0, 2, 3, 1)[0]
    normalised = (image / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(normalised, expected, atol=1e-5)


@pytest.mark.parametrize(
    "checkpoint,file,size",
    [
        ("hf_b0", "model.safetensors", (128, 160)),
        ("hf_b0", "pytorch_model.bin", (97, 131)),
        ("hf_b2", "model.safetensors", (97, 131)),
    ],
)
def test_converted_checkpoint_matches_transformers(
    checkpoint, file, size, request, camvid_frame, tmp_path
):
    import torch
    from safetensors.torch import load_file

    hf_model, safetensors_path = request.getfixturevalue(checkpoint)
    path = safetensors_path
    if file == "pytorch_model.bin":  # torch.save of the same state dict, as transformers 4 wrote
        path = tmp_path / file
        torch.save(load_file(safetensors_path), path)
    state_dict = load_state_dict(path)
    variant = checkpoint.removeprefix("hf_")
    classes = hf_model.config.num_labels
    config = segformer_config(state_dict)
    assert config == {
        "variant": variant,
        "num_classes": classes,
        "decoder_filters": DESIGN[variant][2],
    }
    model = segformer(**config, include_preprocessing=True)
    assert segformer_weights(state_dict, model) is model
    assert _trainable(model) == hf_model.num_parameters()

    image = _resized(camvid_frame, *size)
    with torch.no_grad():
        logits = hf_model(_pixel_values(image)).logits  # (1, classes, H / 4, W / 4)
        upsampled = torch.nn.functional.interpolate(
            logits, size=size, mode="bilinear", align_corners=False
        )  # as SegformerImageProcessor.post_process_semantic_segmentation
    expected = logits.numpy().transpose(0, 2, 3, 1)
    quarter = -(-size[0] // 4), -(-size[1] // 4)
    assert expected.shape == (1, *quarter, classes)
    assert np.abs(expected).max() > 1 and len(np.unique(expected.argmax(-1))) > 1

    x = image[None].astype("float32")  # 0..255: the model normalises as the processor does
    head = keras.Model(model.input, model.get_layer("head").output)
    actual = np.asarray(head(x, training=False))
    assert _relative_difference(actual, expected) <= 1e-4
    _assert_same_argmax(actual, expected)
    full = np.asarray(model(x, training=False))
    expected_full = upsampled.numpy().transpose(0, 2, 3, 1)
    assert _relative_difference(full, expected_full) <= 1e-4
    _assert_same_argmax(full, expected_full)


@pytest.mark.parametrize("variant", list(DESIGN))
def test_parameter_counts_equal_transformers(variant):
    """transformers' `num_parameters()` of SegformerForSemanticSegmentation with 150 classes
    (built on the meta device: no memory) equals the count from the layer shapes, which
    `test_parameter_counts_match_the_design_and_the_paper` finds in the Keras models."""
    transformers = _transformers()
    import torch

    widths, depths, filters = DESIGN[variant]
    config = transformers.SegformerConfig(
        hidden_sizes=list(widths),
        depths=list(depths),
        decoder_hidden_size=filters,
        num_labels=ADE20K_CLASSES,
    )
    with torch.device("meta"):
        hf_model = transformers.SegformerForSemanticSegmentation(config)
    expected = independent_encoder_count(widths, depths) + independent_decoder_count(
        widths, filters, ADE20K_CLASSES
    )
    assert hf_model.num_parameters() == expected


def test_mit_encoder_checkpoint_loads_into_the_encoder(camvid_frame, tmp_path):
    import torch

    hf_model = _hf_model("b0", 10, seed=9, classification=True)  # nvidia/mit-b0's layout
    state_dict = load_state_dict(_saved(hf_model, tmp_path))
    assert {"classifier.weight", "classifier.bias"} <= set(state_dict)
    assert segformer_config(state_dict) == {"variant": "b0"}

    model = segformer(num_classes=4, variant="b0")
    decoder = [w for layer in model.layers if layer.name != "encoder" for w in layer.weights]
    decoder_before = [np.asarray(w) for w in decoder]
    assert mit_encoder_weights(state_dict, model) is model
    for variable, before in zip(decoder, decoder_before, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), before)  # a fresh decoder

    image = _resized(camvid_frame, 97, 131)
    pixels = _pixel_values(image)
    with torch.no_grad():
        hidden_states = hf_model(pixels, output_hidden_states=True).hidden_states
    x = pixels.numpy().transpose(0, 2, 3, 1)
    encoder = mix_transformer("b0", drop_path_rate=0)
    mit_encoder_weights(state_dict, encoder)  # the encoder alone loads the same way
    for features in (model.get_layer("encoder")(x, training=False), encoder(x, training=False)):
        assert len(features) == len(hidden_states) == 4
        for actual, expected in zip(features, hidden_states, strict=True):
            expected = expected.numpy().transpose(0, 2, 3, 1)
            assert actual.shape == expected.shape
            assert _relative_difference(np.asarray(actual), expected) <= 1e-4


@pytest.fixture(scope="module")
def b0_state_dict(hf_b0):
    return load_state_dict(hf_b0[1])


@pytest.fixture(scope="module")
def b0_target():
    return segformer(num_classes=ADE20K_CLASSES, variant="b0")


def test_the_encoder_of_a_segmentation_checkpoint_loads_alone(b0_state_dict, b0_target):
    full = segformer_weights(b0_state_dict, b0_target)
    encoder = mit_encoder_weights(b0_state_dict, mix_transformer("b0"))
    for expected, actual in zip(full.get_layer("encoder").weights, encoder.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


@pytest.mark.parametrize(
    "change,match",
    [
        (
            "drop",
            r"missing keys \(1\): segformer\.encoder\.block\.1\.0\.mlp\.dwconv\.dwconv\.weight",
        ),
        ("extra", r"keys that feed no weight \(1\): segformer\.encoder\.extra\.weight"),
        (
            "transpose",
            r"shape mismatches: decode_head\.linear_c\.0\.proj\.weight \(32, 256\) -> \(256, 32\)",
        ),
        ("classifier", r"keys that feed no weight \(2\): classifier\.bias, classifier\.weight"),
    ],
)
def test_a_state_dict_that_does_not_fit_changes_nothing(change, match, b0_state_dict, b0_target):
    state_dict = dict(b0_state_dict)
    if change == "drop":
        del state_dict["segformer.encoder.block.1.0.mlp.dwconv.dwconv.weight"]
    elif change == "extra":
        state_dict["segformer.encoder.extra.weight"] = np.zeros(3, "float32")
    elif change == "transpose":
        key = "decode_head.linear_c.0.proj.weight"
        state_dict[key] = state_dict[key].T
    else:  # an ImageNet head beside the decode head
        state_dict["classifier.weight"] = np.zeros((10, 256), "float32")
        state_dict["classifier.bias"] = np.zeros(10, "float32")
    before = [np.asarray(w) for w in b0_target.weights]
    with pytest.raises(ValueError, match=r"`state_dict` does not fit the model: .*" + match):
        segformer_weights(state_dict, b0_target)
    for variable, value in zip(b0_target.weights, before, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), value)


def test_mismatched_architectures_are_named(b0_state_dict, b0_target):
    with pytest.raises(ValueError, match=r"for 150 classes .* has 19; .*num_classes=150"):
        segformer_weights(b0_state_dict, segformer(num_classes=19))
    with pytest.raises(ValueError, match=r"decoder of width 256 .* has 128; .*decoder_filters=256"):
        segformer_weights(b0_state_dict, segformer(num_classes=150, decoder_filters=128))
    with pytest.raises(
        ValueError,
        match=r"holds a MiT-B0 \(hidden sizes \(32, 64, 160, 256\), depths \(2, 2, 2, 2\)\) "
        r"encoder but `model` has MiT-B1 .*variant='b0'",
    ):
        mit_encoder_weights(b0_state_dict, mix_transformer("b1"))
    encoder_only = {k: v for k, v in b0_state_dict.items() if not k.startswith("decode_head.")}
    with pytest.raises(ValueError, match=r"no decode head .*`mit_encoder_weights`"):
        segformer_weights(encoder_only, b0_target)
    with pytest.raises(
        ValueError, match=r"`model` must be a kerasseg `segformer` model .*'mit_b0'"
    ):
        segformer_weights(b0_state_dict, mix_transformer("b0"))
    plain = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)], name="plain")
    with pytest.raises(ValueError, match=r"`model` must be .* got 'plain'"):
        mit_encoder_weights(b0_state_dict, plain)
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model; got str"):
        mit_encoder_weights(b0_state_dict, "segformer")


def test_other_checkpoints_are_refused(b0_state_dict, b0_target):
    torchvision = pytest.importorskip("torchvision")
    resnet = {k: v.numpy() for k, v in torchvision.models.resnet18().state_dict().items()}
    for convert in (segformer_config, lambda s: segformer_weights(s, b0_target)):
        with pytest.raises(ValueError, match=r"not a Hugging Face SegFormer checkpoint.*'bn1"):
            convert(resnet)
    wider = dict(b0_state_dict)
    key = "segformer.encoder.patch_embeddings.0.proj.weight"
    wider[key] = np.zeros((48, 3, 7, 7), "float32")
    with pytest.raises(ValueError, match=r"\(48, 64, 160, 256\).* is none of the MiT variants"):
        segformer_config(wider)
    with pytest.raises(TypeError, match=r"`state_dict` must be a mapping .*got list"):
        segformer_config([("a", np.zeros(1))])
