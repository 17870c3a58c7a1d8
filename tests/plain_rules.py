"""Rules restated plainly for the tests' models, sharing no code with the engine."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from acctsync import FieldValue

__all__ = ["same"]


def same(a: FieldValue, b: FieldValue) -> bool:
    """Whether a field kept its value, as Salesforce compares values."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    numbers = (int, float, Decimal)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return a == b
    if isinstance(a, datetime) or isinstance(b, datetime):
        return isinstance(a, datetime) and isinstance(b, datetime) and a == b
    return type(a) is type(b) and a == b
