"""Mask R-CNN inference on CPU: kerasseg vs torchvision, same weights, same image, same run.

Usage: python benchmarks/maskrcnn.py [--repeats 5] [--warmups 1] [--image PATH]
           [--no-bfloat16] [--no-stages] [--json PATH] [--quick]

Models: kerasseg ``kerasseg.load("maskrcnn_resnet50_fpn", num_classes=91, weights=None)`` and
torchvision's ``maskrcnn_resnet50_fpn`` as its COCO_V1 weights build it (what
``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)`` builds, but
with the backbone's ``norm_layer=FrozenBatchNorm2d`` and every FrozenBatchNorm2d ``eps`` set
to 0.0, which is what the kerasseg v1 model computes; plain ``weights=None`` would build
``BatchNorm2d`` with eps 1e-5), eval mode, torchvision's defaults otherwise (min_size 800,
max_size 1333, 1000 proposals, score threshold 0.05, 100 detections at most).

Weights: random but shared. ``tests/fixtures/maskrcnn/make_model_reference.make_weights("v1",
shapes)`` = ``reference_weights.make_state_dict(shapes, seed 7)`` on torchvision's own
key/shape table, then its ``adjust_weights`` (rescales the RPN / box deltas and the class
scores, so that random weights give a realistic number of detections). Loaded into torchvision
with ``load_state_dict(strict=True)`` and into Keras with
``kerasseg.convert.torchvision.maskrcnn_weights``.

Image: the first CamVid validation frame (360x480, ``../shared/data/camvid/val``, read only),
or a synthetic 480x640 one if the folder is missing. Both models resize it to 800x1066
(batch padded to 800x1088). torchvision gets ``image / 255`` (CHW float32), Keras the 0..255
values (NHWC float32). Batch 1: per-image latency.

Paths, each the median of ``repeats`` calls after ``warmups`` calls, the calls interleaved
round-robin (so that other jobs on a shared machine slow every path alike):

* torchvision ``model([image])`` under ``torch.inference_mode()``; its output masks are
  pasted to full image size (``paste_masks_in_image``);
* Keras ``model.predict({"images": x, "image_sizes": [[360, 480]]}, verbose=0)`` (28x28
  masks, not pasted; predict's data adapter refuses a missing optional input);
* Keras ``tf.function(lambda x: model({"images": x, "image_sizes": None}, training=False))``;
* the same plus ``kerasseg.models.maskrcnn.postprocess.paste_masks`` of the detections inside
  the ``tf.function`` (full-size masks, the work torchvision's output includes);
* bfloat16 compute, same weights, through ``tf.function``: the model built under the global
  ``keras.config.set_dtype_policy("mixed_bfloat16")``; if that fails to build or run, the
  error is reported and the copy that ``kerasseg.export`` makes for
  ``compute_dtype="bfloat16"`` (``export._with_compute_dtype``) is timed instead. This CPU has
  no AMX, AVX512-BF16 or even AVX-512: bfloat16 is emulated.

Before timing: detection counts of both models (must be equal), how many detections are
identical (same label, box within 0.5 px) in order and anywhere, max box and score
differences, and agreement of the pasted masks (> 0.5). Stage breakdown (unless
``--no-stages``): torchvision by forward hooks on ``transform``, ``backbone``, ``rpn`` and
``roi_heads`` in the timed calls (``postprocess`` = the rest: box rescale and mask pasting);
Keras by timing its parts separately, each in a ``tf.function`` on the real intermediate
tensors: ``transform`` layer, ``resnet50_fpn`` backbone, ``rpn`` (RPN head and proposal
selection), ``detector`` (RPN + box and mask branches; ``roi_heads`` = detector - rpn).
Threads: torch's and TensorFlow's defaults (both use every core).
"""

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torch and torchvision first: importing them after TensorFlow segfaults here (torchvision.ops
# pulls in triton, whose native library crashes when loaded after TensorFlow's).
import torch  # noqa: E402, I001
import torchvision  # noqa: E402
import torchvision.ops  # noqa: E402, F401

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import kerasseg  # noqa: E402
from kerasseg.convert.torchvision import maskrcnn_weights  # noqa: E402
from kerasseg.export import _with_compute_dtype  # noqa: E402
from kerasseg.models.maskrcnn.postprocess import paste_masks  # noqa: E402
from timing import interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "maskrcnn"
sys.path.insert(0, str(FIXTURES))
import make_model_reference  # noqa: E402

CAMVID = ROOT.parent / "shared" / "data" / "camvid" / "val"
NUM_CLASSES = 91
CONFIG = "v1"  # make_model_reference's configuration: seed 7, the v1 weight adjustments


def load_image(path):
    """(uint8 HxWx3 image, description): `path`, the first CamVid val frame, or synthetic."""
    if path is None:
        frames = sorted(CAMVID.glob("*.png")) if CAMVID.is_dir() else []
        if frames:
            path = frames[0]
    if path is not None:
        image = np.asarray(Image.open(path).convert("RGB"))
        return image, f"{Path(path).name} ({image.shape[0]}x{image.shape[1]})"
    (image,) = make_model_reference.make_images(seed=0, sizes=((480, 640),))
    return image, "synthetic 480x640 (make_model_reference.make_images, seed 0)"


def build_torchvision(min_size, max_size):
    """torchvision Mask R-CNN v1 with FrozenBatchNorm2d (eps set to 0 after loading)."""
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.mask_rcnn import MaskRCNN
    from torchvision.ops.misc import FrozenBatchNorm2d

    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
    return MaskRCNN(backbone, num_classes=NUM_CLASSES, min_size=min_size, max_size=max_size)


def load_torchvision(model, state_dict):
    from torchvision.ops.misc import FrozenBatchNorm2d

    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()})
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = 0.0  # overwrite_eps(model, 0.0), as for the COCO_V1 weights
    return model.eval()


