"""``femno fe2``."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("fe2", help="(being written)")
