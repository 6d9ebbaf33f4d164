"""Configuration: YAML file, CHRONOS__ environment overrides, validation messages, plugin sections."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from chronos.app import create_app
from chronos.host import PluginError
from chronos.plugin import SettingsSection
from chronos.settings import ConfigError, load_settings
from kernel_support import make_plugin, run_cli, write_config


class SmtpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)


class DemoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retries: int = Field(3, ge=0, description="How often to retry.")
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)


def demo_plugin():
    return make_plugin(register_settings=lambda: [SettingsSection("demo", DemoSettings)])


def problems(exc_info) -> list[str]:
    return exc_info.value.problems


def only_line(exc_info) -> str:
    lines = problems(exc_info)
    assert len(lines) == 1, lines
    assert "\n" not in lines[0]
    return lines[0]


# -- sources and merging ---------------------------------------------------------------


def test_yaml_and_env_merge_with_env_winning(tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml", {"server": {"host": "10.0.0.1", "port": 9001}, "logging": {"level": "debug"}}
    )
    s = load_settings(cfg, env={"CHRONOS__SERVER__PORT": "9100", "CHRONOS__LOGGING__FORMAT": "console"})
    assert s.server.host == "10.0.0.1"  # from the file, kept
    assert s.server.port == 9100  # env wins over the file
    assert s.logging.level == "debug" and s.logging.format == "console"


def test_env_names_are_case_insensitive(tmp_path):
    s = load_settings(None, env={"chronos__Server__PORT": "9200", "CHRONOS__database__BUSY_TIMEOUT_MS": "77"})
    assert s.server.port == 9200
    assert s.database.busy_timeout_ms == 77


def test_env_json_values_and_whole_sections(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"server": {"host": "10.0.0.2"}})
    env = {
        "CHRONOS__SERVER": '{"port": 9300}',  # a whole section as JSON merges with the file
        "CHRONOS__PLUGINS__DISABLED": '["a", "b"]',
        "CHRONOS__AUTH__MAX_KEY_LIFETIME_DAYS": "null",
    }
    s = load_settings(cfg, env=env)
    assert (s.server.host, s.server.port) == ("10.0.0.2", 9300)
    assert s.plugins.disabled == ["a", "b"]
    assert s.auth.max_key_lifetime_days is None


def test_config_path_from_chronos_config_and_explicit_wins(tmp_path):
    a = write_config(tmp_path / "a.yaml", {"server": {"port": 1111}})
    b = write_config(tmp_path / "b.yaml", {"server": {"port": 2222}})
    assert load_settings(None, env={"CHRONOS_CONFIG": str(a)}).server.port == 1111
    assert load_settings(b, env={"CHRONOS_CONFIG": str(a)}).server.port == 2222


def test_defaults_without_any_file():
    s = load_settings(None, env={"CHRONOS_CONFIG": ""})
    assert s.database.url == "sqlite+aiosqlite:///data/chronos.db"
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8000)


def test_nested_plugin_keys_from_env_and_file(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"demo": {"smtp": {"host": "mail.example.org"}}})
    s = load_settings(cfg, env={"CHRONOS__DEMO__SMTP__PORT": "2525", "CHRONOS__DEMO__RETRIES": "7"})
    app = create_app(s, plugins=[("demo", demo_plugin())], env={})
    section = app.state.chronos.section("demo")
    assert section.smtp.host == "mail.example.org"
    assert section.smtp.port == 2525
    assert section.retries == 7


# -- every error kind: one line with key, origin and expectation -------------------------


@pytest.mark.parametrize(
    ("data", "env", "expected"),
    [
        ({"server": {"port": "abc"}}, {}, ["server.port:", "valid integer", "got 'abc'", "[FILE]"]),
        ({}, {"CHRONOS__SERVER__PORT": "abc"}, ["server.port:", "valid integer", "[env CHRONOS__SERVER__PORT]"]),
        ({"server": {"port": 70000}}, {}, ["server.port:", "less than or equal to 65535", "got 70000", "[FILE]"]),
        ({"logging": {"level": "verbose"}}, {}, ["logging.level:", "'debug', 'info', 'warning' or 'error'", "[FILE]"]),
        ({"server": {"prot": 80}}, {}, ["server.prot:", "unknown key", "did you mean 'port'", "[FILE]"]),
        ({}, {"CHRONOS__SERVER__HOTS": "x"}, ["server.hots:", "did you mean 'host'", "[env CHRONOS__SERVER__HOTS]"]),
        (
            {"database": {"url": "mysql://db"}},
            {},
            ["database.url:", "sqlite+aiosqlite://", "got 'mysql://db'", "[FILE]"],
        ),
        ({"server": 8000}, {}, ["server:", "expected a mapping", "[FILE]"]),
        ({}, {"CHRONOS__SCHEDULER": "often"}, ["scheduler:", "expected a mapping", "[env CHRONOS__SCHEDULER]"]),
        ({}, {"CHRONOS__SERVER": '{"port": "x"}'}, ["server.port:", "valid integer", "[env CHRONOS__SERVER]"]),
        ({"plugins": {"strict": "maybe"}}, {}, ["plugins.strict:", "valid boolean", "[FILE]"]),
    ],
)
def test_each_error_kind_is_one_actionable_line(tmp_path, data, env, expected):
    cfg = write_config(tmp_path / "c.yaml", data)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, env=env)
    line = only_line(exc)
    for part in expected:
        assert part.replace("FILE", str(cfg)) in line, line


def test_all_problems_are_reported_together(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"server": {"port": "x", "prot": 1}, "logging": {"level": "loud"}})
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, env={"CHRONOS__DATABASE__POOL_SIZE": "0"})
    keys = sorted(line.split(":", 1)[0] for line in problems(exc))
    assert keys == ["database.pool_size", "logging.level", "server.port", "server.prot"]


def test_malformed_yaml_names_line_and_column(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: 80\n   host: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, env={})
    assert only_line(exc).startswith(f"{cfg}:3:8: malformed YAML")


def test_top_level_must_be_a_mapping(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- server\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, env={})
    assert "expected a mapping of sections" in only_line(exc)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path / "nope.yaml", env={})
    assert "config file not found" in only_line(exc)


def test_unknown_section_gets_a_suggestion(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"servre": {"port": 1}, "dmeo": {}})
    with pytest.raises(ConfigError) as exc:
        create_app(load_settings(cfg, env={}), plugins=[("demo", demo_plugin())], env={})
    lines = sorted(problems(exc))
    assert lines[0].startswith("dmeo: unknown section (did you mean 'demo'?)") and str(cfg) in lines[0]
    assert lines[1].startswith("servre: unknown section (did you mean 'server'?)")


# -- plugin sections ---------------------------------------------------------------------


def test_plugin_section_errors_name_key_origin_and_expectation(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"demo": {"retries": -1, "smtp": {"hots": "x"}}})
    with pytest.raises(ConfigError) as exc:
        create_app(
            load_settings(cfg, env={"CHRONOS__DEMO__SMTP__PORT": "none-such"}),
            plugins=[("demo", demo_plugin())],
            env={},
        )
    lines = sorted(problems(exc))
    assert len(lines) == 3, lines
    assert lines[0].startswith("demo.retries: input should be greater than or equal to 0") and f"[{cfg}]" in lines[0]
    assert lines[1].startswith("demo.smtp.hots: unknown key (did you mean 'host'?)") and f"[{cfg}]" in lines[1]
    assert lines[2].startswith("demo.smtp.port:") and "[env CHRONOS__DEMO__SMTP__PORT]" in lines[2]


class LenientNested(BaseModel):
    host: str = "localhost"


class LenientSettings(BaseModel):
    """No ``extra`` policy: pydantic alone would drop unknown keys silently."""

    greeting: str = "hi"
    nested: LenientNested | None = None


class OpenSettings(BaseModel):
    model_config = ConfigDict(extra="allow")
    greeting: str = "hi"


def test_unknown_plugin_keys_are_errors_unless_the_model_allows_them(tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml", {"lenient": {"greting": "x", "nested": {"hots": "y"}}, "open": {"anything": 1}}
    )
    plugins = [
        ("lenient", make_plugin(register_settings=lambda: [SettingsSection("lenient", LenientSettings)])),
        ("open", make_plugin(register_settings=lambda: [SettingsSection("open", OpenSettings)])),
    ]
    with pytest.raises(ConfigError) as exc:
        create_app(load_settings(cfg, env={}), plugins=plugins, env={})
    assert sorted(problems(exc)) == [
        f"lenient.greting: unknown key (did you mean 'greeting'?) [{cfg}]",
        f"lenient.nested.hots: unknown key (did you mean 'host'?) [{cfg}]",
    ]
    cfg = write_config(tmp_path / "c.yaml", {"open": {"anything": 1}})
    app = create_app(load_settings(cfg, env={}), plugins=plugins, env={})
    assert app.state.chronos.section("open").model_extra == {"anything": 1}


def test_plugin_section_must_be_a_mapping(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"demo": "on"})
    with pytest.raises(ConfigError) as exc:
        create_app(load_settings(cfg, env={}), plugins=[("demo", demo_plugin())], env={})
    assert only_line(exc).startswith("demo: expected a mapping of keys, got str")


def test_plugin_named_like_a_kernel_section_stops_startup():
    with pytest.raises(PluginError, match="'database' collides with the kernel's configuration section"):
        create_app(load_settings(None, env={}), plugins=[("database", make_plugin())], env={})


def test_plugin_declaring_a_kernel_section_stops_startup():
    rogue = make_plugin(register_settings=lambda: [SettingsSection("server", DemoSettings)])
    with pytest.raises(PluginError, match="'rogue' declares settings section 'server', a kernel section"):
        create_app(load_settings(None, env={}), plugins=[("rogue", rogue)], env={})


def test_plugin_section_must_carry_the_plugin_name():
    rogue = make_plugin(register_settings=lambda: [SettingsSection("other", DemoSettings)])
    with pytest.raises(PluginError, match="must be named after it"):
        create_app(load_settings(None, env={}), plugins=[("rogue", rogue)], env={})


# -- `chronos config check` ------------------------------------------------------------------


def test_config_check_cli_exits_2_with_one_line_per_problem(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"server": {"prot": 80}, "logging": {"level": "verbose"}})
    res = run_cli("config", "check", config=cfg, env={"CHRONOS__SERVER__PORT": "abc"})
    assert res.returncode == 2, res
    lines = sorted(res.stderr.strip().splitlines())
    assert lines == sorted(
        [
            f"config error: logging.level: input should be 'debug', 'info', 'warning' or 'error', got 'verbose' [{cfg}]",
            "config error: server.port: input should be a valid integer, unable to parse string as an integer, got 'abc'"
            " [env CHRONOS__SERVER__PORT]",
            f"config error: server.prot: unknown key (did you mean 'port'?) [{cfg}]",
        ]
    )
    assert res.stdout == ""


def test_config_check_cli_malformed_yaml_and_plugin_section(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [1\n", encoding="utf-8")
    res = run_cli("config", "check", config=bad)
    assert res.returncode == 2
    assert res.stderr.startswith(f"config error: {bad}:2:1: malformed YAML")

    cfg = write_config(tmp_path / "c.yaml", {"plugins": {"enabled": ["hello"]}, "hello": {"greting": "Hi"}})
    res = run_cli("config", "check", config=cfg)
    assert res.returncode == 2
    assert res.stderr.strip() == f"config error: hello.greting: unknown key (did you mean 'greeting'?) [{cfg}]"

    ok = write_config(tmp_path / "ok.yaml", {"plugins": {"enabled": ["hello"]}, "hello": {"greeting": "Hi"}})
    res = run_cli("config", "check", config=ok)
    assert res.returncode == 0, res.stderr
    assert "plugins enabled: hello" in res.stdout
