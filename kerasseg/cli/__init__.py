"""The `kerasseg` command: list models, show one, run the demo, train, evaluate, predict,
export, convert, download presets' weights, manage their cache.

Each subcommand lives in its own module with an `add_parser(commands, parents)` function and
the function that runs it; `common` holds what they share and `models` the building and
loading of models for them.
"""

import argparse
import os
import sys

from kerasseg.cli import cache, convert, demo, evaluate, export, info, predict, train
from kerasseg.cli.common import (
    UsageError,
    debug_flag,
    parse_class_map,
    parse_model_arguments,
    run_command,
)

__all__ = ["UsageError", "main", "parse_class_map", "parse_model_arguments"]

# The modules of the subcommands, in the order `kerasseg --help` lists them (info: list, info).
SUBCOMMANDS = (info, demo, train, evaluate, predict, export, convert, cache)


def _parser():
    parser = argparse.ArgumentParser(prog="kerasseg", description="Keras segmentation model zoo")
    commands = parser.add_subparsers(dest="command", required=True)
    parents = [debug_flag()]
    for module in SUBCOMMANDS:
        module.add_parser(commands, parents)
    return parser


def main(argv=None):
    """Run one `kerasseg` command.

    Errors are one line on stderr (`kerasseg COMMAND: error: ...`): status 2 for a problem
    with the input (arguments, files, data, disk), 1 for a training run whose loss became
    NaN or anything unexpected. `--debug` raises instead, with the traceback.

    Args:
        argv: the arguments after `kerasseg` (default: `sys.argv[1:]`).

    Returns:
        The exit status.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    commands = {
        "list": lambda: info.run_list(args),
        "info": lambda: info.run_info(args),
        "demo": lambda: demo.run(args),
        "train": lambda: train.run(args, argv),
        "evaluate": lambda: evaluate.run(args),
        "predict": lambda: predict.run(args),
        "export": lambda: export.run(args),
        "convert": lambda: convert.run(args),
        "download": lambda: cache.run_download(args),
        "cache": lambda: cache.run_cache(args),
    }
    return run_command(args.command, commands[args.command], debug=args.debug)
