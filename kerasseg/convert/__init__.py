"""Weight converters from other ecosystems (numpy state dicts; no torch needed).

The converters live in the submodules: `kerasseg.convert.torchvision` (file reading and the
generic engine, Mask R-CNN), `torchvision_semantic` (DeepLabV3, FCN), `torchvision_mobilenet`
(MobileNetV3, LR-ASPP), `huggingface` (SegFormer, MiT encoders); `presets` registers the
public checkpoints as presets (`kerasseg.public_weights`).
"""

__all__ = []