def build_keras(state_dict, min_size, max_size, policy=None):
    previous = keras.config.dtype_policy().name
    if policy is not None:
        keras.config.set_dtype_policy(policy)
    try:
        model = kerasseg.load(
            "maskrcnn_resnet50_fpn",
            num_classes=NUM_CLASSES,
            weights=None,
            min_size=min_size,
            max_size=max_size,
        )
    finally:
        keras.config.set_dtype_policy(previous)
    return maskrcnn_weights(state_dict, model)


def compute_dtypes(model):
    """{compute dtype: number of layers} over every layer, nested ones included."""
    counts = {}
    for layer in model._flatten_layers(include_self=False):
        dtype = getattr(layer, "compute_dtype", None)
        counts[dtype] = counts.get(dtype, 0) + 1
    return counts


class TorchStages:
    """Forward hooks timing torchvision's transform / backbone / rpn / roi_heads per call."""

    NAMES = ("transform", "backbone", "rpn", "roi_heads")

    def __init__(self, model):
        self.marks, self.calls = {}, []
        for name in self.NAMES:
            module = getattr(model, name)
            module.register_forward_pre_hook(self._mark(name + ":start"))
            module.register_forward_hook(self._mark(name + ":end"))

    def _mark(self, key):
        def hook(*_):
            self.marks[key] = time.perf_counter()

        return hook

    def wrap(self, fn):
        def call():
            self.marks = {}
            start = time.perf_counter()
            out = fn()
            end = time.perf_counter()
            m = self.marks
            stages = {name: m[name + ":end"] - m[name + ":start"] for name in self.NAMES}
            stages["postprocess"] = end - m["roi_heads:end"]
            stages["total"] = end - start
            self.calls.append(stages)
            return out

        return call

    def stats(self, last):
        """{stage: (median ms, min ms)} over the last `last` calls."""
        calls = self.calls[-last:]
        return {
            k: (statistics.median(c[k] for c in calls) * 1000, min(c[k] for c in calls) * 1000)
            for k in calls[0]
        }


