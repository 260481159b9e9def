"""TF-Serving export: layout, signatures, parity with in-process prediction, bad requests.

No `tensorflow_model_server` binary can be installed here, so these are the offline checks
of what the server does: `saved_model_cli show`, a reload in a process where Keras and
kerasseg cannot be imported (eager signatures and the TF1 Session + SignatureDef path the
C++ server uses), an op list of stock TensorFlow kernels only, and TF-Serving's REST JSON
rules (tensorflow_serving/util/json_tensor.cc) emulated on a request body.
"""

import base64
import io
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import grey_image, randomise_batch_norm, rgb_image
from PIL import Image

import kerasseg
from kerasseg import tta
from kerasseg.cli import main as cli_main
from kerasseg.export import export
from kerasseg.inference import predict_image
from kerasseg.preprocessing import ImagePreprocessing

PY_FUNC_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def encode(array, format="PNG", **options):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format, **options)
    return buffer.getvalue()


def cmyk_jpeg():
    buffer = io.BytesIO()
    Image.new("CMYK", (9, 9), (10, 20, 30, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def decode_png(data):
    return np.asarray(Image.open(io.BytesIO(data)))


def saved_model_proto(path):
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    (graph,) = saved.meta_graphs
    return graph


def graph_nodes(path):
    """Every NodeDef of a SavedModel: the graph's and those of its functions."""
    graph = saved_model_proto(path)
    nodes = list(graph.graph_def.node)
    for function in graph.graph_def.library.function:
        nodes += list(function.node_def)
    return nodes


def call(loaded, signature="serving_default", **inputs):
    outputs = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    """A small 3-class U-Net with BatchNorm and dropout, exported with probabilities."""
    keras.utils.set_random_seed(1)
    model = kerasseg.load(
        "unet",
        num_classes=3,
        base_filters=8,
        depth=3,
        batch_norm=True,
        dropout=0.5,
        activation="softmax",
    )
    randomise_batch_norm(model)
    path = export(model, tmp_path_factory.mktemp("serving") / "unet", probabilities=True)
    return model, path, tf.saved_model.load(str(path))


@pytest.fixture(scope="module")
def otsu(tmp_path_factory):
    path = export("otsu", tmp_path_factory.mktemp("serving") / "otsu", max_pixels=64 * 64)
    return kerasseg.load("otsu"), path, tf.saved_model.load(str(path))


# ------------------------------------------------------------------------- semantic models


def test_semantic_bytes_match_predict_for_mixed_sizes(unet):
    model, _, loaded = unet
    images = [rgb_image(37, 45, seed=1), rgb_image(24, 64, seed=2)]
    formats = ["PNG", "JPEG"]
    request = [encode(im, f, quality=95) for im, f in zip(images, formats, strict=True)]
    out = call(loaded, image_bytes=request)
    assert out["mask"].dtype == np.uint8 and out["mask"].shape == (2, 37, 64)
    np.testing.assert_array_equal(out["image_size"], [[37, 45], [24, 64]])
    for i, data in enumerate(request):
        # What the server decodes: the same pixels kerasseg.data reads from a file.
        pixels = kerasseg.data.decode_image(data).numpy().astype(np.float32)
        labels, probs = predict_image(model, pixels)
        height, width = labels.shape
        np.testing.assert_array_equal(out["mask"][i, :height, :width], labels)
        assert not out["mask"][i, height:].any() and not out["mask"][i, :, width:].any()
        np.testing.assert_allclose(out["probabilities"][i, :height, :width], probs, atol=1e-5)
        np.testing.assert_array_equal(decode_png(out["mask_png_bytes"][i]), labels)
        # Alone in a request, the image gives the same answer (no batch dependence).
        alone = call(loaded, image_bytes=[data])
        np.testing.assert_array_equal(alone["mask"][0], labels)
        np.testing.assert_allclose(alone["probabilities"][0], probs, atol=1e-5)


def test_serve_tensor_matches_predict_and_is_batch_independent(unet):
    model, _, loaded = unet
    batch = np.stack([rgb_image(40, 56, seed=s) for s in (3, 4, 5)]).astype(np.float32)
    out = call(loaded, "serve_tensor", images=batch)
    probs = model.predict(batch, verbose=0)  # 40x56: multiples of 8, no padding
    np.testing.assert_allclose(out["probabilities"], probs, atol=1e-5)
    for i in range(len(batch)):
        labels = np.argmax(probs[i], axis=-1)
        np.testing.assert_array_equal(out["mask"][i], labels)
        np.testing.assert_array_equal(decode_png(out["mask_png_bytes"][i]), labels)
    np.testing.assert_array_equal(out["image_size"], [[40, 56]] * 3)
    # Alone, an image gets the same probabilities up to the float reordering of other batch
    # sizes' convolution kernels (~1e-5); BatchNorm or dropout in training mode, or any
    # cross-image statistic, would differ by orders of magnitude more.
    single = call(loaded, "serve_tensor", images=batch[1:2])
    np.testing.assert_allclose(single["probabilities"][0], out["probabilities"][1], atol=1e-4)


def test_grey_request_to_colour_model_is_repeated_to_rgb(unet):
    model, _, loaded = unet
    grey = grey_image(32, 40, seed=6)
    out = call(loaded, image_bytes=[encode(grey)])
    labels, _ = predict_image(model, np.repeat(grey[..., None], 3, axis=-1).astype(np.float32))
    np.testing.assert_array_equal(out["mask"][0], labels)


def test_binary_logits_model_gets_sigmoid_and_threshold(tmp_path):
    keras.utils.set_random_seed(2)
    model = kerasseg.load("unet", input_shape=(None, None, 1), base_filters=4, depth=2)
    path = export(model, tmp_path / "binary", threshold=0.3, probabilities=True)
    image = grey_image(30, 30, seed=7)
    out = call(tf.saved_model.load(str(path)), image_bytes=[encode(image)])
    logits = model.predict(np.pad(image, ((0, 2), (0, 2)))[None, ..., None].astype("float32"))
    probs = 1.0 / (1.0 + np.exp(-logits[0, :30, :30, 0]))
    np.testing.assert_allclose(out["probabilities"][0, ..., 0], probs, atol=1e-5)
    np.testing.assert_array_equal(out["mask"][0], probs > 0.3)


def test_fixed_size_model_resizes_in_and_nearest_out(tmp_path):
    keras.utils.set_random_seed(3)
    model = kerasseg.load(
        "unet",
        input_shape=(32, 32, 3),
        num_classes=4,
        base_filters=4,
        depth=2,
        activation="softmax",
    )
    path = export(model, tmp_path / "fixed", probabilities=True)
    image = rgb_image(50, 70, seed=8)
    out = call(tf.saved_model.load(str(path)), image_bytes=[encode(image)])
    resized = tf.image.resize(image[None].astype("float32"), (32, 32), method="bilinear")
    probs = model.predict(resized, verbose=0)
    labels = np.argmax(probs, axis=-1)[..., None].astype(np.int32)
    expected = tf.image.resize(labels, (50, 70), method="nearest").numpy()[0, ..., 0]
    assert out["probabilities"].shape == (1, 32, 32, 4)
    np.testing.assert_allclose(out["probabilities"][0], probs[0], atol=1e-5)
    np.testing.assert_array_equal(out["mask"][0], expected)


def test_preprocessing_mode_is_applied_inside(tmp_path):
    keras.utils.set_random_seed(4)
    model = kerasseg.load("unet", num_classes=2, base_filters=4, depth=2, activation="softmax")
    path = export(model, tmp_path / "torch", preprocessing="torch", probabilities=True)
    image = rgb_image(28, 36, seed=9)
    out = call(tf.saved_model.load(str(path)), image_bytes=[encode(image)])
    inputs = keras.Input((None, None, 3))
    wrapped = keras.Model(inputs, model(ImagePreprocessing("torch")(inputs)))
    probs = wrapped.predict(image[None].astype("float32"), verbose=0)[0]  # 28x36: no padding
    np.testing.assert_allclose(out["probabilities"][0], probs, atol=1e-5)


def test_bfloat16_export_computes_in_bfloat16_and_agrees(unet, tmp_path):
    model, float_path, float_loaded = unet
    path = export(model, tmp_path / "bf16", compute_dtype="bfloat16", probabilities=True)
    bfloat16 = tf.bfloat16.as_datatype_enum
    for saved, convolutions_in_bfloat16 in ((float_path, False), (path, True)):
        convolutions = [node for node in graph_nodes(saved) if node.op == "Conv2D"]
        assert convolutions
        assert all((n.attr["T"].type == bfloat16) == convolutions_in_bfloat16 for n in convolutions)
    graph = tf.saved_model.load(str(path))
    image = rgb_image(48, 48, seed=10)
    low = call(graph, image_bytes=[encode(image)])
    high = call(float_loaded, image_bytes=[encode(image)])
    difference = np.abs(low["probabilities"] - high["probabilities"])
    assert difference.mean() < 0.02  # measured 0.004 (max 0.25 near the class boundaries)
    assert (low["mask"] == high["mask"]).mean() > 0.97  # measured 0.993
    # The model given is untouched (the bfloat16 copy is separate).
    assert all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers())


# ------------------------------------------------------------------------- classical models

CLASSICAL = [entry["name"] for entry in kerasseg.list_models(task="classical")]


@pytest.mark.parametrize("name", CLASSICAL)
def test_every_classical_model_exports_and_matches_the_layer(name, tmp_path):
    model = kerasseg.load(name)
    channels = model.inputs[0].shape[-1]
    image = grey_image(36, 44, seed=11) if channels == 1 else rgb_image(36, 44, seed=11)
    image = image[..., None] if image.ndim == 2 else image
    extra = {}
    if len(model.inputs) > 1:  # region growing: seeds in (row, col)
        extra = {"seeds": np.array([[[5, 5], [20, 30]]], np.int32)}
    path = export(name, tmp_path / name)
    loaded = tf.saved_model.load(str(path))
    out = call(loaded, image_bytes=[encode(image.squeeze())], **extra)
    expected = model({"images": image[None], **extra} if extra else image[None])
    expected = {k: keras.ops.convert_to_numpy(v) for k, v in expected.items()}
    mask_key = next((k for k in ("mask", "labels", "edges") if k in expected), None)
    for key, value in expected.items():
        got = out["mask" if key == mask_key else key]
        if key == mask_key:
            value = value[..., 0]
            classes = kerasseg.get_entry(name).num_classes
            assert got.dtype == (np.uint8 if classes and classes <= 256 else np.uint16)
            np.testing.assert_array_equal(decode_png(out["mask_png_bytes"][0]), value[0])
        np.testing.assert_allclose(got, value, rtol=1e-6, atol=1e-6, equal_nan=True)
    tensor = call(loaded, "serve_tensor", images=image[None].astype("float32"), **extra)
    for key in out:
        np.testing.assert_array_equal(tensor[key], out[key])


def test_rgb_request_to_grey_classical_model_uses_rounded_luma(otsu):
    model, _, loaded = otsu
    image = rgb_image(30, 40, seed=12)
    out = call(loaded, image_bytes=[encode(image)])
    grey = np.round(image.astype(np.float64) @ [0.2125, 0.7154, 0.0721]).astype(np.uint8)
    expected = model(grey[None, ..., None])
    np.testing.assert_array_equal(out["mask"][0], expected["mask"][0, ..., 0])
    assert out["threshold"][0] == float(expected["threshold"][0])


# ------------------------------------------------------------------------- bad requests


def _bad_requests():
    grey = grey_image(20, 20, seed=13)
    png, jpeg = encode(grey), encode(grey, "JPEG")
    return [
        ("empty", b"", r"image_bytes\[0\] \(0 bytes\) is not a PNG or JPEG"),
        ("not an image", b"GIF89a not really", r"image_bytes\[0\] \(17 bytes\) is not a PNG"),
        ("truncated PNG", png[: len(png) // 2], r"truncated or corrupt PNG image_bytes\[0\]"),
        ("truncated JPEG", jpeg[: len(jpeg) // 2], r"truncated or corrupt JPEG image_bytes\[0\]"),
        ("1x1", encode(grey[:1, :1]), r"is 1x1 \(HxW\); images must be at least 8 pixels"),
        ("too large", encode(grey_image(70, 70, 1)), r"is 70x70 .* at most 4096 pixels"),
        ("RGBA", encode(np.zeros((9, 9, 4), np.uint8)), r"PNG with an alpha channel"),
        ("grey+alpha", encode(np.zeros((9, 9, 2), np.uint8)), r"PNG with an alpha channel"),
        ("16-bit", encode(grey.astype(np.uint16) * 256), r"PNG with 16-bit samples"),
        (
            "CMYK JPEG",
            cmyk_jpeg(),
            r"JPEG with 4 channels",
        ),
    ]


@pytest.mark.parametrize("case", _bad_requests(), ids=lambda case: case[0])
def test_bad_request_is_invalid_argument_naming_the_image(otsu, case):
    _, _, loaded = otsu
    _, data, message = case
    good = encode(grey_image(20, 20, seed=14))
    with pytest.raises(tf.errors.InvalidArgumentError, match=message.replace(r"\[0\]", r"\[1\]")):
        call(loaded, image_bytes=[good, data])


def test_bad_tensor_requests_are_invalid_argument(otsu, unet):
    _, _, classical = otsu
    _, _, semantic = unet
    image = grey_image(20, 20, seed=15)[None, ..., None].astype(np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="whole numbers in 0..255"):
        call(classical, "serve_tensor", images=image + 0.5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="whole numbers in 0..255"):
        call(classical, "serve_tensor", images=image + 300)
    rgb = np.repeat(image, 3, axis=-1)
    rgb[0, 3, 4, 1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or inf"):
        call(semantic, "serve_tensor", images=rgb)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 8 pixels"):
        call(semantic, "serve_tensor", images=np.zeros((1, 4, 30, 3), np.float32))


# ------------------------------------------------------------------------- what the server sees


def test_saved_model_cli_shows_serving_signatures(unet):
    _, path, _ = unet
    shown = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show"]
        + ["--dir", str(path), "--all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    blocks = {
        name: shown.split(f"signature_def['{name}']:")[1].split("signature_def[")[0]
        for name in ("serving_default", "serve_tensor")
    }
    for block in blocks.values():
        assert "Method name is: tensorflow/serving/predict" in block
        for output, dtype in (
            ("mask", "DT_UINT8"),
            ("image_size", "DT_INT32"),
            ("mask_png_bytes", "DT_STRING"),
            ("probabilities", "DT_FLOAT"),
        ):
            assert f"outputs['{output}'] tensor_info:\n        dtype: {dtype}" in block
    assert (
        "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)"
        in (blocks["serving_default"])
    )
    assert (
        "inputs['images'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, -1, -1, 3)"
        in (blocks["serve_tensor"])
    )


def test_graph_holds_only_stock_tensorflow_ops(unet, otsu):
    from tensorflow.python.framework import op_def_registry

    for _, path, _ in (unet, otsu):
        functions = {f.signature.name for f in saved_model_proto(path).graph_def.library.function}
        kernels = {node.op for node in graph_nodes(path)} - functions
        assert {"DecodePng", "DecodeJpeg", "EncodePng", "Conv2D"} & kernels
        assert not kernels & PY_FUNC_OPS
        unknown = sorted(op for op in kernels if op_def_registry.get(op) is None)
        assert not unknown, f"ops outside stock TensorFlow: {unknown}"


RELOAD_SCRIPT = """
import sys
sys.modules["keras"] = None     # neither Keras nor kerasseg may be imported
sys.modules["kerasseg"] = None
import numpy as np
import tensorflow as tf

path, request_file, result_file = sys.argv[1:4]
request = list(np.load(request_file, allow_pickle=True))
loaded = tf.saved_model.load(path)
eager = loaded.signatures["serving_default"](image_bytes=tf.constant(request))
results = {"eager_" + k: v.numpy() for k, v in eager.items()}
# The path of saved_model_cli run and of the C++ server: a TF1 Session fed by the
# SignatureDef's tensor names.
with tf.compat.v1.Session(graph=tf.Graph()) as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
    signature = meta.signature_def["serving_default"]
    names = sorted(signature.outputs)
    fetched = session.run(
        [signature.outputs[n].name for n in names],
        feed_dict={signature.inputs["image_bytes"].name: np.array(request, dtype=object)},
    )
results.update({"session_" + n: v for n, v in zip(names, fetched)})
np.savez(result_file, keras_importable=np.array("keras" in sys.modules and
         sys.modules["keras"] is not None), **results)
"""


def test_reload_without_keras_in_a_fresh_process(unet, tmp_path):
    model, path, _ = unet
    images = [rgb_image(33, 41, seed=16), rgb_image(40, 30, seed=17)]
    request = np.array([encode(im) for im in images], dtype=object)
    np.save(tmp_path / "request.npy", request, allow_pickle=True)
    script = tmp_path / "reload.py"
    script.write_text(textwrap.dedent(RELOAD_SCRIPT))
    subprocess.run(
        [
            sys.executable,
            str(script),
            str(path),
            str(tmp_path / "request.npy"),
            str(tmp_path / "r.npz"),
        ],
        check=True,
        capture_output=True,
    )
    results = np.load(tmp_path / "r.npz", allow_pickle=True)
    assert not results["keras_importable"]
    for prefix in ("eager_", "session_"):
        for i, image in enumerate(images):
            labels, probs = predict_image(model, image.astype(np.float32))
            height, width = labels.shape
            np.testing.assert_array_equal(results[prefix + "mask"][i, :height, :width], labels)
            np.testing.assert_allclose(
                results[prefix + "probabilities"][i, :height, :width], probs, atol=1e-5
            )
            png = results[prefix + "mask_png_bytes"][i]
            np.testing.assert_array_equal(decode_png(png), labels)


def rest_predict(signature, request_body):
    """TF-Serving's REST predict on a JSON body (rules of json_tensor.cc), for one signature.

    Row format `{"instances": [...]}` -> `{"predictions": [...]}`; columnar `{"inputs": ...}`
    -> `{"outputs": ...}`. `{"b64": ...}` objects decode for string inputs; string outputs
    whose name ends in `_bytes` come back as `{"b64": ...}`.
    """
    body = json.loads(request_body)
    if ("instances" in body) == ("inputs" in body):
        raise ValueError("exactly one of 'instances' and 'inputs' is required")
    specs = signature.structured_input_signature[1]
    names = sorted(specs)

    def tensor(name, values):
        if specs[name].dtype == tf.string:
            values = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v for v in values]
        return tf.constant(values, dtype=specs[name].dtype)

    if "instances" in body:
        rows = body["instances"]
        if len(names) == 1 and not (isinstance(rows[0], dict) and set(rows[0]) == set(names)):
            columns = {names[0]: rows}
        else:
            columns = {n: [row[n] for row in rows] for n in names}
    else:
        inputs = body["inputs"]
        columns = (
            inputs if isinstance(inputs, dict) and set(inputs) == set(names) else {names[0]: inputs}
        )
    outputs = signature(**{n: tensor(n, v) for n, v in columns.items()})

    def json_value(name, value):
        if value.dtype == tf.string:
            items = value.numpy().reshape(-1)
            if name.endswith("_bytes"):
                encoded = [{"b64": base64.b64encode(x).decode()} for x in items]
            else:
                encoded = [x.decode() for x in items]
            return np.array(encoded, dtype=object).reshape(value.shape).tolist()
        return value.numpy().tolist()

    if "instances" in body:
        count = len(rows)
        if len(outputs) == 1:
            ((name, value),) = outputs.items()
            return json.dumps({"predictions": json_value(name, value)})
        per_output = {n: json_value(n, v) for n, v in outputs.items()}
        return json.dumps(
            {"predictions": [{n: per_output[n][i] for n in per_output} for i in range(count)]}
        )
    return json.dumps({"outputs": {n: json_value(n, v) for n, v in outputs.items()}})


def test_rest_json_requests_give_the_same_masks(unet):
    _, _, loaded = unet
    images = [rgb_image(26, 31, seed=18), rgb_image(31, 26, seed=19)]
    data = [encode(im) for im in images]
    b64 = [{"b64": base64.b64encode(d).decode()} for d in data]
    expected = call(loaded, image_bytes=data)
    signature = loaded.signatures["serving_default"]
    bodies = {
        "row, plain list": {"instances": b64},
        "row, named": {"instances": [{"image_bytes": v} for v in b64]},
        "columnar, plain": {"inputs": b64},
        "columnar, named": {"inputs": {"image_bytes": b64}},
    }
    for kind, body in bodies.items():
        response = json.loads(rest_predict(signature, json.dumps(body)))
        if kind.startswith("row"):
            predictions = response["predictions"]
            masks = [np.array(p["mask"], np.uint8) for p in predictions]
            pngs = [base64.b64decode(p["mask_png_bytes"]["b64"]) for p in predictions]
        else:
            outputs = response["outputs"]
            masks = list(np.array(outputs["mask"], np.uint8))
            pngs = [base64.b64decode(p["b64"]) for p in outputs["mask_png_bytes"]]
        for i, image in enumerate(images):
            np.testing.assert_array_equal(masks[i], expected["mask"][i], err_msg=kind)
            height, width = image.shape[:2]
            np.testing.assert_array_equal(decode_png(pngs[i]), expected["mask"][i, :height, :width])


# ------------------------------------------------------------------------- layout and CLI


def test_versions_are_never_overwritten_silently(tmp_path):
    model = kerasseg.load("otsu")
    first = export(model, tmp_path / "otsu")
    assert first == tmp_path / "otsu" / "1" and (first / "saved_model.pb").is_file()
    metadata = json.loads((first / "assets.extra" / "kerasseg.json").read_text())
    assert metadata["model"] == "otsu" and metadata["max_pixels"] == 2048 * 2048
    with pytest.raises(FileExistsError, match=r"already exists \(versions there: \[1\]\).*\(2\)"):
        export(model, tmp_path / "otsu")
    kerasseg.export(model, tmp_path / "otsu", version=2)  # the package-level call
    export(model, tmp_path / "otsu", version=1, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "otsu").iterdir()) == ["1", "2"]
    for bad in (0, -1, 1.5, "1", True):
        with pytest.raises(ValueError, match="`version` must be a positive integer"):
            export(model, tmp_path / "otsu", version=bad)
    with pytest.raises(ValueError, match="`compute_dtype` must be one of"):
        export(model, tmp_path / "x", compute_dtype="float16")
    with pytest.raises(ValueError, match="`probabilities`: classical models"):
        export(model, tmp_path / "x", probabilities=True)
    with pytest.raises(ValueError, match="`preprocessing` must be one of"):
        export(kerasseg.load("unet", base_filters=4, depth=2), tmp_path / "x", preprocessing="x")
    with pytest.raises(ValueError, match="output is smaller than its input"):
        valid = kerasseg.load("unet", base_filters=4, depth=2, padding="valid")
        export(valid, tmp_path / "x")


def test_cli_export(tmp_path, capsys):
    assert cli_main(["export", "otsu", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "otsu" / "1" / "saved_model.pb").is_file()
    assert "--model_base_path=" in capsys.readouterr().out
    assert cli_main(["export", "otsu", "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    argv = ["export", "unet", "--out", str(tmp_path), "--model-arg", "base_filters=4"]
    argv += ["--model-arg", "depth=2", "--probabilities", "--version", "3"]
    assert cli_main(argv) == 0
    loaded = tf.saved_model.load(str(tmp_path / "unet" / "3"))
    out = call(loaded, image_bytes=[encode(rgb_image(20, 20, seed=20))])
    assert out["probabilities"].shape == (1, 20, 20, 1)
    metadata = json.loads((tmp_path / "unet" / "3" / "assets.extra" / "kerasseg.json").read_text())
    assert metadata["preprocessing"] == "unit"  # the registry's normalisation, inside the graph
    # A trained model saved as .keras (normalising inside, as `kerasseg train` saves them).
    model = kerasseg.load(
        "unet", base_filters=4, depth=2, num_classes=2, include_preprocessing=True
    )
    model.save(tmp_path / "trained.keras")
    argv = ["export", str(tmp_path / "trained.keras"), "--model-name", "mine", "--out"]
    assert cli_main(argv + [str(tmp_path)]) == 0
    image = rgb_image(24, 28, seed=21)
    out = call(tf.saved_model.load(str(tmp_path / "mine" / "1")), image_bytes=[encode(image)])
    labels, _ = predict_image(model, image.astype(np.float32))
    np.testing.assert_array_equal(out["mask"][0], labels)


def test_cli_export_with_test_time_augmentation(tmp_path, capsys):
    """`export --tta`: the served masks are those of the averaged model, image by image."""
    keras.utils.set_random_seed(2)
    model = kerasseg.load("unet", base_filters=4, depth=2, num_classes=3, activation="softmax")
    model.save(tmp_path / "trained.keras")
    argv = ["export", str(tmp_path / "trained.keras"), "--tta", "dihedral", "--out", str(tmp_path)]
    assert cli_main([*argv, "--probabilities"]) == 0
    loaded = tf.saved_model.load(str(tmp_path / "trained" / "1"))
    images = [rgb_image(37, 45, seed=22), rgb_image(24, 64, seed=23)]
    out = call(loaded, image_bytes=[encode(image) for image in images])
    averaged = tta.wrap(model, "dihedral")
    for i, image in enumerate(images):
        labels, probabilities = predict_image(averaged, image.astype(np.float32))
        height, width = labels.shape
        np.testing.assert_allclose(
            out["probabilities"][i, :height, :width], probabilities, atol=1e-5
        )
        plain, _ = predict_image(model, image.astype(np.float32))
        assert not np.array_equal(labels, plain)  # the averaging changed the answer
    assert cli_main(["export", "canny", "--tta", "flips", "--out", str(tmp_path)]) == 2
    assert "--tta flips: `model` must output probabilities or logits" in capsys.readouterr().err


def test_instance_model_exports_boxes_and_pasted_masks(tmp_path):
    from kerasseg.models.maskrcnn.postprocess import paste_masks

    keras.utils.set_random_seed(5)
    model = kerasseg.load(
        "maskrcnn_resnet18_fpn", num_classes=3, min_size=64, max_size=96, detections_per_image=8
    )
    path = export(model, tmp_path / "maskrcnn")
    metadata = json.loads((path / "assets.extra" / "kerasseg.json").read_text())
    assert metadata["task"] == "instance"
    images = [rgb_image(50, 60, seed=22), rgb_image(40, 70, seed=23)]
    out = call(tf.saved_model.load(str(path)), image_bytes=[encode(im) for im in images])
    assert out["masks"].shape == (2, 8, 50, 70) and out["masks"].dtype == np.uint8
    np.testing.assert_array_equal(out["image_size"], [[50, 60], [40, 70]])
    for i, image in enumerate(images):
        expected = model.predict(
            {"images": image[None].astype("float32"), "image_sizes": None}, verbose=0
        )
        count = int(expected["num_detections"][0])
        assert out["num_detections"][i] == count > 0
        np.testing.assert_allclose(out["boxes"][i], expected["boxes"][0], atol=1e-4)
        np.testing.assert_allclose(out["scores"][i], expected["scores"][0], atol=1e-5)
        np.testing.assert_array_equal(out["classes"][i], expected["classes"][0])
        height, width = image.shape[:2]
        pasted = paste_masks(expected["masks"][0], expected["boxes"][0], height, width)
        masks = out["masks"][i, :, :height, :width]
        assert (masks == (keras.ops.convert_to_numpy(pasted) > 0.5)).mean() > 0.999
        assert not out["masks"][i, :, height:].any() and not out["masks"][i, :, :, width:].any()
