"""Hugging Face SegFormer checkpoints -> kerasseg's `segformer` (numpy only).

The checkpoints are NVIDIA's on the Hugging Face Hub: ``nvidia/segformer-b{0..5}-finetuned-
ade-512-512`` (150 ADE20K classes; B5 also at 640x640) and ``nvidia/segformer-b{0..5}-
finetuned-cityscapes-1024-1024`` (19 classes), transformers'
``SegformerForSemanticSegmentation``; and the ImageNet-1k encoders ``nvidia/mit-b{0..5}``,
``SegformerForImageClassification``. Read one with
`kerasseg.convert.torchvision.load_state_dict` (``model.safetensors`` through safetensors'
numpy API, ``pytorch_model.bin`` through the restricted unpickler): neither torch nor
transformers is needed.

Key layout, as on the Hub and as transformers' ``save_pretrained`` writes it (transformers 5
names the modules differently in memory, ``segformer.stages.{i}.blocks...``, and maps them
back to this layout when saving)::

    segformer.encoder.patch_embeddings.{i}.proj / .layer_norm
    segformer.encoder.block.{i}.{j}.layer_norm_1
    segformer.encoder.block.{i}.{j}.attention.self.query / key / value / sr / layer_norm
    segformer.encoder.block.{i}.{j}.attention.output.dense
    segformer.encoder.block.{i}.{j}.layer_norm_2
    segformer.encoder.block.{i}.{j}.mlp.dense1 / dwconv.dwconv / dense2
    segformer.encoder.layer_norm.{i}
    decode_head.linear_c.{i}.proj / linear_fuse / batch_norm / classifier
    classifier                                   (the ImageNet head of nvidia/mit-b*)

`kerasseg.models.segformer`'s docstring gives the Keras layer of each module; stages and
blocks count from 1 there and from 0 here. Linear weights transpose to Dense kernels, Conv2d
weights ``(out, in, kh, kw)`` to ``(kh, kw, in, out)``, the depthwise ``(C, 1, 3, 3)`` to
``(3, 3, C, 1)``; norms copy as they are.

Every key and every shape is checked before anything is assigned: a missing key, a key that
feeds no weight, a shape mismatch, another architecture, variant, decoder width or class
count raises a ValueError naming them, and the model keeps the weights it had. The attention
heads (1, 2, 5, 8 in every MiT variant) leave no trace in the weights; the checkpoints' own
``config.json`` files use these.

Preprocessing of the checkpoints (transformers' ``SegformerImageProcessor``): RGB, bilinear
resize (512x512 for ADE20K, 1024x1024 for Cityscapes), 0..255 scaled by 1/255 and normalised
with the ImageNet mean and std: ``segformer(..., include_preprocessing=True)`` on 0..255
images. Reference: Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers", arXiv:2105.15203.
"""

import re

import keras
import numpy as np

from kerasseg.convert.torchvision import LAYER_PARAMS, OPTIONAL_PARAMS
from kerasseg.models.segformer import VARIANTS

__all__ = [
    "CLASSIFIER_PREFIX",
    "DECODER_MODULES",
    "DECODER_PREFIX",
    "ENCODER_MODULES",
    "ENCODER_PREFIX",
    "PARAMS",
    "SUBLAYERS",
    "mit_encoder_weights",
    "segformer_config",
    "segformer_weights",
]

ENCODER_PREFIX = "segformer.encoder."
DECODER_PREFIX = "decode_head."
CLASSIFIER_PREFIX = "classifier."  # SegformerForImageClassification's ImageNet head


# Keras layer class -> ((Keras attribute, torch parameter, numpy transform), ...).
PARAMS = {
    kind: LAYER_PARAMS[kind]
    for kind in ("Conv2D", "Dense", "BatchNormalization", "LayerNormalization", "DepthwiseConv2D")
}

# Keras layer name (full match) -> module path under ENCODER_PREFIX; the numbers in the Keras
# names count from 1, the module indices from 0.
ENCODER_MODULES = (
    (r"patch_embed(\d+)_proj", "patch_embeddings.{0}.proj"),
    (r"patch_embed(\d+)_norm", "patch_embeddings.{0}.layer_norm"),
    (r"block(\d+)_(\d+)_norm1", "block.{0}.{1}.layer_norm_1"),
    (r"block(\d+)_(\d+)_attention", "block.{0}.{1}.attention"),
    (r"block(\d+)_(\d+)_norm2", "block.{0}.{1}.layer_norm_2"),
    (r"block(\d+)_(\d+)_mlp", "block.{0}.{1}.mlp"),
    (r"stage(\d+)_norm", "layer_norm.{0}"),
)
# Decoder layers of the top-level model -> module path under DECODER_PREFIX.
DECODER_MODULES = (
    (r"linear_c(\d+)", "linear_c.{0}.proj"),
    (r"linear_fuse", "linear_fuse"),
    (r"linear_fuse_bn", "batch_norm"),
    (r"head", "classifier"),
)
# The sublayers of kerasseg's SegFormer layers: (attribute, module path below the layer's).
SUBLAYERS = {
    "EfficientSelfAttention": (
        ("query", "self.query"),
        ("key", "self.key"),
        ("value", "self.value"),
        ("sr", "self.sr"),
        ("norm", "self.layer_norm"),
        ("proj", "output.dense"),
    ),
    "MixFFN": (("dense1", "dense1"), ("dwconv", "dwconv.dwconv"), ("dense2", "dense2")),
}

