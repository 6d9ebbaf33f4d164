"""JSON Schemas generated from the models: the configuration and public payloads."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, create_model

from chronos.context import PluginContext
from chronos.host import PluginHost
from chronos.settings import KernelSettings, RawConfig, Settings


def _default_host() -> tuple[PluginHost, PluginContext]:
    settings = Settings(kernel=KernelSettings(), raw=RawConfig(data={}, path=None))
    ctx = PluginContext(settings)
    host = PluginHost(settings, env={})
    host.load(ctx)
    return host, ctx


def config_schema(host: PluginHost) -> dict[str, Any]:
    fields: dict[str, Any] = {name: (f.annotation, f) for name, f in KernelSettings.model_fields.items()}
    for name, section in sorted(host.sections.items()):
        fields[name] = (section.model | None, None)
    model: type[BaseModel] = create_model("ChronosConfig", **fields)  # type: ignore[call-overload]
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Chronos Engine configuration (config/chronos.yaml)"
    schema["additionalProperties"] = False
    return schema


def generate_all() -> dict[str, dict[str, Any]]:
    host, _ctx = _default_host()
    out = {"config.schema.json": config_schema(host)}
    for _plugin, rec in host.get("register_schemas"):
        schema = rec.model.model_json_schema(by_alias=True)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{rec.name}.schema.json"] = schema
    return out
