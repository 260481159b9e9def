"""Presets of public checkpoints: torchvision's and Hugging Face's weights by name.

Each preset here is an architecture of the registry, the arguments that match the
checkpoint, and a `kerasseg.public_weights.PublicWeights`: the published file, how to
verify it, and the converter that maps its state dict onto the Keras model. The first
`kerasseg.load(name)` downloads, verifies, converts and caches; later calls load the cached
`.weights.h5` (see `kerasseg.public_weights`).

The figures quoted are the publishers' own (torchvision's `*_Weights` metadata), measured on
their evaluation sets, not re-measured here; the model cards in `saved_models/` say so.
"""

import re

from kerasseg import class_sets, registry
from kerasseg.convert.torchvision import load_state_dict, maskrcnn_weights
from kerasseg.public_weights import PublicWeights

__all__ = ["PUBLIC_PRESETS", "converter", "hub_hash_prefix", "register_public_preset"]

TORCHVISION_LICENCE = (
    "BSD-3-Clause (torchvision); the weights derive from their training data (COCO: "
    "annotations CC BY 4.0, images under Flickr's terms), check those for your use"
)
# torch.hub's rule for the sha256 prefix in a file name (torch.hub.HASH_REGEX).
_HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")

PUBLIC_PRESETS = []  # the names registered here, in order


def hub_hash_prefix(url):
    """The sha256 prefix that a torchvision file name carries ("" when none), as torch.hub
    reads it: the hex digits between the first "-" and the following "."."""
    match = _HASH_REGEX.search(url.rsplit("/", 1)[-1])
    return match.group(1) if match else ""


def converter(architecture, arguments, assign):
    """A `PublicWeights.converter` that maps a state dict onto ``load(architecture, **arguments)``.

    Args:
        architecture: the registry name of the architecture.
        arguments: its builder arguments.
        assign: ``assign(state_dict, model)``, raising a ValueError for a state dict of
            another architecture.

    Returns:
        ``convert(original_path, destination)``, which writes the `.weights.h5`.
    """

    def convert(original, destination):
        state_dict = load_state_dict(original)
        model = registry.load(architecture, weights=None, **arguments)
        assign(state_dict, model)
        model.save_weights(destination)

    return convert


def register_public_preset(
    name,
    architecture,
    arguments,
    *,
    description,
    url,
    assign,
    class_set,
    source,
    metrics,
    split,
    licence=TORCHVISION_LICENCE,
    weights_name="default",
    size=None,
):
    """Register a preset of a public checkpoint.

    Args:
        name: the preset's registry name.
        architecture: the registry name of its architecture.
        arguments: the builder arguments that match the checkpoint.
        description: one line for listings.
        url: where the checkpoint is published.
        assign: ``assign(state_dict, model)``, the converter of its state dict.
        class_set: the `kerasseg.class_sets.ClassSet` it predicts.
        source: the publisher's name of the weights.
        metrics: the publisher's figures.
        split: where the publisher measured them.
        licence: the licence of the weights.
        weights_name: the weights' name within the preset.
        size: the file's size in bytes, where published.

    Returns:
        The `kerasseg.registry.ModelEntry`.
    """
    base = registry.get_entry(architecture)
    figures = ", ".join(f"{key} {value}" for key, value in metrics.items())
    description = f"{description} [{source}; {figures} on {split}]"
    weights = PublicWeights(
        name=weights_name,
        preset=name,
        url=url,
        converter=converter(architecture, arguments, assign),
        sha256_prefix=hub_hash_prefix(url),
        size=size,
        source=source,
        licence=licence,
        dataset=f"{class_set.name} ({class_set.num_classes} classes)",
        split=split,
        metrics=metrics,
        card=f"{name}.md",
    )
    entry = registry.register_model(
        name,
        base.builder,
        task=base.task,
        description=description,
        reference=base.reference,
        input_channels=3,
        default_input_shape=arguments.get("input_shape", base.default_input_shape),
        num_classes=class_set.num_classes,
        preprocessing=base.preprocessing,
        weights=[weights],
        architecture=architecture,
        defaults=arguments,
        default_weights=weights.name,
        arguments=base.arguments,
        backends=base.backends,
        class_names=class_set.class_names,
        colours=class_set.colours,
        overwrite=True,
    )
    PUBLIC_PRESETS.append(name)
    return entry


for _version, _suffix, _url, _metrics in (
    (
        1,
        "",
        "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",
        {"box_ap": 37.9, "mask_ap": 34.6},
    ),
    (
        2,
        "_v2",
        "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
        {"box_ap": 47.4, "mask_ap": 41.8},
    ),
):
    register_public_preset(
        f"maskrcnn_resnet50_fpn{_suffix}_coco",
        f"maskrcnn_resnet50_fpn{_suffix}",
        {"num_classes": 91},
        description=f"Mask R-CNN ResNet-50 FPN{' v2' if _version == 2 else ''} on COCO: raw "
        "0..255 RGB images of any size -> instances of 80 object categories",
        url=_url,
        assign=maskrcnn_weights,
        class_set=class_sets.COCO,
        source=f"torchvision MaskRCNN_ResNet50_FPN{'_V2' if _version == 2 else ''}_Weights.COCO_V1",
        metrics=_metrics,
        split="COCO val2017, as published",
    )
