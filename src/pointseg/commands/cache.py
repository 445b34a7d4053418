"""``pointseg cache``: where the decoded-sample cache is and what it holds; emptying it."""

from __future__ import annotations

import argparse

from pointseg.commands.options import with_config


def main(args: argparse.Namespace) -> dict:
    """Where the decoded-sample cache is and what it holds; ``clear`` empties it (or its older part) first."""
    import datetime

    from pointseg import build
    from pointseg.config import load_config
    from pointseg.data.cache import cache_info, clear_cache

    directory, cap_gb = build.cache_location(load_config(args.config, args.set))
    if args.cache_command == "clear":
        samples, size = clear_cache(directory, args.older_than)
        print(f"removed {samples} samples ({size / 1e9:.2f} GB) from {directory}")
    info = cache_info(directory)

    def day(t: float | None) -> str:
        return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"

    cap = f"cap {cap_gb:g} GB (data.cache_max_gb)" if cap_gb else "no cap"
    print(f"cache: {directory}\n{info['samples']} samples in {info['files']} files, {info['bytes'] / 1e9:.2f} GB; "
          f"{cap}\nlast used: oldest {day(info['oldest_use'])}, newest {day(info['newest_use'])}"
          + (f"\n{info['temporary_files']} temporary files of interrupted writes" if info["temporary_files"] else ""))
    return info


def register(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", help="the decoded-sample cache").add_subparsers(dest="cache_command", required=True)
    info = cache.add_parser("info", help="where the cache is and how big it is")
    with_config(info)
    info.set_defaults(func=main)
    clear = cache.add_parser("clear", help="delete cached samples (they are decoded again when needed)")
    clear.add_argument("--older-than", type=float, metavar="DAYS", help="only samples unused for this many days")
    with_config(clear)
    clear.set_defaults(func=main)
