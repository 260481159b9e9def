"""Edge cases of the TF-Serving export and of the export/load CLI: empty requests, wrong
shapes and channel counts, damaged images, unsafe model names, files that are not models.

One small model is exported once for the module (a 1-channel, 3-class U-Net with its
probabilities), so each check is a call of its signatures. Signatures are called through
`loaded.signatures[...]`, which (like TF-Serving) does not enforce the declared input
shapes: the checks inside the graph are what refuses a bad request.
"""

import io
import struct
import zipfile
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import grey_image, rgb_image
from PIL import Image
from skimage.color import rgb2gray

import kerasseg
from kerasseg.cli import main as cli_main
from kerasseg.cli.common import UsageError
from kerasseg.cli.models import load_for_inference
from kerasseg.data.decode import error_text
from kerasseg.export import export

CLASSES = 3


def encode(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_chunks(data):
    """(offset, type, length) of each chunk of a PNG file."""
    position = 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        yield position, data[position + 4 : position + 8], length
        position += 12 + length


def damage_idat(data, *, fix_crc=False):
    """`data` with 4 bytes inverted in the middle of its IDAT chunk (IEND left intact)."""
    position, _, length = next(c for c in png_chunks(data) if c[1] == b"IDAT")
    damaged = bytearray(data)
    middle = position + 8 + length // 2
    for k in range(4):
        damaged[middle + k] ^= 0xFF
    if fix_crc:
        crc = zlib.crc32(bytes(damaged[position + 4 : position + 8 + length]))
        damaged[position + 8 + length : position + 12 + length] = struct.pack(">I", crc)
    return bytes(damaged)


def call(loaded, signature="serving_default", **inputs):
    outputs = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}


