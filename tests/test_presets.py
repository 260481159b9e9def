"""The shipped presets: raw images of any size in, probabilities out, and the metrics their
manifest entries and model cards record, re-measured on the real data with scikit-learn and
scikit-image."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label
from skimage.metrics import adapted_rand_error
from skimage.segmentation import watershed
from sklearn.metrics import confusion_matrix

import kerasseg
from kerasseg import tta, weights
from kerasseg.datasets import isbi2012_instances
from kerasseg.evaluation import (
    coco_average_precision,
    coco_ground_truth,
    coco_results,
)
from kerasseg.inference import cell_instances, detections_from_outputs, instance_map


def _recorded_metrics(name):
    (preset,) = [p for p in weights.read_manifest() if p["name"] == name]
    return preset["weights"]["metrics"]


@pytest.mark.parametrize(
    "name, channels, classes", [("unet_isbi2012", 1, 1), ("unet_camvid", 3, 11)]
)
def test_preset_takes_raw_images_of_any_size(name, channels, classes):
    model = kerasseg.load(name)
    images = np.random.default_rng(0).integers(0, 256, (2, 45, 61, channels)).astype("float32")
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (2, 45, 61, classes)
    assert probabilities.dtype == np.float32
    assert 0.0 <= probabilities.min() and probabilities.max() <= 1.0
    if classes > 1:
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    assert all(w.dtype == "float32" for w in model.weights)


def _predict_all(model, dataset):
    truths, predictions = [], []
    for images, masks in dataset:
        truths.append(np.asarray(masks)[..., 0] if masks.shape[-1] == 1 else np.asarray(masks))
        predictions.append(model.predict(images, verbose=0))
    return np.concatenate(truths), np.concatenate(predictions)


def _v_rand(truth, predicted):
    """Mean foreground-restricted Rand F-score of the 4-connected interior regions."""
    return np.mean(
        [
            1.0
            - adapted_rand_error(ndimage.label(t)[0], ndimage.label(p)[0], ignore_labels=(0,))[0]
            for t, p in zip(truth, predicted, strict=True)
        ]
    )


def test_unet_isbi2012_scores_what_its_card_says(data_dir):
    model = kerasseg.load("unet_isbi2012")
    dataset, _ = kerasseg.datasets.isbi2012(
        data_dir / "isbi2012-membrane", subset="validation", batch_size=5
    )
    truth, probabilities = _predict_all(model, dataset)
    predicted = (probabilities[..., 0] > 0.5).astype(int)
    assert truth.shape == predicted.shape == (5, 512, 512)
    matrix = confusion_matrix(truth.ravel(), predicted.ravel(), labels=[0, 1])
    v_rand = _v_rand(truth, predicted)
    recorded = _recorded_metrics("unet_isbi2012")
    membrane_dice = 2 * matrix[0, 0] / (matrix[0].sum() + matrix[:, 0].sum())
    assert np.trace(matrix) / matrix.sum() == pytest.approx(recorded["pixel_accuracy"], abs=5e-4)
    assert v_rand == pytest.approx(recorded["v_rand"], abs=5e-4)
    assert membrane_dice == pytest.approx(recorded["membrane_dice"], abs=5e-4)
    # The seeded watershed of `kerasseg predict --instances --watershed-seeds 0.9`, against
    # scikit-image's exact watershed from the same seeds.
    cells = cell_instances(probabilities, watershed_seeds=0.9)
    reference = [
        watershed(1 - p[..., 0], markers=label(p[..., 0] > 0.9, connectivity=1), connectivity=1)
        for p in probabilities
    ]
    true_cells = [ndimage.label(t)[0] for t in truth]
    scores = [
        [1.0 - adapted_rand_error(t, c)[0] for t, c in zip(true_cells, labels, strict=True)]
        for labels in (cells, reference)
    ]
    assert np.mean(scores[0]) == pytest.approx(recorded["v_rand_watershed_seeds_0.9"], abs=5e-4)
    assert np.mean(scores[0]) == pytest.approx(np.mean(scores[1]), abs=5e-3)


def test_unet_isbi2012_with_test_time_augmentation(data_dir):
    """`--tta dihedral` (the 8 flips and transposes averaged) scores what the card says."""
    model = kerasseg.load("unet_isbi2012")
    dataset, _ = kerasseg.datasets.isbi2012(
        data_dir / "isbi2012-membrane", subset="validation", batch_size=5
    )
    truth, averaged = _predict_all(tta.wrap(model, "dihedral"), dataset)
    predicted = averaged[..., 0] > 0.5
    recorded = _recorded_metrics("unet_isbi2012")
    assert np.mean(predicted == truth) == pytest.approx(
        recorded["pixel_accuracy_tta_dihedral"], abs=5e-4
    )
    v_rand = _v_rand(truth, predicted)
    assert v_rand == pytest.approx(recorded["v_rand_tta_dihedral"], abs=5e-4)


def test_unet_camvid_scores_what_its_card_says(data_dir):
    model = kerasseg.load("unet_camvid")
    dataset, _ = kerasseg.datasets.camvid(data_dir / "camvid", subset="val", batch_size=4)
    truth, probabilities = _predict_all(model, dataset)
    assert truth.shape == (101, 360, 480) and probabilities.shape == (101, 360, 480, 11)
    keep = truth != 11  # void
    matrix = confusion_matrix(truth[keep], probabilities.argmax(-1)[keep], labels=list(range(11)))
    hits = np.diag(matrix)
    iou = hits / (matrix.sum(0) + matrix.sum(1) - hits)
    recorded = _recorded_metrics("unet_camvid")
    assert iou.mean() == pytest.approx(recorded["mean_iou"], abs=5e-4)
    assert hits.sum() / matrix.sum() == pytest.approx(recorded["pixel_accuracy"], abs=5e-4)


def test_maskrcnn_isbi2012_scores_what_its_card_says(data_dir):
    """Box / mask AP through pycocotools and V_rand of the pasted masks through scikit-image,
    on validation slices 20..24 fed as a user would: grey 0..255 slices repeated to RGB."""
    model = kerasseg.load("maskrcnn_resnet18_isbi2012")
    assert all(w.dtype == "float32" for w in model.weights)
    slices, _ = isbi2012_instances(data_dir / "isbi2012-membrane", subset="validation")
    pairs = list(slices.as_numpy_iterator())
    images = np.stack([image for image, _ in pairs])
    targets = [target for _, target in pairs]
    outputs = model.predict(np.repeat(images, 3, axis=-1), verbose=0)
    assert outputs["boxes"].shape == (5, 300, 4)
    detections = detections_from_outputs(outputs, (512, 512))
    report = coco_average_precision(coco_ground_truth(targets), coco_results(detections))

    def v_rand(min_score=None):
        return np.mean(
            [
                1.0
                - adapted_rand_error(
                    instance_map(t["masks"]),
                    instance_map(d["masks"], d["scores"], min_score=min_score),
                )[0]
                for t, d in zip(targets, detections, strict=True)
            ]
        )

    recorded = _recorded_metrics("maskrcnn_resnet18_isbi2012")
    for kind, iou_type in (("box", "bbox"), ("mask", "segm")):
        for key in ("AP", "AP50", "AP75"):
            got = report[iou_type][key]
            assert got == pytest.approx(recorded[f"{kind}_{key}"], abs=2e-3), (kind, key)
    assert v_rand() == pytest.approx(recorded["v_rand"], abs=2e-3)
    # The map `kerasseg predict` writes (detections scoring >= 0.5).
    assert v_rand(0.5) == pytest.approx(recorded["v_rand_min_score_0.5"], abs=2e-3)