def compare(keras_out, torch_out, height, width):
    """Agreement of one Keras output dict (batch 1, numpy) with torchvision's output.

    ``same_in_order``: leading detections identical in order (same label, box within 0.5 px);
    ``matched``: Keras detections with an identical torchvision detection anywhere in its list.
    """
    n = int(keras_out["num_detections"][0])
    tv_boxes = torch_out["boxes"].numpy()[:, [1, 0, 3, 2]]
    tv_scores, tv_labels = torch_out["scores"].numpy(), torch_out["labels"].numpy()
    result = {"keras": n, "torchvision": len(tv_scores), "equal_counts": n == len(tv_scores)}
    boxes, scores = keras_out["boxes"][0, :n], keras_out["scores"][0, :n]
    labels = keras_out["classes"][0, :n]
    same = [
        (np.abs(tv_boxes - box).max(1) < 0.5) & (tv_labels == label)
        for box, label in zip(boxes, labels, strict=True)
    ]
    in_order = 0
    while in_order < min(n, len(tv_scores)) and same[in_order][in_order]:
        in_order += 1
    result["same_in_order"] = in_order
    result["matched"] = int(sum(bool(row.any()) for row in same))
    if in_order:
        result["max_box_diff_px"] = float(np.abs(boxes[:in_order] - tv_boxes[:in_order]).max())
        result["max_score_diff"] = float(np.abs(scores[:in_order] - tv_scores[:in_order]).max())
        pasted = paste_masks(keras_out["masks"][0, :in_order], boxes[:in_order], height, width)
        tv_pasted = torch_out["masks"][:in_order, 0].numpy() > 0.5
        result["pasted_mask_pixels_equal_pct"] = float(
            100 * np.mean((pasted.numpy() > 0.5) == tv_pasted)
        )
    return result


