import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

import kerasseg
from kerasseg import cli, registry, weights


def test_list_models_carries_the_metadata():
    rows = kerasseg.list_models()
    names = {r["name"] for r in rows}
    assert {"unet", "otsu"} <= names
    for row in rows:
        for key in (
            "task",
            "description",
            "reference",
            "input_channels",
            "default_input_shape",
            "num_classes",
            "weights",
            "preprocessing",
            "kind",
        ):
            assert key in row, (row["name"], key)
    classical = {r["name"] for r in kerasseg.list_models(task="classical")}
    assert {"otsu", "multiotsu", "li", "yen", "isodata", "triangle", "minimum"} <= classical
    assert all(r["task"] == "semantic" for r in kerasseg.list_models(task="semantic"))
    with pytest.raises(ValueError, match="`task` must be None or one of"):
        kerasseg.list_models(task="panoptic")


def test_unknown_name_lists_closest():
    with pytest.raises(ValueError, match=r"unknown model 'unt'.*Did you mean 'unet'"):
        kerasseg.load("unt")


def test_unknown_keyword_names_it_and_the_accepted_ones():
    with pytest.raises(
        TypeError, match=r"does not take the argument\(s\) \['classes'\].*num_classes"
    ):
        kerasseg.load("unet", classes=3)


def test_register_model_validates():
    with pytest.raises(ValueError, match="already registered"):
        kerasseg.register_model("unet", kerasseg.models.unet, task="semantic", description="x")
    with pytest.raises(ValueError, match="`task` must be one of"):
        kerasseg.register_model("new_model", kerasseg.models.unet, task="depth", description="x")
    with pytest.raises(ValueError, match="snake_case"):
        kerasseg.register_model("New Model", kerasseg.models.unet, task="semantic", description="")
    with pytest.raises(ValueError, match="default_weights"):
        kerasseg.register_model(
            "new_model",
            kerasseg.models.unet,
            task="semantic",
            description="x",
            default_weights="coco",
        )
    assert "new_model" not in {r["name"] for r in kerasseg.list_models()}


def test_register_and_load_a_user_model():
    def builder(num_classes=2):
        return kerasseg.models.unet(num_classes=num_classes, base_filters=4, depth=1)

    try:
        kerasseg.register_model("my_unet", builder, task="semantic", description="tiny")
        model = kerasseg.load("my_unet", num_classes=5)
        assert model.output_shape[-1] == 5
    finally:
        registry._REGISTRY.pop("my_unet", None)


# A whole new architecture, as it would stand in its own file kerasseg/models/tiny_net.py:
# the decorator registers it where it is defined; nothing else in the package changes.
TINY_NET_SOURCE = """
import keras

from kerasseg.models.base import SegmentationModel
from kerasseg.registry import register_model


@register_model(
    "tiny_net",
    task="semantic",
    description="Two convolutions, for the registry test",
    reference="none",
    num_classes=2,
    preprocessing="unit",
)
def tiny_net(num_classes=2, input_shape=(None, None, 3)):
    images = keras.Input(input_shape, name="images")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(images)
    outputs = keras.layers.Conv2D(num_classes, 1, name="output")(x)
    return SegmentationModel(images, outputs, name="tiny_net")
"""


