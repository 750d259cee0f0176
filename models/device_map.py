"""What ``--device-map`` / ``MODELEDIT_DEVICE_MAP`` accept, parsed without importing torch
(the service validates its settings before it loads anything)."""

from __future__ import annotations

import json


def parse_device_map(text: str | None) -> str | dict[str, str | int] | None:
    """``auto`` and the other accelerate strategies as they are; a JSON object as a map."""
    if not text:
        return None
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"device map: not valid JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise ValueError("device map: a JSON map must be an object {module: device}")
        return value
    return text
