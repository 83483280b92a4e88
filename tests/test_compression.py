"""Compressed RefDoc (MsgHead v1.2 `RefDoc/Compression`, issue 13 item 10): what we emit
validates against the official XSD, reads back to the same payload byte for byte, the
compressed size is what the plan promises, and a receiver refuses broken or oversized
content instead of inflating it."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from iplosctl.errors import PayloadError
from iplosctl.payload.compression import (
    COMPRESSION_CODE,
    GzipSink,
    Tee,
    base64_size,
    decompress_content,
    gzip_bytes,
)
from iplosctl.payload.msghead import (
    MSGHEAD_NS,
    build_msghead,
    load_schemas,
    parse_msghead,
    validate_msghead,
)
from tests.reference import XSD_DIR

REPO = Path(__file__).resolve().parents[1]
EXPORT_XSD = REPO / "iplosctl" / "formats" / "iplos-export-v1.xsd"
DEMO_EXPORT = REPO / "examples" / "exports" / "demo-2023.xml"
MH = f"{{{MSGHEAD_NS}}}"


def _args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "msg_type": "KPR_IPL",
        "msg_type_dn": "IPLOS-rapportering til KPR",
        "msg_id": "3f0b1c9e-8a55-5c0e-9d6f-0a1b2c3d4e5f",
        "gen_date": dt.datetime(2024, 2, 1, 9, 30, tzinfo=dt.UTC),
        "sender_org_name": "Bø kommune",
        "sender_org_number": "999999999",
        "sender_her_id": "8000001",
        "sender_service_name": "Saksbehandling",
        "sender_service_her_id": "8000002",
        "receiver_name": "KPR",
        "receiver_her_id": "8000100",
        "payload": gzip_bytes(DEMO_EXPORT.read_bytes()),
        "compression": COMPRESSION_CODE,
    }
    args.update(overrides)
    return args


def test_compressed_msghead_validates_against_the_official_xsd_and_reads_back() -> None:
    schema = load_schemas(XSD_DIR, [EXPORT_XSD])
    xml = build_msghead(**_args())
    validate_msghead(xml, schema)
    refdoc = etree.fromstring(xml).find(f"{MH}Document/{MH}RefDoc")
    assert refdoc is not None
    assert refdoc.find(f"{MH}Compression").get("V") == "gzip"  # type: ignore[union-attr]
    assert refdoc.findtext(f"{MH}MimeType") == "application/xml"
    assert parse_msghead(xml).payload == DEMO_EXPORT.read_bytes()


def test_a_refdoc_that_says_compression_but_holds_xml_is_refused() -> None:
    plain = build_msghead(**_args(payload=DEMO_EXPORT.read_bytes(), compression=None))
    tampered = plain.replace(b"<Content>", b'<Compression V="gzip" DN="gzip"/>\n      <Content>', 1)
    with pytest.raises(PayloadError, match="not a Base64Container"):
        parse_msghead(tampered)


def test_gzip_sink_gives_the_bytes_gzip_bytes_gives_and_gzip_reads() -> None:
    data = DEMO_EXPORT.read_bytes() * 3
    kept: list[bytes] = []

    class Keep:
        def write(self, chunk: bytes, /) -> int:
            kept.append(chunk)
            return len(chunk)

    sink = GzipSink(Keep())  # type: ignore[arg-type]
    also = GzipSink()
    tee = Tee(sink, also)
    for at in range(0, len(data), 1000):
        tee.write(data[at : at + 1000])
    assert sink.finish() == also.finish() == len(b"".join(kept))
    assert b"".join(kept) == gzip_bytes(data)
    assert gzip.decompress(b"".join(kept)) == data
    assert sink.size < len(data) / 3


@pytest.mark.parametrize("crosses_at", [0, 2500, 10**9])
def test_a_lazy_sink_compresses_only_a_part_that_crosses_and_then_exactly_as_eager(
    crosses_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compression only when needed (issue 13): a part at or under `only_over` is never
    compressed; one that crosses gives the eager sink's bytes, including after the sink
    stopped holding plain text (a small buffer here, so that path runs too)."""
    from iplosctl.payload import compression

    data = DEMO_EXPORT.read_bytes() * 3
    if crosses_at == 10**9:
        monkeypatch.setattr(compression, "LAZY_BUFFER_BYTES", 4000)
    kept: list[bytes] = []

    class Keep:
        def write(self, chunk: bytes, /) -> int:
            kept.append(chunk)
            return len(chunk)

    under = GzipSink(only_over=len(data))  # exactly at the limit: fits, not compressed
    lazy = GzipSink(Keep(), only_over=crosses_at)  # type: ignore[arg-type]
    tee = Tee(under, lazy)
    for at in range(0, len(data), 1000):
        tee.write(data[at : at + 1000])
    if crosses_at == 10**9:  # past the buffer, even a part that fits is compressed
        assert under.compressed and under.finish() == len(gzip_bytes(data))
    else:
        assert under.finish() == 0 and not under.compressed
    assert lazy.compressed
    assert lazy.finish() == len(b"".join(kept)) > 0
    assert b"".join(kept) == gzip_bytes(data)


def test_plan_compresses_only_the_part_over_the_limit(tmp_path: Path) -> None:
    """The plan's compressed sizes name only the parts that go compressed: KPR_IDE fits
    under a limit that KPR_IPL does not, so it is never gzipped (no zlib time spent)."""
    from iplosctl.payload.parts import PayloadHasher
    from iplosctl.profiles import load_profile
    from iplosctl.sandbox.generate import synthetic_header, synthetic_recipients

    profile = load_profile(2023)
    header = synthetic_header(
        municipality="9999", year=2023, epj_system="DemoEPJ", epj_version="4.2.0"
    )
    records = list(synthetic_recipients(recipients=300, seed=3))
    eager = PayloadHasher(header, profile.message_parts)
    for record in records:
        eager.add(record)
    sizes = {t: size for t, _d, size in eager.finish()}
    assert sizes["KPR_IPL"] > sizes["KPR_IDE"]
    lazy = PayloadHasher(header, profile.message_parts, compress_over=sizes["KPR_IDE"])
    for record in records:
        lazy.add(record)
    lazy.finish()
    assert lazy.compressed_sizes() == [("KPR_IPL", dict(eager.compressed_sizes())["KPR_IPL"])]


def test_base64_size_is_exact() -> None:
    for n in range(0, 40):
        assert base64_size(n) == len(base64.b64encode(b"x" * n))


def test_receiver_refuses_unknown_code_bad_base64_broken_gzip_and_bombs() -> None:
    good = base64.b64encode(gzip_bytes(b"<a/>" * 1000))
    assert decompress_content(good, "gzip") == b"<a/>" * 1000
    with pytest.raises(PayloadError, match="not supported"):
        decompress_content(good, "zip")
    with pytest.raises(PayloadError, match="base64"):
        decompress_content(b"not*base64", "gzip")
    with pytest.raises(PayloadError, match="gzip"):
        decompress_content(base64.b64encode(b"plain text, not gzip"), "gzip")
    with pytest.raises(PayloadError, match="complete"):
        decompress_content(base64.b64encode(gzip_bytes(b"x" * 5000)[:-8]), "gzip")
    bomb = base64.b64encode(gzip_bytes(b"\0" * 2_000_000))
    with pytest.raises(PayloadError, match="more than 1,000,000 bytes"):
        decompress_content(bomb, "gzip", limit=1_000_000)
