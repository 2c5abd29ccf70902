"""The ingest graph as named composite transforms (Beam), one chain with no side outputs and no side inputs:

    List ─► CheckFiles (per file: signature, admission, payload read and hashed once, decode, stage)
         ─► NonceOrder (per key, arrival order) ─► Gate (one Great Expectations run per kind and task)
         ─► WriteLake ─► WriteResults (one JSON file per submission, named by its arrival)

What is decided early travels on as a record through the later steps, untouched. Elements are file references in
and decisions out: no payload bytes cross a step boundary. pipelines/verify.py holds the DoFns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import apache_beam as beam

from pipelines.records import Listed, Registry
from pipelines.verify import CheckFileFn, GateFn, NonceOrderFn, WriteLakeFn, WriteResultFn, gate_key, nonce_key


class CheckFiles(beam.PTransform):
    """The listed manifests spread over the workers, each submission's per-file work done where it lands."""

    def __init__(self, drop: str, staging: str, registry: Registry, max_payload_bytes: int, epoch: int,
                 listed: Sequence[Listed]):
        super().__init__()
        self.listed = list(listed)
        self.fn = CheckFileFn(drop, staging, registry, max_payload_bytes, epoch)

    def expand(self, pbegin):
        return (pbegin
                | "List" >> beam.Create(self.listed)
                | "Spread" >> beam.Reshuffle()
                | "Check" >> beam.ParDo(self.fn))


class NonceOrder(beam.PTransform):
    """Group by public key and walk each key's submissions in arrival order: a nonce must be above the highest nonce
    of every earlier verified submission of the key (earlier runs' and this run's earlier arrivals)."""

    def __init__(self, last_nonce: Mapping[str, int]):
        super().__init__()
        self.last_nonce = dict(last_nonce)

    def expand(self, checked):
        return (checked
                | "ByKey" >> beam.Map(lambda c: (nonce_key(c), c))
                | "Group" >> beam.GroupByKey()
                | "InOrder" >> beam.ParDo(NonceOrderFn(self.last_nonce)))


class Gate(beam.PTransform):
    """Each task's Great Expectations suite, run once over all its submissions' statistics."""

    def __init__(self, registry: Registry, docs_dir: str | None):
        super().__init__()
        self.fn = GateFn(registry, docs_dir)

    def expand(self, items):
        return (items
                | "ByTask" >> beam.Map(lambda item: (gate_key(item), item))
                | "Group" >> beam.GroupByKey()
                | "Suite" >> beam.ParDo(self.fn))


class WriteLake(beam.PTransform):
    """Content-addressed, idempotent lake writes; one accepted record per passing submission."""

    def __init__(self, lake: str, epoch: int):
        super().__init__()
        self.fn = WriteLakeFn(lake, epoch)

    def expand(self, items):
        return items | "Write" >> beam.ParDo(self.fn)


class WriteResults(beam.PTransform):
    """Every decision as a JSON file in `folder`, for the driver to read back on any runner."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def expand(self, records):
        return records | "Write" >> beam.ParDo(WriteResultFn(self.folder))


def build_pipeline(p: beam.Pipeline, *, drop: str, lake: str, staging: str, docs_dir: str | None, epoch: int,
                   registry: Registry, listed: Sequence[Listed], max_payload_bytes: int, results: str) -> None:
    """The ingest graph on pipeline `p` (kept separate so tests can build it for any runner's options)."""
    _ = (p
         | "CheckFiles" >> CheckFiles(drop, staging, registry, max_payload_bytes, epoch, listed)
         | "NonceOrder" >> NonceOrder(registry.last_nonce)
         | "Gate" >> Gate(registry, docs_dir)
         | "WriteLake" >> WriteLake(lake, epoch)
         | "WriteResults" >> WriteResults(results))
