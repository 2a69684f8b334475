"""A small JSON Schema validator for the subset of draft 2020-12 that pareco's manifest schema uses.

``pareco_runtime`` runs on phones and edge boxes with torch and safetensors only, so it cannot
depend on the ``jsonschema`` package. This module implements the keywords the manifest schema
needs, with the same meaning as draft 2020-12 (the test suite cross-checks it against
``jsonschema``): ``type`` (a name or a list of names, ``"null"`` included), ``properties``,
``required``, ``additionalProperties`` (boolean or schema), ``items``, ``enum``, ``const``,
``minimum``, ``maximum``, ``minItems``, ``maxItems``, ``minLength``, ``pattern`` and ``$ref`` to
``#/...`` pointers inside the same document. Boolean schemas (``true`` / ``false``) work too.
Annotation keywords (``$schema``, ``$id``, ``title``, ``description``, ...) are ignored; any other
keyword is refused by :func:`check_schema`, so a schema can never silently rely on a feature this
validator lacks.

Errors carry the JSON path of the offending value, written as ``points[3].alpha[2]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Keywords this validator evaluates.
_ASSERTIONS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minLength",
        "pattern",
        "$ref",
    }
)
# Keywords that carry no assertion and are skipped.
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
    }
)
_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PathPart = str | int


@dataclass(frozen=True)
class SchemaError:
    """One violation: where (``path``, keys and indices from the document root), which keyword, what."""

    path: tuple[PathPart, ...]
    keyword: str
    message: str

    def __str__(self) -> str:
        return f"{format_path(self.path)}: {self.message}"


class ValidationError(ValueError):
    """Raised by :func:`validate`; ``error`` is the first :class:`SchemaError` found."""

    def __init__(self, error: SchemaError) -> None:
        super().__init__(str(error))
        self.error = error


def format_path(path: tuple[PathPart, ...] | list[PathPart]) -> str:
    """Render a JSON path as ``points[3].alpha[2]``; keys that are not identifiers become ``["a b"]``.

    The empty path (the document itself) is written ``(top level)``.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(top level)"


def json_type(value: Any) -> str:
    """The JSON type name of a Python value: null, boolean, integer, number, string, array, object.

    Integers (and floats with no fractional part) are ``integer``; other Python values that JSON
    cannot hold are named by their Python type.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, name: str) -> bool:
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "integer":
        return json_type(value) == "integer"
    return json_type(value) == name


def _is_number(value: Any) -> bool:
    return _is_type(value, "number")


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but booleans never equal numbers (draft 2020-12 ``enum``/``const``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _show(value: Any) -> str:
    """A short rendering of a value for messages."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"schema: only same-document references are supported, got $ref {ref!r}")
    node = root
    for escaped in [t for t in ref[1:].split("/") if t]:
        token = escaped.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(token)]
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            raise ValueError(f"schema: $ref {ref!r} points nowhere")
    return node


def check_schema(schema: Any, _root: Any = None, _where: str = "#") -> None:
    """Raise ``ValueError`` if ``schema`` uses a keyword, type name or reference this module cannot check.

    Walks every subschema (under ``properties``, ``additionalProperties``, ``items`` and ``$defs``)
    and resolves every ``$ref``, so a schema that passes is fully understood by :func:`iter_errors`.
    A node that is neither an object nor a boolean raises ``TypeError``.
    """
    root = schema if _root is None else _root
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise TypeError(f"schema: {_where} is not a schema (expected an object or a boolean)")
    unknown = sorted(set(schema) - _ASSERTIONS - _ANNOTATIONS)
    if unknown:
        raise ValueError(f"schema: {_where} uses unsupported keyword(s) {', '.join(unknown)}")
    types = schema.get("type", [])
    for name in [types] if isinstance(types, str) else types:
        if name not in _TYPES:
            raise ValueError(f"schema: {_where} has unknown type {name!r}")
    if "$ref" in schema:
        _resolve(root, schema["$ref"])
    if "pattern" in schema:
        re.compile(schema["pattern"])
    for key, sub in schema.get("properties", {}).items():
        check_schema(sub, root, f"{_where}/properties/{key}")
    for key, sub in schema.get("$defs", {}).items():
        check_schema(sub, root, f"{_where}/$defs/{key}")
    for keyword in ("additionalProperties", "items"):
        if keyword in schema:
            check_schema(schema[keyword], root, f"{_where}/{keyword}")


