"""The contract-test kit: what a source, transport or rule pack runs against itself.

iplosctl/plugins.py and iplosctl/rules/engine.py give each plugin kind a
Protocol, but a Protocol only checks names. The promises that keep a
submission safe are behaviour: a source streams and never puts a person into
an error; a transport's `send` returns only once the broker has the message,
and a delivery it hands out stays on the queue until it is accepted; a rule
is pure, has a stable id and a source, and says nothing personal. Each
`check_*` function drives a real plugin through those promises and raises
`ContractViolation` (an AssertionError, so pytest shows it as a failure)
with one sentence naming the plugin, the promise and what happened instead.

The first-party plugins run this kit in tests/test_plugin_contracts.py; a
third party calls the same functions from its own tests (README, "Writing a
plugin"). The kit needs no pytest, and it never skips a check silently: what
it cannot check without help (a peer on the transport's endpoint, a large
export for the streaming check) is a required argument.
"""

from __future__ import annotations

from iplosctl.testing._common import ContractViolation
from iplosctl.testing.rules import check_rule_pack, rule_context, sample_recipients
from iplosctl.testing.sources import check_source, check_source_rejects, check_source_streams
from iplosctl.testing.transports import TransportEndpoint, check_transport, sample_message

__all__ = [
    "ContractViolation",
    "TransportEndpoint",
    "check_rule_pack",
    "check_source",
    "check_source_rejects",
    "check_source_streams",
    "check_transport",
    "rule_context",
    "sample_message",
    "sample_recipients",
]
