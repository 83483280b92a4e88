"""receipts.render: the words a `receipts` run prints, from its `ReceiptsResult`.

The run loop returns a result and decides nothing about wording; the CLI prints these
lines. Everything quoted from outside goes through `privacy.scrub` here, once.
"""

from __future__ import annotations

from iplosctl import privacy
from iplosctl.receipts.model import ReceiptsResult


def summary_line(result: ReceiptsResult) -> str:
    """One line per submission: what this run recorded and what is still awaited."""
    if result.nothing_to_do:
        return f"{result.name}: {result.nothing_to_do}"
    done = [f"{p.type} {p.state}" for p in (*result.recorded, *result.transport_errors)]
    parts = [f"{len(done)} recorded" + (f" ({', '.join(done)})" if done else "")]
    if result.duplicates:
        parts.append(f"{result.duplicates} duplicate(s) ignored")
    if result.reexamined:
        parts.append(f"{result.reexamined} from quarantine now verified")
    if result.quarantined:
        parts.append(f"{len(result.quarantined)} quarantined")
    if result.refused:
        parts.append(f"{len(result.refused)} refused as too large")
    waiting = (
        f"still waiting for {result.outstanding} receipt(s)"
        if result.outstanding
        else "nothing outstanding"
    )
    return f"{result.name}: {', '.join(parts)}; {waiting} (lockfile serial {result.serial})"


def detail_lines(result: ReceiptsResult) -> list[str]:
    """Codes and DN of each recorded error, scrubbed; never OT, which may quote the data."""
    lines: list[str] = []
    for p in result.recorded:
        lines.append(f"  {p.type} {p.msg_id}: {p.state}")
        for e in p.errors:
            lines.append("    " + privacy.scrub(f"{e.code}: {e.text}" if e.text else e.code))
    for p in result.transport_errors:
        lines.append(privacy.scrub(f"  {p.type} {p.msg_id}: transport-error {', '.join(p.codes)}"))
    for q in result.quarantined:
        lines.append(privacy.scrub(f"  quarantined: {q}"))
    lines.extend(f"  {line}" for line in result.refused)
    return lines


def seconds_text(seconds: float) -> str:
    """A wait left, as the progress line says it: `1m05s`, `42s`."""
    whole = max(int(seconds + 0.5), 0)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
