"""Converted public presets on CPU: kerasseg vs torchvision / transformers, same weights, same run.

Usage: python benchmarks/pretrained.py [--repeats 5] [--warmups 1] [--image PATH]
           [--json PATH] [--quick]

Two networks whose public checkpoints kerasseg converts, each timed against the library the
checkpoint comes from, with the same weights, on the same input, in the same process:

* DeepLabV3-ResNet50 (the network of the ``deeplabv3_resnet50_voc`` preset, torchvision's
  COCO_WITH_VOC_LABELS_V1 checkpoint): torchvision ``segmentation.deeplabv3_resnet50(
  weights=None, weights_backbone=None, num_classes=21, aux_loss=False)`` against kerasseg
  ``deeplabv3_torchvision(backbone="resnet50", num_classes=21)``. Input: the frame through
  torchvision's preset transform (``weights.transforms()``: shorter side resized to 520,
  antialiased bilinear, ImageNet mean / std), 520x693 for a 360x480 CamVid frame. Both
  return 21 logits per pixel at the input size (torchvision resizes them inside its model).
* SegFormer-B0 (the network of ``segformer_b0_ade20k``, ``nvidia/segformer-b0-finetuned-
  ade-512-512``): transformers ``SegformerForSemanticSegmentation`` with the B0 config and
  150 labels against kerasseg ``segformer(variant="b0", num_classes=150)``. Input: the frame
  through ``SegformerImageProcessor()`` (512x512 bilinear, ImageNet mean / std). kerasseg's
  model resizes its 1/4-resolution logits to the input size inside the model, so the
  transformers path includes that resize (``F.interpolate(logits, size, mode="bilinear",
  align_corners=False)``, as ``post_process_semantic_segmentation`` does); the 1/4 logits
  alone (transformers' ``logits``, kerasseg's "head" layer) are timed too.

Weights: random, not the published ones (latency does not depend on the values), but the
same in both libraries: the reference model's initial weights with the batch-norm
statistics (and, for SegFormer, every parameter) moved off their initial values, as the
parity tests do, so that the agreement check would show a misplaced weight. They travel the
way a user's checkpoint does: torchvision's state dict through ``torch.save`` and
``kerasseg.convert.torchvision.load_state_dict`` (no torch) into
``kerasseg.convert.torchvision_semantic.semantic_weights``; the SegFormer through
``save_pretrained`` (``model.safetensors``, the Hub's key names) into
``kerasseg.convert.huggingface.segformer_weights``.

Paths, batch 1, float32, eval mode: the reference under ``torch.inference_mode()`` with its
output read back as numpy; kerasseg ``model.predict(x, verbose=0)`` (NHWC numpy in and out)
and ``tf.function(lambda x: model(x, training=False))`` (plain graph, no XLA) on a
constant tensor, read back with ``.numpy()``. The first call of each path (tracing) gives
the outputs that are checked: max |kerasseg - reference| / max |reference| and the share of
pixels with the same argmax class. Then each network's paths are timed with
`timing.interleaved`: ``warmups - 1`` more warm-up calls, ``repeats`` rounds round-robin.
Threads: torch ``set_num_threads`` = the cores this process may use; TensorFlow's default
(0 = all cores).

Image: the first CamVid validation frame (``../shared/data/camvid/val``, read only), or a
360x480 seeded noise image when the folder is missing. ``--quick``: shorter side 128 for
DeepLabV3, 128x128 for SegFormer, 2 repeats (a smoke test).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# torch._dynamo (imported by transformers) imports triton where it is installed, and triton
# crashes a process that already holds TensorFlow; torch on the CPU needs no triton.
sys.modules.setdefault("triton", None)

# torch, torchvision and transformers first: torchvision's native ops crash when they are
# loaded into a process that already holds TensorFlow.
import torch  # noqa: E402, I001
import torchvision  # noqa: E402
import transformers  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torchvision.models import segmentation  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from kerasseg.convert.huggingface import segformer_config, segformer_weights  # noqa: E402
from kerasseg.convert.torchvision import load_state_dict  # noqa: E402
from kerasseg.convert.torchvision_semantic import semantic_weights  # noqa: E402
from kerasseg.models.segformer import segformer  # noqa: E402
from kerasseg.models.torchvision_semantic import deeplabv3_torchvision  # noqa: E402
from timing import interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CAMVID = ROOT.parent / "shared" / "data" / "camvid" / "val"
VOC_CLASSES = 21
ADE20K_CLASSES = 150
SEGFORMER_SIZE = 512  # SegformerImageProcessor's default size, square
DEEPLAB_SHORTER_SIDE = 520  # torchvision's preset transform
QUICK_SIZE = 128


def load_image(path):
    """(uint8 HxWx3 image, description): `path`, the first CamVid val frame, or noise."""
    if path is None:
        frames = sorted(CAMVID.glob("*.png")) if CAMVID.is_dir() else []
        if frames:
            path = frames[0]
    if path is not None:
        image = np.array(Image.open(path).convert("RGB"))  # writable, for torch.from_numpy
        return image, f"{Path(path).name} ({image.shape[0]}x{image.shape[1]})"
    image = np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    return image, "synthetic 360x480 (uniform noise, seed 0; CamVid not found)"


def relative_difference(ours, reference):
    """max |ours - reference| / max |reference|."""
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def argmax_agreement(ours, reference):
    return float(np.mean(ours.argmax(-1) == reference.argmax(-1)))


def nhwc(tensor):
    return tensor.numpy().transpose(0, 2, 3, 1)


def randomise(model, generator, all_parameters):
    """Batch-norm statistics far from (0, 1) and affine terms and biases off their initial
    values; with `all_parameters`, noise (std 0.05) on every parameter too."""

    def draw(tensor, low, high):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        if all_parameters:
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                draw(module.weight, 0.5, 1.5)
                draw(module.bias, -0.2, 0.2)
                draw(module.running_mean, -0.5, 0.5)
                draw(module.running_var, 0.5, 2.0)
            elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                draw(module.bias, -0.2, 0.2)
    return model.eval()


def keras_paths(model, x):
    """kerasseg's `predict` and `tf.function` paths on the NHWC float32 array `x`."""
    forward = tf.function(lambda x: model(x, training=False), jit_compile=False)
    x_tf = tf.constant(x)
    return {
        "predict": lambda: model.predict(x, verbose=0),
        "tf_function": lambda: forward(x_tf).numpy(),
    }


