"""Fine-tuning the CamVid preset to 3 classes vs the same U-Net from random weights.

Usage: python benchmarks/finetune_camvid.py [--data ../shared/data] [--steps 300]
           [--out runs/finetune_camvid] [--record benchmarks/runs/finetune_camvid]

Task: CamVid with its 11 classes merged into 3, road and pavement (1) / car (2) / everything
else (0), void (11) ignored; the remap a user would make to fine-tune a street model. Both
runs are `kerasseg.training.train` with the same recipe, fixed before any run: train split
resized to 180x240 (half resolution), random horizontal flip, batch 4, `steps` steps of Adam
at 1e-3 with cosine decay to 0, cross-entropy + Dice, seed 0. The only difference is the
start: `kerasseg.load("unet_camvid", num_classes=3)` (every array of the preset but the
head) or `kerasseg.load("unet", ...)` with the preset's arguments and random weights.
Both final models are scored on the 101 CamVid val images at full size (360x480): IoU per
class and their mean over the 3 classes, void pixels left out.

`--record` writes each run's history.csv and results.json there (not the models).
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kerasseg  # noqa: E402
from kerasseg.data import JointAugment  # noqa: E402
from kerasseg.evaluation import evaluate  # noqa: E402

CLASS_NAMES = ("other", "road and pavement", "car")
# CamVid ids: 3 Road, 4 Pavement -> 1; 8 Car -> 2; the other 8 classes -> 0; 11 void stays 11.
CLASS_MAP = {**{i: 0 for i in range(11)}, 3: 1, 4: 1, 8: 2, 11: 11}
IGNORE = 11
SIZE = (180, 240)


def _preset_arguments():
    entry = kerasseg.get_entry("unet_camvid")
    return {**entry.defaults, "num_classes": 3}


def _data(root, steps):
    common = dict(class_map=CLASS_MAP, num_classes=3, ignore_label=IGNORE)
    train, _ = kerasseg.datasets.camvid(
        root, subset="train", batch_size=4, image_size=SIZE, augment=JointAugment(
            horizontal_flip=True), shuffle=True, seed=0, repeat=True, cache=True, **common,
    )  # fmt: skip
    val, _ = kerasseg.datasets.camvid(root, subset="val", batch_size=1, **common)
    return train, val


def run(start, root, steps, out):
    train, val = _data(root, steps)
    arguments = _preset_arguments()

    def build():
        if start == "preset":
            model = kerasseg.load("unet_camvid", num_classes=3)
            print(f"{start}: {model.weights_report.describe()}")
            return model
        return kerasseg.load("unet", weights=None, **arguments)

    build.__qualname__ = f"unet_camvid_3_classes_from_{start}"
    began = time.perf_counter()
    trained = kerasseg.training.train(
        build,
        train,
        output_dir=out,
        epochs=1,
        steps_per_epoch=steps,
        learning_rate=1e-3,
        schedule="cosine",
        monitor="loss",
        ignore_label=IGNORE,
        seed=0,
        verbose=2,
    )
    seconds = time.perf_counter() - began
    results = evaluate(
        trained.model, val, num_classes=3, class_names=list(CLASS_NAMES), ignore_label=IGNORE
    )
    return {
        "start": start,
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "val_mean_iou": results["overall"]["mean_iou"],
        "val_pixel_accuracy": results["overall"]["pixel_accuracy"],
        "val_iou": {name: scores["iou"] for name, scores in results["per_class"].items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="runs/finetune_camvid")
    parser.add_argument("--record", help="folder for the histories and results")
    args = parser.parse_args()
    root = Path(args.data) / "camvid"
    rows = []
    for start in ("preset", "random"):
        out = Path(args.out) / start
        rows.append(run(start, root, args.steps, out))
        print(json.dumps(rows[-1]))
        if args.record:
            record = Path(args.record) / start
            record.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / "history.csv", record / "history.csv")
            (record / "results.json").write_text(json.dumps(rows[-1], indent=2) + "\n")
    print(f"\n3-class CamVid val (101 images, 360x480), {args.steps} steps of batch 4 at 180x240")
    print("| start | mean IoU | other | road and pavement | car | pixel accuracy | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        iou = row["val_iou"]
        print(
            f"| {row['start']} | {row['val_mean_iou']:.3f} | {iou['other']:.3f} | "
            f"{iou['road and pavement']:.3f} | {iou['car']:.3f} | "
            f"{row['val_pixel_accuracy']:.3f} | {row['train_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
