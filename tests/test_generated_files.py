"""Committed generated files equal what the code generates: JSON Schemas and the example config.

When one fails, regenerate and commit: ``chronos schemas export && chronos config example``.
"""

from __future__ import annotations

import json

import yaml

from chronos.schemas import config_example, generate_all
from chronos.settings import load_settings
from kernel_support import ROOT, invoke_cli

SCHEMAS = ROOT / "schemas"
EXAMPLE = ROOT / "config" / "chronos.example.yaml"
HINT = "run `chronos schemas export && chronos config example` and commit the result"


def test_committed_schemas_equal_the_generated_ones():
    generated = generate_all()
    assert "config.schema.json" in generated
    committed = {p.name for p in SCHEMAS.glob("*.schema.json")}
    assert set(generated) <= committed, f"schemas missing from schemas/: {sorted(set(generated) - committed)}; {HINT}"
    assert committed <= set(generated), f"schemas/ holds files nothing generates: {sorted(committed - set(generated))}"
    for name, schema in generated.items():
        on_disk = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        assert on_disk == schema, f"schemas/{name} is stale; {HINT}"


def test_config_schema_describes_every_kernel_key():
    schema = generate_all()["config.schema.json"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert {"server", "database", "auth", "scheduler", "plugins", "logging"} <= set(props)
    server = schema["$defs"]["ServerSettings"]["properties"]
    assert server["port"]["maximum"] == 65535 and server["port"]["description"]


def test_committed_example_config_equals_the_generated_one():
    assert EXAMPLE.read_text(encoding="utf-8") == config_example(), f"config/chronos.example.yaml is stale; {HINT}"


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
    res = invoke_cli("schemas", "export", "--out", str(tmp_path / "schemas"))
    assert res.returncode == 0, res.stderr
    res2 = invoke_cli("config", "example", "--out", str(tmp_path / "example.yaml"))
    assert res2.returncode == 0, res2.stderr
    assert (tmp_path / "example.yaml").read_text(encoding="utf-8") == EXAMPLE.read_text(encoding="utf-8")
    for path in (tmp_path / "schemas").iterdir():
        assert path.read_text(encoding="utf-8") == (SCHEMAS / path.name).read_text(encoding="utf-8"), path.name
