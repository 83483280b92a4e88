"""First-party plugin: AMQP 1.0 over python-qpid-proton with NHN addressing.

Registered through its `iplosctl.transports` entry point like any third-party
plugin. `transport.py` holds the plugin (`AmqpTransport`) and its deliveries;
`connection.py` opens the connection and turns broker failures into
actionable `TransportError`s. Facts it relies on: DOMAIN.md §5, STACK.md §2a,
§2d, §3.
"""

from __future__ import annotations

from .transport import AmqpDelivery, AmqpTransport, receive_address, send_address

__all__ = ["AmqpDelivery", "AmqpTransport", "receive_address", "send_address"]
