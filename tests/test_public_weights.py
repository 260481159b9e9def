"""Public checkpoints: download from a local server, verify, convert, cache, offline use.

The checkpoints are real `torch.save` files (a torch convolution's state dict) served from
127.0.0.1 under torchvision's URL shape (`/models/<name>-<sha256 prefix>.pth`); the preset
is a one-convolution Keras model whose converter maps the state dict by name, so every
step of `kerasseg.public_weights` runs for real without a large model. The architectures'
own converters are checked against torchvision and transformers in their parity tests.
"""

import hashlib
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest
from conftest import LocalFileServer, rgb_image

import kerasseg
from kerasseg import class_sets, public_weights, registry
from kerasseg.cli import main as cli_main
from kerasseg.convert import presets
from kerasseg.inference.colours import model_palette

torch = pytest.importorskip("torch")

ARCHITECTURE = "tiny_public_conv_test"


def _tiny_conv(num_classes=2, input_shape=(None, None, 3)):
    images = keras.Input(input_shape, name="images")
    outputs = keras.layers.Conv2D(num_classes, 3, padding="same", name="conv")(images)
    return keras.Model(images, outputs, name="tiny_public_conv")


def _assign_conv(state_dict, model):
    if set(state_dict) != {"conv.weight", "conv.bias"}:
        raise ValueError(f"not a tiny conv state dict: keys {sorted(state_dict)[:5]}")
    kernel = np.transpose(state_dict["conv.weight"], (2, 3, 1, 0))
    layer = model.get_layer("conv")
    if kernel.shape != tuple(layer.kernel.shape):
        raise ValueError(f"kernel {kernel.shape} does not fit {tuple(layer.kernel.shape)}")
    layer.set_weights([kernel, state_dict["conv.bias"]])


registry.register_model(
    ARCHITECTURE,
    _tiny_conv,
    task="semantic",
    description="test only",
    num_classes=2,
    overwrite=True,
)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    (root / "models").mkdir(parents=True)
    serving = LocalFileServer(root)
    yield serving, root
    serving.httpd.shutdown()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASSEG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(public_weights.OFFLINE_VARIABLE, raising=False)
    return tmp_path / "home"


