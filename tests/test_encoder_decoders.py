"""What every decoder on a keras.applications encoder shares: the registry's preprocessing
rule, a `.keras` round trip and the TF-Serving export (U-Net: tests/test_export.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomise_batch_norm

import kerasseg

ARCHITECTURES = ("fpn", "linknet", "pspnet", "deeplabv3", "deeplabv3plus")


@pytest.fixture(scope="module", params=ARCHITECTURES)
def model(request):
    keras.utils.set_random_seed(0)
    built = kerasseg.load(
        request.param, encoder="mobilenet_v2", num_classes=3, activation="softmax", pad_to_fit=True
    )
    randomise_batch_norm(built)
    return built


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_preprocessing_rule(name):
    entry = kerasseg.get_entry(name)
    assert entry.preprocessing_for({}) == "caffe"  # resnet50, the default encoder
    assert entry.preprocessing_for({"encoder": "mobilenet_v2"}) == "tf"
    assert entry.preprocessing_for({"encoder": "densenet121"}) == "torch"
    assert entry.preprocessing_for({"encoder": "vgg16", "include_preprocessing": True}) == "none"


def test_save_and_load_gives_identical_predictions(model, tmp_path):
    x = np.random.default_rng(2).uniform(0, 255, (2, 45, 70, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert type(restored) is type(model) and restored.min_size == model.min_size
    np.testing.assert_array_equal(np.asarray(restored(x, training=False)), expected)


@pytest.mark.slow
def test_export_serve_tensor_matches_predict(model, tmp_path):
    path = kerasseg.export(model, tmp_path / "model", probabilities=True)
    loaded = tf.saved_model.load(str(path))
    x = np.random.default_rng(3).uniform(0, 255, (2, 67, 93, 3)).astype("float32")
    out = loaded.signatures["serve_tensor"](images=tf.constant(x))
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), expected.argmax(-1))