def refused(loaded, signature="serving_default", **inputs):
    """The readable message of the InvalidArgument error a request gets."""
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        call(loaded, signature, **inputs)
    return error_text(caught.value)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny 1-channel, 3-class U-Net exported with probabilities: (model, path, loaded)."""
    keras.utils.set_random_seed(3)
    model = kerasseg.load(
        "unet",
        input_shape=(None, None, 1),
        num_classes=CLASSES,
        base_filters=4,
        depth=2,
        activation="softmax",
    )
    path = export(model, tmp_path_factory.mktemp("serving") / "tiny", probabilities=True)
    return model, path, tf.saved_model.load(str(path))


# ------------------------------------------------------------------------- empty requests


def test_empty_bytes_request_gives_empty_outputs(served):
    _, _, loaded = served
    out = call(loaded, image_bytes=np.array([], dtype=object))
    assert out["mask"].shape == (0, 0, 0) and out["mask"].dtype == np.uint8
    assert out["probabilities"].shape == (0, 0, 0, CLASSES)
    assert out["probabilities"].dtype == np.float32
    assert out["image_size"].shape == (0, 2) and out["image_size"].dtype == np.int32
    assert out["mask_png_bytes"].shape == (0,)


def test_empty_tensor_batch_gives_empty_outputs_of_its_size(served):
    _, _, loaded = served
    out = call(loaded, "serve_tensor", images=np.zeros((0, 16, 24, 1), np.float32))
    assert out["mask"].shape == (0, 16, 24) and out["mask"].dtype == np.uint8
    assert out["probabilities"].shape == (0, 16, 24, CLASSES)
    assert out["image_size"].shape == (0, 2) and out["mask_png_bytes"].shape == (0,)
    # No image to check, so no size rule applies either.
    out = call(loaded, "serve_tensor", images=np.zeros((0, 0, 0, 1), np.float32))
    assert out["mask"].shape == (0, 0, 0)


# ------------------------------------------------------------------------- shapes and channels


def test_serve_tensor_refuses_another_channel_count(served):
    _, _, loaded = served
    rgb = rgb_image(16, 16, seed=1)[None].astype(np.float32)
    message = refused(loaded, "serve_tensor", images=rgb)
    assert message == "images must have 1 channel(s) (last axis); got 3"
    # Called as a function (not through `signatures`), TensorFlow refuses it before the graph.
    with pytest.raises(TypeError, match="Can not cast TensorSpec"):
        loaded.serve_tensor(tf.constant(rgb))


def test_inputs_with_the_wrong_number_of_axes_are_refused(served):
    _, _, loaded = served
    message = refused(loaded, image_bytes=np.array([[b"a", b"b"]], dtype=object))
    assert message == (
        "image_bytes must be a 1-D list of encoded images; got shape [1, 2] (rank 2)"
    )
    png = encode(grey_image(20, 20, seed=2))
    assert refused(loaded, image_bytes=png).endswith("got shape [] (rank 0)")
    message = refused(loaded, "serve_tensor", images=np.zeros((16, 16, 1), np.float32))
    assert message == "images must be a 4-D batch [N, H, W, C]; got shape [16, 16, 1] (rank 3)"
    with pytest.raises(TypeError, match="Can not cast TensorSpec"):
        loaded.serving_default(tf.constant([[png]]))


def test_wrong_shape_is_refused_on_the_session_path_of_the_server(served):
    """TF-Serving runs the SignatureDef in a TF1 Session and feeds whatever shape it is
    sent (the Python Session's own feed check is bypassed by a callable here)."""
    from tensorflow.core.protobuf import config_pb2

    _, path, _ = served
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        signature = meta.signature_def["serving_default"]
        options = config_pb2.CallableOptions(
            feed=[signature.inputs["image_bytes"].name], fetch=[signature.outputs["mask"].name]
        )
        run = session._make_callable_from_options(options)
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            run(np.array([[b"a", b"b"]], dtype=object))
    assert "image_bytes must be a 1-D list of encoded images; got shape [1, 2]" in str(caught.value)


def test_mixed_grey_and_rgb_request_matches_the_tensor_signature(served):
    """The bytes path (decoded together, converted per image) against hand-made tensors:
    the grey file as is, the RGB file through scikit-image's luma."""
    _, _, loaded = served
    grey, rgb = grey_image(20, 30, seed=3), rgb_image(25, 18, seed=4)
    out = call(loaded, image_bytes=[encode(grey), encode(rgb)])
    assert out["mask"].shape == (2, 25, 30)
    np.testing.assert_array_equal(out["image_size"], [[20, 30], [25, 18]])
    tensors = [grey.astype(np.float32), (rgb2gray(rgb) * 255).astype(np.float32)]
    for i, image in enumerate(tensors):
        height, width = image.shape
        expected = call(loaded, "serve_tensor", images=image[None, ..., None])
        np.testing.assert_allclose(
            out["probabilities"][i, :height, :width], expected["probabilities"][0], atol=1e-4
        )
        assert not out["mask"][i, height:].any() and not out["mask"][i, :, width:].any()


# ------------------------------------------------------------------------- damaged images


@pytest.mark.parametrize("fix_crc", [False, True], ids=["bad crc", "crc recomputed"])
def test_damaged_png_is_refused_naming_its_index(served, fix_crc):
    _, _, loaded = served
    good = encode(grey_image(40, 48, seed=5))
    damaged = damage_idat(good, fix_crc=fix_crc)
    # What makes it a hard case: a complete file (IEND intact, same size) that no trusted
    # decoder reads, and TensorFlow's own error does not say which image failed.
    assert len(damaged) == len(good) and damaged.endswith(b"IEND\xaeB`\x82")
    position, _, length = next(c for c in png_chunks(damaged) if c[1] == b"IDAT")
    stored = struct.unpack(">I", damaged[position + 8 + length : position + 12 + length])[0]
    assert (zlib.crc32(damaged[position + 4 : position + 8 + length]) == stored) == fix_crc
    with pytest.raises(OSError):
        Image.open(io.BytesIO(damaged)).load()
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid PNG data"):
        tf.io.decode_png(damaged)
    message = refused(loaded, image_bytes=[good, good, damaged, good])
    assert message.startswith(f"image_bytes[2]: cannot decode ({len(damaged)} bytes):")
    assert "decoder rejected the image data" in message
    message = refused(loaded, image_bytes=[good, damaged, damaged])
    assert message.startswith("image_bytes[1]: cannot decode")
    assert call(loaded, image_bytes=[good])["mask"].shape == (1, 40, 48)


# ------------------------------------------------------------------------- CLI: model names


@pytest.mark.parametrize(
    "name", ["../../escape", "..", ".", "", "a/b", "a\\b", "-rf", ".hidden", "sp ace", "x" * 129]
)
def test_cli_export_refuses_a_model_name_that_is_not_a_folder_name(tmp_path, capsys, name):
    out = tmp_path / "a" / "b" / "out"
    argv = ["export", "otsu", "--out", str(out), f"--model-name={name}"]
    assert cli_main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"kerasseg export: error: --model-name {name!r}: the model name must be a plain folder "
        "name of 1 to 128 letters, digits, '.', '_' or '-', not starting with '.' or '-' (no "
        "path separators); it is created under --out."
    )
    assert list(tmp_path.iterdir()) == []  # nothing written, inside --out or outside


