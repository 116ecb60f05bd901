"""``femno train baseline``."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("baseline", help="(being written)")
