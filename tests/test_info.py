"""`kerasseg info NAME`: arguments with defaults and meanings from the builders' docstrings,
the input contract, a preset's classes with colours, its metrics; text and `--json`."""

import inspect
import json

import numpy as np
import pytest

import kerasseg
from kerasseg import cli, registry
from kerasseg.models.unet import unet


def _names():
    """Every registered name but those that other test modules register for themselves
    ("..._test"), and of the presets of public checkpoints one per architecture and data set
    (the others differ only in arguments; each `info` builds its model, which takes time)."""
    names, seen = [], set()
    for summary in kerasseg.list_models():
        public = any(w.get("public") for w in summary["weights"].values())
        key = (summary["architecture"], summary["dataset"])
        if summary["name"].endswith("_test") or (public and key in seen):
            continue
        seen.add(key)
        names.append(summary["name"])
    return names


NAMES = _names()


@pytest.mark.parametrize("name", NAMES)
def test_info_of_every_registered_name(name, capsys):
    assert cli.main(["info", name]) == 0
    text = capsys.readouterr().out
    rows = registry.get_entry(name).argument_details()
    assert [row["name"] for row in rows] == list(registry.get_entry(name).accepted_arguments())
    undocumented = [row["name"] for row in rows if not row["meaning"].strip()]
    assert not undocumented, f"{name}: no meaning in the builder's docstring for {undocumented}"
    assert "(undocumented)" not in text and "\nInput\n" in text and "\nClasses (" in text
    for row in rows:
        assert f"\n  {row['name']}" in text
        assert "\n" not in row["meaning"] and not row["meaning"].startswith(("as `", "see `"))


def _info_json(name, capsys):
    assert cli.main(["info", name, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_unet_arguments_come_from_its_signature_and_docstring(capsys):
    info = _info_json("unet", capsys)
    signature = {
        p.name: p.default
        for p in inspect.signature(unet).parameters.values()
        if p.default != p.empty
    }
    rows = {row["name"]: row for row in info["argument_details"]}
    assert set(rows) == set(signature)
    for name, default in signature.items():
        assert rows[name]["default"] == (list(default) if isinstance(default, tuple) else default)
        assert not rows[name]["preset"]
    assert rows["num_classes"]["meaning"] == (
        "output channels (1 for binary segmentation with a sigmoid)."
    )
    # Only the first sentence of a multi-line entry, on one line.
    assert rows["pad_to_fit"]["meaning"].startswith("pad inputs inside the model by reflection")
    assert info["arguments"]["depth"] == signature["depth"]
    assert info["reference"].startswith("Ronneberger") and info["classes"] == []


def test_size_rule_is_the_one_the_model_enforces(capsys):
    contract = _info_json("unet", capsys)["input_contract"]
    # The original U-Net of depth 4 halves the size four times: multiples of 2**4 = 16.
    assert (contract["size_divisor"], contract["min_size"]) == (16, 16)
    assert contract["channels"] == 3 and not contract["normalises_inside"]
    model = kerasseg.load("unet", weights=None, base_filters=4)
    assert model(np.zeros((1, 32, 48, 3), "float32")).shape == (1, 32, 48, 1)
    with pytest.raises(ValueError, match="16"):
        model(np.zeros((1, 40, 40, 3), "float32"))


def test_camvid_preset_shows_segnet_classes_and_metrics(capsys):
    info = _info_json("unet_camvid", capsys)
    classes = {c["name"]: tuple(c["colour"]) for c in info["classes"]}
    # SegNet's CamVid colours (the SegNet tutorial's camvid12 palette).
    assert classes["car"] == (64, 0, 128) and classes["road"] == (128, 64, 128)
    assert classes["sky"] == (128, 128, 128) and len(classes) == 11
    assert info["metrics"]["mean_iou"] > 0.5
    rows = {row["name"]: row for row in info["argument_details"]}
    assert rows["num_classes"]["preset"] and rows["num_classes"]["default"] == 11
    contract = info["input_contract"]
    # pad_to_fit at depth 4: any size of at least 2**4 / 2 + 1 = 9 (the builder's docstring).
    assert (contract["size_divisor"], contract["min_size"]) == (1, 9)
    assert contract["normalises_inside"] and contract["values"].startswith("0..255")


def test_sigmoid_preset_names_two_classes(capsys):
    info = _info_json("unet_isbi2012", capsys)
    assert [c["name"] for c in info["classes"]] == ["membrane", "cell interior"]
    assert "sigmoid" in info["classes_note"] and info["input_contract"]["channels"] == 1


def test_references_to_other_docstrings_are_followed(capsys):
    # adaptive_threshold's docstring says "block_size, c, method, inverse: as
    # `AdaptiveThreshold`": the layer's own entry is shown.
    rows = {row["name"]: row for row in registry.get_entry("adaptive_threshold").argument_details()}
    assert rows["block_size"]["meaning"] == "odd size > 1 of the neighbourhood."
    # The Mask R-CNN variants' builder says "see `maskrcnn` for the arguments".
    rows = {
        row["name"]: row for row in registry.get_entry("maskrcnn_resnet50_fpn").argument_details()
    }
    assert rows["min_size"]["default"] == 800 and rows["max_size"]["default"] == 1333
    assert rows["rpn_fg_iou_threshold"]["default"] == 0.7  # torchvision's default
    # Threshold options documented in the builder, defaults as the layer's.
    rows = {row["name"]: row for row in registry.get_entry("multiotsu").argument_details()}
    assert rows["classes"]["default"] == 3 and rows["nbins"]["default"] == 256


def test_args_section_parser():
    doc = """Summary.

    Args:
        a, b: shared text
            that goes on. Second sentence.
        c (int): typed entry.
        **extra: options: `d` (5), `e` ('x').

    Returns:
        Something: not an argument.
    """
    entries = registry._args_section(inspect.cleandoc(doc))
    assert entries["a"] == entries["b"] == "shared text that goes on. Second sentence."
    assert entries["c"] == "typed entry." and "Something" not in entries
    assert registry._first_sentence(entries["a"]) == "shared text that goes on."
    docs, defaults = {}, {}
    registry._keyword_entries(entries["**extra"], docs, defaults)
    assert defaults == {"d": 5, "e": "x"} and set(docs) == {"d", "e"}


def test_unknown_name_is_a_usage_error(capsys):
    assert cli.main(["info", "unte"]) == 2
    assert "Did you mean 'unet'" in capsys.readouterr().err
