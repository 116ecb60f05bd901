"""``femno train equino``."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("equino", help="(being written)")
