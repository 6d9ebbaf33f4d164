"""`chronos config check` reports every problem at once and never echoes a secret."""

from __future__ import annotations

from kernel_support import run_cli, write_config


def test_kernel_and_plugin_section_problems_are_reported_together(tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        {"server": {"prot": 80}, "plugins": {"enabled": ["hello"]}, "hello": {"greting": "Hi"}},
    )
    res = run_cli("config", "check", config=cfg)
    assert res.returncode == 2, res
    assert sorted(res.stderr.strip().splitlines()) == [
        f"config error: hello.greting: unknown key (did you mean 'greeting'?) [{cfg}]",
        f"config error: server.prot: unknown key (did you mean 'port'?) [{cfg}]",
    ]
    assert res.stdout == ""


def test_a_database_url_password_is_never_echoed(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"database": {"url": "mysql://bob:hunter2@db.example/chronos"}})
    res = run_cli("config", "check", config=cfg)
    assert res.returncode == 2
    assert "hunter2" not in res.stderr + res.stdout
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("config error: database.url: expected a URL starting with sqlite+aiosqlite://")
    assert "mysql://bob:***@db.example/chronos" in line

    res = run_cli("config", "check", env={"CHRONOS__DATABASE__URL": "pg://app:t0ps3cret@10.0.0.5/chronos"})
    assert res.returncode == 2 and "t0ps3cret" not in res.stderr
    assert "[env CHRONOS__DATABASE__URL]" in res.stderr


def test_the_smtp_password_is_never_echoed(tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        {"plugins": {"enabled": ["mail"]}, "mail": {"smtp": {"host": "smtp.example", "password": 918273645}}},
    )
    res = run_cli("config", "check", config=cfg)
    assert res.returncode == 2
    assert "918273645" not in res.stderr + res.stdout
    assert "config error: mail.smtp.password:" in res.stderr
