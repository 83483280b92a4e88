"""init.schema_rules: the manifest schema's own patterns and limits, for checking answers.

`init` re-asks a wrong answer at once instead of letting validate refuse the file
later, so it must accept exactly what the schema accepts. It used to restate five
patterns; now it reads them from `manifest.schema.json` (`manifest_schema()`), the one
place they are defined, so a change there reaches the prompt too.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from iplosctl.manifest.loader import manifest_schema

#: where each checked value lives in the schema (JSON pointers, `$ref`s followed)
NAME = "/properties/metadata/properties/name"
MUNICIPALITY_NUMBER = "/properties/spec/properties/municipality/properties/number"
ORG_NUMBER = "/$defs/orgNumber"
HER_ID = "/$defs/herId"
EPJ_VERSION = "/properties/spec/properties/epj/properties/version"
SOURCE_PLUGIN = "/properties/spec/properties/source/properties/plugin"
SECRET_NAME = "/$defs/secretName"
ENDPOINT_URL = "/properties/spec/properties/endpoint/properties/url"


@functools.cache
def _schema() -> dict[str, Any]:
    return manifest_schema()


def rule(pointer: str) -> dict[str, Any]:
    """The schema object at `pointer`, through `$ref`s; KeyError names a pointer that moved."""
    node: Any = _schema()
    for part in pointer.strip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    while isinstance(node, dict) and "$ref" in node:
        node = rule(str(node["$ref"]).removeprefix("#"))
    if not isinstance(node, dict):
        raise KeyError(pointer)
    return node


@functools.cache
def pattern(pointer: str) -> re.Pattern[str]:
    """The compiled `pattern` of the value at `pointer` (JSON Schema patterns are searches,
    so an anchored schema pattern is needed for a whole-value match; ours all are)."""
    return re.compile(str(rule(pointer)["pattern"]))


def bounds(pointer: str) -> tuple[int, int]:
    """`minimum` and `maximum` of the number at `pointer`."""
    found = rule(pointer)
    return int(found["minimum"]), int(found["maximum"])


def matches(pointer: str, value: str) -> bool:
    """Whether the whole of `value` is what the schema allows at `pointer`."""
    return pattern(pointer).fullmatch(value) is not None