class _LogCapture(logging.Handler):
    """Collects TensorFlow's logged errors (first line of each) instead of printing them."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.lines = []
        self.logger = tf.get_logger()
        self.propagate = self.logger.propagate
        self.previous = list(self.logger.handlers)
        self.logger.handlers = [self]
        self.logger.propagate = False

    def emit(self, record):
        self.lines.append(record.getMessage().split("  Traceback")[0].strip())

    def first_lines(self):
        return " | ".join(self.lines[:2])[:600]

    def close(self):
        self.logger.handlers = self.previous
        self.logger.propagate = self.propagate
        super().close()


def keras_stage_times(model, x, repeats, warmups):
    """Median ms of the Keras model's parts, each alone in a `tf.function` on real inputs.

    ``transform`` (normalise, resize, pad), ``backbone`` (ResNet-50 + FPN), ``rpn`` (RPN head
    and proposal selection, as the detector computes them) and ``detector`` (RPN + box and
    mask branches); ``roi_heads`` = detector - rpn.
    """
    from kerasseg.models.maskrcnn import anchors as anchor_lib
    from kerasseg.models.maskrcnn.rpn import flatten_rpn_outputs, select_proposals

    transform = model.get_layer("transform")
    backbone = model.get_layer("resnet50_fpn")
    detector = model.get_layer("detector")
    size_layer, padded_layer = model.get_layer("image_size"), model.get_layer("padded_size")

    def levels(features):
        if isinstance(features, dict):
            return tuple(features[f"P{level}"] for level in range(2, 7))
        return tuple(features)

    t_fn = tf.function(lambda x: transform(x, size_layer(x, None), training=False))
    b_fn = tf.function(lambda batch: levels(backbone(batch, training=False)))

    @tf.function
    def rpn_fn(features, resized_sizes, batch):
        objectness, deltas = flatten_rpn_outputs(*detector.rpn_head(list(features)))
        feature_sizes = [(tf.shape(f)[1], tf.shape(f)[2]) for f in features]
        anchors = anchor_lib.grid_anchors(padded_layer(batch), feature_sizes)
        return select_proposals(
            objectness,
            deltas,
            anchors,
            resized_sizes,
            anchor_lib.num_anchors_per_level(feature_sizes),
            pre_nms_top_n=detector.rpn_pre_nms_top_n,
            post_nms_top_n=detector.rpn_post_nms_top_n,
            nms_threshold=detector.rpn_nms_threshold,
            score_threshold=detector.rpn_score_threshold,
        )

    @tf.function
    def d_fn(features, resized_sizes, sizes, batch):
        return detector(list(features), resized_sizes, sizes, padded_layer(batch))

    batch, resized_sizes = t_fn(x)
    features = b_fn(batch)
    sizes = size_layer(x, None)
    fns = {
        "transform": lambda: t_fn(x)[0].numpy(),
        "backbone": lambda: [f.numpy() for f in b_fn(batch)],
        "rpn": lambda: [t.numpy() for t in rpn_fn(features, resized_sizes, batch)],
        "detector": lambda: d_fn(features, resized_sizes, sizes, batch)["masks"].numpy(),
    }
    stages = {
        name: (value[0], min(value[2]) * 1000)
        for name, value in interleaved(fns, repeats, warmups).items()
    }
    detector_ms, rpn_ms = stages["detector"], stages["rpn"]
    stages["roi_heads"] = (detector_ms[0] - rpn_ms[0], detector_ms[1] - rpn_ms[1])
    return stages


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmups", type=int, default=1, help="calls before timing (>= 1)")
    parser.add_argument("--image", type=Path, default=None, help="default: first CamVid val")
    parser.add_argument("--min-size", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--no-bfloat16", action="store_true", help="skip the bfloat16 model")
    parser.add_argument("--no-stages", action="store_true", help="skip the Keras stage timing")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: resize to 256 (short side), 2 repeats"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.min_size, args.max_size = 2, 256, 352
    if args.warmups < 1:
        parser.error("--warmups must be >= 1 (the first call traces the tf.functions)")
    started = time.perf_counter()
    load_start = os.getloadavg()

    image, image_text = load_image(args.image)
    height, width = image.shape[:2]
    print(
        f"cpus: {os.cpu_count()}  {platform.processor() or platform.machine()}  "
        f"tensorflow {tf.__version__}  keras {keras.__version__}  torch {torch.__version__}  "
        f"torchvision {torchvision.__version__}"
    )
    print(
        f"threads: torch.get_num_threads() = {torch.get_num_threads()}, TF intra-op "
        f"{tf.config.threading.get_intra_op_parallelism_threads()} / inter-op "
        f"{tf.config.threading.get_inter_op_parallelism_threads()} (0 = TF default: all cores)"
    )

    tv_model = build_torchvision(args.min_size, args.max_size)
    shapes = {k: tuple(v.shape) for k, v in tv_model.state_dict().items()}
    state_dict = make_model_reference.make_weights(CONFIG, shapes)
    load_torchvision(tv_model, state_dict)
    model = build_keras(state_dict, args.min_size, args.max_size)
    tv_params = sum(p.numel() for p in tv_model.parameters())
    sizes = tv_model.transform  # the resize torchvision will apply
    tensor = torch.from_numpy(
        np.ascontiguousarray(image.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
    )
    with torch.inference_mode():
        resized = sizes([tensor])[0]
    resized_text = f"{resized.image_sizes[0][0]}x{resized.image_sizes[0][1]}"
    padded_text = f"{resized.tensors.shape[-2]}x{resized.tensors.shape[-1]}"
    print(
        f"image: {image_text}, resized to {resized_text}, padded {padded_text}; "
        f"min_size {args.min_size}, max_size {args.max_size}; torchvision {tv_params:,} "
        f"parameters; median of {args.repeats} after {args.warmups} warm-up(s)"
    )

    x = tf.constant(image[None].astype(np.float32))
    x_np = image[None].astype(np.float32)
    sizes_np = np.array([[height, width]], np.int32)
    forward = tf.function(lambda x: model({"images": x, "image_sizes": None}, training=False))

    @tf.function
    def forward_pasted(x):
        out = model({"images": x, "image_sizes": None}, training=False)
        n = out["num_detections"][0]
        pasted = paste_masks(out["masks"][0, :n], out["boxes"][0, :n], height, width)
        return out, pasted

    def run_torch():
        with torch.inference_mode():
            return tv_model([tensor])[0]

    def run_forward(fn):
        return lambda: {k: v.numpy() for k, v in fn(x).items()}

    def run_pasted():
        out, pasted = forward_pasted(x)
        return {k: v.numpy() for k, v in out.items()}, pasted.numpy()

    def run_predict():
        # predict's data adapter needs every input: the real sizes, which is what None means.
        return model.predict({"images": x_np, "image_sizes": sizes_np}, verbose=0)

    torch_stages = TorchStages(tv_model)
    fns = {
        "torchvision": torch_stages.wrap(run_torch),
        "keras_predict": run_predict,
        "keras_tf_function": run_forward(forward),
        "keras_tf_function_paste": run_pasted,
    }
    labels = {
        "torchvision": "torchvision `model([image])`, `inference_mode` (masks pasted)",
        "keras_predict": "kerasseg `model.predict(..., verbose=0)` (28x28 masks)",
        "keras_tf_function": "kerasseg `tf.function(model)` (28x28 masks)",
        "keras_tf_function_paste": "kerasseg `tf.function(model + paste_masks)` (masks pasted)",
    }

    # bfloat16: first the global "mixed_bfloat16" policy; if that model fails to build or
    # run, the error is kept and the copy of kerasseg.export._with_compute_dtype is timed.
    bf16 = {"errors": [], "variant": None, "layer_compute_dtypes": None}
    first = {}
    if not args.no_bfloat16:
        for variant in ("policy", "export_copy"):
            t = time.perf_counter()
            logged = _LogCapture()  # TensorFlow logs the precise dtype mismatch as an ERROR
            try:
                if variant == "policy":
                    model16 = build_keras(
                        state_dict, args.min_size, args.max_size, "mixed_bfloat16"
                    )
                else:
                    model16 = _with_compute_dtype(model, "bfloat16")
                forward16 = tf.function(
                    lambda x, m=model16: m({"images": x, "image_sizes": None}, training=False)
                )
                run16 = run_forward(forward16)
                first["keras_bfloat16"] = run16()
            except Exception as error:  # noqa: BLE001 - report any failure precisely
                message = str(error).strip().splitlines()
                failure = {
                    "variant": variant,
                    "error": f"{type(error).__name__}: " + " ".join(message[:3])[:600],
                    "tensorflow_log": logged.first_lines(),
                }
                bf16["errors"].append(failure)
                print(f"bfloat16 model ({variant}) failed: {failure['error']}")
                if failure["tensorflow_log"]:
                    print(f"  TensorFlow logged: {failure['tensorflow_log']}")
                continue
            finally:
                logged.close()
            print(
                f"  first call (build + trace) keras_bfloat16 ({variant}): "
                f"{time.perf_counter() - t:.1f} s"
            )
            bf16["variant"] = variant
            bf16["layer_compute_dtypes"] = {str(k): v for k, v in compute_dtypes(model16).items()}
            bf16["float32_layers"] = sorted(
                {
                    layer.name
                    for layer in model16._flatten_layers(include_self=False)
                    if getattr(layer, "compute_dtype", None) == "float32"
                    and type(layer).__name__ != "InputLayer"
                }
            )
            fns["keras_bfloat16"] = run16
            labels["keras_bfloat16"] = (
                "kerasseg built under `mixed_bfloat16`, `tf.function(model)`"
                if variant == "policy"
                else "kerasseg bfloat16 copy (`export._with_compute_dtype`), `tf.function(model)`"
            )
            break

    # First calls (warm-up 1: traces the tf.functions) give the outputs checked here.
    t0 = time.perf_counter()
    for name in list(fns):
        if name in first:
            continue
        t = time.perf_counter()
        first[name] = fns[name]()
        print(f"  first call (trace / warm-up) {name}: {time.perf_counter() - t:.1f} s")
    print(f"first calls: {time.perf_counter() - t0:.1f} s")
    tv_out = first["torchvision"]
    checks = {
        "keras_tf_function": compare(first["keras_tf_function"], tv_out, height, width),
        "keras_predict": compare(first["keras_predict"], tv_out, height, width),
    }
    pasted_out, pasted = first["keras_tf_function_paste"]
    checks["keras_tf_function_paste"] = compare(pasted_out, tv_out, height, width)
    tv_masks = tv_out["masks"][:, 0].numpy() > 0.5
    checks["keras_tf_function_paste"]["in_graph_pasted_pixels_equal_pct"] = (
        float(100 * np.mean((pasted > 0.5) == tv_masks))
        if pasted.shape == tv_masks.shape
        else f"shape {pasted.shape} vs {tv_masks.shape}"
    )
    if "keras_bfloat16" in first:
        checks["keras_bfloat16"] = compare(first["keras_bfloat16"], tv_out, height, width)
    print("agreement with torchvision (first calls):")
    for name, check in checks.items():
        print(f"  {name}: {check}")
    if not checks["keras_tf_function"]["equal_counts"]:
        print("WARNING: the float32 Keras model and torchvision give different detection counts")
    if bf16["variant"]:
        print(
            f"bfloat16 model ({bf16['variant']}): layers per compute dtype "
            f"{bf16['layer_compute_dtypes']}; float32 layers: {bf16['float32_layers']}"
        )

    load_before = os.getloadavg()
    results = interleaved(fns, args.repeats, args.warmups - 1)
    load_after = os.getloadavg()
    tv_stages = torch_stages.stats(args.repeats)

    keras_stages = None
    if not args.no_stages:
        keras_stages = keras_stage_times(model, x, args.repeats, args.warmups)

    base, base_walls = results["torchvision"][0], results["torchvision"][2]
    rows = []
    for name in fns:
        ms, cores, walls = results[name]
        check = checks.get(name, {})
        detections = check.get("keras", len(tv_out["scores"]))
        rows.append(
            {
                "path": labels[name],
                "key": name,
                "median_ms": ms,
                "min_ms": min(walls) * 1000,
                "vs_torchvision": ms / base,
                # Same round of the round-robin: the calls closest in time.
                "vs_torchvision_per_round": statistics.median(
                    w / b for w, b in zip(walls, base_walls, strict=True)
                ),
                "detections": detections,
                "cores_used": cores,
                "times_ms": [w * 1000 for w in walls],
            }
        )
    print()
    print(
        "| path | median ms / image | min ms | Keras / torchvision (medians) "
        "| median of per-round ratios | detections | cores used |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['path']} | {row['median_ms']:.0f} | {row['min_ms']:.0f} | "
            f"{row['vs_torchvision']:.2f}x | {row['vs_torchvision_per_round']:.2f}x | "
            f"{row['detections']} | {row['cores_used']:.2f} |"
        )
    for failure in bf16["errors"]:
        print(f"| kerasseg bfloat16 ({failure['variant']}): failed | - | - | - | - | - | - |")
    print()
    print("torchvision stages (median / min ms, from hooks in the timed calls):")
    print("  " + ", ".join(f"{k} {v[0]:.0f} / {v[1]:.0f}" for k, v in tv_stages.items()))
    if keras_stages:
        print("kerasseg stages (median / min ms, each timed alone in a tf.function):")
        total = sum(keras_stages[k][0] for k in ("transform", "backbone", "detector"))
        print(
            "  "
            + ", ".join(f"{k} {v[0]:.0f} / {v[1]:.0f}" for k, v in keras_stages.items())
            + f"; medians of transform + backbone + detector {total:.0f}"
        )
    print(
        f"load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/"
        f"{load_start[2]:.2f}, before timing {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/"
        f"{load_after[2]:.2f}; total {time.perf_counter() - started:.0f} s"
    )

    if args.json:
        summary = {
            "image": image_text,
            "resized": resized_text,
            "padded": padded_text,
            "min_size": args.min_size,
            "max_size": args.max_size,
            "repeats": args.repeats,
            "warmups": args.warmups,
            "torch_num_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "versions": {
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
            },
            "rows": rows,
            "checks": checks,
            "bfloat16": bf16,
            "torchvision_stages_ms": tv_stages,
            "keras_stages_ms": keras_stages,
            "load_start": load_start,
            "load_before": load_before,
            "load_after": load_after,
        }
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
