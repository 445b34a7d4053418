"""The ``pointseg`` command line. Each subcommand lives in its own module of ``pointseg.commands``, which imports
nothing heavy until the subcommand runs; this module assembles them, gives every parser its description and its
defaults in the help, and turns errors into one line and an exit code."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pointseg import __version__
from pointseg.commands import (
    app,
    cache,
    config,
    curate,
    demo,
    download,
    evaluate,
    export,
    labels,
    map,
    points,
    predict,
    sample,
    suggest,
    train,
)
from pointseg.io import error_message

COMMANDS = (points, suggest, labels, train, curate, evaluate, predict, map, export, config, cache, download, sample,
            demo, app)
DESCRIPTION = """Land-cover maps from a few clicked points: train a segmentation model on a raster or image tiles,
evaluate it at full resolution, map rasters with it. To begin, copy the sample shipped with pointseg (a Landsat scene
with 40 clicks, image tiles with masks) with "pointseg sample --out sample", then open its scene in the app with
"pointseg app --raster sample/landsat/RGB.byte.tif --points sample/landsat/clicks.gpkg --class-field class --classes
sample/landsat/classes.csv --project landsat-app". "pointseg COMMAND --help" tells more of each command."""


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, each option followed by its default where it has one worth saying (not None, False or an
    empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default in (None, False, argparse.SUPPRESS) or default == []
                or not action.option_strings):
            return text
        shown = " ".join(str(v) for v in default) if isinstance(default, list | tuple) else "%(default)s"
        return f"{text} (default: {shown})"


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += parsers(sub)
    return found


def describe(parser: argparse.ArgumentParser) -> None:
    """Every subcommand's parser of ``parser`` gets a description (its line of help, where it has none) and the
    ``HelpFormatter``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                sub.description = sub.description or (helps.get(name) or "")[:1].upper() + (helps.get(name) or "")[1:]
                describe(sub)
    parser.formatter_class = HelpFormatter


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pointseg", description=DESCRIPTION)
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens, and show a traceback on errors")
    p.add_argument("--version", action="version", version=f"pointseg {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    describe(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = ["pointseg", *argv] if argv is not None else sys.argv  # recorded with each training run
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    created = new_folders(getattr(args, "out", None))
    try:
        args.func(args)
    except KeyboardInterrupt:
        print(getattr(args, "interrupted", "pointseg: interrupted (a training run that reached a checkpoint continues "
                                          "with --resume)"), file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, RuntimeError, FloatingPointError) as e:
        remove_empty(created)
        if args.verbose:
            raise
        print(f"pointseg: error: {error_message(e)}", file=sys.stderr)
        return 2
    return 0


def new_folders(out: str | None) -> list[Path]:
    """The folders an ``--out`` path would create: itself and its missing parents, deepest first (a file's
    parents only, for an ``--out`` with a suffix)."""
    if not out:
        return []
    path = Path(out)
    path = path.parent if path.suffix else path
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that a failed command created and left empty."""
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


if __name__ == "__main__":
    sys.exit(main())
