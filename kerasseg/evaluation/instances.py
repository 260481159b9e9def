"""Evaluation of instance models (Mask R-CNN) on (image, targets) pairs: COCO box and mask
AP with pycocotools, and the V_rand / V_info of the instance map made from the predicted masks.

    results = kerasseg.evaluation.evaluate_instances(model, pairs)
    results["overall"]["mask_AP"], results["overall"]["v_rand"]
"""

import keras
import numpy as np

from kerasseg import metrics as metrics_lib
from kerasseg.evaluation.coco import (
    _PREFIX,
    IOU_TYPES,
    METRICS,
    _categories,
    _gt_annotations,
    _pycocotools,
    _results_for_image,
    _target_arrays,
    check_max_detections,
    coco_average_precision,
)
from kerasseg.evaluation.report import mean_of_defined
from kerasseg.evaluation.semantic import _Examples, _length
from kerasseg.inference.files import display_image
from kerasseg.inference.instances import detections_from_outputs, instance_map
from kerasseg.ops.checks import check_int, check_probability, is_int, is_number, to_numpy

__all__ = ["evaluate_instances"]


def _call(model, images, sizes, fn):
    """The model's outputs for one batch, checked to be Mask R-CNN's dict."""
    inputs = {"images": images, "image_sizes": sizes}
    if hasattr(model, "predict_on_batch"):  # a keras.Model: its compiled predict function
        outputs = model.predict_on_batch(inputs)
    else:
        outputs = model(inputs)
    if not isinstance(outputs, dict) or "boxes" not in outputs:
        raise TypeError(
            f"{fn}: the model must return the Mask R-CNN outputs dict ('boxes', 'scores', "
            f"'classes', 'masks', 'num_detections'); got {type(outputs).__name__}."
        )
    return outputs


def _element_images(element, fn, index):
    """[(image (H, W, 3) float32, target dict)] from one element of `data`."""
    if not isinstance(element, (tuple, list)) or len(element) != 2:
        raise ValueError(
            f"{fn}: `data` must yield (image, targets) pairs; element {index} is a "
            f"{type(element).__name__}."
        )
    images, targets = element
    images = to_numpy(images, "image", fn)
    if images.ndim == 3:
        images, targets = images[None], [targets]
    elif images.ndim == 4:
        if isinstance(targets, dict):  # padded batch: (B, M, ...) with num_instances (B,)
            if "num_instances" not in targets:
                raise ValueError(
                    f"{fn}: element {index} has a batch of images but its targets are one dict "
                    "without 'num_instances'; give a list of per-image targets or the padded "
                    "form of `kerasseg.data.instances.to_padded`."
                )
            arrays = {key: to_numpy(value, key, fn) for key, value in targets.items()}
            targets = [{key: value[i] for key, value in arrays.items()} for i in range(len(images))]
        if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
            raise ValueError(
                f"{fn}: element {index} has {len(images)} images but its targets are not a "
                f"list of {len(images)} dicts."
            )
    else:
        raise ValueError(
            f"{fn}: element {index}: the image must have shape (H, W, C) or (B, H, W, C); got "
            f"{images.shape}."
        )
    if images.shape[-1] == 1:  # grey: Mask R-CNN takes RGB
        images = np.repeat(images, 3, axis=-1)
    if images.shape[-1] != 3:
        raise ValueError(
            f"{fn}: element {index}: images must have 1 (grey, repeated to RGB) or 3 channels; "
            f"got {images.shape[-1]}."
        )
    return [
        (image.astype(np.float32), target) for image, target in zip(images, targets, strict=True)
    ]


def _counted(data, bar):
    """The elements of `data`, advancing `bar` as each is taken; its line is ended after
    the last."""
    count = 0
    for element in data:
        yield element
        count += 1
        bar.update(count, finalize=False)
    bar.update(count, finalize=True)


def _batches(data, batch_size, fn):
    """Lists of up to `batch_size` consecutive (image, target) of one image size."""
    group = []
    for index, element in enumerate(data):
        for image, target in _element_images(element, fn, index):
            if group and (len(group) == batch_size or group[0][0].shape != image.shape):
                yield group
                group = []
            group.append((image, target))
    if group:
        yield group


