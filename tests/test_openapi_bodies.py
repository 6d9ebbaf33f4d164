"""Every request body and 2xx JSON answer in the OpenAPI document names its fields.

An API client learns the shape of a body from the document alone; an object
schema without ``properties`` tells it nothing. The walk follows ``$ref``,
``allOf``/``anyOf``/``oneOf``, array ``items`` and map values
(``additionalProperties``) from every operation's request body and 2xx JSON
response, and reports each object schema that has no named properties.

Fields whose values genuinely are free-form maps are listed in ``FREE_FORM``
with the reason. An entry that no longer names an offender fails the test too,
so the list only ever shrinks with the code.
"""

from __future__ import annotations

from typing import Any

import pytest

from chronos.app import create_app
from chronos.settings import load_settings

SCHEMAS = "#/components/schemas/"

#: JSON pointers (into the OpenAPI document) of object schemas that are free-form maps on purpose.
FREE_FORM: dict[str, str] = {
    # -- templates: caller-defined data -----------------------------------------------------
    f"{SCHEMAS}RenderIn/properties/variables": "template variables: any JSON the template reads",
    f"{SCHEMAS}UseIn/properties/variables": "template variables: any JSON the template reads",
    f"{SCHEMAS}UseIn/properties/context": "free-form context stored with the usage row",
    f"{SCHEMAS}UsageOut/properties/context": "the free-form context given to /use",
    f"{SCHEMAS}TestSendIn/properties/variables": "template variables: any JSON the template reads",
    # variables_json is a JSON Schema document written by the caller.
    f"{SCHEMAS}EmailTemplateIn/properties/variables_json": "a JSON Schema document",
    f"{SCHEMAS}WebhookTemplateIn/properties/variables_json": "a JSON Schema document",
    f"{SCHEMAS}EventTemplateIn/properties/variables_json": "a JSON Schema document",
    f"{SCHEMAS}EmailTemplateOut/properties/variables_json": "a JSON Schema document",
    f"{SCHEMAS}WebhookTemplateOut/properties/variables_json": "a JSON Schema document",
    f"{SCHEMAS}EventTemplateOut/properties/variables_json": "a JSON Schema document",
    f"{SCHEMAS}EmailExportedTemplate/properties/variables_json": "a JSON Schema document",
    f"{SCHEMAS}WebhookExportedTemplate/properties/variables_json": "a JSON Schema document",
    f"{SCHEMAS}EventExportedTemplate/properties/variables_json": "a JSON Schema document",
    f"{SCHEMAS}TemplatePatch/properties/variables_json/anyOf/0": "a JSON Schema document",
    f"{SCHEMAS}VariablesOut/properties/variables_json": "a JSON Schema document",
    f"{SCHEMAS}VariableInfo/properties/schema/anyOf/0": "the variable's JSON Schema",
    # Health checks are named by the kernel and by plugins; each value is a typed HealthCheckOut.
    f"{SCHEMAS}HealthReport/properties/checks": "check name -> its result",
    # Header names of a webhook template are chosen by its author.
    f"{SCHEMAS}WebhookContent/properties/headers": "header name -> value template",
    f"{SCHEMAS}WebhookContentPatch/properties/headers/anyOf/0": "header name -> value template",
    f"{SCHEMAS}WebhookOutput/properties/headers": "header name -> rendered value",
    # -- webhooks: an event type's schema is a document ----------------------------------
    f"{SCHEMAS}EventTypeOut/properties/payload_schema": "a JSON Schema document (an event type's data)",
    # -- mail ------------------------------------------------------------------------------
    f"{SCHEMAS}TemplatedSendIn/properties/variables": "template variables: any JSON the template reads",
    f"{SCHEMAS}DirectSendIn/properties/variables": "template variables (not read without a template)",
    f"{SCHEMAS}DeliveryOut/properties/refused_recipients/anyOf/0": "address -> the server's refusal",
    f"{SCHEMAS}DeliveryDetail/properties/refused_recipients/anyOf/0": "address -> the server's refusal",
    # -- events ----------------------------------------------------------------------------
    # Event metadata is free-form by contract (CanonicalEvent.metadata).
    f"{SCHEMAS}CreatedEvent/properties/metadata": "event metadata (free-form by contract)",
    f"{SCHEMAS}EventCreate/properties/metadata": "event metadata (free-form by contract)",
    f"{SCHEMAS}ImportEvent/properties/metadata": "event metadata (free-form by contract)",
    f"{SCHEMAS}EventPatch/properties/metadata/anyOf/0": "event metadata (free-form by contract)",
    # -- commands --------------------------------------------------------------------------
    # TODO(commands): params are checked against the whitelist's JSON Schema; confirm free-form.
    f"{SCHEMAS}EnqueueIn/properties/params": "command parameters",
    f"{SCHEMAS}CommandOut/properties/params": "command parameters",
    # Param names are chosen per entry; each value is a typed spec (null, regex or enum).
    f"{SCHEMAS}ParamSpecs": "param name -> its spec",
    # TODO(commands): parameter templates; confirm free-form.
    f"{SCHEMAS}WorkflowIn/properties/params_template_json": "parameter template",
    f"{SCHEMAS}WorkflowOut/properties/params_template_json": "parameter template",
    f"{SCHEMAS}WorkflowPatch/properties/params_template_json/anyOf/0": "parameter template",
    # TODO(commands): a problem document; should reference a typed problem model.
    f"{SCHEMAS}CompletionOutcome/properties/problem/anyOf/0": "untyped problem",
    # A worker's result is any JSON; its object branch names storable keys, not fixed ones.
    f"{SCHEMAS}StorableJson/anyOf/5": "a JSON object of the worker's own (storable keys and values)",
    # -- kernel ----------------------------------------------------------------------------
    # A source's cursor is its own (an ETag, a sync token, a ctag): opaque to the kernel.
    f"{SCHEMAS}SyncRunOut/properties/cursor/anyOf/0": "opaque per-source cursor",
    # Scope name -> description: the names are registered by the enabled plugins.
    "#/paths/~1api~1v1~1scopes/get/responses/200/content/application~1json/schema": "scope name -> description",
}


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _is_free_object(schema: dict[str, Any]) -> bool:
    if any(k in schema for k in ("allOf", "anyOf", "oneOf", "$ref")):
        return False
    types = schema.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types)
    if types is None and "additionalProperties" in schema:
        is_object = True
    return is_object and not schema.get("properties")