_PATCH_KEY = re.compile(re.escape(ENCODER_PREFIX) + r"patch_embeddings\.(\d+)\.proj\.weight")
_BLOCK_KEY = re.compile(re.escape(ENCODER_PREFIX) + r"block\.(\d+)\.(\d+)\.")


def _check_state_dict(state_dict):
    if not hasattr(state_dict, "keys"):
        raise TypeError(
            f"`state_dict` must be a mapping of names to arrays (see "
            f"kerasseg.convert.torchvision.load_state_dict); got {type(state_dict).__name__}."
        )


def _variant_name(widths, depths):
    for name, spec in VARIANTS.items():
        if spec.widths == tuple(widths) and spec.depths == tuple(depths):
            return name
    return None


def _describe(widths, depths):
    shape = f"hidden sizes {tuple(widths)}, depths {tuple(depths)}"
    name = _variant_name(widths, depths)
    return f"MiT-{name.upper()} ({shape})" if name else shape


def _checkpoint_encoder(state_dict):
    """(widths, depths) of a checkpoint's encoder, from its patch embeddings and block keys."""
    widths = {}
    for key in state_dict:
        match = _PATCH_KEY.fullmatch(key)
        if match:
            widths[int(match[1])] = int(np.shape(state_dict[key])[0])
    if not widths:
        sample = ", ".join(repr(key) for key in sorted(state_dict)[:3]) or "none"
        raise ValueError(
            f"`state_dict` is not a Hugging Face SegFormer checkpoint: it has no "
            f"'{ENCODER_PREFIX}patch_embeddings.0.proj.weight' (first keys: {sample})."
        )
    depths = dict.fromkeys(widths, 0)
    for key in state_dict:
        match = _BLOCK_KEY.match(key)
        if match and int(match[1]) in depths:
            depths[int(match[1])] = max(depths[int(match[1])], int(match[2]) + 1)
    stages = sorted(widths)
    return tuple(widths[s] for s in stages), tuple(depths[s] for s in stages)


def segformer_config(state_dict):
    """The `segformer` builder arguments that a Hugging Face SegFormer checkpoint needs.

    The variant comes from the encoder's hidden sizes (the patch embeddings' output channels)
    and depths (blocks per stage); with a decode head (``SegformerForSemanticSegmentation``),
    the class count from ``decode_head.classifier.weight`` and the decoder width from
    ``decode_head.linear_fuse.weight``.

    Args:
        state_dict: ``{key: array}``, as `kerasseg.convert.torchvision.load_state_dict` reads
            ``model.safetensors`` or ``pytorch_model.bin``.

    Returns:
        ``{"variant": "b0".."b5"}``, plus ``"num_classes"`` and ``"decoder_filters"`` when the
        checkpoint has a decode head: ``kerasseg.models.segformer.segformer(**config)`` builds
        the model it fits.

    Raises:
        TypeError: `state_dict` is not a mapping.
        ValueError: not a SegFormer checkpoint, or an encoder that is none of MiT-B0..B5.

    Example:
        >>> from kerasseg.convert.torchvision import load_state_dict
        >>> state_dict = load_state_dict("model.safetensors")  # doctest: +SKIP
        >>> segformer_config(state_dict)  # doctest: +SKIP
        {'variant': 'b0', 'num_classes': 150, 'decoder_filters': 256}
    """
    _check_state_dict(state_dict)
    widths, depths = _checkpoint_encoder(state_dict)
    variant = _variant_name(widths, depths)
    if variant is None:
        known = "; ".join(
            f"{name}: {spec.widths}, {spec.depths}" for name, spec in VARIANTS.items()
        )
        raise ValueError(
            f"`state_dict`: its encoder ({_describe(widths, depths)}) is none of the MiT "
            f"variants (hidden sizes, depths): {known}."
        )
    config = {"variant": variant}
    classifier = state_dict.get(DECODER_PREFIX + "classifier.weight")
    if classifier is not None:
        config["num_classes"] = int(np.shape(classifier)[0])
        fuse = state_dict.get(DECODER_PREFIX + "linear_fuse.weight")
        if fuse is not None:
            config["decoder_filters"] = int(np.shape(fuse)[0])
    return config


