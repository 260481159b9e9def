"""Mask R-CNN (He et al. 2017, arXiv:1703.06870), numerically faithful to torchvision's
`maskrcnn_resnet50_fpn`, one file per part: transform, backbone (ResNet-FPN), anchors, box
coding, RPN, heads, post-processing, model; RoIAlign and NMS live in `kerasseg.ops.detection`.

Its layers call TensorFlow ops (RoIAlign, NMS), so its modules are imported only on the
TensorFlow backend; the registered builders import the model when they are called, and
`kerasseg.load` refuses them with the backend named on other backends.
"""

import keras

from kerasseg.registry import register_model

__all__ = ["ARGUMENTS", "VARIANTS", "maskrcnn"]

# The keywords of `kerasseg.models.maskrcnn.model.maskrcnn` that a variant leaves free
# (tests/test_maskrcnn_model.py checks them against its signature).
ARGUMENTS = (
    "num_classes",
    "min_size",
    "max_size",
    "trainable_backbone_layers",
    "rpn_pre_nms_top_n",
    "rpn_post_nms_top_n",
    "rpn_nms_threshold",
    "box_score_threshold",
    "box_nms_threshold",
    "detections_per_image",
    "box_representation_size",
    "name",
    "rpn_pre_nms_top_n_train",
    "rpn_post_nms_top_n_train",
    "rpn_batch_size_per_image",
    "rpn_positive_fraction",
    "rpn_fg_iou_threshold",
    "rpn_bg_iou_threshold",
    "box_batch_size_per_image",
    "box_positive_fraction",
    "box_fg_iou_threshold",
    "box_bg_iou_threshold",
)


def _variant(backbone, version):
    """`maskrcnn` with the backbone and version fixed."""

    def build(**kwargs):
        """Mask R-CNN with a fixed backbone and version; see `maskrcnn` for the arguments."""
        # Imported here: the model's modules import TensorFlow (see the module docstring).
        from kerasseg.models.maskrcnn.model import maskrcnn

        return maskrcnn(backbone=backbone, version=version, **kwargs)

    return build


VARIANTS = {
    "maskrcnn_resnet50_fpn": _variant("resnet50", 1),
    "maskrcnn_resnet50_fpn_v2": _variant("resnet50", 2),
    "maskrcnn_resnet101_fpn": _variant("resnet101", 1),
    "maskrcnn_resnet18_fpn": _variant("resnet18", 1),
    "maskrcnn_resnet18_fpn_v2": _variant("resnet18", 2),
}

for _name, _builder in VARIANTS.items():
    _v2 = _name.endswith("_v2")
    register_model(
        _name,
        _builder,
        task="instance",
        description=f"Mask R-CNN, {_name.split('_')[1]} FPN backbone"
        + (" (v2: BatchNorm, conv box head)" if _v2 else "")
        + ", torchvision-compatible weights",
        reference="He et al. 2017, arXiv:1703.06870; torchvision maskrcnn_resnet50_fpn"
        + ("_v2 (Li et al. 2021, arXiv:2111.11429)" if _v2 else ""),
        num_classes=91,
        arguments=ARGUMENTS,
        backends=("tensorflow",),
    )

if keras.backend.backend() == "tensorflow":
    # Registers the model's serializable layers, so that saved .keras files load.
    from kerasseg.models.maskrcnn import model  # noqa: F401


def __getattr__(name):
    """`maskrcnn`, the builder, imported on first use (its modules import TensorFlow)."""
    if name == "maskrcnn":
        from kerasseg.models.maskrcnn.model import maskrcnn

        return maskrcnn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
