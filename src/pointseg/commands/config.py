"""``pointseg config``: the resolved config (the defaults, a ``--config`` file and ``--set`` keys) as YAML, each key
with its line of help: the keys a run takes, where their defaults live (the options class beside each component)."""

from __future__ import annotations

import argparse

from pointseg.commands.options import with_config


def config_text(cfg: dict) -> str:
    """``cfg`` as YAML, each key followed by its help as a comment."""
    import yaml

    from pointseg.config import help_texts

    helps = {**help_texts(), "seed": "every random draw of a run derives from it",
             "datasets": "more datasets trained at once, one head each: name -> the data fields that differ, e.g. "
                         "{dubai: {format: folder, classes: classes.csv}}; each one's root: --data-root NAME=PATH"}
    lines: list[str] = []

    def walk(node: dict, prefix: str, indent: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            note = f"  # {helps[path]}" if path in helps else ""
            if isinstance(value, dict) and value:
                lines.append(f"{indent}{key}:{note}")
                walk(value, f"{path}.", indent + "  ")
                continue
            text = yaml.safe_dump({key: value}, default_flow_style=True, width=10**6).strip()[1:-1]
            lines.append(f"{indent}{text}{note}")

    walk(cfg, "", "")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> str:
    from pointseg.config import load_config

    text = config_text(load_config(args.config, args.set))
    print(text, end="")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("config", help="the config a run would use (defaults, --config, --set), with each key's help")
    with_config(sp)
    sp.set_defaults(func=main)
