"""Committed generated files equal what the code generates: JSON Schemas and the example config.

They describe the kernel and this repository's own plugins (``REPO_PLUGINS``),
whatever else is installed next to them. When one fails, regenerate and
commit: ``python3.11 scripts/dev.py generate``.
"""

from __future__ import annotations

import json
import textwrap
from importlib.metadata import EntryPoint

import yaml

import chronos.host
from chronos.schemas import config_example, generate_all
from chronos.settings import load_settings
from kernel_support import ROOT, invoke_cli, repo_plugins

SCHEMAS = ROOT / "schemas"
EXAMPLE = ROOT / "config" / "chronos.example.yaml"
HINT = "run `python3.11 scripts/dev.py generate` and commit the result"
REPO_PLUGINS = repo_plugins()


def test_generated_files_describe_only_the_repository_plugins():
    assert {"commands", "events", "ics", "mail", "normalize", "templates"} <= set(REPO_PLUGINS)
    assert "hello" not in REPO_PLUGINS  # the plugin template is an example, not part of the product


def test_an_extra_installed_plugin_leaves_the_comparison_equal(tmp_path, monkeypatch):
    (tmp_path / "chronos_extra_probe.py").write_text(
        textwrap.dedent(
            """
            from pydantic import BaseModel

            from chronos.plugin import JsonSchema, SettingsSection, hookimpl


            class ExtraSettings(BaseModel):
                level: int = 1


            @hookimpl
            def register_settings():
                return [SettingsSection("extra", ExtraSettings)]


            @hookimpl
            def register_schemas():
                return [JsonSchema("extra", ExtraSettings)]
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    real = chronos.host.entry_points

    def with_extra(**kwargs):
        found = list(real(**kwargs))
        if kwargs.get("group") == chronos.host.GROUP:
            found.append(EntryPoint("extra", "chronos_extra_probe", chronos.host.GROUP))
        return found

    monkeypatch.setattr(chronos.host, "entry_points", with_extra)
    assert "extra" in chronos.host.installed_plugins()
    assert "extra.schema.json" in generate_all()  # installed, so every-plugin generation sees it
    test_committed_schemas_equal_the_generated_ones()
    test_committed_example_config_equals_the_generated_one()


def test_committed_schemas_equal_the_generated_ones():
    generated = generate_all(plugins=REPO_PLUGINS)
    assert "config.schema.json" in generated
    committed = {p.name for p in SCHEMAS.glob("*.schema.json")}
    assert set(generated) <= committed, f"schemas missing from schemas/: {sorted(set(generated) - committed)}; {HINT}"
    assert committed <= set(generated), f"schemas/ holds files nothing generates: {sorted(committed - set(generated))}"
    for name, schema in generated.items():
        on_disk = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        assert on_disk == schema, f"schemas/{name} is stale; {HINT}"


def test_config_schema_describes_every_kernel_key():
    schema = generate_all(plugins=REPO_PLUGINS)["config.schema.json"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert {"server", "database", "auth", "scheduler", "plugins", "logging"} <= set(props)
    server = schema["$defs"]["ServerSettings"]["properties"]
    assert server["port"]["maximum"] == 65535 and server["port"]["description"]


def test_committed_example_config_equals_the_generated_one():
    generated = config_example(plugins=REPO_PLUGINS)
    assert EXAMPLE.read_text(encoding="utf-8") == generated, f"config/chronos.example.yaml is stale; {HINT}"


def test_example_config_documents_every_key_and_is_valid():
    text = EXAMPLE.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    settings = load_settings(EXAMPLE, env={})
    kernel = settings.kernel.model_dump(by_alias=True)
    for section, values in kernel.items():
        assert data[section] == json.loads(json.dumps(values)), section
        for key in values:
            assert f"[env CHRONOS__{section.upper()}__{key.upper()}]" in text
    # Every line that sets a key is preceded by its description.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":") and i > 0:
            assert lines[i - 1].strip().startswith("#"), f"undocumented key at line {i + 1}: {line}"
    # With every installed plugin, the example passes validation as it is.
    from chronos.app import create_app

    create_app(settings, env={})


def test_cli_writes_the_same_files(tmp_path):
    only = [arg for name in REPO_PLUGINS for arg in ("--plugin", name)]
    res = invoke_cli("schemas", "export", "--out", str(tmp_path / "schemas"), *only)
    assert res.returncode == 0, res.stderr
    res2 = invoke_cli("config", "example", "--out", str(tmp_path / "example.yaml"), *only)
    assert res2.returncode == 0, res2.stderr
    assert (tmp_path / "example.yaml").read_text(encoding="utf-8") == EXAMPLE.read_text(encoding="utf-8")
    for path in (tmp_path / "schemas").iterdir():
        assert path.read_text(encoding="utf-8") == (SCHEMAS / path.name).read_text(encoding="utf-8"), path.name