def evaluate_instances(
    model,
    data,
    *,
    max_detections=300,
    mask_threshold=0.5,
    class_agnostic=False,
    min_score=None,
    batch_size=1,
    category_names=None,
    progress=False,
    keep_examples=0,
):
    """Run an instance model over images with ground truth; COCO AP and V_rand / V_info.

    The instance scores compare two label images per image: the ground truth's non-crowd
    instances (`instance_map`, earlier instances over later ones where they overlap) and the
    predicted one, `instance_map` of the thresholded pasted masks (higher scores on top).
    V_rand and V_info are `kerasseg.metrics.rand_scores` (scikit-image convention,
    foreground-restricted: only ground-truth instance pixels count), averaged over the images
    with ground-truth instances (None when there are none). AP values without ground truth
    are None (see `kerasseg.evaluation.coco`).

    Args:
        model: a Mask R-CNN `keras.Model` (``kerasseg.load("maskrcnn_...")`` or a saved one),
            or any callable taking ``{"images": float32 (B, H, W, 3) values 0..255,
            "image_sizes": int32 (B, 2)}`` and returning the Mask R-CNN outputs (see
            `kerasseg.inference.detections_from_outputs`).
        data: iterable of ``(image, targets)``: an (H, W, C) image (values as stored, 0..255;
            1-channel images are repeated to RGB) and its instance targets (see
            `coco_ground_truth`); or a batch, (B, H, W, C) images with a list of B targets or
            the padded targets of ``to_padded(...)`` batched. E.g.
            `kerasseg.datasets.isbi2012_instances`.
        max_detections: detections per image that COCO AP takes into account (default 300;
            see `coco_average_precision`).
        mask_threshold: mask probability threshold (``>``), default 0.5.
        class_agnostic: evaluate every instance and detection as one category.
        min_score: optional; detections scoring below it stay out of the instance map (they
            still count for AP).
        batch_size: consecutive images of one size given to the model together.
        category_names: optional {class id: name} for the report.
        progress: show a progress bar over the elements of `data` (`keras.utils.Progbar`,
            on stdout).
        keep_examples: k >= 0; with k > 0 also keep the k worst and k best images by
            per-image V_rand (at most half of the images with ground truth each, so that
            no image is both), for a report page.

    Returns:
        dict ``{"task": "instance", "overall": {"box_AP", "box_AP50", "box_AP75",
        "box_AP_small", "box_AP_medium", "box_AP_large", "box_AR", "mask_AP", ...,
        "mask_AR", "v_rand", "v_info"}, "images", "instances", "crowd_instances",
        "detections", "categories", "settings", "warnings"}``. With `keep_examples` > 0
        also "examples": {"score": "v_rand", "per_image": one {"v_rand", "v_info",
        "instances", "detections"} per image (scores None without ground-truth instances),
        "worst": from the lowest V_rand up, "best": from the highest down}, each example
        {"index" (0-based), its per-image entries, "image" (uint8, `display_image`),
        "truth" and "prediction" (int32 (H, W) instance maps as scored: ground truth
        without crowd regions, and the predicted masks with `min_score`)}.
    """
    fn = "evaluate_instances"
    max_detections = check_max_detections(max_detections, fn)
    threshold = check_probability(mask_threshold, "mask_threshold", fn)
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"{fn}: `batch_size` must be an int >= 1; got {batch_size!r}.")
    if min_score is not None and not is_number(min_score):
        raise ValueError(f"{fn}: `min_score` must be None or a number; got {min_score!r}.")
    keep_examples = check_int(keep_examples, "keep_examples", 0, context=fn)
    _pycocotools(fn)
    tally = _Tally(class_agnostic, min_score, _Examples(keep_examples) if keep_examples else None)
    bar = keras.utils.Progbar(_length(data), verbose=int(bool(progress)), unit_name="element")
    for group in _batches(_counted(data, bar), batch_size, fn):
        batch = np.stack([image for image, _ in group])
        sizes = np.array([image.shape[:2] for image, _ in group], np.int32)
        outputs = _call(model, batch, sizes, fn)
        tally.rows = int(np.shape(outputs["boxes"])[1])
        detections = detections_from_outputs(outputs, sizes, mask_threshold=threshold)
        for (image, target), detection in zip(group, detections, strict=True):
            tally.add(image, target, detection, fn)
    if not tally.images:
        raise ValueError(f"{fn}: `data` yielded no images.")
    ground_truth = tally.ground_truth(category_names)
    ap = coco_average_precision(ground_truth, tally.results, max_detections=max_detections)
    settings = {
        "max_detections": max_detections,
        "mask_threshold": threshold,
        "class_agnostic": bool(class_agnostic),
        "min_score": min_score,
        "iou_thresholds": "0.50:0.05:0.95",
        "instance_map": "each pixel takes the highest-scoring predicted mask covering it",
        "rand_convention": "skimage",
    }
    return tally.report(ap, ground_truth, settings)


