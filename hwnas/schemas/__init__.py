"""JSON Schemas of the files hwnas reads (published, so a third party can produce them too) and
validation against them with `jsonschema`.

`lut.schema.json` latency tables, `arch.schema.json` architectures, `weights.schema.json` the
non-tensor part of model.pt, `preprocessing.schema.json` the preprocessing contract. A number in
these schemas is a finite one: NaN and Infinity (which Python's json module reads) are refused.
The first violation becomes one line naming the file, the key and the fix.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources

from jsonschema import Draft202012Validator, validators
from referencing import Registry, Resource

from ..errors import HwnasError

SCHEMAS = ("lut", "arch", "weights", "preprocessing")
_BASE = "https://hwnas.invalid/schemas/"


def _finite_number(checker, instance) -> bool:
    return Draft202012Validator.TYPE_CHECKER.is_type(instance, "number") and math.isfinite(instance)


_Validator = validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("number", _finite_number)
)


def schema_path(name: str):
    """The schema file of `name` inside the installed package (a Traversable)."""
    if name not in SCHEMAS:
        raise KeyError(f"no schema {name!r}; schemas: {', '.join(SCHEMAS)}")
    return resources.files(__package__).joinpath(f"{name}.schema.json")


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    return json.loads(schema_path(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _validator(name: str, part: str | None = None):
    """A validator of schema `name`, or of its definition `$defs/part` (e.g. one LUT measurement)."""
    registry = Registry().with_resources(
        (_BASE + f"{n}.schema.json", Resource.from_contents(load_schema(n))) for n in SCHEMAS
    )
    schema = load_schema(name) if part is None else {"$ref": f"{_BASE}{name}.schema.json#/$defs/{part}"}
    return _Validator(schema, registry=registry)


_TYPE_NAMES = {"number": "a finite number", "integer": "an integer", "string": "a string", "object": "an object",
               "array": "an array", "boolean": "true or false"}


def _where(error) -> str:
    path = [str(p) for p in error.absolute_path]
    return "/".join(path) if path else "top level"


def _describe(error) -> str:
    value = repr(error.instance)
    value = value if len(value) <= 80 else value[:77] + "..."
    kind = error.validator
    if kind == "type":
        types = [error.validator_value] if isinstance(error.validator_value, str) else error.validator_value
        return f"must be {' or '.join(_TYPE_NAMES.get(t, t) for t in types)}, got {value}"
    if kind in ("minimum", "exclusiveMinimum"):
        sign = ">=" if kind == "minimum" else ">"
        return f"must be {sign} {error.validator_value}, got {value}"
    if kind in ("maximum", "exclusiveMaximum"):
        sign = "<=" if kind == "maximum" else "<"
        return f"must be {sign} {error.validator_value}, got {value}"
    if kind in ("enum", "const"):
        allowed = error.validator_value if kind == "enum" else [error.validator_value]
        return f"must be one of {', '.join(map(repr, allowed))}, got {value}"
    if kind == "pattern":
        return f"{value} does not match {error.schema.get('description') or error.validator_value}"
    if kind == "propertyNames":
        return f"key {value} is malformed"
    return error.message


def first_error(doc, name: str, part: str | None = None) -> str | None:
    """'KEY: what is wrong' of the first violation of schema `name` (or of its definition `part`),
    in document order, or None."""
    errors = list(_validator(name, part).iter_errors(doc))
    if not errors:
        return None
    error = min(errors, key=lambda e: [str(p) for p in e.absolute_path])
    while error.context:  # an anyOf/propertyNames failure: report the innermost cause
        error = min(error.context, key=lambda e: [str(p) for p in e.absolute_path])
    return f"{_where(error)}: {_describe(error)}"


def validate(doc, name: str, source: str, fix: str, error: type[HwnasError] = HwnasError) -> None:
    """Raise `error` ('SOURCE: KEY: problem; FIX') unless `doc` is valid under schema `name`."""
    problem = first_error(doc, name)
    if problem:
        raise error(f"{source}: {problem}; {fix}")
