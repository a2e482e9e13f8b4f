"""`memaudit` command line: one module per command group, assembled here.

Commands import their heavy dependencies (scikit-learn, PyTorch, uvicorn) only when they run.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from app.cli import client, demo, evaluate, gc, matching, reembed, report, server, training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memaudit", description="Audit synthetic medical images for leaked training data."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (server, gc, reembed, matching, training, evaluate, report, demo, client):
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