def _find_encoder(model):
    """The MiT encoder: `model` itself (`mix_transformer`) or its "encoder" sub-model."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    names = {layer.name for layer in model.layers}
    if "patch_embed1_proj" in names:
        return model
    if "encoder" in names:
        encoder = model.get_layer("encoder")
        if isinstance(encoder, keras.Model) and "patch_embed1_proj" in {
            layer.name for layer in encoder.layers
        }:
            return encoder
    raise ValueError(
        f"`model` must be a kerasseg `segformer` model or its `mix_transformer` encoder; got "
        f"{model.name!r}, which has no MiT encoder (a layer 'patch_embed1_proj')."
    )


def _model_encoder(encoder):
    """(widths, depths) of a kerasseg MiT encoder, from its layers."""
    widths, depths, stage = [], [], 1
    names = [layer.name for layer in encoder.layers]
    while f"patch_embed{stage}_proj" in names:
        widths.append(encoder.get_layer(f"patch_embed{stage}_proj").filters)
        pattern = re.compile(rf"block{stage}_\d+_attention")
        depths.append(sum(1 for name in names if pattern.fullmatch(name)))
        stage += 1
    return tuple(widths), tuple(depths)


def _check_encoder_fits(state_dict, encoder, variant):
    """A ValueError naming both variants when the checkpoint's encoder is not the model's."""
    given = _checkpoint_encoder(state_dict)
    have = _model_encoder(encoder)
    if given != have:
        raise ValueError(
            f"`state_dict` holds a {_describe(*given)} encoder but `model` has "
            f"{_describe(*have)}; build the model with variant={variant!r}."
        )


def _module_path(name, modules):
    for pattern, template in modules:
        match = re.fullmatch(pattern, name)
        if match:
            return template.format(*(int(group) - 1 for group in match.groups()))
    return None


def _entries(layers, modules, prefix):
    """The checkpoint key of every weight of `layers`.

    Returns:
        ``(entries, optional, unmapped)``: ``[(variable, key, transform), ...]``, the keys
        consumed when present (BatchNorm's ``num_batches_tracked``), and the layers holding
        weights that no module fits.
    """
    entries, optional, unmapped = [], [], []
    for layer in layers:
        if not layer.weights:
            continue
        module = _module_path(layer.name, modules)
        if module is None:
            unmapped.append(f"{layer.name} ({type(layer).__name__})")
            continue
        parts = [(layer, module)]
        kind = type(layer).__name__
        if kind in SUBLAYERS:
            parts = [
                (getattr(layer, attribute), f"{module}.{path}")
                for attribute, path in SUBLAYERS[kind]
                if getattr(layer, attribute, None) is not None  # no `sr` where the ratio is 1
            ]
        for part, path in parts:
            part_kind = type(part).__name__
            if part_kind not in PARAMS:
                unmapped.append(f"{layer.name}/{part.name} ({part_kind})")
                continue
            for attribute, param, transform in PARAMS[part_kind]:
                variable = getattr(part, attribute, None)
                if variable is not None:  # None: a convolution without bias
                    entries.append((variable, f"{prefix}{path}.{param}", transform))
            optional.extend(f"{prefix}{path}.{p}" for p in OPTIONAL_PARAMS.get(part_kind, ()))
    return entries, optional, unmapped


def _listed(items, limit=12):
    shown = ", ".join(items[:limit])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > limit else shown


def _assign(state_dict, entries, optional, unmapped, ignored=()):
    """Check every entry and every key of `state_dict`, then assign; all or nothing.

    Keys starting with one of `ignored` may stay unused; any other unused key is an error.
    """
    plan, missing, bad_shape = [], [], []
    for variable, key, transform in entries:
        if key not in state_dict:
            missing.append(key)
            continue
        given = np.asarray(state_dict[key])
        value = transform(given)
        if tuple(value.shape) != tuple(variable.shape):
            bad_shape.append(
                f"{key} {tuple(given.shape)} -> {tuple(value.shape)}, but {variable.path} is "
                f"{tuple(variable.shape)}"
            )
            continue
        plan.append((variable, value))
    used = {key for _, key, _ in entries}.union(optional)
    unused = sorted(
        key for key in state_dict if key not in used and not key.startswith(tuple(ignored))
    )
    problems = []
    if unmapped:
        problems.append("Keras layers with weights but no checkpoint module: " + _listed(unmapped))
    if missing:
        problems.append(f"missing keys ({len(missing)}): " + _listed(missing))
    if bad_shape:
        problems.append("shape mismatches: " + _listed(bad_shape))
    if unused:
        problems.append(f"keys that feed no weight ({len(unused)}): " + _listed(unused))
    if problems:
        raise ValueError("`state_dict` does not fit the model: " + " | ".join(problems))
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype))


def segformer_weights(state_dict, model):
    """Load a Hugging Face ``SegformerForSemanticSegmentation`` checkpoint into `model`.

    Args:
        state_dict: ``{key: array}`` with the keys ``segformer.encoder.*`` and
            ``decode_head.*`` (e.g. ``nvidia/segformer-b0-finetuned-ade-512-512``'s
            ``model.safetensors``, read by `kerasseg.convert.torchvision.load_state_dict`).
        model: a `kerasseg.models.segformer.segformer` model with the checkpoint's variant,
            decoder width and class count (`segformer_config` gives them).

    Returns:
        `model`, with every weight assigned (BatchNorm moving statistics included).

    Raises:
        TypeError: `state_dict` is not a mapping or `model` not a Keras model.
        ValueError: `model` is no SegFormer; the checkpoint is no SegFormer with a decode head,
            or its variant, decoder width or class count differs from the model's; a key is
            missing, feeds no weight or has the wrong shape. Nothing is assigned then.
    """
    _check_state_dict(state_dict)
    encoder = _find_encoder(model)
    names = {layer.name for layer in model.layers}
    if encoder is model or not {"linear_fuse", "head"} <= names:
        raise ValueError(
            f"`model` must be a kerasseg `segformer` model (an 'encoder' sub-model, the decoder "
            f"'linear_c1'..'linear_fuse' and the classifier 'head'); got {model.name!r}. "
            "Load an encoder alone with `mit_encoder_weights`."
        )
    config = segformer_config(state_dict)
    if "num_classes" not in config:
        raise ValueError(
            f"`state_dict` has no decode head ('{DECODER_PREFIX}classifier.weight'): an "
            "encoder checkpoint (such as nvidia/mit-b0) loads with `mit_encoder_weights`."
        )
    _check_encoder_fits(state_dict, encoder, config["variant"])
    head = model.get_layer("head")
    fuse = model.get_layer("linear_fuse")
    if config.get("decoder_filters", fuse.filters) != fuse.filters:
        raise ValueError(
            f"`state_dict` has a decoder of width {config['decoder_filters']} "
            f"('{DECODER_PREFIX}linear_fuse.weight') but `model` has {fuse.filters}; build "
            f"the model with decoder_filters={config['decoder_filters']}."
        )
    if config["num_classes"] != head.filters:
        raise ValueError(
            f"`state_dict` is for {config['num_classes']} classes "
            f"('{DECODER_PREFIX}classifier.weight') but `model` has {head.filters}; build the "
            f"model with num_classes={config['num_classes']}."
        )
    entries, optional, unmapped = _entries(encoder.layers, ENCODER_MODULES, ENCODER_PREFIX)
    decoder_layers = [layer for layer in model.layers if layer is not encoder]
    decoder, decoder_optional, decoder_unmapped = _entries(
        decoder_layers, DECODER_MODULES, DECODER_PREFIX
    )
    _assign(state_dict, entries + decoder, optional + decoder_optional, unmapped + decoder_unmapped)
    return model


def mit_encoder_weights(state_dict, model):
    """Load the MiT encoder of a Hugging Face SegFormer checkpoint into `model`'s encoder.

    Made for the ImageNet-1k encoders ``nvidia/mit-b0`` .. ``nvidia/mit-b5``
    (``SegformerForImageClassification``): the encoder of a `segformer` model with a fresh
    decoder starts from them. The heads' keys (``classifier.*``, and ``decode_head.*`` of a
    segmentation checkpoint) are ignored; the decoder's weights stay as they are.

    Args:
        state_dict: ``{key: array}`` with the keys ``segformer.encoder.*`` (see
            `kerasseg.convert.torchvision.load_state_dict`).
        model: a `kerasseg.models.segformer.segformer` model, or a
            `kerasseg.models.segformer.mix_transformer` encoder, of the checkpoint's variant.

    Returns:
        `model`, with its encoder's weights assigned.

    Raises:
        TypeError: `state_dict` is not a mapping or `model` not a Keras model.
        ValueError: `model` has no MiT encoder; the checkpoint is no SegFormer or has another
            variant; an encoder key is missing or has the wrong shape, or a key outside the
            heads feeds no weight. Nothing is assigned then.
    """
    _check_state_dict(state_dict)
    encoder = _find_encoder(model)
    _check_encoder_fits(state_dict, encoder, segformer_config(state_dict)["variant"])
    entries = _entries(encoder.layers, ENCODER_MODULES, ENCODER_PREFIX)
    _assign(state_dict, *entries, ignored=(CLASSIFIER_PREFIX, DECODER_PREFIX))
    return model
