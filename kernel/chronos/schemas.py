"""JSON Schemas generated from the models: the configuration and public payloads."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, create_model

from chronos.context import PluginContext
from chronos.host import PluginHost
from chronos.settings import KernelSettings, PluginsSettings, RawConfig, Settings


def _default_host(plugins: list[str] | None = None) -> tuple[PluginHost, PluginContext]:
    """A host with every installed plugin, or only the named ones."""
    kernel = KernelSettings(plugins=PluginsSettings(enabled=plugins))
    settings = Settings(kernel=kernel, raw=RawConfig(data={}, path=None))
    ctx = PluginContext(settings)
    host = PluginHost(settings, env={})
    host.load(ctx)
    return host, ctx


def config_schema(host: PluginHost) -> dict[str, Any]:
    fields: dict[str, Any] = {name: (f.annotation, f) for name, f in KernelSettings.model_fields.items()}
    for name, section in sorted(host.sections.items()):
        fields[name] = (section.model | None, None)
    model: type[BaseModel] = create_model("ChronosConfig", **fields)
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Chronos Engine configuration (config/chronos.yaml)"
    schema["additionalProperties"] = False
    return schema


def generate_all(host: PluginHost | None = None, plugins: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every exported schema by file name, for ``host`` (default: every installed plugin, or ``plugins``)."""
    if host is None:
        host, _ctx = _default_host(plugins)
    out = {"config.schema.json": config_schema(host)}
    for _plugin, rec in host.schemas():
        schema = rec.model.model_json_schema(by_alias=True)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{rec.name}.schema.json"] = schema
    return out


EXAMPLE_HEADER = """\
# Chronos Engine configuration: every key with its default and what it does.
# Generated from the settings models by `chronos config example`; do not edit by hand.
#
# Copy what you want to change into config/chronos.yaml (or a file named by
# --config / CHRONOS_CONFIG). Every key can also be set in the environment as
# CHRONOS__<SECTION>__<KEY>=value (case-insensitive, JSON for lists and
# mappings); the environment wins over the file. Each plugin owns the section
# named after it.
"""


def config_example(host: PluginHost | None = None, plugins: list[str] | None = None) -> str:
    """``config/chronos.example.yaml``: every kernel and plugin key, described, at its default.

    For ``host``, or a host with every installed plugin, or only ``plugins`` (names).
    """
    if host is None:
        host, _ctx = _default_host(plugins)
    out = [EXAMPLE_HEADER.rstrip("\n")]
    for name, finfo in KernelSettings.model_fields.items():
        out.append("")
        out.extend(_comment(finfo.description or "", 0))
        out.append(f"{name}:")
        out.extend(_example_fields(finfo.annotation, (name,), 2))
    for name, section in sorted(host.sections.items()):
        info = host.infos.get(name)
        dist = f" ({info.distribution})" if info is not None and info.distribution else ""
        out.append("")
        doc = (section.model.__doc__ or "").strip().splitlines()
        out.extend(_comment(f"Plugin {name}{dist}." + (f" {doc[0].strip()}" if doc else ""), 0))
        out.append(f"{name}:")
        out.extend(_example_fields(section.model, (name,), 2))
    return "\n".join(out).rstrip() + "\n"


def _example_fields(model: Any, path: tuple[str, ...], indent: int) -> list[str]:
    import typing

    from pydantic_core import PydanticUndefined, to_jsonable_python

    from chronos.settings import ENV_PREFIX, _nested_model

    pad = " " * indent
    lines: list[str] = []
    for fname, finfo in model.model_fields.items():
        key = finfo.alias or fname
        env = ENV_PREFIX + "__".join(p.upper() for p in (*path, key))
        text = finfo.description or ""
        if typing.get_origin(finfo.annotation) is typing.Literal:
            text += f" One of: {', '.join(map(str, typing.get_args(finfo.annotation)))}."
        nested = _nested_model(finfo.annotation)
        required = finfo.default is PydanticUndefined and finfo.default_factory is None
        lines.extend(_comment(text, indent, suffix=f"[env {env}]"))
        if required:
            lines.append(f"{pad}# {key}:   (required, no default)")
            continue
        default = finfo.get_default(call_default_factory=True)
        if nested is not None and isinstance(default, BaseModel):
            lines.append(f"{pad}{key}:")
            lines.extend(_example_fields(nested, (*path, key), indent + 2))
            continue
        value = default.model_dump(mode="json", by_alias=True) if isinstance(default, BaseModel) else default
        lines.append(f"{pad}{key}: {_yaml_value(to_jsonable_python(value))}")
    return lines


def _yaml_value(value: Any) -> str:
    import yaml

    # Dumped inside a one-element flow list so scalars, lists and mappings all stay on one line.
    dumped = yaml.safe_dump([value], default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return dumped[1:-1]


def _comment(text: str, indent: int, suffix: str = "") -> list[str]:
    import textwrap

    width = 110 - indent
    lines = textwrap.wrap(text.strip(), width=width)
    if suffix:
        if lines and len(lines[-1]) + 1 + len(suffix) <= width:
            lines[-1] += " " + suffix
        else:
            lines.append(suffix)
    pad = " " * indent
    return [f"{pad}# {line}" for line in lines]
