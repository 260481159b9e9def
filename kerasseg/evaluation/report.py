"""Evaluation reports: Markdown tables and the `.json` + `.md` pair of files.

kerasseg.evaluation.write_report(results, "runs/camvid_val")  # .json and .md
"""

import json
import math
import os
from pathlib import Path

import numpy as np

from kerasseg import files

__all__ = [
    "PICTURE_KEYS",
    "cell",
    "format_markdown",
    "json_ready",
    "mean_of_defined",
    "write_report",
]

# The keys of a kept example (`evaluate(..., keep_examples=k)`) that hold arrays: the report
# page shows them; the JSON keeps each example's index and scores.
PICTURE_KEYS = ("image", "mask", "prediction", "truth")

# The COCO metrics of an instance report, in table order.
INSTANCE_METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR")


def cell(value):
    return "n/a" if value is None else f"{value:.4f}"


def mean_of_defined(values):
    """The mean of the values that are not NaN, or None when there are none."""
    defined = [value for value in values if not math.isnan(value)]
    return float(np.mean(defined)) if defined else None


def format_markdown(results, title="Evaluation"):
    """Evaluation results as Markdown tables.

    Args:
        results: the results of `kerasseg.evaluation.evaluate` (a per-class table and an
            overall table) or of `kerasseg.evaluation.evaluate_instances` (``"task":
            "instance"``: box / mask AP tables).
        title: the page's heading.

    Returns:
        The Markdown text.
    """
    if results.get("task") == "instance":
        return _instance_markdown(results, title)
    return _semantic_markdown(results, title)


def _semantic_markdown(results, title):
    """The results of `evaluate` as Markdown: a per-class table and an overall table.

    Results of `kerasseg.evaluation.evaluate_instances` (``"task": "instance"``) get
    that module's box / mask AP tables.
    """
    lines = [f"# {title}", "", "| class | IoU | Dice | pixels |", "|---|---:|---:|---:|"]
    for name, scores in results["per_class"].items():
        lines.append(
            f"| {name} | {cell(scores['iou'])} | {cell(scores['dice'])} | {scores['pixels']} |"
        )
    overall = results["overall"]
    total = sum(scores["pixels"] for scores in results["per_class"].values())
    lines.append(
        f"| **mean** | {cell(overall['mean_iou'])} | {cell(overall['mean_dice'])} | {total} |"
    )
    labels = {
        "pixel_accuracy": "pixel accuracy",
        "mean_iou": "mean IoU",
        "mean_dice": "mean Dice",
        "v_rand": "V_rand",
        "v_info": "V_info",
    }
    lines += ["", "| metric | value |", "|---|---:|"]
    lines += [f"| {labels.get(key, key)} | {cell(value)} |" for key, value in overall.items()]
    lines.append(f"| images | {results['images']} |")
    return "\n".join(lines) + "\n"


def _instance_markdown(results, title):
    """The results of `evaluate_instances` as Markdown: a box / mask AP table and the rest."""
    overall = results["overall"]
    max_detections = results.get("settings", {}).get("max_detections", "max")
    labels = {"AR": f"AR@{max_detections}"}
    lines = [f"# {title}", "", "| metric | box | mask |", "|---|---:|---:|"]
    for metric in INSTANCE_METRICS:
        lines.append(
            f"| {labels.get(metric, metric)} | {cell(overall.get(f'box_{metric}'))} | "
            f"{cell(overall.get(f'mask_{metric}'))} |"
        )
    lines += [
        "",
        "| metric | value |",
        "|---|---:|",
        f"| V_rand | {cell(overall.get('v_rand'))} |",
        f"| V_info | {cell(overall.get('v_info'))} |",
    ]
    for key in ("images", "instances", "crowd_instances", "detections"):
        if key in results:
            lines.append(f"| {key.replace('_', ' ')} | {results[key]} |")
    lines += [
        "",
        f"COCO AP (IoU 0.50:0.05:0.95) with up to {max_detections} detections per image; "
        "n/a: no ground truth defines the value.",
    ]
    for warning in results.get("warnings", ()):
        lines += ["", f"Warning: {warning}"]
    return "\n".join(lines) + "\n"


def json_ready(results):
    """`results` without the pictures of their kept examples (`PICTURE_KEYS`): what the
    JSON report holds. Results without "examples" are returned as they are."""
    if "examples" not in results:
        return results
    examples = dict(results["examples"])
    for side in ("worst", "best"):
        examples[side] = [
            {key: value for key, value in example.items() if key not in PICTURE_KEYS}
            for example in examples[side]
        ]
    return {**results, "examples": examples}


def write_report(results, path_stem, *, title="Evaluation"):
    """Write `path_stem.json` and `path_stem.md` (Markdown tables) of `evaluate` or
    `kerasseg.evaluation.evaluate_instances`; returns both paths.

    The JSON holds `json_ready(results)`: kept examples with their index and scores, not
    their pictures (`kerasseg.evaluation.write_report_page` shows those)."""
    stem = os.fspath(path_stem)
    json_path, markdown_path = Path(stem + ".json"), Path(stem + ".md")
    text = json.dumps(json_ready(results), indent=2, allow_nan=False)
    files.write_text(json_path, text + "\n")
    files.write_text(markdown_path, format_markdown(results, title=title))
    return json_path, markdown_path
