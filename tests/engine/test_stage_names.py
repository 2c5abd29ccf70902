"""engine.stages exports each stage's names, imported when first used; `ingest` and `settle` stay the functions
even once their modules (engine/stages/ingest.py, settle.py) are imported."""

from __future__ import annotations

import importlib


def test_every_exported_name_is_its_stage_modules() -> None:
    from engine import stages

    importlib.import_module("engine.stages.ingest")
    importlib.import_module("engine.stages.settle")
    for name in stages.__all__:
        value = getattr(stages, name)
        home = importlib.import_module(f"engine.stages.{stages._WHERE[name]}")
        assert value is getattr(home, name), name
    assert callable(stages.ingest) and stages.ingest.__module__ == "engine.stages.ingest"
    assert callable(stages.settle) and stages.settle.__module__ == "engine.stages.settle"
    from engine.stages import IngestSummary, ingest, settle

    assert ingest is stages.ingest and settle is stages.settle and IngestSummary.__name__ == "IngestSummary"


def test_engine_epoch_names_the_stages_it_runs() -> None:
    import engine.epoch
    from engine.stages.consensus import run_consensus
    from engine.stages.ingest import IngestSummary, lake_snapshot

    assert engine.epoch.lake_snapshot is lake_snapshot and engine.epoch.IngestSummary is IngestSummary
    assert engine.epoch.run_consensus is run_consensus
