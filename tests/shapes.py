"""The same synthetic recipients written in three vendor-shaped exports (test data).

`sandbox generate` writes export v1 from `synthetic_header` and
`synthetic_recipients`; these writers take exactly those records and write
them the way other EPJs might (tests/data/formats/vendor-*.xsd), so a profile
that reads a shape correctly must give the same records, summary, findings
and digests as export v1. Values are ids, codes, dates and numbers, so they
need no escaping beyond what `escape` does for the test persons' names.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from iplosctl.records import ExportHeader, Recipient
from iplosctl.sandbox.generate import (
    DEMO_SERVICE_UNITS,
    generate_export,
    synthetic_header,
    synthetic_recipients,
)

FORMATS = Path(__file__).resolve().parent / "data" / "formats"
#: KPR code → vendor-a's own code (the inverse of the map in vendor-a.yaml)
VENDOR_A_CODES = {
    "1": "PRAKT", "2": "OPPL", "3": "BPA", "4": "DAG", "5": "MAT", "6": "ALARM", "7": "AVL-UT",
    "8": "AVL-INST", "9": "STK", "11": "OMS", "15": "HJSPL", "17": "DAGINST", "18": "KORT-UTR",
    "19": "KORT-REH", "20": "KORT-ANN", "21": "LANG", "22": "NATT", "24": "LANG-TID",
    "25": "KAD", "26": "GPS", "27": "MEDDISP", "28": "DIGTILS", "29": "BOLIG",
}  # fmt: skip


def records(count: int, seed: int, test_persons: int = 0) -> tuple[ExportHeader, list[Recipient]]:
    header = synthetic_header(
        municipality="9999", year=2023, epj_system="DemoEPJ", epj_version="4.2.0"
    )
    recipients = list(
        synthetic_recipients(
            recipients=count,
            seed=seed,
            year=2023,
            service_units=DEMO_SERVICE_UNITS,
            test_persons=test_persons,
        )
    )
    return header, recipients


def write_v1(path: Path, count: int, seed: int, test_persons: int = 0) -> None:
    generate_export(path, recipients=count, seed=seed, test_persons=test_persons)


def _no(d: dt.date | None) -> str:
    return d.strftime("%d.%m.%Y") if d is not None else ""


def _iso(d: dt.date | None) -> str:
    return d.isoformat() if d is not None else ""


def _hours(h: float | None, comma: bool = False) -> str:
    if h is None:
        return ""
    text = f"{h:.2f}".rstrip("0").rstrip(".")
    return text.replace(".", ",") if comma else text


def vendor_a(header: ExportHeader, recipients: Iterable[Recipient]) -> str:
    """Norwegian names, attributes, dd.mm.yyyy, decimal commas, J/N, vendor codes, local time."""
    assert header.extracted_at is not None
    local = header.extracted_at.astimezone(dt.timezone(dt.timedelta(hours=1)))  # CET in January
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<Uttrekk xmlns="urn:vendor-a:iplos">\n',
        f"  <Hode><Kommunenr>{header.municipality}</Kommunenr><Aar>{header.reporting_year}</Aar>"
        f"<Fagsystem>{header.epj_system}</Fagsystem>"
        f"<Fagsystemversjon>{header.epj_version}</Fagsystemversjon>"
        f"<Uttrukket>{local.strftime('%d.%m.%Y %H:%M')}</Uttrukket></Hode>\n",
    ]
    for r in recipients:
        out.append(f"  <Bruker lopenr={quoteattr(r.local_id)}>\n    <Fnr> {r.person_id} </Fnr>\n")
        if r.name:
            out.append(f"    <Navn>{escape(r.name)}</Navn>\n")
        out.append(f"    <Rehab>{'J' if r.rehabilitation else 'N'}</Rehab>\n")
        for s in r.services:
            out.append(
                f'    <Vedtak tjeneste=" {VENDOR_A_CODES[s.code]}" fra="{_no(s.start)}" '
                f'til="{_no(s.end)}" timer="{_hours(s.hours_per_week, comma=True)}" '
                f'vedtaksdato="{_no(s.decision_date)}" orgnr="{s.org_number or ""}"/>\n'
            )
        for a in r.assessments:
            out.append(
                f'    <Kartlegging variabel="{a.variable}" skaar="{a.score}" '
                f'dato="{_no(a.date)}"/>\n'
            )
        out.append("  </Bruker>\n")
    out.append("</Uttrekk>\n")
    return "".join(out)


def vendor_b(header: ExportHeader, recipients: Iterable[Recipient], *, seed: int) -> str:
    """Sibling lists (assessments, recipients, services) linked by id, items interleaved at
    random across recipients (each recipient's own items keep their order)."""
    people = list(recipients)
    rng = random.Random(seed)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<b:Eksport xmlns:b="urn:vendor-b:uttrekk">\n',
        f"  <b:Hode><b:Kommune>{header.municipality}</b:Kommune><b:Aar>{header.reporting_year}"
        f"</b:Aar><b:System>{header.epj_system}</b:System><b:Versjon>{header.epj_version}"
        f"</b:Versjon><b:Tidspunkt>{header.extracted_at:%Y-%m-%dT%H:%M:%SZ}</b:Tidspunkt></b:Hode>\n",
    ]

    def assessment(r: Recipient, i: int) -> str:
        a = r.assessments[i]
        date = f' dato="{a.date.isoformat()}"' if a.date else ""
        return (
            f'    <b:Kartlegging mottaker={quoteattr(r.local_id)} variabel="{a.variable}" '
            f'skaar="{a.score}"{date}/>\n'
        )

    def service(r: Recipient, i: int) -> str:
        s = r.services[i]
        parts = [f"<b:MottakerRef>{r.local_id}</b:MottakerRef><b:Kode>{s.code}</b:Kode>"]
        for tag, value in (
            ("Fra", _iso(s.start)),
            ("Til", _iso(s.end)),
            ("Timer", _hours(s.hours_per_week)),
            ("Vedtaksdato", _iso(s.decision_date)),
            ("Orgnr", s.org_number or ""),
        ):
            if value:
                parts.append(f"<b:{tag}>{value}</b:{tag}>")
        return f"    <b:Tjeneste>{''.join(parts)}</b:Tjeneste>\n"

    out.append("  <b:Kartlegginger>\n")
    out.extend(_interleave(rng, people, lambda r: len(r.assessments), assessment))
    out.append("  </b:Kartlegginger>\n  <b:Mottakere>\n")
    for r in people:
        out.append(f"    <b:Mottaker><b:Id>{r.local_id}</b:Id><b:Fnr>{r.person_id}</b:Fnr>")
        if r.name:
            out.append(f"<b:Navn>{escape(r.name)}</b:Navn>")
        if r.rehabilitation:
            out.append("<b:Rehabilitering>true</b:Rehabilitering>")
        out.append("</b:Mottaker>\n")
    out.append("  </b:Mottakere>\n  <b:Tjenester>\n")
    out.extend(_interleave(rng, people, lambda r: len(r.services), service))
    out.append("  </b:Tjenester>\n</b:Eksport>\n")
    return "".join(out)


