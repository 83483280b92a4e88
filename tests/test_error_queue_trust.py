"""Error-queue messages are unsigned by NHN's design: only HER-ids and subject can vouch.

A message on our `_error` queue is recorded as a part's transport error only when it
says it comes from the register's HER-id, to the HER-id we sent from, about a message
of the part's type (DOMAIN.md §5.7); anything else is quarantined, and the plan
says plainly when it acts on such an unauthenticated error.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from iplosctl import receipts
from iplosctl.plan import Plan, plan_submission
from iplosctl.render import RENDERERS
from tests.test_receipts import (  # noqa: F401  (offline, pki: fixtures)
    REGISTER_HER_ID,
    Env,
    FakeBus,
    apprec_body,
    collect,
    error_properties,
    offline,
    pki,
)

UNAUTHENTICATED = "unauthenticated error from the bus"


def _put_error(env: Env, bus: FakeBus, *, subject: str = "KPR_IDE", **props: str | None) -> None:
    ide = env.part("KPR_IDE")
    values = {
        **error_properties(ide, to_her_id=env.manifest.sender.service_her_id),
        **props,
    }
    bus.put(env.error_queue, b"", {k: v for k, v in values.items() if v is not None}, subject)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"fromHerId": "4711"}, "fromHerId '4711' is not " + REGISTER_HER_ID),
        ({"fromHerId": None}, "fromHerId (missing)"),
        ({"toHerId": "900999"}, "toHerId '900999' is not"),
        ({"subject": "KPR_IPL"}, "subject 'KPR_IPL' is not KPR_IDE"),
        ({"subject": "AMQP_SOAP_FAULT"}, "subject 'AMQP_SOAP_FAULT' is not KPR_IDE"),
    ],
    ids=["wrong-sender", "no-sender", "wrong-receiver", "other-part", "soap-fault"],
)
def test_an_error_that_does_not_fit_its_part_is_quarantined_not_recorded(
    offline: tuple[Env, FakeBus],  # noqa: F811
    change: dict[str, str | None],
    named: str,
) -> None:
    env, bus = offline
    changes = dict(change)
    subject = changes.pop("subject", None) or "KPR_IDE"
    _put_error(env, bus, subject=subject, **changes)
    serial = env.lock().serial
    result = collect(env)
    assert env.part("KPR_IDE").state == "sent"  # not flipped by a stranger
    assert env.lock().serial == serial
    assert result.transport_errors == []
    (entry,) = env.quarantine()
    assert entry.kind == receipts.MISMATCHED
    assert named in entry.reason
    assert entry.original_msg_id == env.part("KPR_IDE").msg_id
    # kept in quarantine, so it is taken off the queue
    assert [d.outcome for d in bus.deliveries] == ["accepted"]


def test_a_fitting_error_is_recorded_and_the_plan_calls_it_unauthenticated(
    offline: tuple[Env, FakeBus],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env, bus = offline
    bus.put(env.reply_queue, apprec_body(env, env.part("KPR_IPL")))  # KPR_IPL accepted
    _put_error(env, bus)
    result = collect(env)
    assert [p.state for p in result.transport_errors] == ["transport-error"]
    assert env.quarantine() == []
    planned = plan_submission(env.manifest, today=dt.date(2024, 1, 5))
    assert planned.action == "resubmit"
    assert UNAUTHENTICATED in planned.reason
    assert "transport:invalid-field-value" in planned.reason
    for render in RENDERERS.values():
        assert UNAUTHENTICATED in render(Plan((planned,)))
