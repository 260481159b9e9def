"""FPN (Kirillov et al. 2019, arXiv:1901.02446) in the layout of segmentation_models.pytorch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasseg.models.fpn import fpn
from kerasseg.models.resize import UpSamplingBilinear2D

# MobileNetV2's features at strides 2, 4, 8, 16, 32 (Sandler et al. 2018, Table 2: the
# expansion widths 6 * (16, 24, 32, 96) and the last 1x1 conv's 1280).
MOBILENET_V2_TAPS = (96, 144, 192, 576, 1280)
# keras.applications MobileNetV2 (alpha 1.0): 3,538,984 parameters with its 1000-class top,
# a 1280 -> 1000 dense layer (https://keras.io/api/applications/mobilenet/).
MOBILENET_V2_NO_TOP = 3_538_984 - (1280 * 1000 + 1000)


def _conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def independent_fpn_decoder_count(
    taps, classes, pyramid=256, segmentation=128, merge="add", normalization="group"
):
    """Decoder + head parameters from the design: laterals, 7 seg convs, norms, head."""
    total = sum(_conv(1, c, pyramid) for c in taps[1:])  # 1x1 laterals at strides 4..32
    # Segmentation blocks: P5 has 3 convs, P4 2, P3 1, P2 1; each level's first takes the
    # pyramid width, the 3 others the segmentation width; all without bias, each normalised.
    total += 4 * _conv(3, pyramid, segmentation, False) + 3 * _conv(
        3, segmentation, segmentation, False
    )
    total += 7 * segmentation * (2 if normalization == "group" else 4)  # GN: gamma, beta
    head_in = segmentation if merge == "add" else 4 * segmentation
    return total + _conv(1, head_in, classes)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return fpn(encoder="mobilenet_v2", num_classes=3, activation="softmax", pad_to_fit=True)


@pytest.fixture(scope="module")
def variant():
    keras.utils.set_random_seed(1)
    return fpn(
        encoder="mobilenet_v2",
        num_classes=2,
        pyramid_filters=64,
        segmentation_filters=48,  # not a multiple of 32: fine with BatchNorm
        merge="concat",
        normalization="batch",
        dropout=0,
    )


def test_encoder_count_is_the_published_one():
    assert MOBILENET_V2_NO_TOP == 2_257_984


def test_parameter_count_matches_the_design(model):
    expected = MOBILENET_V2_NO_TOP + independent_fpn_decoder_count(MOBILENET_V2_TAPS, 3)
    assert model.count_params() == expected
    names = {type(layer).__name__ for layer in model.layers}
    assert "GroupNormalization" in names and "SpatialDropout2D" in names


def test_parameter_count_concat_and_batch_norm(variant):
    expected = MOBILENET_V2_NO_TOP + independent_fpn_decoder_count(
        MOBILENET_V2_TAPS, 2, 64, 48, merge="concat", normalization="batch"
    )
    assert variant.count_params() == expected
    assert variant.get_layer("merge_concat").output.shape[-1] == 4 * 48
    assert "SpatialDropout2D" not in {type(layer).__name__ for layer in variant.layers}


def test_pad_to_fit_takes_odd_sizes(model):
    x = np.random.default_rng(0).uniform(0, 255, (2, 67, 93, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 67, 93, 3)
    np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-5)


def test_odd_sizes_without_pad_to_fit_are_refused(variant):
    with pytest.raises(
        ValueError, match=r"`input_shape`.*multiples of 32.*\[64, 96\] instead of 67"
    ):
        fpn(encoder="mobilenet_v2", input_shape=(67, 93, 3))
    with pytest.raises(ValueError, match=r"`images`.*multiples of 32"):
        variant(np.zeros((1, 67, 93, 3), "float32"))
    assert variant.predict(np.zeros((1, 64, 96, 3), "float32"), verbose=0).shape == (1, 64, 96, 2)


def test_dropout_only_in_training(model):
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    assert not np.allclose(model(x, training=True), model(x, training=False))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"encoder": None}, "`encoder` must name"),
        ({"encoder": "resnet5"}, r"`encoder`: unknown encoder 'resnet5'.*Closest"),
        ({"encoder_weights": 3}, "`encoder_weights` must be None, 'imagenet' or a path"),
        ({"merge": "sum"}, r"`merge` must be one of \('add', 'concat'\); got 'sum'"),
        ({"normalization": "layer"}, "`normalization` must be one of"),
        ({"segmentation_filters": 100}, "`segmentation_filters` must be a multiple of 32"),
        ({"segmentation_filters": 0}, "`segmentation_filters` must be an integer >= 1"),
        ({"pyramid_filters": 2.5}, "`pyramid_filters` must be an integer >= 1"),
        ({"dropout": 1.0}, r"`dropout` must be a number in \[0, 1\)"),
        ({"activation": "relu"}, "`activation` must be one of"),
        ({"num_classes": 0}, "`num_classes` must be an integer >= 1"),
        ({"input_shape": (64, 64)}, "`input_shape` must be"),
        ({"input_shape": (8, 8, 3), "pad_to_fit": True}, "at least 17"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fpn(**kwargs)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [2, 4])
def test_bilinear_upsampling_equals_pytorch(align_corners, size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(4).normal(size=(2, 5, 7, 3)).astype("float32")
    layer = UpSamplingBilinear2D(size, align_corners=align_corners)
    reference = torch.nn.functional.interpolate(
        torch.tensor(x).permute(0, 3, 1, 2),
        scale_factor=size,
        mode="bilinear",
        align_corners=align_corners,
    )
    expected = reference.permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5)
    # Unknown height and width in graph mode (Keras's bilinear UpSampling2D fails there).
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3))])
    np.testing.assert_allclose(traced(tf.constant(x)).numpy(), expected, atol=1e-5)


def test_predict_on_many_sizes_after_retracing(model):
    # Several sizes make tf.function relax to unknown height/width; the model must still run.
    for height, width in [(32, 32), (40, 50), (61, 33)]:
        x = np.zeros((1, height, width, 3), "float32")
        assert model.predict(x, verbose=0).shape == (1, height, width, 3)
