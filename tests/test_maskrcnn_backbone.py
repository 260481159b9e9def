"""ResNet-FPN backbone and torchvision weight converter against torchvision 0.29.1 fixtures.

Fixtures come from tests/fixtures/maskrcnn/make_backbone_reference.py (run with torch):
the key/shape tables and parameter counts of torchvision's `resnet_fpn_backbone`, and P2..P6
of the backbone in eval mode with `make_state_dict(keys, seed)` weights on a
`make_image(h, w, seed)` input. No torch is needed here.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasseg.convert.torchvision import (
    backbone_keys,
    backbone_weights,
    canonical_keys,
    load_state_dict,
    torchvision_param_count,
)
from kerasseg.models.maskrcnn.backbone import (
    FPN_LEVELS,
    FrozenBatchNorm,
    NearestResizeLike,
    resnet_fpn_backbone,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "maskrcnn"
from reference_weights import make_image, make_state_dict  # noqa: E402

# Tolerance: max |ours - torchvision| / max |torchvision| per level. Measured on this
# machine: <= 1.9e-6 for every case below (reference notes: <= 6.4e-6).
RTOL = 1e-4


def keys_info(depth):
    return json.loads((FIXTURES / f"backbone_resnet{depth}_keys.json").read_text())


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURES / "backbone_outputs.npz") as data:
        return {k: data[k] for k in data.files}


def relative_errors(model, reference, label):
    height, width, _, image_seed = (int(v) for v in reference[f"{label}/config"])
    outputs = model(make_image(height, width, image_seed), training=False)
    errors = {}
    for level in FPN_LEVELS:
        ours = keras.ops.convert_to_numpy(outputs[level])
        assert ours.shape == tuple(reference[f"{label}/{level}/shape"]), level
        ours = ours.reshape(-1)
        if f"{label}/{level}/index" in reference:
            ours = ours[reference[f"{label}/{level}/index"]]
        theirs = reference[f"{label}/{level}/values"]
        errors[level] = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    return errors


@pytest.fixture(scope="module")
def resnet50():
    model = resnet_fpn_backbone(50)
    backbone_weights(make_state_dict(keys_info(50)["keys"], 0), model)
    return model


@pytest.fixture(scope="module")
def resnet18_weights():
    return make_state_dict(keys_info(18)["keys"], 0)


@pytest.fixture(scope="module")
def resnet18(resnet18_weights):
    model = resnet_fpn_backbone(18)
    backbone_weights(resnet18_weights, model)
    return model


@pytest.mark.slow
def test_resnet50_matches_torchvision(resnet50, reference):
    errors = relative_errors(resnet50, reference, "resnet50")
    assert max(errors.values()) <= RTOL, errors


@pytest.mark.parametrize("label", ["resnet18", "resnet18_odd"])
def test_resnet18_matches_torchvision(resnet18, reference, label):
    # resnet18_odd: a 50x70 input, no multiple of 32; the top-down upsampling then follows
    # torch's nearest rule for non-x2 sizes (e.g. P5 2x3 -> P4 4x5) and still matches.
    errors = relative_errors(resnet18, reference, label)
    assert max(errors.values()) <= RTOL, errors


def test_batchnorm_variant_matches_torchvision(reference):
    # nn.BatchNorm2d (eps 1e-5) in body and FPN (v2 style FPN blocks), eval mode.
    info = json.loads((FIXTURES / "backbone_resnet18_bn_keys.json").read_text())
    shapes = info["keys"]
    model = resnet_fpn_backbone(18, norm="batch", fpn_norm="batch")
    assert "backbone.fpn.inner_blocks.0.1.num_batches_tracked" in shapes
    # BatchNorm gamma/beta are torch parameters, moving statistics are buffers.
    assert torchvision_param_count(model) == info["num_params"]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == info["trainable_params"]
    consumed = backbone_weights(make_state_dict(shapes, 3), model)
    assert consumed == set(shapes)
    errors = relative_errors(model, reference, "resnet18_bn")
    assert max(errors.values()) <= RTOL, errors


def test_frozen_bn_eps_matters(resnet18_weights, reference):
    # Trap 5: the v1 COCO weights need eps 0.0; torchvision's usual 1e-5 is off by ~5e-4
    # relative here (measured), above the tolerance, so the parity tests would catch it.
    model = resnet_fpn_backbone(18, eps=1e-5)
    backbone_weights(resnet18_weights, model)
    errors = relative_errors(model, reference, "resnet18")
    assert max(errors.values()) > 3 * RTOL, errors


@pytest.mark.slow
@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_parameter_counts_and_keys_match_torchvision(depth, request):
    """Counts as torchvision reports them: FrozenBatchNorm2d tensors are buffers there.

    `torchvision_param_count` skips all four FrozenBatchNorm variables, so it equals
    ``sum(p.numel() for p in parameters())``; `count_params()` (which counts them) exceeds it
    by exactly torchvision's FrozenBN buffers; the trainable weights (trainable_layers=3)
    equal torchvision's ``requires_grad`` parameters; the converter expects exactly
    torchvision's state-dict keys (shapes are checked by the parity tests).
    """
    info = keys_info(depth)
    model = request.getfixturevalue("resnet50") if depth == 50 else resnet_fpn_backbone(depth)
    assert torchvision_param_count(model) == info["num_params"]
    assert model.count_params() == info["num_params"] + info["frozen_bn_buffers"]
    frozen = [layer for layer in model.layers if isinstance(layer, FrozenBatchNorm)]
    affine = sum(int(np.prod(w.shape)) for layer in frozen for w in (layer.gamma, layer.beta))
    assert affine == info["frozen_bn_affine"]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == info["trainable_params"]
    assert backbone_keys(model) == set(info["keys"])


def _names(weights):
    return {w.path.split("/")[0] for w in weights}


@pytest.mark.parametrize(
    "trainable_layers, trained, frozen",
    [
        (0, set(), {"conv1", "layer1_0_conv1", "layer4_0_conv1"}),
        (1, {"layer4_0_conv1"}, {"layer3_0_conv1", "conv1"}),
        (4, {"layer1_0_conv1", "layer1_0_bn1"}, {"conv1", "bn1"}),
        (5, {"conv1", "bn1", "layer1_0_bn1"}, set()),
    ],
)
def test_trainable_layers_like_torchvision(trainable_layers, trained, frozen):
    model = resnet_fpn_backbone(18, norm="batch", trainable_layers=trainable_layers)
    names = _names(model.trainable_weights)
    assert trained <= names and not frozen & names, sorted(names)
    assert {f"fpn_{k}_{i}" for k in ("inner", "layer") for i in range(4)} <= names
    assert not any(isinstance(model.get_layer(n), keras.layers.ReLU) for n in names)


def test_frozen_batch_norm_never_trains():
    model = resnet_fpn_backbone(18, trainable_layers=5)
    assert "conv1" in _names(model.trainable_weights)
    assert not any(
        isinstance(model.get_layer(n), FrozenBatchNorm) for n in _names(model.trainable_weights)
    )


def test_frozen_batch_norm_formula():
    rng = np.random.default_rng(0)
    layer = FrozenBatchNorm(epsilon=1e-3)
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    layer.build(x.shape)
    gamma, beta, mean = (rng.normal(size=5).astype("float32") for _ in range(3))
    var = rng.uniform(0.02, 0.1, 5).astype("float32")
    layer.set_weights([gamma, beta, mean, var])
    expected = (x - mean) / np.sqrt(var + 1e-3) * gamma + beta
    for training in (False, True):
        np.testing.assert_allclose(layer(x, training=training), expected, rtol=1e-5, atol=1e-5)
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 4
    clone = FrozenBatchNorm.from_config(layer.get_config())
    assert clone.epsilon == 1e-3 and clone.axis == -1
    with pytest.raises(ValueError, match="epsilon"):
        FrozenBatchNorm(epsilon=-1.0)


def test_nearest_resize_like_follows_torch_rule():
    x = np.arange(2 * 3, dtype="float32").reshape(1, 2, 3, 1)
    reference = np.zeros((1, 4, 5, 1), "float32")
    out = keras.ops.convert_to_numpy(NearestResizeLike()([x, reference]))
    # torch: src = min(floor(dst * in / out), in - 1): rows 0,0,1,1; columns 0,0,1,1,2.
    expected = x[:, [0, 0, 1, 1]][:, :, [0, 0, 1, 1, 2]]
    np.testing.assert_array_equal(out, expected)
    out = keras.ops.convert_to_numpy(NearestResizeLike()([x, np.zeros((1, 4, 6, 1))]))
    np.testing.assert_array_equal(out, np.repeat(np.repeat(x, 2, axis=1), 2, axis=2))


def test_converter_refuses_missing_key_and_assigns_nothing(resnet18_weights):
    model = resnet_fpn_backbone(18)
    state = dict(resnet18_weights)
    del state["backbone.body.layer2.1.bn2.running_var"]
    del state["backbone.fpn.layer_blocks.3.0.bias"]
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError) as error:
        backbone_weights(state, model)
    message = str(error.value)
    assert "backbone.body.layer2.1.bn2.running_var" in message
    assert "backbone.fpn.layer_blocks.3.0.bias" in message
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_converter_refuses_unexpected_key_and_assigns_nothing(resnet18_weights):
    model = resnet_fpn_backbone(18)
    before = [w.copy() for w in model.get_weights()]
    state = dict(resnet18_weights)
    state["backbone.body.layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    state["rpn.head.cls_logits.weight"] = np.zeros((3, 256, 1, 1), np.float32)  # not ours
    with pytest.raises(ValueError, match=r"backbone\.body\.layer5\.0\.conv1\.weight") as error:
        backbone_weights(state, model)
    assert "rpn.head" not in str(error.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_converter_refuses_wrong_shape(resnet18, resnet18_weights):
    model = resnet18  # nothing is assigned on error
    state = dict(resnet18_weights)
    state["backbone.body.conv1.weight"] = np.zeros((64, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"backbone\.body\.conv1\.weight: \(64, 3, 5, 5\)"):
        backbone_weights(state, model)


def test_converter_returns_consumed_keys_and_ignores_other_prefixes(resnet18, resnet18_weights):
    model = resnet18  # reloads the same weights
    state = dict(resnet18_weights)
    state["roi_heads.box_head.fc6.weight"] = np.zeros((2, 2), np.float32)
    consumed = backbone_weights(state, model)
    assert consumed == set(resnet18_weights)
    # Prefix "" reads a BackboneWithFPN state dict.
    bare = {k[len("backbone.") :]: v for k, v in resnet18_weights.items()}
    assert len(backbone_weights(bare, model, prefix="")) == len(bare)


def test_legacy_fpn_key_names_load_the_same(resnet18, resnet18_weights):
    legacy = {}
    for key, value in resnet18_weights.items():
        if ".fpn." in key:
            key = key.replace(".0.weight", ".weight").replace(".0.bias", ".bias")
        legacy[key] = value
    assert "backbone.fpn.inner_blocks.0.weight" in legacy
    model = resnet_fpn_backbone(18)
    assert backbone_weights(legacy, model) == set(legacy)
    for ours, theirs in zip(model.get_weights(), resnet18.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    both = dict(resnet18_weights, **{"backbone.fpn.inner_blocks.0.weight": legacy[
        "backbone.fpn.inner_blocks.0.weight"]})  # fmt: skip
    with pytest.raises(ValueError, match="two spellings"):
        backbone_weights(both, model)


def test_canonical_keys_rewrites_documented_legacy_names():
    keys = canonical_keys(
        ["rpn.head.conv.weight", "roi_heads.mask_head.mask_fcn4.bias", "fpn.layer_blocks.2.bias"]
    )
    assert keys == {
        "rpn.head.conv.0.0.weight": "rpn.head.conv.weight",
        "roi_heads.mask_head.3.0.bias": "roi_heads.mask_head.mask_fcn4.bias",
        "fpn.layer_blocks.2.0.bias": "fpn.layer_blocks.2.bias",
    }


def test_converter_finds_backbone_inside_a_larger_model(resnet18, resnet18_weights):
    inner = resnet_fpn_backbone(18)
    images = keras.Input((None, None, 3))
    features = inner(images)
    outer = keras.Model(images, keras.layers.Add()([features["P5"], features["P5"]]))
    backbone_weights(resnet18_weights, outer)
    for ours, theirs in zip(inner.get_weights(), resnet18.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_serialization_round_trip_keeps_outputs(resnet18, tmp_path):
    x = make_image(64, 96, seed=5)
    expected = resnet18(x)
    clone = keras.models.model_from_json(resnet18.to_json())
    clone.set_weights(resnet18.get_weights())
    path = tmp_path / "backbone.keras"
    resnet18.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in resnet18.layers]
    assert _names(loaded.trainable_weights) == _names(resnet18.trainable_weights)
    for model in (clone, loaded):
        out = model(x)
        for level in FPN_LEVELS:
            np.testing.assert_allclose(out[level], expected[level], rtol=1e-6, atol=1e-5)


def test_any_input_size_and_static_shapes(resnet18):
    # Not only multiples of 32: every size gives torchvision's shapes (ceil halving).
    out = resnet18(make_image(33, 47, seed=6))
    sizes = [tuple(out[level].shape[1:3]) for level in FPN_LEVELS]
    assert sizes == [(9, 12), (5, 6), (3, 3), (2, 2), (1, 1)]
    static = resnet_fpn_backbone(18, input_shape=(64, 96, 3))
    shapes = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]  # P6 = P5[::2, ::2]
    assert [tuple(t.shape) for t in static.outputs] == [(None, h, w, 256) for h, w in shapes]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 42}, "depth"),
        ({"norm": "group"}, "norm"),
        ({"trainable_layers": 6}, "trainable_layers"),
        ({"eps": -1.0}, "eps"),
        ({"norm": "batch", "eps": 0.0}, "eps"),
        ({"fpn_norm": "group"}, "fpn_norm"),
        ({"input_shape": (64, 64)}, "input_shape"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet_fpn_backbone(**kwargs)


def test_load_state_dict_formats(tmp_path, resnet18_weights):
    state = {k: v for k, v in list(resnet18_weights.items())[:5]}
    np.savez(tmp_path / "w.npz", **state)
    loaded = load_state_dict(tmp_path / "w.npz")
    assert loaded.keys() == state.keys()
    assert all(np.array_equal(loaded[k], state[k]) for k in state)

    # A minimal safetensors file (8-byte header length, JSON header, raw little-endian data).
    key, value = "backbone.body.conv1.weight", state["backbone.body.conv1.weight"]
    header = json.dumps(
        {key: {"dtype": "F32", "shape": list(value.shape), "data_offsets": [0, value.nbytes]}}
    ).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + value.tobytes())
    try:
        import safetensors  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="safetensors"):
            load_state_dict(path)
    else:
        np.testing.assert_array_equal(load_state_dict(path)[key], value)

    with pytest.raises(ValueError, match="extension"):
        load_state_dict(tmp_path / "w.h5")
