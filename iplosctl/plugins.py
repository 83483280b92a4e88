"""Plugin kinds and their discovery through entry points.

First-party plugins under `plugins/` register exactly as a third party's
would, so the core never imports a plugin module by name. Like datasette,
`IPLOSCTL_LOAD_PLUGINS` pins the set (comma-separated names; empty means
none), and two plugins of one kind with the same name are fatal rather than
silently shadowing each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from iplosctl.errors import PluginError

#: kind → entry-point group
GROUPS: dict[str, str] = {
    "source": "iplosctl.sources",
    "transport": "iplosctl.transports",
    "rules": "iplosctl.rules",
}
LOAD_PLUGINS_ENV = "IPLOSCTL_LOAD_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    """One installed plugin, as `iplosctl plugins` lists it."""

    kind: str
    name: str
    target: str
    distribution: str
    version: str


def _pinned() -> set[str] | None:
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _entry_points(kind: str) -> dict[str, EntryPoint]:
    if kind not in GROUPS:
        raise PluginError(f"unknown plugin kind {kind!r} (kinds: {', '.join(GROUPS)})")
    pinned = _pinned()
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUPS[kind]):
        if pinned is not None and ep.name not in pinned:
            continue
        if ep.name in found and found[ep.name].value != ep.value:
            raise PluginError(
                f"two {kind} plugins are named {ep.name!r} ({found[ep.name].value} and "
                f"{ep.value}): uninstall one of them"
            )
        found[ep.name] = ep
    return found


def installed(kind: str) -> dict[str, PluginInfo]:
    """Plugins of one kind by name, without importing them."""
    out = {}
    for name, ep in sorted(_entry_points(kind).items()):
        dist = ep.dist
        out[name] = PluginInfo(
            kind=kind,
            name=name,
            target=ep.value,
            distribution=dist.name if dist else "?",
            version=dist.version if dist else "?",
        )
    return out


def all_installed() -> list[PluginInfo]:
    """Every installed plugin of every kind."""
    return [info for kind in GROUPS for info in installed(kind).values()]


def load(kind: str, name: str) -> Any:
    """Import and return the object a plugin's entry point names."""
    eps = _entry_points(kind)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise PluginError(f"no {kind} plugin named {name!r} is installed (installed: {known})")
    try:
        return eps[name].load()
    except Exception as exc:  # a broken third-party plugin must not look like our bug
        raise PluginError(
            f"{kind} plugin {name!r} ({eps[name].value}) failed to load: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
