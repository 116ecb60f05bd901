"""``femno rve``."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("rve", help="(being written)")
