"""The ``pointseg`` command line: points simulate/import, labels inspect, train, pretrain, curate, evaluate,
predict, suggest, map, export, config, cache, download, sample, demo. Each subcommand lives in its own module of
``pointseg.commands``; this module assembles them and turns errors into one line and an exit code."""

from __future__ import annotations

import argparse
import logging
import sys

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

COMMANDS = (points, suggest, labels, train, curate, evaluate, predict, map, export, config, cache, download, sample,
            demo, app)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pointseg", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = ["pointseg", *argv] if argv is not None else sys.argv  # recorded with each training run
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        args.func(args)
    except KeyboardInterrupt:
        print(getattr(args, "interrupted", "pointseg: interrupted (a training run that reached a checkpoint continues "
                                          "with --resume)"), file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, RuntimeError, FloatingPointError) as e:
        if args.verbose:
            raise
        print(f"pointseg: error: {error_message(e)}", file=sys.stderr)
        return 2
    return 0


def error_message(e: BaseException) -> str:
    """``<file>: <reason>`` for OS errors (permission, disk full, ...), the message itself otherwise."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


if __name__ == "__main__":
    sys.exit(main())
