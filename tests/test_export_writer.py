from __future__ import annotations

import datetime as dt
import hashlib
import io

import pytest
from lxml import etree

from iplosctl.errors import PayloadError
from iplosctl.formats import EXPORT_V1_XSD
from iplosctl.payload.export_writer import (
    CONTENT_FLAGS,
    ExportHasher,
    ExportWriter,
    export_digest,
    write_export,
)
from iplosctl.records import Assessment, ExportHeader, Recipient, Service

NS = "{urn:iplosctl:export:v1}"
PERSON = "05903813050"
HEADER = ExportHeader(
    municipality="9999",
    reporting_year=2023,
    epj_system="DemoEPJ",
    epj_version="4.2.0",
    extracted_at=dt.datetime(2024, 1, 3, 8, 0, tzinfo=dt.UTC),
)
FULL = Recipient(
    index=0,
    local_id="r-1",
    person_id=PERSON,
    name="Donald Duck",
    district="030101",
    housing="H1",
    rehabilitation=True,
    services=(
        Service(
            code="15",
            start=dt.date(2023, 1, 2),
            end=dt.date(2023, 6, 30),
            hours_per_week=3.5,
            decision_date=dt.date(2022, 12, 20),
            org_number="310000027",
        ),
        Service(code="29", start=dt.date(2023, 3, 1)),
    ),
    assessments=(
        Assessment("4", 3, dt.date(2023, 3, 1)),
        Assessment("5", 9),
    ),
    diagnoses=("F03", 'R&D "x"'),
)
MINIMAL = Recipient(index=1, local_id="r-2", person_id="41900112345")


def write(recipients: list[Recipient], **flags: bool) -> bytes:
    out = io.BytesIO()
    write_export(HEADER, recipients, out, **flags)
    return out.getvalue()


def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(EXPORT_V1_XSD)))


def test_layout_is_pinned() -> None:
    assert write([MINIMAL]).decode() == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<IplosExport xmlns="urn:iplosctl:export:v1" version="1">\n'
        "  <Header>\n"
        "    <Municipality>9999</Municipality>\n"
        "    <ReportingYear>2023</ReportingYear>\n"
        "    <Epj><System>DemoEPJ</System><Version>4.2.0</Version></Epj>\n"
        "    <ExtractedAt>2024-01-03T08:00:00Z</ExtractedAt>\n"
        "  </Header>\n"
        "  <Recipient>\n"
        "    <LocalId>r-2</LocalId>\n"
        "    <PersonId>41900112345</PersonId>\n"
        "  </Recipient>\n"
        "</IplosExport>\n"
    )


def test_every_field_in_xsd_order_and_valid() -> None:
    data = write([FULL, MINIMAL])
    doc = etree.fromstring(data)
    schema().assertValid(doc)
    recipient = doc.find(f"{NS}Recipient")
    assert recipient is not None
    assert [etree.QName(c).localname for c in recipient] == [
        "LocalId",
        "PersonId",
        "District",
        "Housing",
        "Rehabilitation",
        "Service",
        "Service",
        "Assessment",
        "Assessment",
        "Diagnosis",
        "Diagnosis",
    ]
    service = recipient.find(f"{NS}Service")
    assert service is not None
    assert [etree.QName(c).localname for c in service] == [
        "From",
        "To",
        "HoursPerWeek",
        "DecisionDate",
        "OrgNumber",
    ]
    assert recipient.findall(f"{NS}Diagnosis")[1].get("code") == 'R&D "x"'


def test_names_are_never_written_unless_the_generator_asks() -> None:
    assert b"Donald" not in write([FULL])
    with_names = write([FULL], include_names=True)
    schema().assertValid(etree.fromstring(with_names))
    assert b"<Name>Donald Duck</Name>" in with_names


def test_kpr_ipl_part_has_no_person_ids() -> None:
    data = write([FULL, MINIMAL], **CONTENT_FLAGS["without-person-ids"])
    schema().assertValid(etree.fromstring(data))
    assert b"PersonId" not in data and PERSON.encode() not in data
    assert b"<Service" in data and b"<LocalId>r-1</LocalId>" in data


def test_kpr_ide_part_is_identity_only() -> None:
    data = write([FULL, MINIMAL], **CONTENT_FLAGS["identity-only"])
    doc = etree.fromstring(data)
    schema().assertValid(doc)
    for recipient in doc.iter(f"{NS}Recipient"):
        assert [etree.QName(c).localname for c in recipient] == ["LocalId", "PersonId"]
    assert b"Donald" not in write([FULL], include_services=False, include_names=True)