class _Tally:
    """What `evaluate_instances` gathers image by image: COCO ground truth and results,
    categories, counts and the instance-map scores."""

    def __init__(self, class_agnostic, min_score, examples=None):
        self.class_agnostic, self.min_score, self.examples = class_agnostic, min_score, examples
        self.images, self.annotations, self.results = [], [], {"bbox": [], "segm": []}
        self.categories, self.rand = set(), {"v_rand": [], "v_info": []}
        self.crowd, self.detections, self.most_instances, self.rows = 0, 0, 0, None

    def add(self, image, target, detection, fn):
        image_id = len(self.images) + 1
        where = f"the targets of image {image_id}"
        masks, class_ids, boxes, crowd = _target_arrays(target, fn, where)
        if masks.shape[1:] != image.shape[:2]:
            raise ValueError(
                f"{fn}: {where} have masks of size {masks.shape[1:]} but the image is "
                f"{image.shape[:2]}."
            )
        self.images.append({"id": image_id, "height": image.shape[0], "width": image.shape[1]})
        self.annotations += _gt_annotations(
            masks, class_ids, boxes, crowd, image_id, len(self.annotations) + 1, self.class_agnostic
        )
        bbox, segm = _results_for_image(
            detection["masks"],
            detection["boxes"],
            detection["scores"],
            detection["classes"],
            image_id,
            self.class_agnostic,
        )
        self.results["bbox"] += bbox
        self.results["segm"] += segm
        self.categories.update(class_ids.tolist())
        self.categories.update(detection["classes"].tolist())
        self.crowd += int(crowd.sum())
        self.detections += len(detection["scores"])
        self.most_instances = max(self.most_instances, int((~crowd).sum()))
        true_map = instance_map(masks[~crowd])
        pred_map = instance_map(detection["masks"], detection["scores"], min_score=self.min_score)
        scores = metrics_lib.rand_scores(true_map, pred_map)
        for key in self.rand:
            self.rand[key].append(float(np.asarray(scores[key])))
        if self.examples is not None:
            self._offer(image, true_map, pred_map, int((~crowd).sum()), len(detection["scores"]))

    def _offer(self, image, true_map, pred_map, instances, detections):
        """Offer one image to the kept examples, scored by its V_rand."""
        scores = {key: mean_of_defined(values[-1:]) for key, values in self.rand.items()}
        scores.update(instances=instances, detections=detections)

        def make_example():
            return {
                "image": np.array(display_image(image)),
                "truth": np.asarray(true_map, np.int32),
                "prediction": np.asarray(pred_map, np.int32),
            }

        self.examples.add(scores, "v_rand", make_example)

    def ground_truth(self, category_names):
        categories = {1} if self.class_agnostic else self.categories
        return {
            "images": self.images,
            "categories": _categories(categories, category_names),
            "annotations": self.annotations,
        }

    def report(self, ap, ground_truth, settings):
        """The results dict of `evaluate_instances`."""
        overall = {
            f"{_PREFIX[iou_type]}_{metric}": ap[iou_type][metric]
            for iou_type in IOU_TYPES
            for metric in METRICS
        }
        for key, values in self.rand.items():
            overall[key] = mean_of_defined(values)
        results = {
            "task": "instance",
            "overall": overall,
            "images": len(self.images),
            "instances": len(self.annotations) - self.crowd,
            "crowd_instances": self.crowd,
            "detections": self.detections,
            "categories": [c["id"] for c in ground_truth["categories"]],
            "settings": settings,
            "warnings": self.warnings(settings["max_detections"]),
        }
        if self.examples is not None:
            results["examples"] = self.examples.result("v_rand")
        return results

    def warnings(self, max_detections):
        """Why recall and AP cannot reach 1, if they cannot."""
        warnings = []
        if self.rows is not None and self.rows < self.most_instances:
            warnings.append(
                f"the model returns at most {self.rows} detections per image but an image has "
                f"{self.most_instances} ground-truth instances, so recall and AP cannot reach "
                "1; raise the model's detections_per_image (and rpn_post_nms_top_n)."
            )
        if self.most_instances > max_detections:
            warnings.append(
                f"max_detections={max_detections} is below the {self.most_instances} "
                "ground-truth instances of an image, so recall and AP cannot reach 1; raise "
                "max_detections."
            )
        return warnings
