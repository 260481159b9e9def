"""`kerasseg list` and `kerasseg info`: what the model registry holds."""

import json

import kerasseg
from kerasseg.cli.common import UsageError
from kerasseg.registry import TASKS

__all__ = ["add_parser", "run_info", "run_list"]


def add_parser(commands, parents):
    """Add `kerasseg list` and `kerasseg info` to the subcommands `commands`."""
    listing = commands.add_parser("list", parents=parents, help="list architectures and presets")
    listing.add_argument("--task", choices=TASKS)
    listing.add_argument("--json", action="store_true", help="print JSON")
    info = commands.add_parser(
        "info", parents=parents, help="show everything the registry knows about a model"
    )
    info.add_argument("name")


def run_list(args):
    """Run `kerasseg list`: a table (or JSON) of the registry's models."""
    rows = kerasseg.list_models(task=args.task)
    print(json.dumps(rows, indent=2, default=str) if args.json else _table(rows))


def run_info(args):
    """Run `kerasseg info NAME`: the registry entry's summary as JSON."""
    try:
        entry = kerasseg.get_entry(args.name)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(json.dumps(entry.summary(), indent=2, default=str))


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
