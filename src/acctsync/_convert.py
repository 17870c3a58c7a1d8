"""The library's own lossless JSON form of its records, on cattrs.

Unlike Salesforce JSON, this form keeps every field value's type: `Decimal`, `date` and
`datetime` are tagged (``{"$decimal": "1.50"}``), so ``structure(unstructure(x)) == x``
for every record. Stores that keep records as JSON use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs
from cattrs import Converter
from cattrs.gen import make_dict_structure_fn

from acctsync._activity import Origin
from acctsync._errors import InvalidRecordError
from acctsync._records import FieldValue

__all__ = ["make_converter"]

_TAGS: dict[str, Callable[[str], FieldValue]] = {
    "$decimal": Decimal,
    "$date": date.fromisoformat,
    "$datetime": datetime.fromisoformat,
}


def _unstructure_value(value: FieldValue) -> Any:
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    return value


def _structure_value(raw: Any, _: object = None) -> FieldValue:
    if isinstance(raw, Mapping):
        if len(raw) == 1:
            ((tag, text),) = raw.items()
            if tag in _TAGS and isinstance(text, str):
                try:
                    value: FieldValue = _TAGS[tag](text)
                except (ValueError, InvalidOperation):
                    raise InvalidRecordError(f"{text!r} is not a valid {tag[1:]}") from None
                return value
        raise InvalidRecordError(f"{raw!r} is not a tagged field value")
    if raw is None or isinstance(raw, str | int | float):
        return raw
    raise InvalidRecordError(f"{type(raw).__name__} is not a field value")


def _structure_datetime(raw: Any, _: object) -> datetime:
    try:
        return datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        raise InvalidRecordError(f"{raw!r} is not an ISO 8601 datetime") from None


def _is_field_value(tp: Any) -> bool:
    return bool(tp == FieldValue)


def _is_field_map(tp: Any) -> bool:
    return bool(tp == Mapping[str, FieldValue])


def make_converter() -> Converter:
    """A new converter between acctsync's records and JSON-ready Python objects.

    It handles `Account`, `Contact`, `Deletion`, `Opportunity`, `Person`, `AccountState`,
    `ChangeDataValue` and `Conversion`. Each call returns a fresh converter the caller may
    extend without affecting anyone else.
    """
    converter = Converter()
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_unstructure_hook_func(_is_field_value, _unstructure_value)
    converter.register_structure_hook_func(_is_field_value, _structure_value)
    converter.register_unstructure_hook_func(
        _is_field_map, lambda fields: {k: _unstructure_value(v) for k, v in fields.items()}
    )
    converter.register_structure_hook_func(_is_field_map, _structure_field_map)
    converter.register_unstructure_hook(Origin, lambda origin: origin.value)
    converter.register_structure_hook_factory(attrs.has, _guarded_record_hook)
    return converter


def _structure_field_map(raw: Any, _: object) -> dict[str, FieldValue]:
    if not isinstance(raw, Mapping):
        raise InvalidRecordError(f"fields must be a JSON object, not {type(raw).__name__}")
    return {str(name): _structure_value(value) for name, value in raw.items()}


def _guarded_record_hook(cls: type[Any], converter: Converter) -> Callable[[Any, Any], Any]:
    inner = make_dict_structure_fn(cls, converter)

    def structure(raw: Any, _: object) -> Any:
        # Whatever is wrong with the input (a missing key, an unknown enum value, a
        # nested error group), the caller gets one InvalidRecordError naming the record.
        if not isinstance(raw, Mapping):
            raise InvalidRecordError(f"{cls.__name__} must be a JSON object")
        try:
            return inner(raw, cls)
        except InvalidRecordError:
            raise
        except Exception as error:
            raise InvalidRecordError(
                f"cannot read a {cls.__name__}: {_describe(error)}"
            ) from error

    return structure


def _describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in error.exceptions)
    if isinstance(error, KeyError):
        return f"missing {error}"
    return str(error) or type(error).__name__