def iter_errors(instance: Any, schema: Any) -> Iterator[SchemaError]:
    """Every violation of ``schema`` by ``instance``, in document order, as draft 2020-12 defines them.

    Like ``jsonschema``, all keywords of a schema are evaluated (a wrong ``type`` does not hide a
    failing ``required`` beside it), each failing keyword yields one error at the path of the value
    it judges (``required`` and ``additionalProperties: false`` at the object holding the fields),
    and subschemas under ``properties``, ``items`` and ``additionalProperties`` yield their own errors.
    """
    yield from _errors(instance, schema, schema, ())


def validate(instance: Any, schema: Any) -> None:
    """Return when ``instance`` satisfies ``schema``, else raise :class:`ValidationError` (first error)."""
    for error in iter_errors(instance, schema):
        raise ValidationError(error)


def _errors(value: Any, schema: Any, root: Any, path: tuple[PathPart, ...]) -> Iterator[SchemaError]:
    if schema is True:
        return
    if schema is False:
        yield SchemaError(path, "false", "no value is allowed here")
        return
    if "$ref" in schema:
        yield from _errors(value, _resolve(root, schema["$ref"]), root, path)
    if "type" in schema:
        types = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
        if not any(_is_type(value, t) for t in types):
            yield SchemaError(path, "type", f"expected {' or '.join(types)}, got {json_type(value)}")
    if "enum" in schema and not any(_equal(value, option) for option in schema["enum"]):
        options = ", ".join(_show(o) for o in schema["enum"])
        yield SchemaError(path, "enum", f"expected one of {options}; got {_show(value)}")
    if "const" in schema and not _equal(value, schema["const"]):
        yield SchemaError(path, "const", f"expected {_show(schema['const'])}, got {_show(value)}")
    if _is_number(value):
        if "minimum" in schema and value < schema["minimum"]:
            yield SchemaError(path, "minimum", f"must be >= {schema['minimum']}, got {_show(value)}")
        if "maximum" in schema and value > schema["maximum"]:
            yield SchemaError(path, "maximum", f"must be <= {schema['maximum']}, got {_show(value)}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield SchemaError(path, "minLength", f"must be at least {schema['minLength']} character(s) long")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            message = f"{_show(value)} does not match the pattern {schema['pattern']}"
            yield SchemaError(path, "pattern", message)
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            message = f"needs at least {schema['minItems']} item(s), got {len(value)}"
            yield SchemaError(path, "minItems", message)
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            message = f"allows at most {schema['maxItems']} item(s), got {len(value)}"
            yield SchemaError(path, "maxItems", message)
        if "items" in schema:
            for i, item in enumerate(value):
                yield from _errors(item, schema["items"], root, (*path, i))
    if isinstance(value, dict):
        yield from _object_errors(value, schema, root, path)


def _object_errors(
    value: dict[str, Any], schema: dict[str, Any], root: Any, path: tuple[PathPart, ...]
) -> Iterator[SchemaError]:
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        if key in value:
            yield from _errors(value[key], sub, root, (*path, key))
    for key in schema.get("required", []):
        if key not in value:
            yield SchemaError(path, "required", f"missing required field '{key}'")
    extra = [key for key in value if key not in properties]
    additional = schema.get("additionalProperties", True)
    if additional is False and extra:
        names = ", ".join(f"'{key}'" for key in extra)
        yield SchemaError(path, "additionalProperties", f"unexpected field(s) {names}")
    elif isinstance(additional, dict):
        for key in extra:
            yield from _errors(value[key], additional, root, (*path, key))