def test_a_new_architecture_is_one_module_with_the_decorator(tmp_path, monkeypatch):
    (tmp_path / "tiny_net.py").write_text(TINY_NET_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        __import__("tiny_net")
        (entry,) = [e for e in kerasseg.list_models("semantic") if e["name"] == "tiny_net"]
        assert entry["num_classes"] == 2 and entry["preprocessing"] == "unit"
        model = kerasseg.load("tiny_net", num_classes=3, input_shape=(8, 8, 3))
        assert model.output_shape == (None, 8, 8, 3)
        assert kerasseg.get_entry("tiny_net").accepted_arguments() == (
            "num_classes",
            "input_shape",
        )
        with pytest.raises(TypeError, match="does not take the argument"):
            kerasseg.load("tiny_net", encoder="resnet50")
    finally:
        registry._REGISTRY.pop("tiny_net", None)
        sys.modules.pop("tiny_net", None)


def _write_preset(folder, name="unet_tiny_test"):
    model = kerasseg.load(
        "unet", base_filters=4, depth=2, input_shape=(None, None, 1), num_classes=2
    )
    path = folder / f"{name}.weights.h5"
    model.save_weights(path)
    manifest = {
        "format": 1,
        "presets": [
            {
                "name": name,
                "architecture": "unet",
                "description": "tiny test preset",
                "arguments": {
                    "base_filters": 4,
                    "depth": 2,
                    "input_shape": [None, None, 1],
                    "num_classes": 2,
                },
                "weights": {
                    "name": "test",
                    "file_name": path.name,
                    "sha256": weights.sha256_of(path),
                    "size": path.stat().st_size,
                    "dataset": "none",
                    "split": "none",
                    "metrics": {"iou": 0.5},
                    "card": f"{name}.md",
                },
            }
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return model


def test_manifest_presets_load_their_shipped_weights(tmp_path, monkeypatch):
    model = _write_preset(tmp_path)
    monkeypatch.setattr(weights, "packaged_dir", lambda: tmp_path)
    try:
        registry.register_manifest_presets(tmp_path)
        entry = kerasseg.get_entry("unet_tiny_test")
        assert entry.is_preset and entry.architecture == "unet" and entry.input_channels == 1
        assert entry.summary()["metrics"] == {"iou": 0.5}
        x = np.random.rand(2, 16, 16, 1).astype("float32")
        loaded = kerasseg.load("unet_tiny_test")
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
        assert kerasseg.load("unet_tiny_test", weights=None).get_weights()[0].shape == (
            model.get_weights()[0].shape
        )
        # Another class count: fine-tuning keeps every array but the head's.
        tuned = kerasseg.load("unet_tiny_test", num_classes=3)
        assert tuned.output_shape[-1] == 3 and tuned.weights_report.reinitialized == ("head",)
        for mine, shipped in zip(tuned.weights, model.weights, strict=True):
            if mine.path.startswith("head/"):
                assert mine.shape[-1] == 3 and shipped.shape[-1] == 2
            else:
                np.testing.assert_array_equal(mine.numpy(), shipped.numpy())
        with pytest.raises(ValueError, match="does not fit"):
            kerasseg.load("unet_tiny_test", num_classes=3, base_filters=8)
    finally:
        registry._REGISTRY.pop("unet_tiny_test", None)


def test_shipped_manifest_lists_existing_files_with_their_hashes():
    for preset in weights.read_manifest():
        info = weights.WeightsInfo(**preset["weights"])
        path = weights.packaged_dir() / info.file_name
        assert path.is_file() and weights.sha256_of(path) == info.sha256
        assert (weights.packaged_dir() / info.card).is_file(), "every weights file has a card"


def _readme_table():
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- models:start -->(.*?)<!-- models:end -->", text, re.S).group(1)
    rows = [line for line in block.strip().splitlines()[2:] if line.startswith("|")]
    return [tuple(cell.strip() for cell in row.strip("|").split("|")) for row in rows]


def test_readme_model_table_matches_registry():
    expected = [
        (r["name"], r["kind"], r["task"], str(r["num_classes"]), r["description"])
        for r in kerasseg.list_models()
        if not r["name"].endswith("_test")
    ]
    assert _readme_table() == expected


def test_cli_list_and_info(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "unet" in out and "otsu" in out
    assert cli.main(["list", "--task", "classical", "--json"]) == 0
    assert "otsu" in [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert cli.main(["info", "unet", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["reference"].startswith("Ronneberger") and info["task"] == "semantic"
    assert cli.main(["info", "unte"]) == 2
    assert "Did you mean 'unet'" in capsys.readouterr().err


def test_readme_quick_start_runs():
    text = (REPO / "README.md").read_text()
    quick_start = text[text.index("## Quick start") :]
    code = re.search(r"```python\n(.*?)```", quick_start, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["probabilities"].shape == (1, 256, 256, 2)
    assert namespace["logits"].shape == (1, 256, 256, 1)
    assert namespace["result"]["mask"].shape == (2, 128, 128, 1)


def test_import_stays_backend_neutral_and_names_mask_rcnn_backend():
    """On another Keras backend `import kerasseg` loads no TensorFlow, the U-Net builds, and
    Mask R-CNN (TensorFlow ops inside) is refused with the backend named."""
    pytest.importorskip("torch")
    script = (
        "import sys, numpy as np, kerasseg\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "model = kerasseg.load('unet', input_shape=(None, None, 1), base_filters=4, depth=2,"
        " include_preprocessing=True, pad_to_fit=True, activation='sigmoid')\n"
        "print(model.predict(np.zeros((1, 30, 41, 1), 'float32'), verbose=0).shape)\n"
        "for name in ('maskrcnn_resnet50_fpn', 'maskrcnn_resnet18_isbi2012'):\n"
        "    try:\n"
        "        kerasseg.load(name)\n"
        "    except ValueError as error:\n"
        "        print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "KERAS_BACKEND": "torch"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 30, 41, 1)" in result.stdout
    refusals = [line for line in result.stdout.splitlines() if "needs the TensorFlow" in line]
    assert len(refusals) == 2 and all("'torch'" in line for line in refusals), result.stdout
    assert "maskrcnn_resnet18_isbi2012" in refusals[1]  # the preset, not an unknown name