def test_cli_export_refuses_a_file_name_that_is_not_a_folder_name(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "my model.keras"), "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "NAME 'my model': the model name must be a plain folder name" in error
    assert error.strip().endswith("; pass --model-name.")


# ------------------------------------------------------------------------- CLI: model files


def _not_models(folder):
    """(file, expected message after '--model FILE: ') for files that are not Keras models."""
    (folder / "random.keras").write_bytes(np.random.default_rng(0).bytes(2000))
    (folder / "text.keras").write_text("hello\n")
    with zipfile.ZipFile(folder / "truncated.keras", "w") as archive:
        archive.writestr("config.json", "{}" * 500)
        archive.writestr("metadata.json", "{}")
    data = (folder / "truncated.keras").read_bytes()
    (folder / "truncated.keras").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(folder / "other.keras", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    tiny = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    tiny.save_weights(folder / "tiny.weights.h5")
    (folder / "weights.keras").write_bytes((folder / "tiny.weights.h5").read_bytes())
    (folder / "exported").mkdir()
    archive = "not a Keras model archive (.keras zip): "
    return [
        ("random.keras", archive + "the file is not a zip archive (2000 bytes"),
        ("text.keras", archive + "the file is not a zip archive (6 bytes starting with b'hell')."),
        ("truncated.keras", archive + "the zip is truncated or damaged"),
        ("other.keras", archive + "the zip holds no config.json or metadata.json"),
        ("weights.keras", archive + "it is an HDF5 file (weights from `save_weights`"),
        ("tiny.weights.h5", "not a Keras model file (.h5): it holds weights only"),
        ("exported", "a folder, not a registry name or a .keras file"),
    ]


def test_files_that_are_not_models_are_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, expected in _not_models(tmp_path):
        with pytest.raises(UsageError) as caught:
            load_for_inference(name, {})
        message = str(caught.value)
        assert message.startswith(f"--model {name}: {expected}"), message
        assert "\n" not in message and "File not found" not in message


def test_cli_reports_a_bad_model_file_with_the_flag_it_came_from(tmp_path, capsys):
    _not_models(tmp_path)
    image = tmp_path / "image.png"
    image.write_bytes(encode(grey_image(20, 20, seed=6)))
    model = str(tmp_path / "random.keras")
    assert cli_main(["predict", "--model", model, str(image), "--out", str(tmp_path / "p")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"kerasseg predict: error: --model {model}: not a Keras model archive")
    assert cli_main(["export", model, "--out", str(tmp_path / "e")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"kerasseg export: error: NAME {model}: not a Keras model archive")
    assert not (tmp_path / "e").exists()