def test_same_input_same_bytes_and_digest() -> None:
    first, second = write([FULL, MINIMAL]), write([FULL, MINIMAL])
    assert first == second
    digest = export_digest(HEADER, [FULL, MINIMAL])
    assert digest.digest == "sha256:" + hashlib.sha256(first).hexdigest()
    assert (digest.size, digest.recipients) == (len(first), 2)
    hasher = ExportHasher(HEADER, include_person_ids=False)
    for r in (FULL, MINIMAL):
        hasher.add(r)
    expected = hashlib.sha256(write([FULL, MINIMAL], include_person_ids=False)).hexdigest()
    assert hasher.finish().digest == f"sha256:{expected}"
    assert export_digest(HEADER, [MINIMAL]).digest != digest.digest


def test_text_is_escaped_and_round_trips() -> None:
    tricky = Recipient(index=0, local_id="a<b>&c\"d'e\rf", person_id=PERSON)
    header = ExportHeader("9999", 2023, "EPJ & Co <x>", "1.0")
    out = io.BytesIO()
    write_export(header, [tricky], out)
    doc = etree.fromstring(out.getvalue())
    schema().assertValid(doc)
    assert doc.findtext(f"{NS}Recipient/{NS}LocalId") == "a<b>&c\"d'e\rf"
    assert doc.findtext(f"{NS}Header/{NS}Epj/{NS}System") == "EPJ & Co <x>"


@pytest.mark.parametrize(
    ("hours", "text"),
    [(3.5, "3.5"), (2.0, "2"), (0.0, "0"), (-0.0, "0"), (1.333, "1.33"), (37.25, "37.25")],
)
def test_hours_have_at_most_two_decimals(hours: float, text: str) -> None:
    r = Recipient(0, "r-1", PERSON, services=(Service("15", hours_per_week=hours),))
    assert f"<HoursPerWeek>{text}</HoursPerWeek>".encode() in write([r])


def test_extracted_at_is_written_in_utc() -> None:
    oslo = dt.timezone(dt.timedelta(hours=1))
    header = ExportHeader("9999", 2023, "E", "1", dt.datetime(2024, 1, 3, 9, 0, tzinfo=oslo))
    out = io.BytesIO()
    write_export(header, [], out)
    assert b"<ExtractedAt>2024-01-03T08:00:00Z</ExtractedAt>" in out.getvalue()
    schema().assertValid(etree.fromstring(out.getvalue()))


@pytest.mark.parametrize(
    ("recipient", "reason"),
    [
        (Recipient(3, "r-1", "0590381305"), "person id must be 11 digits"),
        (Recipient(3, "", PERSON), "local id must be 1 to 200"),
        (Recipient(3, "r-\x01", PERSON), "control character"),
        (Recipient(3, "r-1", PERSON, district="1"), "district"),
        (Recipient(3, "r-1", PERSON, services=(Service("1 5"),)), "service code"),
        (Recipient(3, "r-1", PERSON, services=(Service("15", hours_per_week=-1),)), "hours"),
        (
            Recipient(3, "r-1", PERSON, services=(Service("15", hours_per_week=float("nan")),)),
            "hours",
        ),
        (Recipient(3, "r-1", PERSON, services=(Service("15", org_number="12345"),)), "org number"),
        (Recipient(3, "r-1", PERSON, assessments=(Assessment("1", "3"),)), "score"),  # type: ignore[arg-type]
    ],
)
def test_values_the_format_cannot_carry_name_the_record_not_the_value(
    recipient: Recipient, reason: str
) -> None:
    with pytest.raises(PayloadError) as info:
        write([recipient])
    message = info.value.message
    assert message.startswith("recipient 3: ") and reason in message
    assert "0590381305" not in message and "12345" not in message


def test_a_bad_header_is_refused() -> None:
    with pytest.raises(PayloadError, match="municipality must be 4 digits"):
        write_export(ExportHeader("301", 2023, "E", "1"), [], io.BytesIO())


class CountingSink:
    def __init__(self) -> None:
        self.writes: list[int] = []

    def write(self, data: bytes, /) -> int:
        self.writes.append(len(data))
        return len(data)


def test_output_streams_in_bounded_chunks() -> None:
    sink = CountingSink()
    writer = ExportWriter(sink, HEADER)
    for i in range(5000):
        writer.add(Recipient(i, f"r-{i}", PERSON, services=FULL.services))
    written = writer.finish()
    assert written.recipients == 5000 and written.size == sum(sink.writes)
    assert len(sink.writes) > 10
    assert max(sink.writes) < 300_000  # about a hundred recipients per flush, not the file
    assert writer.finish() == written  # finishing twice writes nothing more