def deeplab_case(image, quick, folder):
    """torchvision's DeepLabV3-ResNet50 and kerasseg's, same weights: (description, paths)."""
    weights = segmentation.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1
    transform = weights.transforms(resize_size=QUICK_SIZE if quick else DEEPLAB_SHORTER_SIDE)
    x_torch = transform(torch.from_numpy(image.transpose(2, 0, 1).copy()))[None]
    reference = segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=VOC_CLASSES, aux_loss=False
    )
    randomise(reference, torch.Generator().manual_seed(1), all_parameters=False)
    path = folder / "deeplabv3_resnet50.pth"
    torch.save(reference.state_dict(), path)
    model = deeplabv3_torchvision(backbone="resnet50", num_classes=VOC_CLASSES)
    semantic_weights(load_state_dict(path), model)

    def run_reference():
        with torch.inference_mode():
            return nhwc(reference(x_torch)["out"])

    x = nhwc(x_torch)
    keras_fns = keras_paths(model, x)
    size = f"{x.shape[1]}x{x.shape[2]}"
    paths = {
        "torchvision": (run_reference, None, "torchvision `model(x)['out']`, `inference_mode`"),
        "kerasseg_predict": (keras_fns["predict"], "torchvision", "kerasseg `model.predict`"),
        "kerasseg_tf_function": (
            keras_fns["tf_function"],
            "torchvision",
            "kerasseg `tf.function(model)`",
        ),
    }
    info = {
        "network": "DeepLabV3-ResNet50 (`deeplabv3_resnet50_voc`)",
        "input": size,
        "output": f"{size}x{VOC_CLASSES}",
        "parameters_reference": sum(p.numel() for p in reference.parameters()),
        "parameters_kerasseg": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
    }
    return info, paths


