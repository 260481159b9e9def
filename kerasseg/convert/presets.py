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
from kerasseg.convert.huggingface import mit_encoder_weights, segformer_weights
from kerasseg.convert.torchvision import load_state_dict, maskrcnn_weights
from kerasseg.convert.torchvision_mobilenet import lraspp_weights
from kerasseg.convert.torchvision_semantic import semantic_weights
from kerasseg.public_weights import PublicWeights

__all__ = ["PUBLIC_PRESETS", "converter", "hub_hash_prefix", "register_public_preset"]

TORCHVISION_LICENCE = (
    "BSD-3-Clause (torchvision); the weights derive from their training data (COCO: "
    "annotations CC BY 4.0, images under Flickr's terms), check those for your use"
)
SEGFORMER_LICENCE = (
    "NVIDIA Source Code License for SegFormer: non-commercial (research or evaluation) use "
    "only, https://github.com/NVlabs/SegFormer/blob/master/LICENSE"
)
# Hugging Face checkpoints are read at this revision. Not a commit: the commits could not be
# read when this table was written, so the sha256 recorded at the first download is what
# pins the file for each cache (`kerasseg.public_weights`).
HF_REVISION = "main"
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
        class_set: the `kerasseg.class_sets.ClassSet` it predicts; None for an encoder
            checkpoint whose head the user trains (`num_classes` from `arguments`).
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
    if class_set is None:
        dataset, num_classes = "imagenet-1k (encoder only)", arguments.get("num_classes")
    else:
        dataset = f"{class_set.name} ({class_set.num_classes} classes)"
        num_classes = class_set.num_classes
    figures = ", ".join(f"{key} {value}" for key, value in metrics.items())
    description = f"{description} [{source}" + (f"; {figures} on {split}]" if figures else "]")
    weights = PublicWeights(
        name=weights_name,
        preset=name,
        url=url,
        converter=converter(architecture, arguments, assign),
        sha256_prefix=hub_hash_prefix(url),
        size=size,
        source=source,
        licence=licence,
        dataset=dataset,
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
        num_classes=num_classes,
        preprocessing=base.preprocessing,
        weights=[weights],
        architecture=architecture,
        defaults=arguments,
        default_weights=weights.name,
        arguments=base.arguments,
        backends=base.backends,
        class_names=None if class_set is None else class_set.class_names,
        colours=None if class_set is None else class_set.colours,
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


register_public_preset(
    "lraspp_mobilenet_v3_large_voc",
    "lraspp_torchvision",
    {"num_classes": 21, "include_preprocessing": True, "resize_shorter_side": 520},
    description="LR-ASPP MobileNetV3-Large on COCO with the 20 VOC categories: raw 0..255 RGB "
    "images of any size -> 21 class logits",
    url="https://download.pytorch.org/models/lraspp_mobilenet_v3_large-d234d4ea.pth",
    assign=lraspp_weights,
    class_set=class_sets.VOC,
    source="torchvision LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
    metrics={"miou": 57.9, "pixel_accuracy": 91.2},
    split="COCO val2017 with VOC labels, as published",
)

# torchvision's spellings: (family, backbone) in descriptions, and in its `*_Weights` enums.
_FAMILY_NAMES = {"deeplabv3": "DeepLabV3", "fcn": "FCN"}
_BACKBONE_NAMES = {
    "resnet50": ("ResNet-50", "ResNet50"),
    "resnet101": ("ResNet-101", "ResNet101"),
    "mobilenet_v3_large": ("MobileNetV3-Large", "MobileNet_V3_Large"),
}
for _family, _backbone, _url, _miou, _accuracy in (
    ("deeplabv3", "resnet50", "deeplabv3_resnet50_coco-cd0a2569", 66.4, 92.4),
    ("deeplabv3", "resnet101", "deeplabv3_resnet101_coco-586e9e4e", 67.4, 92.4),
    ("deeplabv3", "mobilenet_v3_large", "deeplabv3_mobilenet_v3_large-fc3c493d", 60.3, 91.2),
    ("fcn", "resnet50", "fcn_resnet50_coco-1167a1af", 60.5, 91.4),
    ("fcn", "resnet101", "fcn_resnet101_coco-7ecb50ca", 63.7, 91.9),
):  # fmt: skip
    _spoken, _enum = _BACKBONE_NAMES[_backbone]
    register_public_preset(
        f"{_family}_{_backbone}_voc",
        f"{_family}_torchvision",
        {
            "backbone": _backbone,
            "num_classes": 21,
            "include_preprocessing": True,
            "resize_shorter_side": 520,
        },
        description=f"{_FAMILY_NAMES[_family]} {_spoken} on COCO with the 20 VOC categories: "
        "raw 0..255 RGB images of any size -> 21 class logits",
        url=f"https://download.pytorch.org/models/{_url}.pth",
        assign=semantic_weights,
        class_set=class_sets.VOC,
        source=f"torchvision {_FAMILY_NAMES[_family]}_{_enum}_Weights.COCO_WITH_VOC_LABELS_V1",
        metrics={"miou": _miou, "pixel_accuracy": _accuracy},
        split="COCO val2017 with VOC labels, as published",
    )

# SegFormer, Xie et al. 2021, Table 1: single-scale mIoU on the validation sets (ADE20K
# trained and tested at 512, B5 at 640; Cityscapes at 1024).
_SEGFORMER_MIOU = {
    "ade": {"b0": 37.4, "b1": 42.2, "b2": 46.5, "b3": 49.4, "b4": 50.3, "b5": 51.0},
    "cityscapes": {"b0": 76.2, "b1": 78.5, "b2": 81.0, "b3": 81.7, "b4": 82.3, "b5": 82.4},
}
for _variant in ("b0", "b1", "b2", "b3", "b4", "b5"):
    for _data, _class_set, _repository, _split in (
        (
            "ade20k",
            class_sets.ADE20K,
            f"segformer-{_variant}-finetuned-ade-{640 if _variant == 'b5' else 512}-"
            f"{640 if _variant == 'b5' else 512}",
            "ADE20K val, single scale, as published in the SegFormer paper",
        ),
        (
            "cityscapes",
            class_sets.CITYSCAPES,
            f"segformer-{_variant}-finetuned-cityscapes-1024-1024",
            "Cityscapes val, single scale, as published in the SegFormer paper",
        ),
    ):
        register_public_preset(
            f"segformer_{_variant}_{_data}",
            "segformer",
            {
                "variant": _variant,
                "num_classes": _class_set.num_classes,
                "include_preprocessing": True,
            },
            description=f"SegFormer-{_variant.upper()} on {_class_set.name}: raw 0..255 RGB "
            f"images of any size -> {_class_set.num_classes} class logits",
            url=f"https://huggingface.co/nvidia/{_repository}/resolve/{HF_REVISION}/"
            "pytorch_model.bin",
            assign=segformer_weights,
            class_set=_class_set,
            source=f"Hugging Face nvidia/{_repository}",
            metrics={"miou": _SEGFORMER_MIOU["ade" if _data == "ade20k" else _data][_variant]},
            split=_split,
            licence=SEGFORMER_LICENCE,
        )
    register_public_preset(
        f"segformer_mit_{_variant}_imagenet",
        "segformer",
        {"variant": _variant, "num_classes": 1, "include_preprocessing": True},
        description=f"SegFormer-{_variant.upper()} with its MiT encoder pretrained on "
        "ImageNet-1k and a fresh decoder, to fine-tune (pass num_classes)",
        url=f"https://huggingface.co/nvidia/mit-{_variant}/resolve/{HF_REVISION}/pytorch_model.bin",
        assign=mit_encoder_weights,
        class_set=None,
        source=f"Hugging Face nvidia/mit-{_variant}",
        metrics={},
        split="",
        licence=SEGFORMER_LICENCE,
    )
