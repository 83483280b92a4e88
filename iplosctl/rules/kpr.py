"""KPR's pre-flight rules, from the letter of 13.10.2021 and Hdir's IPLOS pages.

Each rule cites its source beside it. Ids are stable: they appear in
manifests (`spec.rules`), plans, tests and documentation.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable

from iplosctl.identifiers import (
    PersonIdKind,
    has_valid_person_control_digits,
    is_synthetic_person_id,
    is_valid_org_number,
    person_id_kind,
)
from iplosctl.privacy import count_text
from iplosctl.records import Recipient, Service
from iplosctl.rules.engine import (
    BaseRule,
    Hit,
    KeyedDigests,
    RecordRef,
    Rule,
    RuleContext,
    Severity,
    pack_ref,
    unpack_ref,
)

#: the letter's "Donald Duck"; manifests add their own names
BUILTIN_TEST_NAMES = ("Donald Duck",)
VALID_SCORES = frozenset({1, 2, 3, 4, 5, 9})
MAX_HOURS_PER_WEEK = 168


def ref(record: Recipient) -> RecordRef:
    return RecordRef(record.index, record.line)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0].split("+")[0]))


def _name_key(name: str) -> tuple[str, ...]:
    """'Duck, Donald' and 'donald  DUCK' → ('donald', 'duck')."""
    return tuple(sorted(re.findall(r"\w+", name.casefold())))


class EpjVersion(BaseRule):
    id = "epj-version"
    source = "KPR letter 2021: 'EPJ bør være oppdatert til siste versjon'"

    def check_header(self, ctx: RuleContext) -> Iterable[Hit]:
        m, h = ctx.manifest, ctx.header
        if (h.epj_system, h.epj_version) != (m.epj.system, m.epj.version):
            yield Hit(
                f"the export was made by {h.epj_system} {h.epj_version} but the manifest says "
                f"{m.epj.system} {m.epj.version}: a stale manifest or an old extract"
            )
        minimums = {**ctx.profile.epj_minimum_versions, **m.epj_minimum_versions}
        minimum = minimums.get(m.epj.system)
        if minimum is None:
            yield Hit(
                f"cannot verify the EPJ version: no minimum known for {m.epj.system} "
                "(add it to spec.epjMinimumVersions)",
                severity="warning",
            )
        elif _version_key(m.epj.version) < _version_key(minimum):
            yield Hit(
                f"{m.epj.system} {m.epj.version} is below the minimum {minimum} for "
                f"{ctx.profile.year}: update the EPJ before extracting"
            )


class TestPerson(BaseRule):
    """Excludes test users; the only rule that removes records from the payload."""

    id = "test-person"
    default_severity: Severity = "info"
    source = "KPR letter 2021: 'Testbrukere (\"Donald Duck\") skal ikke være med i innsendingen'"

    def __init__(self, extra_names: Iterable[str] = ()) -> None:
        self._extra = tuple(extra_names)
        self._names: frozenset[tuple[str, ...]] | None = None

    def excludes(self, ctx: RuleContext, record: Recipient) -> Hit | None:
        if self._names is None:
            names = (*BUILTIN_TEST_NAMES, *ctx.manifest.test_persons.names, *self._extra)
            self._names = frozenset(_name_key(n) for n in names)
        if record.name and _name_key(record.name) in self._names:
            return Hit("test person excluded (name on the test-user list)", ref(record))
        if record.person_id in ctx.manifest.test_persons.ids:
            return Hit("test person excluded (id in spec.testPersons.ids)", ref(record))
        if (
            ctx.environment.production
            and len(record.person_id) == 11
            and record.person_id.isdigit()
            and is_synthetic_person_id(record.person_id)
        ):
            return Hit("test person excluded (Test-Norge number in production)", ref(record))
        return None


class CountsAgainstLastYear(BaseRule):
    """Warn when nobody has a thing, or fewer than half of the last accepted count.

    One class for every such count, parametrised by what a record must have
    (`has`) and the summary key holding last year's figure.
    """

    default_severity: Severity = "warning"

    def __init__(
        self,
        rule_id: str,
        source: str,
        *,
        summary_key: str,
        what: str,
        has: Callable[[RuleContext, Recipient], bool],
    ) -> None:
        self.id = rule_id
        self.source = source
        self.summary_key = summary_key
        self.what = what
        self.has = has
        self.count = 0

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        if self.has(ctx, record):
            self.count += 1
        return ()

    def finish(self, ctx: RuleContext) -> Iterable[Hit]:
        if self.count == 0:
            yield Hit(f"no recipient is registered with {self.what}: check the registrations")
            return
        previous = (ctx.previous_summary or {}).get(self.summary_key)
        if isinstance(previous, int) and self.count * 2 < previous:
            yield Hit(
                f"{count_text(self.count)} recipients with {self.what}, fewer than half of the "
                f"last accepted submission's {count_text(previous)}"
            )


def _has_welfare_technology(ctx: RuleContext, record: Recipient) -> bool:
    codes = ctx.profile.welfare_technology_codes
    return any(s.code in codes for s in record.services)


def _has_rehabilitation(ctx: RuleContext, record: Recipient) -> bool:
    return record.rehabilitation


def welfare_technology() -> CountsAgainstLastYear:
    return CountsAgainstLastYear(
        "welfare-technology",
        "KPR letter 2021: check velferdsteknologi (6, 26, 27, 28) is registered",
        summary_key="welfareTechnology",
        what="welfare technology (codes 6, 26, 27, 28)",
        has=_has_welfare_technology,
    )


def rehabilitation() -> CountsAgainstLastYear:
    return CountsAgainstLastYear(
        "rehabilitation",
        "KPR letter 2021: check rehabilitering/habilitering utenfor institusjon",
        summary_key="rehabilitation",
        what="rehabilitation/habilitation outside institution",
        has=_has_rehabilitation,
    )


class HousingCode(BaseRule):
    id = "housing-code"
    source = "KPR letter 2021: 'benytte kode 29 – (kode 12 og 13 er utgått)'; DOMAIN.md §2.3"

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        for service in record.services:
            if service.code in ctx.profile.housing_obsolete:
                yield Hit(
                    f"housing code {service.code} is obsolete since 2019: use 29", ref(record)
                )
            elif service.code in ctx.profile.housing_current and service.org_number:
                yield Hit(
                    f"code {service.code} (housing) must not carry an org number", ref(record)
                )


class OrgNumber(BaseRule):
    id = "org-number"
    source = "KPR letter 2021: 'Riktig organisasjonsnummer knyttet til tjenesten'; Hdir FAQ"

    def __init__(self) -> None:
        self._units: frozenset[str] = frozenset()
        #: check digits per org number: a municipality has a handful of units
        self._valid: dict[str, bool] = {}

    def check_header(self, ctx: RuleContext) -> Iterable[Hit]:
        self._units = frozenset(u.org_number for u in ctx.manifest.service_units)
        return ()

    def _check_digit_ok(self, org: str) -> bool:
        ok = self._valid.get(org)
        if ok is None:
            ok = self._valid[org] = is_valid_org_number(org)
        return ok

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        units = self._units
        for service in record.services:
            code = ctx.profile.service_codes.get(service.code)
            if code is None or service.code in ctx.profile.housing_current:
                continue  # unknown codes: service-code; housing: housing-code
            org = service.org_number
            if org is None:
                if code.org_number == "required":
                    yield Hit(
                        f"code {service.code} ({code.name}) requires the executing unit's "
                        "org number",
                        ref(record),
                    )
            elif code.org_number == "forbidden":
                yield Hit(
                    f"code {service.code} ({code.name}) must not carry an org number", ref(record)
                )
            elif not self._check_digit_ok(org):
                yield Hit(f"org number {org} has a bad check digit", ref(record))
            elif org not in units:
                yield Hit(
                    f"org number {org} is not one of the manifest's serviceUnits", ref(record)
                )


class PersonId(BaseRule):
    id = "person-id"
    source = "DOMAIN.md §6.1 (check digits); the register answers E31 for a wrong number"

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        pid = record.person_id
        if not pid:
            yield Hit("person id missing", ref(record))
        elif len(pid) != 11 or not pid.isdigit():
            yield Hit("person id is not 11 digits", ref(record))
        elif not has_valid_person_control_digits(pid):
            yield Hit("fødselsnummer/D-number with wrong check digits", ref(record))
        elif person_id_kind(pid) is PersonIdKind.HNR:
            yield Hit(
                "H-number (help number) instead of a fødselsnummer or D-number",
                ref(record),
                severity="warning",
            )


class ServiceCode(BaseRule):
    id = "service-code"
    source = "Kodeverk 9151 (DOMAIN.md §2.2)"

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        for service in record.services:
            if (
                service.code not in ctx.profile.service_codes
                and service.code not in ctx.profile.housing_obsolete
            ):
                yield Hit(
                    f"service code {service.code} is not in list 9151 for {ctx.profile.year}",
                    ref(record),
                )


class Hours(BaseRule):
    id = "hours"
    source = "Hdir IPLOS FAQ 'tjenester': more than 168 hours per week is not allowed"

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        for service in record.services:
            if service.hours_per_week is not None and service.hours_per_week > MAX_HOURS_PER_WEEK:
                yield Hit(
                    f"more than {MAX_HOURS_PER_WEEK} hours per week on one service "
                    f"(code {service.code})",
                    ref(record),
                )


class HoursOverlap(BaseRule):
    """The 168-hour limit on one service, summed over rows that run at the same time.

    An EPJ may write one vedtak as several rows (a change of hours, a second
    vedtak for the same service); two rows of one code for one recipient whose
    periods overlap are one service in that period, so their hours add up. A
    row that ends the day another begins is a handover, not an overlap. Rows
    without hours are not counted; a row above the limit on its own is the
    `hours` rule's finding and is left out here so it is not reported twice.
    Work per recipient is quadratic in its rows of one code (a handful).
    """

    id = "hours-overlap"
    source = (
        "Hdir IPLOS FAQ 'tjenester' (DOMAIN.md §2.1): more than 168 hours per week on one "
        "service is not allowed; summed over overlapping rows of that service"
    )

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        services = record.services
        if len(services) < 2:
            return ()
        by_code: dict[str, list[Service]] = {}
        for s in services:
            if s.hours_per_week is not None and 0 < s.hours_per_week <= MAX_HOURS_PER_WEEK:
                by_code.setdefault(s.code, []).append(s)
        hits = []
        for code, rows in by_code.items():
            if len(rows) > 1 and _peak_hours(rows) > MAX_HOURS_PER_WEEK:
                hits.append(
                    Hit(
                        f"rows of service {code} that overlap in time add up to more than "
                        f"{MAX_HOURS_PER_WEEK} hours per week: end the old vedtak where the new "
                        "one begins, or correct the hours",
                        ref(record),
                    )
                )
        return hits


def _peak_hours(rows: list[Service]) -> float:
    """The most hours per week the rows add up to on any one day.

    A row runs from its start to the day before its end, or on its start day
    alone when both are the same day; no start is "always", no end "still
    running". The peak of such periods is reached on some row's start day.
    """
    peak = 0.0
    for row in rows:
        day = row.start or dt.date.min
        total = 0.0
        for other in rows:
            start = other.start or dt.date.min
            end = other.end or dt.date.max
            if start <= day and (day < end or start == day):
                total += other.hours_per_week or 0.0
        peak = max(peak, total)
    return peak


class RepeatedRecord(BaseRule):
    """A key that must name one recipient, seen on two records: counted twice.

    Each repeat is reported beside the record that first had the key (named
    once). With `companion`, a repeat counts only when the companion differs
    from the first record's (one person under two LocalIds), so a record
    repeated whole is left to the rule without one. Records whose key is
    empty are skipped when `skip_empty`. Memory: one keyed digest per key
    (`KeyedDigests`), holding a digest of the companion and where the key was
    first seen; no id is kept. An error blocks the plan whatever `spec.rules`
    says, so nothing counted twice is ever sent.
    """

    overridable = False  # a record counted twice must never be sent

    def __init__(
        self,
        rule_id: str,
        source: str,
        message: str,
        *,
        key: Callable[[Recipient], str],
        companion: Callable[[Recipient], str] | None = None,
        skip_empty: bool = False,
    ) -> None:
        self.id = rule_id
        self.source = source
        self.message = message
        self._key = key
        self._companion = companion
        self._skip_empty = skip_empty
        self._seen = KeyedDigests()
        self._reported: set[int] = set()

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        key = self._key(record)
        if self._skip_empty and not key:
            return ()
        here = ref(record)
        companion = self._companion
        tag = self._seen.digest(companion(record)) if companion is not None else 0
        known = self._seen.remember(key, tag << 64 | pack_ref(here))
        if known is None or (companion is not None and known >> 64 == tag):
            return ()
        hits = []
        first = known & 0xFFFFFFFFFFFFFFFF
        if first not in self._reported:  # name the first record once, beside each repeat
            self._reported.add(first)
            hits.append(Hit(self.message, unpack_ref(first)))
        hits.append(Hit(self.message, here))
        return hits


def _local_id(record: Recipient) -> str:
    return record.local_id


def _person_id(record: Recipient) -> str:
    return record.person_id


def local_id_unique() -> RepeatedRecord:
    """Our integrity check: the LocalId links a recipient's KPR_IPL record (without
    person id) to its KPR_IDE record (DOMAIN.md §2.1: the two parts are sent separately
    and linked), so a repeated one links the wrong records, and the summary and the
    payload would count that recipient twice."""
    return RepeatedRecord(
        "local-id-unique",
        "our integrity check: LocalId links KPR_IPL and KPR_IDE (DOMAIN.md §2.1)",
        "the same LocalId is used by more than one record: each recipient must appear once, "
        "with all its services under one LocalId",
        key=_local_id,
    )


def person_id_unique() -> RepeatedRecord:
    """Our integrity check: KPR counts users per person (DOMAIN.md §1.4, users per
    tjenestetype), and the summary and payload would count a person once per LocalId.
    A person repeated under the same LocalId is `local-id-unique`'s finding; records
    without a person id (a KPR_IPL-only export) are skipped."""
    return RepeatedRecord(
        "person-id-unique",
        "our integrity check: one person, one LocalId (KPR counts persons, DOMAIN.md §1.4)",
        "one person id appears under more than one LocalId: merge the records in the EPJ "
        "so that each person has one LocalId",
        key=_person_id,
        companion=_local_id,
        skip_empty=True,
    )


class Score(BaseRule):
    id = "score"
    source = "Hdir IPLOS FAQ 'vurdere bistandsbehov': scores 1–5, or 9 (not relevant)"

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        variables = ctx.profile.assessment_variables
        for assessment in record.assessments:
            if assessment.score not in VALID_SCORES:
                yield Hit(f"assessment score {assessment.score} is not 1–5 or 9", ref(record))
            if variables and assessment.variable not in variables:
                yield Hit(f"unknown assessment variable {assessment.variable!r}", ref(record))


class Period(BaseRule):
    id = "period"
    source = "KPR-2019: report the registrations of the calendar year"

    def __init__(self) -> None:
        self._first = self._last = dt.date.min

    def check_header(self, ctx: RuleContext) -> Iterable[Hit]:
        # Not a generator, so the year's bounds are set even if nobody iterates the hits.
        self._first = dt.date(ctx.manifest.reporting_year, 1, 1)
        self._last = dt.date(ctx.manifest.reporting_year, 12, 31)
        if ctx.header.reporting_year == ctx.manifest.reporting_year:
            return ()
        return (
            Hit(
                f"the export is for {ctx.header.reporting_year} but the manifest reports "
                f"{ctx.manifest.reporting_year}"
            ),
        )

    def check_record(self, ctx: RuleContext, record: Recipient) -> Iterable[Hit]:
        first, last = self._first, self._last
        for service in record.services:
            if service.start and service.end and service.end < service.start:
                yield Hit(f"service {service.code} ends before it starts", ref(record))
            elif (service.end and service.end < first) or (service.start and service.start > last):
                yield Hit(
                    f"service {service.code} lies entirely outside {first.year}",
                    ref(record),
                    severity="warning",
                )


class Municipality(BaseRule):
    id = "municipality"
    source = "KPR-2019: report on the kommunenummer valid for the reporting year"

    def check_header(self, ctx: RuleContext) -> Iterable[Hit]:
        if ctx.header.municipality != ctx.manifest.municipality.number:
            yield Hit(
                f"the export is from municipality {ctx.header.municipality} but the "
                f"manifest is for {ctx.manifest.municipality.number}"
            )


class Deadline(BaseRule):
    id = "deadline"
    default_severity: Severity = "info"
    source = "KPR letter 2021: deadlines 15 Jan, 10 Feb (KOSTRA), 26 Mar; report problems at once"

    def check_header(self, ctx: RuleContext) -> Iterable[Hit]:
        deadlines = ctx.profile.deadlines
        first, last = deadlines[0], deadlines[-1]
        contacts = ", ".join(c.address for c in ctx.profile.contacts)
        if ctx.environment.sandbox:
            yield Hit(f"rehearsal in the sandbox: the {ctx.profile.year} deadlines do not apply")
            return
        if not ctx.environment.production:
            # KPR's test receiver is for communication tests (DOMAIN.md §1.2): a test after
            # the deadline needs no agreement and no --late.
            yield Hit(
                f"{ctx.manifest.environment} is {ctx.environment.description}: the "
                f"{ctx.profile.year} deadlines apply to production, not to this receiver"
            )
            return
        if ctx.today <= first.date:
            days = (first.date - ctx.today).days
            yield Hit(f"{days} days left until the deadline {first.date.isoformat()}")
        elif ctx.today <= last.date:
            upcoming = next(d for d in deadlines if ctx.today <= d.date)
            yield Hit(
                f"the deadline {first.date.isoformat()} has passed; {upcoming.description} "
                f"by {upcoming.date.isoformat()}; report problems at once to {contacts}",
                severity="warning",
            )
        else:
            yield Hit(
                f"the last deadline {last.date.isoformat()} has passed: send with --late "
                f"only after agreeing with the register ({contacts})",
                severity="warning" if ctx.late else "error",
            )


def rules() -> list[Rule]:
    """The KPR rule pack (entry point `iplosctl.rules: kpr`), fresh instances per run."""
    return [
        Deadline(),
        Municipality(),
        EpjVersion(),
        TestPerson(),
        PersonId(),
        ServiceCode(),
        HousingCode(),
        OrgNumber(),
        Hours(),
        HoursOverlap(),
        local_id_unique(),
        person_id_unique(),
        Score(),
        Period(),
        welfare_technology(),
        rehabilitation(),
    ]
