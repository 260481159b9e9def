"""Mask R-CNN (He et al. 2017, arXiv:1703.06870), numerically faithful to torchvision's
`maskrcnn_resnet50_fpn`, one file per part: transform, backbone (ResNet-FPN), anchors, box
coding, RPN, heads, post-processing, model; RoIAlign and NMS live in `kerasseg.ops`."""

from kerasseg.models.maskrcnn import backbone, heads, rpn, transform  # noqa: F401 (registers layers)
from kerasseg.models.maskrcnn.model import VARIANTS, maskrcnn

__all__ = ["VARIANTS", "maskrcnn"]