def _walk(doc: dict[str, Any], schema: Any, where: str, seen: set[str], found: dict[str, str], route: str) -> None:
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref")
    if isinstance(ref, str):
        assert ref.startswith(SCHEMAS), f"{where}: unexpected $ref {ref}"
        if ref not in seen:
            seen.add(ref)
            _walk(doc, doc["components"]["schemas"][ref[len(SCHEMAS) :]], ref, seen, found, route)
        return
    if _is_free_object(schema):
        found.setdefault(where, route)
    for key in ("allOf", "anyOf", "oneOf", "prefixItems"):
        for i, sub in enumerate(schema.get(key) or []):
            _walk(doc, sub, f"{where}/{key}/{i}", seen, found, route)
    for name, sub in (schema.get("properties") or {}).items():
        _walk(doc, sub, f"{where}/properties/{_escape(name)}", seen, found, route)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _walk(doc, schema[key], f"{where}/{key}", seen, found, route)


def _json_bodies(op: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for ctype, media in ((op.get("requestBody") or {}).get("content") or {}).items():
        out.append((f"requestBody/content/{_escape(ctype)}/schema", media.get("schema")))
    for status, answer in (op.get("responses") or {}).items():
        if not str(status).startswith("2"):
            continue
        for ctype, media in (answer.get("content") or {}).items():
            if ctype == "application/json" or ctype.endswith("+json"):
                out.append((f"responses/{status}/content/{_escape(ctype)}/schema", media.get("schema")))
    return out


@pytest.fixture(scope="module")
def offenders() -> dict[str, str]:
    app = create_app(load_settings(None, env={}), env={})
    doc = app.openapi()
    found: dict[str, str] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for tail, schema in _json_bodies(op):
                where = f"#/paths/{_escape(path)}/{method}/{tail}"
                _walk(doc, schema, where, set(), found, f"{method.upper()} {path}")
    return found


def test_every_body_names_its_fields(offenders: dict[str, str]) -> None:
    untyped = {where: route for where, route in offenders.items() if where not in FREE_FORM}
    listing = "\n".join(f"  {where}  (first seen in {route})" for where, route in sorted(untyped.items()))
    assert not untyped, f"object schemas without properties (type them, or allowlist a free-form map):\n{listing}"


def test_allowlist_is_current(offenders: dict[str, str]) -> None:
    stale = sorted(set(FREE_FORM) - set(offenders))
    assert not stale, "FREE_FORM entries that no longer name a free-form object (remove them):\n" + "\n".join(
        f"  {where}" for where in stale
    )