def _torch_checkpoint(root, stem, seed=0, prefix_digits=8):
    """`torch.save` a conv's state dict under torchvision's name shape; (url path, conv)."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    plain = root / "models" / f"{stem}.pth"
    torch.save({f"conv.{k}": v for k, v in conv.state_dict().items()}, plain)
    prefix = hashlib.sha256(plain.read_bytes()).hexdigest()[:prefix_digits]
    named = plain.with_name(f"{stem}-{prefix}.pth")
    plain.rename(named)
    return f"/models/{named.name}", conv


def _preset(name, url):
    return presets.register_public_preset(
        name,
        ARCHITECTURE,
        {"num_classes": 2},
        description="test preset",
        url=url,
        assign=_assign_conv,
        class_set=class_sets.ClassSet("two", ("a", "b"), ((1, 2, 3), (4, 5, 6)), "test"),
        source="test",
        metrics={},
        split="",
    )


def _torch_output(conv, image):
    with torch.no_grad():
        out = conv(torch.from_numpy(image.transpose(0, 3, 1, 2)))
    return out.numpy().transpose(0, 2, 3, 1)


def _no_partial_files(folder):
    return not [p for p in folder.rglob("*") if ".partial-" in p.name]


def test_download_verify_convert_cache_then_load_from_cache(server, home, tmp_path):
    serving, root = server
    path, conv = _torch_checkpoint(root, "tiny_coco")
    _preset("tiny_full_public_test", serving.url + path)
    model = kerasseg.load("tiny_full_public_test")
    assert serving.hits[path] == 1
    image = (rgb_image(24, 32, seed=1)[None] / 255.0).astype("float32")
    np.testing.assert_allclose(
        model.predict(image, verbose=0), _torch_output(conv, image), atol=1e-5
    )
    original = home / "originals" / "tiny_full_public_test" / path.rsplit("/", 1)[-1]
    converted = home / "converted" / "tiny_full_public_test.weights.h5"
    record = json.loads((converted.parent / (converted.name + ".json")).read_text())
    assert record["sha256"] == hashlib.sha256(converted.read_bytes()).hexdigest()
    assert record["original_sha256"] == hashlib.sha256(original.read_bytes()).hexdigest()
    again = kerasseg.load("tiny_full_public_test")
    assert serving.hits[path] == 1, "the second load reads the cache"
    np.testing.assert_array_equal(again.predict(image, verbose=0), model.predict(image, verbose=0))
    assert again.weights_report.source == str(converted)
    # The preset's classes reach the palette that overlays and legends use.
    palette = model_palette("tiny_full_public_test")
    assert palette.names == ("a", "b") and palette.colours.tolist() == [[1, 2, 3], [4, 5, 6]]
    # ... and the export's metadata.
    exported = kerasseg.export(again, tmp_path / "serving", version=1)
    metadata = json.loads((exported / "assets.extra" / "kerasseg.json").read_text())
    assert metadata["class_names"] == ["a", "b"] and metadata["colours"][1] == [4, 5, 6]
    # Fine-tuning to other classes keeps the converted file and re-initialises the head.
    tuned = kerasseg.load("tiny_full_public_test", num_classes=5)
    assert tuned.outputs[0].shape[-1] == 5


def test_wrong_hash_is_refused_and_nothing_is_kept(server, home):
    serving, root = server
    path, _ = _torch_checkpoint(root, "tiny_wrong")
    served = root / path.lstrip("/")
    wrong = served.with_name("tiny_wrong-00000000.pth")
    served.rename(wrong)
    _preset("tiny_wrong_public_test", f"{serving.url}/models/{wrong.name}")
    with pytest.raises(ValueError, match=r"does not start with '00000000'.*it was deleted"):
        kerasseg.load("tiny_wrong_public_test")
    assert not (home / "originals" / "tiny_wrong_public_test" / wrong.name).exists()
    assert not (home / "converted" / "tiny_wrong_public_test.weights.h5").exists()
    assert _no_partial_files(home)


def test_truncated_download_is_deleted(server, home):
    serving, root = server
    path, _ = _torch_checkpoint(root, "tiny_cut")
    serving.truncate.add(path)
    entry = _preset("tiny_cut_public_test", serving.url + path)
    with pytest.raises(OSError, match="broke off"):
        kerasseg.load("tiny_cut_public_test")
    assert not list((home / "originals" / "tiny_cut_public_test").iterdir())
    assert _no_partial_files(home)
    # What a process killed mid-download leaves is cleared by the next load.
    info = entry.weights["default"]
    left = info.original_path.with_name(f".{info.original_name}.partial-99999-abcdef")
    left.write_bytes(b"half a file")
    serving.truncate.clear()
    kerasseg.load("tiny_cut_public_test")
    assert _no_partial_files(home) and info.converted_path.is_file()


def test_file_changed_on_disk_after_recording_is_refused(server, home):
    serving, root = server
    path, _ = _torch_checkpoint(root, "tiny_changed")
    entry = _preset("tiny_changed_public_test", serving.url + path)
    info = entry.weights["default"]
    info.fetch(progress=False)
    with open(info.original_path, "ab") as f:  # corrupt the cached original
        f.write(b"\0")
    info.converted_path.unlink()  # force a new conversion from it
    with pytest.raises(ValueError, match="does not start with|changed on disk"):
        info.fetch(progress=False)


def test_checkpoint_of_another_architecture_is_refused(server, home):
    serving, root = server
    other = root / "models" / "other.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(4, 3, 7, 7)}, other)
    prefix = hashlib.sha256(other.read_bytes()).hexdigest()[:8]
    other.rename(other.with_name(f"other-{prefix}.pth"))
    _preset("tiny_other_public_test", f"{serving.url}/models/other-{prefix}.pth")
    with pytest.raises(ValueError, match="cannot be converted: not a tiny conv state dict"):
        kerasseg.load("tiny_other_public_test")
    assert not (home / "converted" / "tiny_other_public_test.weights.h5").exists()
    assert _no_partial_files(home)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_malicious_pickle_is_refused_without_running(server, home, tmp_path, monkeypatch):
    serving, root = server
    monkeypatch.chdir(tmp_path)
    bad = root / "models" / "evil.pth"
    with zipfile.ZipFile(bad, "w") as archive:  # torch.save's layout, with code in data.pkl
        archive.writestr("archive/data.pkl", pickle.dumps({"conv.weight": _RunsCode()}))
        archive.writestr("archive/byteorder", b"little")
        archive.writestr("archive/version", b"3\n")
    prefix = hashlib.sha256(bad.read_bytes()).hexdigest()[:8]
    bad.rename(bad.with_name(f"evil-{prefix}.pth"))
    _preset("tiny_evil_public_test", f"{serving.url}/models/evil-{prefix}.pth")
    with pytest.raises(ValueError, match=f"refuses to load {os.system.__module__}.system"):
        kerasseg.load("tiny_evil_public_test")
    assert not (tmp_path / "pwned-by-pickle").exists()
    assert not (home / "converted" / "tiny_evil_public_test.weights.h5").exists()


def test_unwritable_cache_says_what_to_set(server, tmp_path, monkeypatch):
    serving, root = server
    path, _ = _torch_checkpoint(root, "tiny_ro")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("KERASSEG_HOME", str(blocker / "home"))
    _preset("tiny_ro_public_test", serving.url + path)
    with pytest.raises(OSError, match="set KERASSEG_HOME to a writable folder"):
        kerasseg.load("tiny_ro_public_test")


def test_offline_without_and_with_the_original(server, home, monkeypatch):
    serving, root = server
    path, conv = _torch_checkpoint(root, "tiny_offline")
    entry = _preset("tiny_offline_public_test", serving.url + path)
    info = entry.weights["default"]
    monkeypatch.setenv(public_weights.OFFLINE_VARIABLE, "1")
    with pytest.raises(OSError) as caught:
        kerasseg.load("tiny_offline_public_test")
    message = str(caught.value)
    assert str(info.original_path) in message and str(info.converted_path.parent) in message
    assert path not in serving.hits
    # The user copies the original where the message says: it is verified and converted.
    info.original_path.parent.mkdir(parents=True, exist_ok=True)
    info.original_path.write_bytes((root / path.lstrip("/")).read_bytes())
    model = kerasseg.load("tiny_offline_public_test")
    image = (rgb_image(16, 16, seed=2)[None] / 255.0).astype("float32")
    np.testing.assert_allclose(
        model.predict(image, verbose=0), _torch_output(conv, image), atol=1e-5
    )
    assert path not in serving.hits
    # A wrong file put there by hand is named, and left for the user.
    info.converted_path.unlink()
    info.original_path.write_bytes(b"not the checkpoint")
    with pytest.raises(ValueError, match=str(info.original_path)):
        kerasseg.load("tiny_offline_public_test")
    assert info.original_path.exists()


def test_cli_download_cache_list_and_clear(server, home, capsys):
    serving, root = server
    path, _ = _torch_checkpoint(root, "tiny_cli")
    _preset("tiny_cli_public_test", serving.url + path)
    assert cli_main(["download", "tiny_cli_public_test"]) == 0
    assert "tiny_cli_public_test.weights.h5" in capsys.readouterr().out
    assert cli_main(["cache", "list"]) == 0
    listing = capsys.readouterr().out
    assert "tiny_cli_public_test: original" in listing and "converted" in listing
    assert cli_main(["cache", "clear", "tiny_cli_public_test"]) == 0
    assert "deleted" in capsys.readouterr().out
    assert public_weights.cache_entries() == []
    assert cli_main(["download", "unet"]) == 2
    assert "architecture, not a preset" in capsys.readouterr().err
    assert cli_main(["cache", "clear"]) == 2
    assert cli_main(["cache", "clear", "../.."]) == 2
    assert "must be a preset name" in capsys.readouterr().err


def test_two_processes_download_once(server, home, tmp_path):
    serving, root = server
    path, _ = _torch_checkpoint(root, "tiny_two")
    script = tmp_path / "fetch.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {os.path.dirname(__file__)!r})
            import test_public_weights as t
            entry = t._preset("tiny_two_public_test", {serving.url + path!r})
            print(entry.weights["default"].fetch(progress=False))
            """
        )
    )
    env = {**os.environ, "KERASSEG_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = [
        subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert all(out.strip().endswith("tiny_two_public_test.weights.h5") for out in outputs)
    assert serving.hits[path] == 1
    assert _no_partial_files(home)


def torchvision_weights_meta(names):
    """{enum path: {"url", "metrics", "categories", "num_params"}} of torchvision `*_Weights`
    members, read in a child process: torchvision's native ops crash in a process that
    already holds TensorFlow (see tests/test_maskrcnn_parity.py)."""
    script = textwrap.dedent(
        f"""
        import importlib, json
        out = {{}}
        for path in {list(names)!r}:
            module, enum, member = path.rsplit(".", 2)
            weights = getattr(getattr(importlib.import_module(module), enum), member)
            out[path] = {{
                "url": weights.url,
                "metrics": weights.meta["_metrics"],
                "categories": weights.meta.get("categories"),
                "num_params": weights.meta["num_params"],
            }}
        print(json.dumps(out))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_torchvision_presets_are_listed_with_their_sources():
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision (test extra `parity`) is not installed")
    presets_and_enums = {
        "maskrcnn_resnet50_fpn_coco": "MaskRCNN_ResNet50_FPN_Weights",
        "maskrcnn_resnet50_fpn_v2_coco": "MaskRCNN_ResNet50_FPN_V2_Weights",
    }
    meta = torchvision_weights_meta(
        f"torchvision.models.detection.{enum}.COCO_V1" for enum in presets_and_enums.values()
    )
    for name, enum in presets_and_enums.items():
        published = meta[f"torchvision.models.detection.{enum}.COCO_V1"]
        entry = kerasseg.get_entry(name)
        info = entry.weights["default"]
        assert info.url == published["url"]
        assert info.sha256_prefix == published["url"].rsplit("-", 1)[1].split(".")[0]
        metrics = published["metrics"]["COCO-val2017"]
        assert info.metrics == {"box_ap": metrics["box_map"], "mask_ap": metrics["mask_map"]}
        assert entry.class_names == tuple(published["categories"])
        assert (kerasseg.weights.packaged_dir() / info.card).is_file()


def test_every_public_preset_has_its_card():
    names = [name for name in presets.PUBLIC_PRESETS if not name.endswith("_test")]
    assert len(names) >= 25
    for name in names:
        info = kerasseg.get_entry(name).weights["default"]
        card = (kerasseg.weights.packaged_dir() / info.card).read_text()
        assert info.url in card and info.licence in card and f'kerasseg.load("{name}")' in card


def test_segformer_checkpoint_full_path_equals_transformers(server, home, data_dir):
    """A transformers SegFormer-B0 (random weights), saved as the Hub's pytorch_model.bin and
    served under the Hub's URL shape, loads through the registered preset's arguments and
    converter and predicts what transformers predicts."""
    from PIL import Image
    from test_segformer import _hf_model, _pixel_values

    from kerasseg.convert.huggingface import segformer_weights

    serving, root = server
    hf_model = _hf_model("b0", 150, seed=3)
    served = root / "nvidia" / "segformer-b0-finetuned-ade-512-512" / "resolve" / "main"
    served.mkdir(parents=True)
    # The Hub's key names, as save_pretrained writes them (transformers 5 names its modules
    # otherwise in memory), in the pytorch_model.bin the presets download.
    from safetensors.torch import load_file

    hf_model.save_pretrained(root / "saved")
    torch.save(load_file(root / "saved" / "model.safetensors"), served / "pytorch_model.bin")
    real = kerasseg.get_entry("segformer_b0_ade20k")
    url = real.weights["default"].url.replace("https://huggingface.co", serving.url)
    presets.register_public_preset(
        "segformer_b0_ade20k_public_test",
        "segformer",
        real.defaults,
        description="test",
        url=url,
        assign=segformer_weights,
        class_set=class_sets.ADE20K,
        source="test",
        metrics={},
        split="",
    )
    frame = np.asarray(Image.open(sorted((data_dir / "camvid" / "val").glob("*.png"))[0]))
    frame = np.ascontiguousarray(frame[:96, :128, :3])
    with torch.no_grad():
        logits = hf_model(pixel_values=_pixel_values(frame)).logits
        expected = torch.nn.functional.interpolate(
            logits, size=frame.shape[:2], mode="bilinear", align_corners=False
        )
    expected = expected.numpy().transpose(0, 2, 3, 1)
    for _ in range(2):  # download and convert, then the cache
        model = kerasseg.load("segformer_b0_ade20k_public_test")
        actual = model.predict(frame[None].astype("float32"), verbose=0)
        assert np.abs(actual - expected).max() / np.abs(expected).max() < 1e-4
    assert serving.hits[url.replace(serving.url, "")] == 1
    assert model.weights_report.source.endswith("segformer_b0_ade20k_public_test.weights.h5")
