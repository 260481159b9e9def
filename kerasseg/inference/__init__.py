"""Prediction: semantic and instance inference, post-processing, overlays, test-time
augmentation.

    labels, probabilities = kerasseg.inference.predict_image(model, image)
    labels, detections = kerasseg.inference.predict_instances(maskrcnn, image)
    kerasseg.inference.predict_file(model, "slice.png", "slice_labels.png")
    kerasseg.inference.task_of(model)  # "semantic" or "instance"
    picture = kerasseg.inference.overlay(image, labels, palette=model_palette(model), legend=True)

Images of any size: `predict_tiled` (dense models, overlapping windows blended),
`predict_instances_tiled` and `cell_instances_tiled` (instances merged across windows).
"""

from kerasseg.inference.colours import dataset_palette, model_palette
from kerasseg.inference.files import display_image, predict_file
from kerasseg.inference.inputs import InputNote, fit_to_model, input_contract
from kerasseg.inference.instances import detections_from_outputs, instance_map, predict_instances
from kerasseg.inference.overlay import instance_overlay, legend_entries, overlay
from kerasseg.inference.semantic import (
    cell_instances,
    labels_from_probabilities,
    output_is_logits,
    predict_image,
    probabilities,
)
from kerasseg.inference.task import task_of
from kerasseg.inference.tiled_instances import (
    cell_instances_tiled,
    merge_instances,
    predict_instances_tiled,
)
from kerasseg.inference.tiling import predict_tiled
from kerasseg.inference.tta import wrap as tta_wrap

__all__ = [
    "InputNote",
    "cell_instances",
    "cell_instances_tiled",
    "dataset_palette",
    "detections_from_outputs",
    "display_image",
    "fit_to_model",
    "input_contract",
    "instance_overlay",
    "instance_map",
    "labels_from_probabilities",
    "legend_entries",
    "merge_instances",
    "model_palette",
    "output_is_logits",
    "overlay",
    "predict_file",
    "predict_image",
    "predict_tiled",
    "predict_instances",
    "predict_instances_tiled",
    "probabilities",
    "task_of",
    "tta_wrap",
]
