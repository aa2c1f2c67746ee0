"""Where Client finds the daemon: arguments, environment, .env, the CLI's config file."""

import os

from platform_client import _config


def test_arguments_then_environment_then_files_then_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("PLATFORM_SERVER", "PLATFORM_TOKEN", "PLATFORM_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert _config.resolve(None, None) == ("http://127.0.0.1:8000", None)
    conf = tmp_path / "xdg" / "platform" / "config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('server = "http://from-config:1/"\ntoken = "config-token"\n[other]\nx = 1\n')
    assert _config.resolve(None, None) == ("http://from-config:1", "config-token")
    alt = tmp_path / "alt.toml"
    alt.write_text("platform_server = 'http://alt:2'\n")
    monkeypatch.setenv("PLATFORM_CONFIG", str(alt))
    assert _config.resolve(None, None) == ("http://alt:2", None)
    (tmp_path / ".env").write_text("PLATFORM_SERVER=http://dotenv:3\nexport PLATFORM_TOKEN='dot'\n")
    assert _config.resolve(None, None) == ("http://dotenv:3", "dot")
    monkeypatch.setenv("PLATFORM_SERVER", "http://env:4")
    monkeypatch.setenv("PLATFORM_TOKEN", "env-token")
    assert _config.resolve(None, None) == ("http://env:4", "env-token")
    assert _config.resolve("http://arg:5", "arg") == ("http://arg:5", "arg")


def test_the_current_cli_context_sits_between_dotenv_and_config_toml(tmp_path, monkeypatch):
    import pytest

    pytest.importorskip("tomllib")
    monkeypatch.chdir(tmp_path)
    for var in ("PLATFORM_SERVER", "PLATFORM_TOKEN", "PLATFORM_CONFIG", "PLATFORM_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    d = tmp_path / "xdg" / "platform"
    d.mkdir(parents=True)
    (d / "config.toml").write_text('server = "http://from-config:1"\ntoken = "config-token"\n')
    (d / "contexts.toml").write_text(
        'current = "lab"\n[contexts.lab]\nserver = "http://lab:2"\ntoken = "plt_lab"\n'
        '[contexts.home]\nserver = "http://home:3"\n'
    )
    assert _config.resolve(None, None) == ("http://lab:2", "plt_lab")
    monkeypatch.setenv("PLATFORM_CONTEXT", "home")
    assert _config.resolve(None, None) == ("http://home:3", "config-token")
    monkeypatch.setenv("PLATFORM_CONTEXT", "missing")
    assert _config.resolve(None, None) == ("http://from-config:1", "config-token")
    (tmp_path / ".env").write_text("PLATFORM_TOKEN=dot\n")
    assert _config.resolve(None, None)[1] == "dot"


def test_the_minimal_toml_reader_matches_tomllib(tmp_path, monkeypatch):
    f = tmp_path / "c.toml"
    f.write_text('# comment\nserver = "http://a:1" # trailing\ntoken = \'x\'\nport = 8\n')
    monkeypatch.setitem(__import__("sys").modules, "tomllib", None)
    assert _config._read_toml_top_level(f) == {"server": "http://a:1", "token": "x", "port": "8"}


def test_job_references_read_like_the_cli():
    from platform_client._jobref import parse

    uid = "019af3c2-7b1e-7c4d-9a57-3f2b8c1d0e9f"
    assert parse(uid) == ("id", uid) and parse(uid.upper()) == ("id", uid)
    assert parse("42") == ("number", 42) == parse("#42") == parse(42)
    assert parse("#007") == ("number", 7)
    assert parse("0190") == ("prefix", "0190")
    assert parse("1234567890123") == ("prefix", "1234567890123")
    assert parse("019AF3C2-7b") == ("prefix", "019af3c2-7b")
    for bad in ["", "#", "#0", "#-1", "#4a", "0", "01", "abc", "xyz!", "g000", 0, True]:
        try:
            parse(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
