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


def test_the_pin_cannot_unplug_the_built_in_rule_pack(
    cli, demo_copy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: `IPLOSCTL_LOAD_PLUGINS=xml,amqp` dropped every rule, and a plan of an export
    with test users and a wrong org number said SUBMIT with no findings."""
    export = demo_copy.parent.parent / "examples" / "exports" / "demo-2023.xml"
    export.write_text(export.read_text().replace("310000027", "310000028", 1))  # bad mod 11
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "xml,amqp")
    assert list(plugins.installed("rules")) == ["kpr"]
    result = cli("plan", "--format", "json", demo_copy)
    assert result.code == 1, result.all
    assert '"action": "blocked"' in result.out and '"rule": "org-number"' in result.out
    assert '"rule": "test-person"' in result.out


def test_a_pack_named_like_the_built_in_one_is_not_exempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = [EntryPoint("kpr", "somebody_else:rules", "iplosctl.rules")]
    monkeypatch.setattr(plugins, "entry_points", lambda group: fake)
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "xml")
    assert plugins.installed("rules") == {}


def test_a_plan_with_no_rule_loaded_is_refused(
    cli, demo_copy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zero rules is suspicious: with the rule pack gone (a broken install) plan refuses."""
    real = plugins.entry_points
    monkeypatch.setattr(
        plugins,
        "entry_points",
        lambda group: [] if group == plugins.GROUPS["rules"] else real(group=group),
    )
    result = cli("plan", demo_copy)
    assert result.code == 1
    errors = [ln for ln in result.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no pre-flight rules are loaded" in errors[0], result.all
    assert "0 to submit" in result.out and "BLOCKED" in result.out
