"""The small SOQL `FakeSalesforce` serves, and how its filters and orderings read a row.

``SELECT f, ... FROM o [WHERE c AND ...] [ORDER BY f [ASC|DESC], ...] [LIMIT n]``, where a
selected ``f`` is a field or ``FIELDS(ALL|STANDARD|CUSTOM)`` (or ``COUNT()`` alone), and
a condition is
``Field op literal`` (``= != < <= > >=``) or ``Field IN (literal, ...)``.
`Parser` turns the text into a `Soql`, with Salesforce's MALFORMED_QUERY messages for
anything else; the query handler then checks each literal against its field's type
(`filter_literal`) and keeps the rows that `matches` passes, ordered by `sort_key`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

from attrs import frozen

from acctsync._errors import InvalidRecordError
from acctsync._ids import normalize_id
from acctsync._records import FieldValue
from acctsync.testing.salesforce._describe import (
    COMPOUND_TYPES,
    ID_TYPES,
    NOT_TEXT,
    NUMBER_TYPES,
    ApiError,
    Described,
    Row,
    malformed,
)

_TOKEN: Final = re.compile(
    r"""\s*(?:
      (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<number>[+-]?\d+(?:\.\d+)?)
    | (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<op>!=|<=|>=|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_RESERVED: Final = re.compile(
    r"SELECT|FROM|WHERE|AND|OR|NOT|IN|LIKE|ORDER|BY|ASC|DESC|NULLS|LIMIT|OFFSET|GROUP|HAVING"
    r"|TRUE|FALSE|NULL",
    re.IGNORECASE,
)
_ESCAPES: Final = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
}
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


# SOQL and SOSL Reference, "COUNT() and COUNT(fieldName)": the query answers the number
# of rows it matches in totalSize, and no records.
COUNT: Final = "COUNT()"
# SOQL and SOSL Reference, "SELECT" (FIELDS()): the groups of fields FIELDS() selects.
FIELD_GROUPS: Final = ("ALL", "STANDARD", "CUSTOM")


@frozen
class Soql:
    object_type: str
    fields: tuple[str, ...]  # a field's name, or a group as written: FIELDS(ALL)
    where: tuple[tuple[str, str, tuple[FieldValue, ...]], ...]  # (field, operator, literals)
    order: tuple[tuple[str, bool], ...]  # (field, descending)
    limit: int | None


def _unescape(match: re.Match[str]) -> str:
    char = match.group(1)
    if char not in _ESCAPES:
        raise malformed(f"Invalid string literal: illegal escape sequence '\\{char}'")
    return _ESCAPES[char]


class Parser:
    """``SELECT f, ... FROM o [WHERE c AND ...] [ORDER BY f [ASC|DESC], ...] [LIMIT n]``."""

    def __init__(self, soql: str) -> None:
        text, position = soql.strip(), 0
        self._tokens: list[tuple[str, str]] = []
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.lastgroup is None:
                raise malformed(f"unexpected token: '{text[position:].split()[0]}'")
            self._tokens.append((match.lastgroup, match.group(match.lastgroup)))
            position = match.end()
        self._at = 0

    def parse(self) -> Soql:
        self._keyword("SELECT")
        fields = [self._selected()]
        while self._punct(","):
            fields.append(self._selected())
        self._keyword("FROM")
        object_type = self._name()
        where: list[tuple[str, str, tuple[FieldValue, ...]]] = []
        if self._keyword("WHERE", optional=True):
            where.append(self._condition())
            while self._keyword("AND", optional=True):
                where.append(self._condition())
        order: list[tuple[str, bool]] = []
        if self._keyword("ORDER", optional=True):
            self._keyword("BY")
            while True:
                name = self._name()
                descending = self._keyword("DESC", optional=True)
                if not descending:
                    self._keyword("ASC", optional=True)
                order.append((name, descending))
                if not self._punct(","):
                    break
        limit = None
        if self._keyword("LIMIT", optional=True):
            kind, text = self._next()
            if kind != "number" or not text.isdigit():
                raise malformed(f"unexpected token: '{text}'")
            limit = int(text)
        if self._at < len(self._tokens):
            raise malformed(f"unexpected token: '{self._tokens[self._at][1]}'")
        if COUNT in fields and len(fields) > 1:
            # SOQL and SOSL Reference, "COUNT() and COUNT(fieldName)": COUNT() stands alone.
            raise malformed("COUNT() must be the only element in the SELECT list")
        return Soql(object_type, tuple(fields), tuple(where), tuple(order), limit)

    def _next(self) -> tuple[str, str]:
        if self._at == len(self._tokens):
            raise malformed("unexpected token: <EOF>")
        self._at += 1
        return self._tokens[self._at - 1]

    def _keyword(self, word: str, *, optional: bool = False) -> bool:
        if self._at < len(self._tokens):
            kind, text = self._tokens[self._at]
            if kind == "word" and text.upper() == word:
                self._at += 1
                return True
        if optional:
            return False
        raise malformed(f"unexpected token: '{self._next()[1]}', expected {word}")

    def _punct(self, char: str) -> bool:
        if self._at < len(self._tokens) and self._tokens[self._at] == ("punct", char):
            self._at += 1
            return True
        return False

    def _selected(self) -> str:
        name = self._name()
        if name.upper() == "COUNT" and self._punct("("):
            if not self._punct(")"):
                raise malformed(f"unexpected token: '{self._next()[1]}', expected )")
            return COUNT
        if name.upper() != "FIELDS" or not self._punct("("):
            return name
        kind, group = self._next()
        if kind != "word" or group.upper() not in FIELD_GROUPS:
            raise malformed(f"unexpected token: '{group}'")
        if not self._punct(")"):
            raise malformed(f"unexpected token: '{self._next()[1]}', expected )")
        return f"FIELDS({group.upper()})"

    def _name(self) -> str:
        kind, text = self._next()
        if kind != "word" or _RESERVED.fullmatch(text):
            raise malformed(f"unexpected token: '{text}'")
        return text

    def _condition(self) -> tuple[str, str, tuple[FieldValue, ...]]:
        name = self._name()
        if self._keyword("IN", optional=True):
            if not self._punct("("):
                raise malformed(f"unexpected token: '{self._next()[1]}', expected (")
            literals = [self._literal()]
            while self._punct(","):
                literals.append(self._literal())
            if not self._punct(")"):
                raise malformed(f"unexpected token: '{self._next()[1]}', expected )")
            return name, "IN", tuple(literals)
        kind, op = self._next()
        if kind != "op":
            raise malformed(f"unexpected token: '{op}'")
        literal = self._literal()
        if literal is None and op not in ("=", "!="):
            raise malformed(f"invalid operator on null: '{op}'")
        return name, op, (literal,)

    def _literal(self) -> FieldValue:
        kind, text = self._next()
        if kind == "string":
            return re.sub(r"\\(.)", _unescape, text[1:-1], flags=re.DOTALL)
        if kind == "number":
            return Decimal(text) if "." in text else int(text)
        if kind == "datetime":
            return datetime.fromisoformat(text).astimezone(UTC)
        if kind == "date":
            try:
                return date.fromisoformat(text)
            except ValueError:
                raise malformed(f"invalid date: {text}") from None
        word = {"TRUE": True, "FALSE": False, "NULL": None}
        if kind == "word" and text.upper() in word:
            return word[text.upper()]
        raise malformed(f"unexpected token: '{text}'")


def filter_literal(entry: Described, literal: FieldValue) -> FieldValue:
    """``literal`` as a value of ``entry``'s field, or INVALID_FIELD if it is none."""
    kind, name = entry["type"], entry["name"]
    if kind in COMPOUND_TYPES:
        raise ApiError(400, "INVALID_FIELD", f"field '{name}' can not be filtered in a query")
    if literal is None:
        return None
    if isinstance(literal, bool):
        fits = kind == "boolean"
    elif isinstance(literal, datetime):
        fits = kind == "datetime"
    elif isinstance(literal, date):
        fits = kind == "date"
    elif isinstance(literal, int | Decimal):
        fits = kind in NUMBER_TYPES
    else:
        fits = kind not in NOT_TEXT
    if not fits:
        rule = "not be enclosed in quotes" if kind in NOT_TEXT else "be enclosed in quotes"
        raise ApiError(
            400,
            "INVALID_FIELD",
            f"value of filter criterion for field '{name}' must be of type {kind}"
            f" and should {rule}",
        )
    if kind in ID_TYPES:
        try:
            return normalize_id(literal)
        except InvalidRecordError:
            raise ApiError(
                400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {literal}"
            ) from None
    return literal


def _comparable(kind: str, value: Any) -> Any:
    # Text compares case-insensitively in SOQL; IDs do not.
    if isinstance(value, str) and kind not in ID_TYPES:
        return value.casefold()
    return value


def matches(kind: str, value: Any, op: str, literals: tuple[FieldValue, ...]) -> bool:
    if op == "IN":
        return any(matches(kind, value, "=", (literal,)) for literal in literals)
    (literal,) = literals
    if literal is None or value is None:
        # Only = and != see nulls: null = null, and null != 'x'.
        if op == "=":
            return value is literal
        return op == "!=" and value is not literal
    try:
        return _COMPARE[op](_comparable(kind, value), _comparable(kind, literal))
    except TypeError:  # a value of another type than the field's, as a test may put
        return False


def sort_key(entry: Described) -> Callable[[Row], tuple[Any, ...]]:
    kind, name = entry["type"], entry["name"]

    def key(row: Row) -> tuple[Any, ...]:
        value = row.get(name)
        # Nulls sort first ascending and last descending, as in SOQL by default.
        return (0,) if value is None else (1, _comparable(kind, value))

    return key