def segformer_case(image, quick, folder):
    """transformers' SegFormer-B0 (150 classes) and kerasseg's, same weights."""
    size = QUICK_SIZE if quick else SEGFORMER_SIZE
    processor = transformers.SegformerImageProcessor(size={"height": size, "width": size})
    x_torch = processor(images=image, return_tensors="pt")["pixel_values"]
    config = transformers.SegformerConfig(num_labels=ADE20K_CLASSES)  # the B0 defaults
    torch.manual_seed(0)
    reference = transformers.SegformerForSemanticSegmentation(config)
    randomise(reference, torch.Generator().manual_seed(2), all_parameters=True)
    transformers.utils.logging.disable_progress_bar()
    reference.save_pretrained(folder / "segformer_b0")
    state_dict = load_state_dict(folder / "segformer_b0" / "model.safetensors")
    model = segformer(**segformer_config(state_dict))
    segformer_weights(state_dict, model)
    head = keras.Model(model.input, model.get_layer("head").output)

    def run_reference():
        with torch.inference_mode():
            logits = reference(pixel_values=x_torch).logits
            return nhwc(
                F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
            )

    def run_reference_quarter():
        with torch.inference_mode():
            return nhwc(reference(pixel_values=x_torch).logits)

    x = nhwc(x_torch)
    keras_fns = keras_paths(model, x)
    head_forward = tf.function(lambda x: head(x, training=False), jit_compile=False)
    x_tf = tf.constant(x)
    quarter = -(-size // 4)
    paths = {
        "transformers": (
            run_reference,
            None,
            "transformers `model(x).logits` + `F.interpolate` to input size",
        ),
        "kerasseg_predict": (keras_fns["predict"], "transformers", "kerasseg `model.predict`"),
        "kerasseg_tf_function": (
            keras_fns["tf_function"],
            "transformers",
            "kerasseg `tf.function(model)`",
        ),
        "transformers_quarter": (
            run_reference_quarter,
            None,
            f"transformers `model(x).logits` only ({quarter}x{quarter})",
        ),
        "kerasseg_quarter_tf_function": (
            lambda: head_forward(x_tf).numpy(),
            "transformers_quarter",
            f"kerasseg up to the 'head' layer, `tf.function` ({quarter}x{quarter})",
        ),
    }
    info = {
        "network": "SegFormer-B0 (`segformer_b0_ade20k`)",
        "input": f"{size}x{size}",
        "output": f"{size}x{size}x{ADE20K_CLASSES} (1/4 rows: {quarter}x{quarter})",
        "parameters_reference": reference.num_parameters(),
        "parameters_kerasseg": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
    }
    return info, paths


def measure(name, info, paths, repeats, warmups):
    """First calls (traces), agreement checks, then interleaved timing: a list of rows."""
    print(f"\n{name}: {info}")
    first = {}
    for key, (fn, _, _) in paths.items():
        start = time.perf_counter()
        first[key] = fn()
        print(f"  first call (trace / warm-up) {key}: {time.perf_counter() - start:.1f} s")
    checks = {}
    for key, (_, reference, _) in paths.items():
        if reference is None:
            continue
        ours, theirs = first[key], first[reference]
        if ours.shape != theirs.shape:
            raise SystemExit(f"{key}: output {ours.shape} but {reference} gives {theirs.shape}")
        checks[key] = {
            "max_relative_difference": relative_difference(ours, theirs),
            "argmax_agreement": argmax_agreement(ours, theirs),
        }
        print(
            f"  agreement {key} vs {reference}: max relative difference "
            f"{checks[key]['max_relative_difference']:.1e}, argmax agreement "
            f"{100 * checks[key]['argmax_agreement']:.3f} %"
        )
    load = os.getloadavg()
    results = interleaved({key: value[0] for key, value in paths.items()}, repeats, warmups - 1)
    rows = []
    for key, (_, reference, label) in paths.items():
        ms, cores, walls = results[key]
        row = {
            "network": info["network"],
            "key": key,
            "path": label,
            "reference": reference,
            "median_ms": ms,
            "min_ms": min(walls) * 1000,
            "cores_used": cores,
            "times_ms": [wall * 1000 for wall in walls],
            "load_before": load,
        }
        if reference is not None:
            base_ms, _, base_walls = results[reference]
            row["vs_reference"] = ms / base_ms
            # Same round of the round-robin: the calls closest in time.
            row["vs_reference_per_round"] = statistics.median(
                wall / base for wall, base in zip(walls, base_walls, strict=True)
            )
            row.update(checks[key])
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmups", type=int, default=1, help="calls before timing (>= 1)")
    parser.add_argument("--image", type=Path, default=None, help="default: first CamVid val")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 128-pixel inputs, 2 repeats"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats = 2
    if args.warmups < 1:
        parser.error("--warmups must be >= 1 (the first call traces the tf.functions)")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    started = time.perf_counter()
    load_start = os.getloadavg()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    versions = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "transformers": transformers.__version__,
    }
    print(
        f"cpus: {cores} usable ({os.cpu_count()} in all), "
        f"{platform.processor() or platform.machine()}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    print(
        f"threads: torch {torch.get_num_threads()} (inter-op {torch.get_num_interop_threads()}), "
        f"TF intra-op {tf.config.threading.get_intra_op_parallelism_threads()} / inter-op "
        f"{tf.config.threading.get_inter_op_parallelism_threads()} (0 = TF default: all cores)"
    )
    image, image_text = load_image(args.image)
    print(f"image: {image_text}; median of {args.repeats} after {args.warmups} warm-up(s)")

    rows, infos = [], []
    with tempfile.TemporaryDirectory() as folder:
        for name, case in (("deeplabv3", deeplab_case), ("segformer", segformer_case)):
            info, paths = case(image, args.quick, Path(folder))
            infos.append(info)
            rows += measure(name, info, paths, args.repeats, args.warmups)
            del paths  # the models of one network are freed before the next is built

    inputs = {info["network"]: info["input"] for info in infos}
    print()
    print(
        "| network | path | input | median ms | min ms | kerasseg / reference (medians) "
        "| median of per-round ratios | max rel. diff. | argmax agreement | cores used |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        ratio, per_round, difference, agreement = "1.00x", "1.00x", "-", "-"
        if row["reference"] is not None:
            ratio = f"{row['vs_reference']:.2f}x"
            per_round = f"{row['vs_reference_per_round']:.2f}x"
            difference = f"{row['max_relative_difference']:.1e}"
            agreement = f"{100 * row['argmax_agreement']:.2f} %"
        print(
            f"| {row['network']} | {row['path']} | {inputs[row['network']]} | "
            f"{row['median_ms']:.0f} | {row['min_ms']:.0f} | {ratio} | {per_round} | "
            f"{difference} | {agreement} | {row['cores_used']:.2f} |"
        )
    load_end = os.getloadavg()
    print(
        f"load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/"
        f"{load_start[2]:.2f}, at the end {load_end[0]:.2f}/{load_end[1]:.2f}/"
        f"{load_end[2]:.2f}; total {time.perf_counter() - started:.0f} s"
    )

    if args.json:
        summary = {
            "image": image_text,
            "repeats": args.repeats,
            "warmups": args.warmups,
            "quick": args.quick,
            "cores": cores,
            "torch_num_threads": torch.get_num_threads(),
            "versions": versions,
            "networks": infos,
            "rows": rows,
            "load_start": load_start,
            "load_end": load_end,
        }
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
