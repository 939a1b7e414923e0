"""Settings given as text, ``KEY=VALUE``: how ``saccade train --set``, ``--prior-arg`` and the
example scripts read configuration fields.

A dotted key sets a field of a nested section: ``where.box_min=32`` is
``{"where": {"box_min": 32}}``. A value is ``true``, ``false`` or ``none``; a number or
comma-separated numbers (``0.5,1,1``, a list); JSON (``[1, 2]``, ``{"spread": 0.2}``, ``"7"``
for text that looks like a number); or else text. Text given to a section names its kind
(``where=cells``). ``config.updated`` applies such settings to a SaccadeConfig.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

WORDS = {"true": True, "false": False, "none": None}
KIND = "kind"  # the field that text given to a section sets


def parse_value(text: str) -> object:
    """The value that ``text`` spells (see the module's docstring)."""
    if text.strip().lower() in WORDS:
        return WORDS[text.strip().lower()]
    try:
        numbers = [_number(part) for part in text.split(",")]
    except ValueError:
        pass
    else:
        return numbers[0] if len(numbers) == 1 else numbers
    try:
        return json.loads(text)
    except ValueError:
        return text


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_setting(text: str) -> tuple[str, object]:
    """``"KEY=VALUE"`` as ``(key, value)``; ValueError without a key and an ``=``."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise ValueError(f"expected KEY=VALUE (e.g. kl_weight=0.1), got {text!r}")
    return key.strip(), parse_value(value)


def nest(pairs: Iterable[tuple[str, object]]) -> dict[str, object]:
    """``(key, value)`` pairs as a dict, a dotted key as nested dicts; a later pair overrides an
    earlier one. Text given to a section names its kind, as ``config.where_from`` reads it:
    ``where=cells`` with ``where.learn=false`` is ``{"where": {"kind": "cells", "learn": False}}``.
    ValueError for a key given both fields and a value other than text."""
    settings: dict[str, object] = {}
    for key, value in pairs:
        *sections, name = key.split(".")
        level = settings
        for depth, section in enumerate(sections):
            current = level.setdefault(section, {})
            if isinstance(current, str):
                current = level[section] = {KIND: current}
            if not isinstance(current, dict):
                both = ".".join(sections[: depth + 1])
                raise ValueError(f"{both} is given both the value {current!r} and fields ({key})")
            level = current
        current = level.get(name)
        if isinstance(current, dict) and isinstance(value, str):
            current[KIND] = value
        elif isinstance(current, dict) and not isinstance(value, dict):
            raise ValueError(f"{key} is given both fields and the value {value!r}")
        else:
            level[name] = value
    return settings


def parse_settings(texts: Iterable[str]) -> dict[str, object]:
    """``KEY=VALUE`` texts as nested settings: ``parse_setting`` and ``nest``."""
    return nest(parse_setting(text) for text in texts)
