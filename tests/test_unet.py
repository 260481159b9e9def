import keras
import numpy as np
import pytest

import kerasseg
from kerasseg.models.unet import valid_unet_output_size


def _conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def independent_unet_count(in_ch, out_ch, base=64, depth=4):
    """Parameters of the paper's U-Net from the layer shapes (same padding, no BN)."""
    total, cin = 0, in_ch
    widths = [base * 2**i for i in range(depth + 1)]
    for w in widths:  # contracting path and bottleneck: two 3x3 convs per level
        total += _conv(3, cin, w) + _conv(3, w, w)
        cin = w
    for w in reversed(widths[:-1]):  # expanding path: 2x2 up-conv, then two 3x3 convs
        total += _conv(2, cin, w)
        total += _conv(3, 2 * w, w) + _conv(3, w, w)
        cin = w
    return total + _conv(1, cin, out_ch)


def test_parameter_count_matches_paper_architecture():
    assert independent_unet_count(1, 1) == 31_030_593
    model = kerasseg.load("unet", input_shape=(None, None, 1), num_classes=1)
    assert model.count_params() == 31_030_593


@pytest.mark.parametrize("base,depth,in_ch,out_ch", [(8, 2, 3, 4), (16, 3, 1, 2), (4, 5, 2, 1)])
def test_parameter_count_other_configurations(base, depth, in_ch, out_ch):
    model = kerasseg.load(
        "unet", base_filters=base, depth=depth, input_shape=(None, None, in_ch), num_classes=out_ch
    )
    assert model.count_params() == independent_unet_count(in_ch, out_ch, base, depth)


def test_valid_padding_reproduces_paper_sizes():
    assert valid_unet_output_size(572, 4) == 388
    model = kerasseg.load(
        "unet", input_shape=(572, 572, 1), num_classes=2, padding="valid", base_filters=4
    )
    assert model.output_shape == (None, 388, 388, 2)
    dynamic = kerasseg.load("unet", input_shape=(None, None, 1), padding="valid", base_filters=4)
    assert dynamic(np.zeros((1, 572, 572, 1), "float32")).shape == (1, 388, 388, 1)


def test_valid_padding_rejects_sizes_with_the_accepted_ones():
    with pytest.raises(ValueError, match=r"input_shape.*60 \+ k \* 16.*\[556, 572\]"):
        kerasseg.load("unet", input_shape=(570, 570, 1), padding="valid")
    model = kerasseg.load("unet", input_shape=(None, None, 1), padding="valid", base_filters=4)
    with pytest.raises(ValueError, match="images"):
        model(np.zeros((1, 570, 570, 1), "float32"))


def test_options_change_the_network():
    plain = kerasseg.load("unet", base_filters=8, depth=2)
    bn = kerasseg.load("unet", base_filters=8, depth=2, batch_norm=True, dropout=0.5)
    bilinear = kerasseg.load("unet", base_filters=8, depth=2, upsampling="bilinear")
    names = lambda m: {type(layer).__name__ for layer in m.layers}  # noqa: E731
    assert "BatchNormalization" in names(bn) and "Dropout" in names(bn)
    assert "BatchNormalization" not in names(plain)
    assert "UpSampling2D" in names(bilinear) and "Conv2DTranspose" not in names(bilinear)
    x = np.random.rand(2, 32, 32, 3).astype("float32")
    # Dropout is only active in training.
    np.testing.assert_allclose(bn(x, training=False), bn(x, training=False))
    assert not np.allclose(bn(x, training=True), bn(x, training=False))


@pytest.mark.parametrize("activation", [None, "sigmoid", "softmax"])
def test_activation(activation):
    model = kerasseg.load("unet", base_filters=4, depth=2, num_classes=3, activation=activation)
    y = np.asarray(model(np.random.rand(1, 16, 16, 3).astype("float32")))
    if activation == "softmax":
        np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-5)
    elif activation == "sigmoid":
        assert y.min() >= 0 and y.max() <= 1
    else:
        assert y.min() < 0 < y.max()


def test_save_and_load_keras_file_gives_identical_outputs(tmp_path):
    model = kerasseg.load(
        "unet",
        base_filters=4,
        depth=3,
        batch_norm=True,
        padding="valid",
        input_shape=(None, None, 1),
        include_preprocessing=True,
    )
    x = np.random.rand(2, 124, 124, 1).astype("float32") * 255
    expected = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    assert restored.size_offset == model.size_offset and restored.min_size == model.min_size
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)
    with pytest.raises(ValueError, match="images"):
        restored(np.zeros((1, 120, 120, 1), "float32"))


