from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from iplosctl import __version__, plugins
from iplosctl.errors import PluginError


def test_first_party_plugins_are_registered_by_entry_points(cli) -> None:
    result = cli("plugins")
    assert result.code == 0
    for kind, name in (
        ("source", "xml"),
        ("source", "csv"),
        ("transport", "amqp"),
        ("transport", "directory"),
    ):
        line = next(ln for ln in result.out.splitlines() if ln.split()[:2] == [kind, name])
        assert f"iplosctl {__version__}" in line


def test_pinning_the_plugin_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "xml")
    assert list(plugins.installed("source")) == ["xml"]
    assert plugins.installed("transport") == {}
    with pytest.raises(PluginError, match=r"no transport plugin named 'amqp' .*installed: none"):
        plugins.load("transport", "amqp")


def test_duplicate_names_are_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = [
        EntryPoint("xml", "one:Source", "iplosctl.sources"),
        EntryPoint("xml", "two:Source", "iplosctl.sources"),
    ]
    monkeypatch.setattr(plugins, "entry_points", lambda group: fake)
    with pytest.raises(PluginError, match="two source plugins are named 'xml'"):
        plugins.installed("source")


def test_a_broken_plugin_is_reported_not_crashed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = [EntryPoint("bad", "no_such_module_zz:Thing", "iplosctl.sources")]
    monkeypatch.setattr(plugins, "entry_points", lambda group: fake)
    with pytest.raises(PluginError, match=r"source plugin 'bad' .* failed to load"):
        plugins.load("source", "bad")


def test_core_never_imports_a_plugin_module() -> None:
    import pathlib

    core = pathlib.Path(plugins.__file__).parent
    offenders = [
        str(p)
        for p in core.rglob("*.py")
        if "import iplosctl_" in p.read_text() or "from iplosctl_" in p.read_text()
    ]
    assert offenders == []
