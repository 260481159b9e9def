"""Prediction: semantic and instance inference, post-processing, overlays, test-time
augmentation.

    labels, probabilities = kerasseg.inference.predict_image(model, image)
    labels, detections = kerasseg.inference.predict_instances(maskrcnn, image)
    kerasseg.inference.predict_file(model, "slice.png", "slice_labels.png")
    kerasseg.inference.task_of(model)  # "semantic" or "instance"
"""

from kerasseg.inference.files import display_image, predict_file
from kerasseg.inference.instances import detections_from_outputs, instance_map, predict_instances
from kerasseg.inference.overlay import overlay
from kerasseg.inference.semantic import (
    cell_instances,
    labels_from_probabilities,
    output_is_logits,
    predict_image,
    probabilities,
)
from kerasseg.inference.task import task_of
from kerasseg.inference.tta import wrap as tta_wrap

__all__ = [
    "cell_instances",
    "detections_from_outputs",
    "display_image",
    "instance_map",
    "labels_from_probabilities",
    "output_is_logits",
    "overlay",
    "predict_file",
    "predict_image",
    "predict_instances",
    "probabilities",
    "task_of",
    "tta_wrap",
]
