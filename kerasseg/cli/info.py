"""`kerasseg list` and `kerasseg info`: what the model registry holds.

`kerasseg info NAME` prints, as text (or with `--json` as one JSON object): the entry's
description and reference, its input contract (channels, value range, accepted sizes), a
preset's classes in the colours of its label PNGs and overlays (from the data set its
weights name, `kerasseg.inference.colours`), its weights and metrics, and every argument of
its builder with its default and a one-line meaning taken from the builder's docstring.
"""

import json
import shutil
import textwrap

import kerasseg
from kerasseg.cli.common import UsageError
from kerasseg.inference.colours import dataset_palette, model_palette, preset_dataset
from kerasseg.registry import TASKS

__all__ = ["add_parser", "classes_of", "info_text", "run_info", "run_list"]


def add_parser(commands, parents):
    """Add `kerasseg list` and `kerasseg info` to the subcommands `commands`."""
    listing = commands.add_parser("list", parents=parents, help="list architectures and presets")
    listing.add_argument("--task", choices=TASKS)
    listing.add_argument("--json", action="store_true", help="print JSON")
    info = commands.add_parser(
        "info",
        parents=parents,
        help="show a model's arguments, input contract, classes and metrics",
    )
    info.add_argument("name", help="an architecture or preset (`kerasseg list` names them)")
    info.add_argument("--json", action="store_true", help="print one JSON object")


def run_list(args):
    """Run `kerasseg list`: a table (or JSON) of the registry's models."""
    rows = kerasseg.list_models(task=args.task)
    print(json.dumps(rows, indent=2, default=str) if args.json else _table(rows))


def run_info(args):
    """Run `kerasseg info NAME`: the registry entry's details as text, or JSON (`--json`)."""
    try:
        entry = kerasseg.get_entry(args.name)
    except ValueError as error:
        raise UsageError(str(error)) from None
    summary = entry.summary(details=True)
    summary["classes"], summary["classes_note"] = classes_of(summary)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(info_text(summary))


def classes_of(summary):
    """The classes of a registry summary: ([{"id", "name", "colour"}], a one-line note).

    A preset's classes are those of the `kerasseg.datasets` data set its weights name
    (`kerasseg.inference.colours.preset_dataset`), in the colours of its label PNGs and
    overlays (`dataset_palette`), when their count
    fits the model (one sigmoid channel stands for two classes); otherwise the list is empty
    and the note says why.
    """
    count = summary["num_classes"]
    if summary.get("class_names"):  # a preset of a public checkpoint names its own classes
        palette = model_palette(summary["name"], len(summary["class_names"]))
        rows = [
            {"id": index, "name": name, "colour": [int(c) for c in colour]}
            for index, (name, colour) in enumerate(zip(palette.names, palette.colours, strict=True))
        ]
        return rows, f"the classes of {summary['dataset'] or 'its weights'}"
    labels = None if count is None else max(int(count), 2)
    info = preset_dataset(summary)
    if info is None:
        what = "no fixed class count" if count is None else f"{count} classes"
        return [], f"{what}; no class names: the model names no data set of kerasseg.datasets"
    if labels != info.num_classes:
        return [], (
            f"{count} output channel(s), while the data set {info.name!r} has "
            f"{info.num_classes} classes; its names do not apply"
        )
    palette = dataset_palette(info)  # the colours of the label PNGs and overlays
    rows = [
        {"id": index, "name": name, "colour": [int(c) for c in colour]}
        for index, (name, colour) in enumerate(zip(palette.names, palette.colours, strict=True))
    ]
    note = f"data set {info.name!r}"
    if palette.uncoloured:
        shown = ", ".join(palette.names[i] for i in palette.uncoloured)
        note += f"; overlays leave {shown} uncoloured"
    if count == 1:
        note += "; one sigmoid channel, the probability of class 1 (labels: p > 0.5)"
    if info.ignore_label is not None:
        note += f"; mask value {info.ignore_label} is ignored"
    return rows, note


def info_text(summary):
    """The human-readable form of `kerasseg info` for a summary with "classes" added."""
    kind = summary["kind"]
    if kind == "preset":
        kind = f"preset of {summary['architecture']}"
    lines = [f"{summary['name']}  ({kind}, {summary['task']})", *_wrap(summary["description"])]
    if summary["reference"]:
        lines += _wrap(f"reference: {summary['reference']}")
    lines += ["", "Input", *_contract_lines(summary["input_contract"])]
    lines += ["", f"Classes ({summary['classes_note']})"]
    lines += [
        f"  {c['id']:>3}  {c['name']:<20} #{_hex(c['colour'])}  {tuple(c['colour'])}"
        for c in summary["classes"]
    ] or [f"  num_classes: {summary['num_classes']}"]
    lines += ["", *_weights_lines(summary)]
    lines += ["", f"Arguments (kerasseg.load({summary['name']!r}, name=value, ...))"]
    for row in summary["argument_details"]:
        default = f" = {row['default_text']}" if row["has_default"] else " (no default)"
        fixed = "  [fixed by the preset]" if row["preset"] else ""
        lines.append(f"  {row['name']}{default}{fixed}")
        lines += _wrap(row["meaning"] or "(undocumented)", indent=6)
    return "\n".join(lines)


def _contract_lines(contract):
    lines = [f"  channels: {contract['channels']}"]
    if "unavailable" in contract:
        return lines + _wrap(contract["unavailable"])
    inputs = ", ".join(f"{name} {shape}" for name, shape in contract["inputs"].items())
    lines += _wrap(f"inputs: {inputs}")
    lines += _wrap(f"values: {contract['values']}")
    lines += _wrap(f"size: {contract['size_rule']}")
    return lines


def _weights_lines(summary):
    if summary["task"] == "classical":
        return ["Weights: none (a classical method)"]
    if not summary["weights"]:
        return ["Weights: none shipped (random initialisation; `weights=` takes a file)"]
    lines = ["Weights"]
    public = False
    for name, info in summary["weights"].items():
        if info.get("public"):
            public = True
            lines += _wrap(
                f"{name}: {info['source']}, {info['url']}; converted on first load to "
                f"{info['file_name']} (`kerasseg download {summary['name']}`)"
            )
            lines += _wrap(f"licence: {info['licence']}")
        else:
            lines += _wrap(f"{name}: {info['file_name']} ({info['size'] / 1e6:.1f} MB)")
    lines += _wrap(f"data set: {summary['dataset']}; split: {summary['split'] or '-'}")
    metrics = ", ".join(f"{key} {value}" for key, value in summary["metrics"].items())
    label = "metrics (the publisher's, not re-measured)" if public else "metrics"
    return lines + _wrap(f"{label}: {metrics or '-'}")


def _wrap(text, indent=2):
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    return textwrap.wrap(
        text, width=width, initial_indent=" " * indent, subsequent_indent=" " * (indent + 2)
    )


def _hex(colour):
    return "".join(f"{int(value):02x}" for value in colour)


def _table(rows):
    header = ("name", "kind", "task", "classes", "description")
    lines = [header] + [
        (r["name"], r["kind"], r["task"], str(r["num_classes"]), r["description"]) for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    )
