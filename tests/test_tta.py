"""Test-time augmentation (`kerasseg.inference.tta.wrap`) against NumPy's rotations and flips."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

import kerasseg
from kerasseg import cli, tta
from kerasseg.inference import output_is_logits

TINY_ARGUMENTS = ["--model", "unet", "--model-arg", "base_filters=4", "--model-arg", "depth=2"]


def _tiny_unet(**kwargs):
    arguments = dict(base_filters=4, depth=2, input_shape=(None, None, 1))
    return kerasseg.load("unet", **{**arguments, **kwargs})


def _numpy_average(model, images, transforms):
    """The mean over the square's symmetries written with np.rot90 / np.flip, independently
    of the transform table: rotations by k quarter turns, then the same after a mirror."""

    def predict(images):
        return model.predict(np.ascontiguousarray(images), verbose=0)

    axes = (1, 2)
    if transforms == "flips":
        flips = [(), (1,), (2,), (1, 2)]
        outputs = [np.flip(predict(np.flip(images, f)), f) if f else predict(images) for f in flips]
        return np.mean(outputs, axis=0)
    outputs = []
    for k in range(4):
        outputs.append(np.rot90(predict(np.rot90(images, k, axes)), -k, axes))
        mirrored = predict(np.rot90(np.flip(images, 2), k, axes))
        outputs.append(np.flip(np.rot90(mirrored, -k, axes), 2))
    return np.mean(outputs, axis=0)


@pytest.mark.parametrize("transforms", ["flips", "dihedral"])
def test_average_matches_numpy_rotations_and_flips(transforms):
    model = _tiny_unet(num_classes=3)
    images = np.random.default_rng(0).random((2, 24, 24, 1), dtype=np.float32)
    wrapped = tta.wrap(model, transforms)
    assert wrapped.output_shape == model.output_shape
    np.testing.assert_allclose(
        wrapped.predict(images, verbose=0),
        _numpy_average(model, images, transforms),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("transforms", ["flips", "dihedral"])
def test_identity_model_comes_back_unchanged(transforms):
    """Every inverse undoes its transform, also on non-square images (free height and width)."""
    inputs = keras.Input((None, None, 2))
    identity = keras.Model(inputs, keras.layers.Identity()(inputs))
    images = np.arange(70, dtype=np.float32).reshape(1, 5, 7, 2)
    np.testing.assert_array_equal(tta.wrap(identity, transforms).predict(images, verbose=0), images)


def test_dihedral_transforms_are_the_eight_distinct_symmetries():
    image = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    forward = [tta.DihedralTransform(i)(image).numpy()[0, ..., 0] for i in range(8)]
    reference = [np.rot90(m, k) for m in (image[0, ..., 0], image[0, ::-1, :, 0]) for k in range(4)]
    assert sorted(f.tobytes() for f in forward) == sorted(r.tobytes() for r in reference)
    for i in range(8):
        back = tta.DihedralTransform(i, inverse=True)(tta.DihedralTransform(i)(image))
        np.testing.assert_array_equal(back, image)


def test_saves_and_reloads_with_the_shared_model(tmp_path):
    model = _tiny_unet(num_classes=1, activation="sigmoid")
    wrapped = tta.wrap(model)
    assert len(wrapped.weights) == len(model.weights)  # the 8 passes share one model
    path = tmp_path / "tta.keras"
    wrapped.save(path)
    reloaded = keras.saving.load_model(path)
    images = np.random.default_rng(1).random((1, 16, 16, 1), dtype=np.float32)
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), wrapped.predict(images, verbose=0), atol=1e-6
    )
    assert len(reloaded.weights) == len(wrapped.weights)  # one copy of the weights


def test_size_rule_and_logits_carry_over():
    model = _tiny_unet(num_classes=2, activation=None, pad_to_fit=False)
    wrapped = tta.wrap(model, "flips")
    assert output_is_logits(model) and output_is_logits(wrapped)
    assert (wrapped.size_divisor, wrapped.min_size) == (model.size_divisor, model.min_size)
    with pytest.raises(ValueError, match="multiples of 4"):
        wrapped(np.zeros((1, 18, 16, 1), np.float32))
    assert not output_is_logits(tta.wrap(_tiny_unet(num_classes=2, activation="softmax")))


def test_models_it_cannot_wrap():
    with pytest.raises(ValueError, match=r"`transforms` must be one of \['dihedral', 'flips'\]"):
        tta.wrap(_tiny_unet(), "rotations")
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        tta.wrap(lambda x: x)
    non_square = _tiny_unet(input_shape=(32, 16, 1))
    with pytest.raises(ValueError, match="transforms='flips'"):
        tta.wrap(non_square, "dihedral")
    assert tta.wrap(non_square, "flips").output_shape == non_square.output_shape
    inputs = keras.Input((16, 16, 1))
    pooled = keras.Model(inputs, keras.layers.MaxPooling2D()(inputs))
    with pytest.raises(ValueError, match="keep the input's height and width"):
        tta.wrap(pooled)
    two = keras.Model(inputs, [inputs, inputs])
    with pytest.raises(ValueError, match="one input and one output"):
        tta.wrap(two)
    image = keras.Input((None, None, 1))
    labels = keras.Model(image, keras.ops.cast(image > 0.5, "int32"))
    with pytest.raises(ValueError, match="outputs int32 \\(labels\\)"):
        tta.wrap(labels)
    with pytest.raises(ValueError, match="`index` must be an int in \\[0, 8\\)"):
        tta.DihedralTransform(8)
    with pytest.raises(ValueError, match="got True"):
        tta.DihedralTransform(True)


def test_cli_predict_and_evaluate_with_tta(data_dir, tmp_path, capsys):
    keras.utils.set_random_seed(0)
    model = _tiny_unet(num_classes=1, activation="sigmoid", include_preprocessing=True)
    model_path = tmp_path / "tiny.keras"
    model.save(model_path)
    root = data_dir / "isbi2012-membrane"
    test_slice = root / "test" / "00.png"
    out = tmp_path / "predictions"
    argv = ["predict", "--model", str(model_path), str(test_slice), "--out", str(out)]
    assert cli.main([*argv, "--tta", "dihedral"]) == 0
    image = np.asarray(Image.open(test_slice)).astype(np.float32)[None, ..., None]
    average = _numpy_average(model, image, "dihedral")[0, ..., 0]
    clear = np.abs(average - 0.5) > 1e-4  # may fall either side of the threshold
    assert clear.mean() > 0.98
    written = np.asarray(Image.open(out / "00.png"))
    np.testing.assert_array_equal(written[clear], (average[clear] > 0.5) * 255)

    stem = tmp_path / "report"
    isbi = ["--dataset", "isbi2012", "--data-root", str(root), "--batch-size", "5"]
    argv = ["evaluate", "--model", str(model_path), *isbi, "--tta", "flips", "--out", str(stem)]
    assert cli.main(argv) == 0
    names = sorted((root / "train" / "image").glob("2[0-4].png"))
    images = np.stack([np.asarray(Image.open(n)) for n in names]).astype(np.float32)[..., None]
    labels = np.stack([np.asarray(Image.open(root / "train" / "label" / n.name)) for n in names])
    average = _numpy_average(model, images, "flips")[..., 0]
    unclear = np.mean(np.abs(average - 0.5) <= 1e-4)  # may fall either side of the threshold
    report = json.loads(stem.with_suffix(".json").read_text())
    assert report["overall"]["pixel_accuracy"] == pytest.approx(
        np.mean((average > 0.5) == (labels > 127)), abs=unclear + 1e-6
    )
    assert unclear < 0.02
    capsys.readouterr()
    maskrcnn = ["--model", "maskrcnn_resnet18_fpn", "--model-arg", "num_classes=2"]
    assert (
        cli.main(["predict", *maskrcnn, str(test_slice), "--tta", "flips", "--out", str(out)]) == 2
    )
    assert "--tta are for semantic models" in capsys.readouterr().err
    square_only = [*TINY_ARGUMENTS, "--model-arg", "input_shape=[512, 256, 1]"]
    assert (
        cli.main(["predict", *square_only, str(test_slice), "--tta", "dihedral", "--out", str(out)])
        == 2
    )
    assert "--tta dihedral: transforms='dihedral' transposes" in capsys.readouterr().err
