"""Evaluation: semantic metrics reports, COCO-style instance evaluation, report files.

results = kerasseg.evaluation.evaluate(model, dataset, num_classes=11)
results = kerasseg.evaluation.evaluate_instances(maskrcnn, pairs)
kerasseg.evaluation.write_report(results, "runs/val")  # .json and .md
kerasseg.evaluation.write_report_page(results, "runs/val_page")  # index.html
"""

from kerasseg.evaluation.coco import (
    METRICS,
    coco_average_precision,
    coco_ground_truth,
    coco_results,
    masks_to_rle,
    outputs_to_coco_results,
)
from kerasseg.evaluation.instances import evaluate_instances
from kerasseg.evaluation.report import format_markdown, write_report
from kerasseg.evaluation.report_page import (
    confusion_figure,
    error_map,
    iou_figure,
    write_report_page,
)
from kerasseg.evaluation.semantic import evaluate

__all__ = [
    "METRICS",
    "coco_average_precision",
    "coco_ground_truth",
    "coco_results",
    "confusion_figure",
    "error_map",
    "evaluate",
    "evaluate_instances",
    "format_markdown",
    "iou_figure",
    "masks_to_rle",
    "outputs_to_coco_results",
    "write_report",
    "write_report_page",
]
