"""What the OpenAPI document says beyond what the models alone produce.

A plugin's models describe their bodies; two rules need help to reach the
document exactly as the server enforces them:

- :func:`refuse_null`: a PATCH field that may be left out but never sent as
  null (typed ``X | None = None`` so that "not given" is ``None``);
- :func:`setting_maximum`: an integer bound that comes from a setting
  (``commands.max_lease_seconds``); the document built for an app carries
  that app's value;
- :func:`setting_enum`: a string that must be one of a setting's list
  (``events.local_calendars``); the document carries that app's names;
- :func:`raw_json_body`: the body of a route that reads the request stream
  itself (to bound its size, to parse it off the event loop) described by a
  model, as if FastAPI had parsed it.

:func:`finish_document` applies them, and writes integer bounds as integers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

#: Extension naming the setting (``section.key``) that bounds an integer; replaced by ``maximum``.
MAXIMUM_SETTING = "x-chronos-maximum-setting"
#: Extension naming the list setting (``section.key``) a string must be one of; replaced by ``enum``.
ENUM_SETTING = "x-chronos-enum-setting"
#: Extension carrying a hand-documented body's model definitions; moved into ``components/schemas``.
DEFINITIONS = "x-chronos-definitions"
COMPONENTS = "#/components/schemas/{model}"

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def refuse_null(*names: str) -> Callable[[dict[str, Any]], None]:
    """``json_schema_extra`` for a model whose ``names`` may be left out but never sent as null.

    The service refuses an explicit null (422); the document says so: the
    fields' ``anyOf`` loses its null branch and the ``default: null``.
    """

    def strip(schema: dict[str, Any]) -> None:
        for name in names:
            prop = schema.get("properties", {}).get(name)
            if prop is None:
                raise KeyError(f"refuse_null: no property {name!r}")
            branches = prop.get("anyOf")
            if branches is not None:
                prop["anyOf"] = [b for b in branches if b != {"type": "null"}]
            prop.pop("default", None)

    return strip


def setting_maximum(setting: str) -> dict[str, Any]:
    """``json_schema_extra`` of an integer whose upper bound is the setting ``section.key``."""
    return {MAXIMUM_SETTING: setting}


def setting_enum(setting: str) -> dict[str, Any]:
    """``json_schema_extra`` of a string that must be one of the list setting ``section.key``."""
    return {ENUM_SETTING: setting}


def restrict_strings(node: dict[str, Any], names: list[str]) -> None:
    """Make the string branch of ``node`` (itself or one of its ``anyOf``) an ``enum`` of ``names``.

    With no names, a string branch inside ``anyOf`` is dropped (only its other
    branches, e.g. null, remain); a lone string becomes an empty ``enum``.
    """
    branches = node.get("anyOf")
    if isinstance(branches, list):
        strings = [b for b in branches if isinstance(b, dict) and b.get("type") == "string"]
        if not names:
            node["anyOf"] = [b for b in branches if b not in strings]
        for branch in strings:
            branch["enum"] = list(names)
    elif node.get("type") == "string":
        node["enum"] = list(names)


def raw_json_body(model: type[BaseModel], description: str = "") -> dict[str, Any]:
    """``openapi_extra`` of a route that reads its JSON body itself, documented as ``model``.

    Example::

        @router.post("/events/import", openapi_extra=raw_json_body(ImportDocument))
        async def import_events(request: Request, ...): raw = await request.body() ...
    """
    schema = model.model_json_schema(ref_template=COMPONENTS, mode="validation")
    definitions = schema.pop("$defs", {})
    definitions[model.__name__] = schema
    body: dict[str, Any] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": COMPONENTS.format(model=model.__name__)}}},
        DEFINITIONS: definitions,
    }
    if description:
        body["description"] = description
    return {"requestBody": body}


def move_definitions(document: dict[str, Any]) -> None:
    """Move the definitions :func:`raw_json_body` attached to operations into ``components/schemas``."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for item in document.get("paths", {}).values():
        for operation in item.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if isinstance(body, dict):
                for name, schema in body.pop(DEFINITIONS, {}).items():
                    components.setdefault(name, schema)


def _setting(sections: dict[str, BaseModel], setting: str) -> Any:
    section, _, key = setting.partition(".")
    return getattr(sections.get(section), key, None)


def finish_document(node: Any, sections: dict[str, BaseModel]) -> None:
    """Resolve setting bounds and enums against ``sections`` and write integer bounds as integers, in place.

    FastAPI's document models hold bounds as floats, and ``2**63 - 1`` as a
    float is ``2**63``: a client trusting it would send an id the server refuses.
    """
    if isinstance(node, list):
        for item in node:
            finish_document(item, sections)
        return
    if not isinstance(node, dict):
        return
    setting = node.pop(MAXIMUM_SETTING, None)
    if isinstance(setting, str):
        value = _setting(sections, setting)
        if isinstance(value, int):
            for target in [node, *node.get("anyOf", [])]:
                if isinstance(target, dict) and target.get("type") == "integer":
                    target["maximum"] = min(value, target.get("maximum", value))
    listed = node.pop(ENUM_SETTING, None)
    if isinstance(listed, str):
        names = _setting(sections, listed)
        if isinstance(names, list):
            restrict_strings(node, [str(n) for n in names])
    if node.get("type") == "integer":
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            bound = node.get(key)
            if isinstance(bound, float) and bound.is_integer():
                node[key] = max(INT64_MIN, min(INT64_MAX, int(bound)))
    for value in node.values():
        finish_document(value, sections)
