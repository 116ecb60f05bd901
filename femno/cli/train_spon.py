"""``femno train spon``."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("spon", help="(being written)")