def _interleave(
    rng: random.Random,
    people: list[Recipient],
    count: Callable[[Recipient], int],
    write: Callable[[Recipient, int], str],
) -> list[str]:
    """Every item once, recipients in random order, each recipient's items in order."""
    slots = [p for p, r in enumerate(people) for _ in range(count(r))]
    rng.shuffle(slots)
    taken = [0] * len(people)
    out = []
    for p in slots:
        out.append(write(people[p], taken[p]))
        taken[p] += 1
    return out


def vendor_c(header: ExportHeader, recipients: Iterable[Recipient]) -> str:
    """Default namespace, containers, header attributes, values one level down."""
    assert header.extracted_at is not None
    local = header.extracted_at.astimezone(dt.timezone(dt.timedelta(hours=1)))
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<Export xmlns="urn:vendor-c:kpr">\n',
        f'  <Header municipality="{header.municipality}" year="{header.reporting_year}" '
        f'system="{header.epj_system}" version="{header.epj_version}" '
        f'extracted="{local.isoformat()}"/>\n  <Recipients>\n',
    ]
    for r in recipients:
        name = f"<FullName>{escape(r.name)}</FullName>" if r.name else ""
        out.append(
            f"    <Recipient id={quoteattr(r.local_id)}>\n"
            f"      <Person><Ssn>{r.person_id}</Ssn>{name}</Person>\n"
            f'      <Flags rehabilitation="{"true" if r.rehabilitation else "false"}"/>\n'
            "      <Services>\n"
        )
        for s in r.services:
            period = "".join(
                f' {k}="{v}"' for k, v in (("from", _iso(s.start)), ("to", _iso(s.end))) if v
            )
            inner = f"<Period{period}/>"
            if s.hours_per_week is not None:
                inner += f"<Hours>{_hours(s.hours_per_week)}</Hours>"
            if s.decision_date is not None:
                inner += f'<Decision date="{s.decision_date.isoformat()}"/>'
            if s.org_number:
                inner += f'<Unit org="{s.org_number}"/>'
            out.append(f'        <Service code="{s.code}">{inner}</Service>\n')
        out.append("      </Services>\n")
        if r.assessments:
            date = r.assessments[0].date
            assert all(a.date == date for a in r.assessments)
            out.append(f'      <Assessments date="{_iso(date)}">')
            out.extend(f'<Score variable="{a.variable}" value="{a.score}"/>' for a in r.assessments)
            out.append("</Assessments>\n")
        out.append("    </Recipient>\n")
    out.append("  </Recipients>\n</Export>\n")
    return "".join(out)


SHAPES: dict[str, Callable[[ExportHeader, list[Recipient], int], str]] = {
    "vendor-a": lambda h, r, seed: vendor_a(h, r),
    "vendor-b": lambda h, r, seed: vendor_b(h, r, seed=seed),
    "vendor-c": lambda h, r, seed: vendor_c(h, r),
}


def write_shape(shape: str, path: Path, count: int, seed: int, test_persons: int = 0) -> Path:
    header, people = records(count, seed, test_persons)
    path.write_text(SHAPES[shape](header, people, seed), encoding="utf-8")
    return path