def test_trains_with_fit():
    model = kerasseg.load("unet", base_filters=4, depth=2, input_shape=(32, 32, 1))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    x = np.random.rand(8, 32, 32, 1).astype("float32")
    y = (x > 0.5).astype("float32")
    history = model.fit(x, y, epochs=30, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]


class TestBadInput:
    model = None

    @classmethod
    def setup_class(cls):
        cls.model = kerasseg.load("unet", base_filters=4, depth=2)

    def test_wrong_rank(self):
        with pytest.raises(ValueError, match=r"`images` must have rank 4.*got rank 3"):
            self.model(np.zeros((16, 16, 3), "float32"))

    def test_wrong_channels(self):
        with pytest.raises(ValueError, match=r"`images` must have 3 channel.*\(1, 16, 16, 1\)"):
            self.model(np.zeros((1, 16, 16, 1), "float32"))

    @pytest.mark.parametrize("dtype", [bool, np.complex64, np.str_])
    def test_wrong_dtype(self, dtype):
        with pytest.raises(TypeError, match="`images` must have a numeric image dtype"):
            self.model(np.zeros((1, 16, 16, 3), dtype))

    def test_size_not_divisible(self):
        with pytest.raises(ValueError, match=r"multiples of 4.*\[16, 20\] instead of 18"):
            self.model(np.zeros((1, 18, 20, 3), "float32"))
        with pytest.raises(ValueError, match="multiples of 4"):
            self.model.predict(np.zeros((1, 18, 20, 3), "float32"), verbose=0)

    def test_input_shape_not_divisible(self):
        with pytest.raises(ValueError, match=r"`input_shape`.*multiples of 16.*\[96, 112\]"):
            kerasseg.load("unet", input_shape=(100, 100, 3))

    @pytest.mark.parametrize("num_classes", [0, -1, 2.5, True])
    def test_num_classes(self, num_classes):
        with pytest.raises(ValueError, match="`num_classes` must be an integer >= 1"):
            kerasseg.load("unet", num_classes=num_classes)

    @pytest.mark.parametrize(
        "kwargs,match",
        [
            ({"input_shape": (None, None)}, "input_shape"),
            ({"input_shape": (None, None, None)}, "channel count"),
            ({"activation": "relu"}, "activation"),
            ({"padding": "full"}, "padding"),
            ({"upsampling": "nearest"}, "upsampling"),
            ({"depth": 0}, "depth"),
            ({"dropout": 1.0}, "dropout"),
            ({"encoder_weights": "imagenet"}, "`encoder_weights` only apply with an `encoder`"),
            ({"encoder": "resnet50", "base_filters": 8}, "`base_filters` only apply"),
            ({"encoder": "resnet50", "decoder_filters": (1, 2)}, "decoder_filters"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            kerasseg.load("unet", **kwargs)


@pytest.mark.parametrize("encoder", [None, "mobilenet_v2"])
def test_pad_to_fit_equals_numpy_reflect_padding_then_centre_crop(encoder):
    arguments = dict(input_shape=(None, None, 3), num_classes=2, encoder=encoder)
    if encoder is None:
        arguments.update(base_filters=4, depth=3)
    multiple = 8 if encoder is None else 32
    plain = kerasseg.load("unet", **arguments)
    padded = kerasseg.load("unet", pad_to_fit=True, **arguments)
    padded.set_weights(plain.get_weights())
    x = np.random.default_rng(0).uniform(0, 1, (2, 37, 50, 3)).astype("float32")
    pad_h, pad_w = (-37) % multiple, (-50) % multiple
    top, left = pad_h // 2, pad_w // 2
    reference = np.pad(
        x, [(0, 0), (top, pad_h - top), (left, pad_w - left), (0, 0)], mode="reflect"
    )
    expected = plain.predict(reference, verbose=0)[:, top : top + 37, left : left + 50]
    np.testing.assert_allclose(padded.predict(x, verbose=0), expected, atol=1e-5)
    # Sizes that already fit are not padded.
    fits = x[:, :32, :32]
    np.testing.assert_allclose(
        padded.predict(fits, verbose=0), plain.predict(fits, verbose=0), atol=1e-6
    )
    with pytest.raises(ValueError, match="pad_to_fit"):
        kerasseg.load("unet", pad_to_fit=True, padding="valid")
