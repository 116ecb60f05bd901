"""``femno train MODEL ...``: one subcommand per model family (equino, spon, baseline, precond).

Each lives in its own module ``femno.cli.train_<model>`` with an ``add_parser(sub)``.
"""

from __future__ import annotations

import importlib

TRAINERS = ("equino", "spon", "geometry", "baseline", "precond")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a neural model (EquiNO, SPON, learned preconditioner)",
                       description="Train a femno model; see `femno train MODEL --help`.")
    tsub = p.add_subparsers(dest="model", metavar="MODEL", required=True)
    for name in TRAINERS:
        importlib.import_module(f"femno.cli.train_{name}").add_parser(tsub)
