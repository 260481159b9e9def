"""Live parity with torchvision's Mask R-CNN on real images (test extra `parity`).

torchvision's `maskrcnn_resnet50_fpn` (v1, frozen BN with epsilon 0 as the COCO weights use)
gets seeded random weights (`tests/fixtures/maskrcnn/make_model_reference.py`: realistic BN
statistics, prediction layers rescaled so that random weights give real detections), the
converter moves them into the Keras model, and both run at the default 800/1333 resize on
two CamVid frames of different sizes. Compared: FPN features, RPN proposals, detections
(IoU >= 0.99, score within 1e-3, same class) and pasted masks (IoU >= 0.99).
"""

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kerasseg
from kerasseg.convert.torchvision import maskrcnn_weights, torchvision_param_count
from kerasseg.data import read_image
from kerasseg.models.maskrcnn import anchors, postprocess, rpn

FIXTURES = Path(__file__).parent / "fixtures" / "maskrcnn"

import make_model_reference as reference  # noqa: E402

# torchvision's native ops crash when loaded into a process that already holds TensorFlow,
# so torchvision runs in a child process (only `find_spec` here, no import).
if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
    pytest.skip(
        "torch and torchvision (test extra `parity`) are not installed", allow_module_level=True
    )

pytestmark = pytest.mark.slow

TORCHVISION_SCRIPT = """
import sys
import numpy as np
import torch
import torchvision

sys.path.insert(0, sys.argv[1])
import make_model_reference as reference

images = list(np.load(sys.argv[2], allow_pickle=True)["images"])
model, _ = reference.build_torchvision("v1")
model.transform.min_size, model.transform.max_size = (800,), 1333
weights = reference.make_weights("v1", {k: tuple(v.shape) for k, v in model.state_dict().items()})
model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
for module in model.modules():
    if isinstance(module, torchvision.ops.misc.FrozenBatchNorm2d):
        module.eps = 0.0
model.eval()
seen = {}
model.backbone.register_forward_hook(lambda m, i, o: seen.__setitem__("features", o))
model.rpn.register_forward_hook(lambda m, i, o: seen.__setitem__("proposals", o[0]))
tensors = [torch.from_numpy(im.transpose(2, 0, 1).astype(np.float32) / 255.0) for im in images]
with torch.no_grad():
    results = model(tensors)
out = {"num_params": sum(p.numel() for p in model.parameters())}
for k, level in enumerate(seen["features"].values()):
    out[f"P{k + 2}"] = level.numpy().transpose(0, 2, 3, 1)
for i, (proposals, result) in enumerate(zip(seen["proposals"], results)):
    out[f"proposals_{i}"] = proposals.numpy()[:, [1, 0, 3, 2]]
    out[f"boxes_{i}"] = result["boxes"].numpy()[:, [1, 0, 3, 2]]
    out[f"scores_{i}"] = result["scores"].numpy()
    out[f"labels_{i}"] = result["labels"].numpy()
    out[f"masks_{i}"] = result["masks"].numpy()[:, 0] > 0.5
np.savez(sys.argv[3], **out)
"""


def _iou(a, b):
    top = np.maximum(a[:2], b[:2])
    bottom = np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(bottom - top, 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return inter / union if union > 0 else 1.0


@pytest.fixture(scope="module")
def both(data_dir, tmp_path_factory):
    frames = sorted((data_dir / "camvid" / "val").glob("*.png"))[:2]
    images = [read_image(str(frames[0])).numpy(), read_image(str(frames[1])).numpy()[:300, 40:]]
    work = tmp_path_factory.mktemp("parity")
    np.savez(work / "images.npz", images=np.array(images, dtype=object))
    script = work / "run_torchvision.py"
    script.write_text(textwrap.dedent(TORCHVISION_SCRIPT))
    subprocess.run(
        [
            sys.executable,
            str(script),
            str(FIXTURES),
            str(work / "images.npz"),
            str(work / "tv.npz"),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    theirs = dict(np.load(work / "tv.npz"))
    shapes = {k: tuple(v) for k, v in reference.load_shapes("v1").items()}
    weights = reference.make_weights("v1", shapes)
    ours_model = kerasseg.load("maskrcnn_resnet50_fpn", num_classes=91)
    maskrcnn_weights(weights, ours_model)
    batch = np.zeros((2, 360, 480, 3), np.float32)
    sizes = np.array([im.shape[:2] for im in images], np.int32)
    for i, image in enumerate(images):
        batch[i, : image.shape[0], : image.shape[1]] = image
    ours = ours_model.predict({"images": batch, "image_sizes": sizes}, verbose=0)
    return images, theirs, ours_model, batch, sizes, ours


def test_parameter_count_is_torchvisions(both):
    _, theirs, ours_model, *_ = both
    assert torchvision_param_count(ours_model) == int(theirs["num_params"])
    assert torchvision_param_count(ours_model) == 44_401_393  # torchvision's published count


def test_fpn_features_and_proposals_match(both):
    _, theirs_all, ours_model, batch, sizes, _ = both
    transformed, resized = ours_model.get_layer("transform")(batch, sizes)
    backbone = next(layer for layer in ours_model.layers if layer.name.startswith("resnet"))
    features = backbone(transformed)
    levels = [features[f"P{k}"].numpy() for k in range(2, 7)]
    for k, ours in enumerate(levels):
        theirs = theirs_all[f"P{k + 2}"]
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() / np.abs(theirs).max() <= 1e-4
    detector = ours_model.get_layer("detector")
    logits, deltas = rpn.flatten_rpn_outputs(*detector.rpn_head(levels))
    feature_sizes = [tuple(level.shape[1:3]) for level in levels]
    grid = anchors.grid_anchors(tuple(transformed.shape[1:3]), feature_sizes)
    counts = anchors.num_anchors_per_level(feature_sizes)
    proposals, _, valid = rpn.select_proposals(logits, deltas, grid, resized, counts)
    for i in range(len(sizes)):
        theirs = theirs_all[f"proposals_{i}"]
        assert int(valid[i]) == len(theirs)
        top = min(200, len(theirs))  # the best proposals, past near-ties in objectness
        mine = proposals[i, :top].numpy()
        matched = [max(_iou(box, other) for other in mine) for box in theirs[:top]]
        assert np.mean(np.array(matched) >= 0.99) >= 0.98


def test_detections_and_pasted_masks_match(both):
    images, theirs, _, _, _, ours = both
    for i, image in enumerate(images):
        count = int(ours["num_detections"][i])
        boxes, scores = theirs[f"boxes_{i}"], theirs[f"scores_{i}"]
        labels = theirs[f"labels_{i}"]
        assert count == len(boxes) and count >= 5
        pasted = postprocess.paste_masks(
            ours["masks"][i, :count], ours["boxes"][i, :count], *image.shape[:2]
        ).numpy()
        unmatched = []
        for j in range(count):
            candidates = [
                k
                for k in range(count)
                if ours["classes"][i, k] == labels[j]
                and abs(ours["scores"][i, k] - scores[j]) <= 1e-3
                and _iou(ours["boxes"][i, k], boxes[j]) >= 0.99
            ]
            if not candidates:
                unmatched.append(j)
                continue
            mine = pasted[candidates[0]] > 0.5
            reference_mask = theirs[f"masks_{i}"][j]
            union = np.logical_or(mine, reference_mask).sum()
            overlap = np.logical_and(mine, reference_mask).sum() / union if union else 1.0
            assert overlap >= 0.99, f"image {i} detection {j}: mask IoU {overlap:.4f}"
        assert not unmatched, f"image {i}: torchvision detections without a match: {unmatched}"
