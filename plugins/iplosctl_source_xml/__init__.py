"""First-party source plugin: EPJ XML exports, read through a format profile.

`spec.format` names a format profile (iplosctl/formats/<name>.yaml, default
iplos-export-v1, or a path to a profile's YAML): the XSD to validate against,
an XPath per record field and how each value is written (see
iplosctl.formats.profile), so a new export format needs a profile, not code.
The export is streamed with `lxml.etree.iterparse`: only header, recipient and
joined-item end events reach Python, the XSD is checked by libxml2 as the bytes
go by, and each element is dropped from the tree once read, so memory stays
flat whatever the file's size.

Linked layouts (a profile item kind with `join`: services, assessments or
diagnoses as sibling lists that name their recipient by a key, in any order)
take two streaming passes. Pass 1 validates the XSD and reads the header and
every joined item into a compact tuple filed under its recipient key; pass 2
(no XSD, already checked) reads the recipients in file order and attaches each
one's items, dropping them as it goes. **Memory bound:** pass 1 holds every
joined item as a tuple (about 70 bytes an assessment, 150 a service; codes,
dates and numbers are shared through interning and the converters' caches)
plus, per recipient that has items, its key and a small bucket (about 300
bytes); pass 2 holds the items whose recipient it has not reached yet plus
one key per recipient read. Neither pass holds recipients, names or person
ids beyond the one being read. So memory grows with the number of joined
items, not with the file's bytes: measured at 100,000 recipients (about a
million joined items) the whole plan peaks at about 215 MB against export
v1's 70 MB (benchmarks/plan_scale.py), so about 150,000 such recipients fit
in 300 MB. An item whose key matches no
recipient, and two recipients with one key, are located errors.

While reading, the source fills `Export.coverage` (iplosctl.plugins.FieldCoverage):
how many items had a value for each mapped field, how many items of each kind
were read, and the child elements of mapped elements that no field reads.

Hardening, since an export is a file from outside: any DOCTYPE is refused before
parsing (no DTD, so no entity bombs and no external entities), and the parser
runs with no network, no entity expansion and libxml2's default size limits
(`huge_tree=False`). Depth beyond the profile's `maxDepth` is refused.

Every problem is a `SourceError` with one located line and without the
offending value: exports hold person ids and names (see `_diagnose`). A value
the profile cannot convert, or an element it names that is missing, blames the
profile ("the format profile P cannot read …"); only an XSD violation says to
fix the export.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from iplosctl.errors import Location, Problem, ProfileError, SourceError
from iplosctl.formats.profile import FormatProfile, load_format
from iplosctl.plugins import Export, FieldCoverage, SourceSpec
from iplosctl.records import ExportHeader, Recipient

from ._diagnose import check_prolog
from ._reader import CHUNK_SIZE, ExportStream, SampleCheck

__all__ = ["CHUNK_SIZE", "SampleCheck", "XmlSource"]


class XmlSource:
    """Reads an XML export through a format profile (the `xml` source plugin)."""

    name = "xml"

    def profile_files(self, spec: SourceSpec) -> tuple[Path, ...]:
        """The format profile YAML and its XSD (compiled here, so validate finds a bad one)."""
        profile = load_format(spec.format)
        profile.xml_schema()
        return profile.files

    def read(self, spec: SourceSpec) -> Export:
        """Check the prolog, stream to the end of the header, then stream recipients."""
        path, profile, encoding = _open(spec)
        stream = ExportStream(path, profile, encoding)
        items = stream.items()
        header = next(items)
        assert isinstance(header, ExportHeader)
        return Export(
            header=header,
            recipients=_recipients(items),
            coverage=stream.coverage,
            payload=profile.payload,
        )

    def check(self, spec: SourceSpec) -> SampleCheck:
        """Read the whole export, counting what each field read and failed (format check).

        A record whose value cannot be converted is counted under each of its
        failing fields and skipped; XSD and well-formedness errors still stop
        the check (they are the export's, not the profile's).
        """
        path, profile, encoding = _open(spec)
        result = SampleCheck(profile, FieldCoverage())
        stream = ExportStream(path, profile, encoding, check=result)
        result.coverage = stream.coverage
        for item in stream.items():
            if isinstance(item, Recipient):
                result.records += 1
        return result


def _open(spec: SourceSpec) -> tuple[Path, FormatProfile, str | None]:
    path = Path(spec.path)
    name = str(path)
    if spec.options:
        key = sorted(spec.options)[0]
        raise SourceError(
            [
                Problem(
                    Location(name),
                    f"the xml source takes no options, remove spec.source.options.{key}",
                )
            ]
        )
    try:
        profile = load_format(spec.format)
    except ProfileError as exc:
        raise SourceError([Problem(Location(name), exc.message)]) from None
    try:
        encoding = check_prolog(path)
    except FileNotFoundError:
        raise SourceError([Problem(Location(name), "export file not found")]) from None
    except IsADirectoryError:
        raise SourceError([Problem(Location(name), "is a folder, not an export")]) from None
    except PermissionError:
        raise SourceError(
            [Problem(Location(name), "cannot read the export: permission denied")]
        ) from None
    except OSError as exc:
        raise SourceError([Problem(Location(name), f"cannot read: {exc.strerror}")]) from None
    return path, profile, encoding


def _recipients(items: Iterator[ExportHeader | Recipient]) -> Iterator[Recipient]:
    for item in items:
        assert isinstance(item, Recipient)
        yield item
