"""``femno train precond``."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("precond", help="(being written)")
