"""A griffe extension that gives attrs classes the ``__init__`` attrs generates.

griffe reads the source, where an attrs class has no ``__init__``: without this, the API
reference would show ``Account`` and ``SyncEngine`` with no parameters. For each class
that attrs made, the extension asks attrs at run time which attributes the generated
``__init__`` takes (name without its leading underscore, keyword-only or not, default or
factory) and adds an ``__init__`` with those parameters, annotated as the source
annotates the attributes. A default whose source names something private is shown as
``...``. A class that cannot be imported is left as it is.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import attrs
import griffe

_PRIVATE = re.compile(r"(?<![\w.])_\w")
_ATTRS_FIELD = frozenset({"attrs.field", "attr.field", "attr.ib", "attr.attrib"})
_PLAIN_FACTORIES = {dict: "{}", list: "[]", tuple: "()", set: "set()", frozenset: "frozenset()"}


class AttrsInit(griffe.Extension):
    """Add the ``__init__`` of every attrs class of a package, as attrs generates it."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Walk the package once it is loaded."""
        _walk(pkg, set())


def _walk(obj: griffe.Module | griffe.Class, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if isinstance(obj, griffe.Class) and "__init__" not in obj.members:
        _add_init(obj)
    for member in list(obj.members.values()):
        if not member.is_alias and isinstance(member, griffe.Module | griffe.Class):
            _walk(member, seen)


def _decorated_by_attrs(cls: griffe.Class) -> bool:
    return any(
        isinstance(decorator.value, griffe.Expr)
        and decorator.value.canonical_path.startswith(("attrs.", "attr."))
        for decorator in cls.decorators
    )


def _runtime_class(cls: griffe.Class) -> type | None:
    if not _decorated_by_attrs(cls):  # import nothing for the other classes
        return None
    try:
        found: object = importlib.import_module(cls.module.path)
        for part in cls.path.removeprefix(cls.module.path + ".").split("."):
            found = getattr(found, part)
    except Exception:  # a module that does not import: document it without __init__
        return None
    return found if isinstance(found, type) and attrs.has(found) else None


def _add_init(cls: griffe.Class) -> None:
    runtime = _runtime_class(cls)
    if runtime is None:
        return
    parameters = [
        griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword),
    ]
    for attribute in attrs.fields(runtime):
        if not attribute.init:
            continue
        member = cls.members.get(attribute.name)
        annotation = member.annotation if isinstance(member, griffe.Attribute) else None
        parameters.append(
            griffe.Parameter(
                attribute.alias,
                annotation=annotation,
                kind=griffe.ParameterKind.keyword_only
                if attribute.kw_only
                else griffe.ParameterKind.positional_or_keyword,
                default=_default(attribute, member),
            )
        )
    init = griffe.Function(
        "__init__",
        lineno=0,
        endlineno=0,
        parent=cls,
        parameters=griffe.Parameters(*parameters),
        returns="None",
    )
    cls.set_member("__init__", init)


def _default(attribute: attrs.Attribute[Any], member: object) -> str | griffe.Expr | None:
    """The default as the source writes it, or as attrs holds it."""
    default = attribute.default
    if default is attrs.NOTHING:
        return None
    written = _written_default(member)
    if written is not None:
        return "..." if _PRIVATE.search(str(written)) else written
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        factory: object = getattr(default, "factory", None)
        if factory in _PLAIN_FACTORIES:
            return _PLAIN_FACTORIES[factory]
        name = getattr(factory, "__name__", "")
        return "..." if not name or name.startswith(("_", "<")) else f"{name}()"
    if default is None or isinstance(default, bool | int | float | str):
        return repr(default)
    return "..."


def _written_default(member: object) -> str | griffe.Expr | None:
    """The default the source writes, if it writes one plainly.

    ``x = value`` gives ``value``, ``x = field(default=d)`` gives ``d`` and
    ``field(factory=f)`` gives ``f()``; anything else (a helper's call) gives None.
    """
    if not isinstance(member, griffe.Attribute) or member.value is None:
        return None
    value = member.value
    if not isinstance(value, griffe.ExprCall):
        return value
    if value.canonical_path not in _ATTRS_FIELD:
        return None
    for argument in value.arguments:
        if isinstance(argument, griffe.ExprKeyword):
            if argument.name == "default":
                return argument.value
            if argument.name == "factory":
                factory = argument.value
                plain = {"dict": "{}", "list": "[]", "tuple": "()"}.get(str(factory))
                if plain or isinstance(factory, str):
                    return plain or f"{factory}()"
                return griffe.ExprCall(function=factory, arguments=[])
    return None
