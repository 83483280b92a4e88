"""Message parts: the payload of each part (KPR_IPL, KPR_IDE) from one record stream.

The profile says what each part carries (`messageParts[].content`). The plan
needs every part's digest and size while the export streams past once, so
each part gets its own push-style hasher; apply passes a file per part and
gets the bytes written in the same pass, each record formatted once.

A part too big to go plain is also gzipped as it streams past (`payload/compression.py`),
so the plan knows the size the compressed part really has, and apply gets the compressed
bytes from the same pass instead of compressing a second time before sending. A part
that fits is not compressed at all (`compress_over`: a lazy sink).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import BinaryIO

from iplosctl.payload.compression import GzipSink, Tee
from iplosctl.payload.export_writer import CONTENT_FLAGS, ExportHasher
from iplosctl.profiles import MessagePart
from iplosctl.records import ExportHeader, Recipient


class PayloadHasher:
    """sha256 and size of every part's payload; with `outputs`, the bytes written too."""

    def __init__(
        self,
        header: ExportHeader,
        parts: Sequence[MessagePart],
        outputs: Mapping[str, BinaryIO] | None = None,
        compressed_outputs: Mapping[str, BinaryIO] | None = None,
        *,
        compress_over: int | None = None,
    ) -> None:
        """`compress_over`: compress only a part whose payload grows past this many bytes
        (None: every part, e.g. for a benchmark that wants the compressed size anyway)."""
        self._gzip = {
            p.type: GzipSink(
                None if compressed_outputs is None else compressed_outputs[p.type],
                only_over=compress_over,
            )
            for p in parts
        }
        self._hashers = {
            p.type: ExportHasher(
                header,
                **CONTENT_FLAGS[p.content],
                # ExportHasher declares BinaryIO but only calls write(): GzipSink and Tee
                # are write-only file objects (export_writer is retyped by its owner)
                out=(
                    self._gzip[p.type]  # type: ignore[arg-type]
                    if outputs is None
                    else Tee(outputs[p.type], self._gzip[p.type])
                ),
            )
            for p in parts
        }

    def add(self, record: Recipient) -> None:
        for hasher in self._hashers.values():
            hasher.add(record)

    def finish(self) -> list[tuple[str, str, int]]:
        """(part type, `sha256:…`, size in bytes) in profile order; flushes every output."""
        out = []
        for part_type, hasher in self._hashers.items():
            digest = hasher.finish()
            out.append((part_type, digest.digest, digest.size))
        return out

    def compressed_sizes(self) -> list[tuple[str, int]]:
        """(part type, gzip size in bytes) in profile order, for the parts that were
        compressed; call after `finish`."""
        sizes = [(part_type, sink.finish()) for part_type, sink in self._gzip.items()]
        return [(t, size) for t, size in sizes if self._gzip[t].compressed]
