"""Real Salesforce data, as published (see data/realworld/README.md), for the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["REALWORLD", "describe_fields", "realworld"]

REALWORLD = Path(__file__).parent / "data" / "realworld"


def realworld(name: str) -> Any:
    """The parsed JSON of the file ``name``."""
    return json.loads((REALWORLD / name).read_text(encoding="utf-8"))


def describe_fields(object_type: str) -> list[dict[str, Any]]:
    """The ``fields`` of a real org's describe of ``object_type`` (Account or Contact)."""
    fields: list[dict[str, Any]] = realworld(f"describe_{object_type.lower()}_cumulusci.json")[
        "fields"
    ]
    return fields
