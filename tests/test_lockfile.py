from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from iplosctl import lockfile as lf
from iplosctl.errors import InputError


def sample() -> lf.Lockfile:
    lock = lf.new_lockfile("demo-2023")
    lock.attempts.append(
        lf.Attempt(
            number=1,
            created_at="2024-01-03T08:00:00Z",
            manifest_digest="sha256:m",
            source_digest="sha256:s",
            payload_digest="sha256:p",
            summary={"recipients": 40, "perServiceCode": {"6": "<5", "15": 22}},
            parts=[
                lf.Part("KPR_IPL", "id-1", "sha256:a", journaled_at="2024-01-03T08:00:01Z"),
                lf.Part("KPR_IDE", "id-2", "sha256:b", journaled_at="2024-01-03T08:00:01Z"),
            ],
        )
    )
    return lock


def test_round_trip_and_serial(tmp_path: Path) -> None:
    path = tmp_path / "demo-2023.lock.yaml"
    lock = sample()
    lf.save(path, lock)
    assert lock.serial == 1
    loaded = lf.load(path)
    assert loaded == lock
    lf.save(path, loaded)
    assert lf.load(path).serial == 2  # type: ignore[union-attr]


def test_text_is_deterministic_and_sorted(tmp_path: Path) -> None:
    a, b = sample(), sample()
    b.lineage = a.lineage
    assert lf.dumps(a) == lf.dumps(b)
    text = lf.dumps(a)
    assert text.index("attempts:") < text.index("lineage:") < text.index("submission:")
    assert "'15': 22" in text and "'6': <5" in text


def test_awkward_receipt_text_round_trips(tmp_path: Path) -> None:
    """AppRec texts are copied verbatim: line breaks, quotes, '#', non-ASCII and long
    lines survive a save with the lockfile's emitter (libyaml's, via ruamel.yaml.clib)
    and read back equal to what the pure-Python emitter's text reads back as."""
    from ruamel.yaml import YAML

    lock = sample()
    part = lock.attempts[0].parts[0]
    part.state = "rejected"
    part.receipt = lf.Receipt(
        status="rejected",
        receipt_id="r-1",
        received_at="2024-01-04T10:00:00Z",
        errors=[
            lf.ReceiptError("E31", "2.16.578.1.12.4.1.1.8221", "Feil i «Tjenestetype»: æøå"),
            lf.ReceiptError("T02", "", "line one\nline two: 'quoted' # not a comment", "x" * 300),
        ],
    )
    path = tmp_path / "demo-2023.lock.yaml"
    lf.save(path, lock)
    assert lf.load(path) == lock
    pure = YAML(typ="safe", pure=True)
    pure.default_flow_style = False
    pure.width = 4096
    out = io.StringIO()
    pure.dump(lf._sorted(lf._to_data(lock)), out)
    safe = YAML(typ="safe", pure=True)
    assert safe.load(path.read_text(encoding="utf-8")) == safe.load(out.getvalue())


def test_missing_lockfile_is_none(tmp_path: Path) -> None:
    assert lf.load(tmp_path / "nope.lock.yaml") is None


def test_crash_during_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "demo-2023.lock.yaml"
    lock = sample()
    lf.save(path, lock)
    before = path.read_bytes()
    lock.attempts[0].parts[0].state = "sent"

    def crash(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # ^C between fsync and rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        lf.save(path, lock)
    assert path.read_bytes() == before
    assert lock.serial == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_transitions() -> None:
    part = lf.Part("KPR_IPL", "id", "sha256:x")
    lf.transition(part, "sent")
    lf.transition(part, "accepted")
    with pytest.raises(lf.LockfileError, match="cannot go from accepted to sent"):
        lf.transition(part, "sent")


def test_wrong_version_and_damage(tmp_path: Path) -> None:
    path = tmp_path / "x.lock.yaml"
    path.write_text("lockfileVersion: 9\nsubmission: x\n")
    with pytest.raises(InputError, match="lockfile version 9 is not 1"):
        lf.load(path)
    path.write_text("lockfileVersion: 1\nsubmission: x\n")
    with pytest.raises(InputError, match="damaged lockfile"):
        lf.load(path)
    path.write_text("lockfileVersion: [\n")
    with pytest.raises(InputError, match=r"x\.lock\.yaml:2:1: invalid YAML"):
        lf.load(path)


def test_last_accepted() -> None:
    lock = sample()
    assert lock.last_accepted is None
    for p in lock.attempts[0].parts:
        p.state = "accepted"
    assert lock.last_accepted is lock.attempts[0]
    assert lock.part("id-2") == (lock.attempts[0], lock.attempts[0].parts[1])
