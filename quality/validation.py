"""Running GX: one validation of the long frame per call, failures back per (submission_id, column).

GX is imported lazily (importing it costs seconds) and runs in one ephemeral context per process, with progress
bars, analytics and chatty logging turned off; with a docs_dir, a fresh context writes offline Data Docs instead.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quality.data_docs import offline_docs, share_template_bytecode
from quality.rules import Rule

if TYPE_CHECKING:
    import pandas as pd

_lock = threading.Lock()
_batch_definition: Any = None


def _quiet_gx() -> None:
    """Keep GX from phoning home or logging; must run before GX is imported."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    for name in ("great_expectations", "posthog"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _new_context() -> Any:
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in list(logging.root.manager.loggerDict):  # GX sets levels on some of its own loggers at import
        if name.startswith("great_expectations"):
            logging.getLogger(name).setLevel(logging.ERROR)
    share_template_bytecode()
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def warm_up() -> None:
    """Import GX and make this process's context now (seconds, once), so the next gate pays only its validation:
    what a long-running operator process (the Dagster daemon, a benchmark's warm side) has done already."""
    with _lock:
        _get_batch_definition()


def _get_batch_definition() -> Any:
    """The process-wide ephemeral context's whole-dataframe batch definition (made once, ~0.03 s)."""
    global _batch_definition
    if _batch_definition is None:
        asset = _new_context().data_sources.add_pandas("tributary").add_dataframe_asset("submission_stats")
        _batch_definition = asset.add_batch_definition_whole_dataframe("whole")
    return _batch_definition


RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": ["submission_id", "column"]}


@dataclass(frozen=True)
class Verdict:
    """What GX said about one rule: the failing (submission_id, column) pairs, or the error it hit."""

    failing: frozenset
    error: str | None


def _exception_message(info: Any) -> str | None:
    """First line of the error GX caught while checking, if any; info is flat or keyed by metric id."""
    if not isinstance(info, dict):
        return None
    for c in [info] + [v for v in info.values() if isinstance(v, dict)]:
        if c.get("raised_exception"):
            return (str(c.get("exception_message") or "error").strip().splitlines() or ["error"])[0]
    return None


def _verdicts(result: Any) -> dict[str, Verdict]:
    out = {}
    for r in result.results:
        check = (r.expectation_config.meta or {}).get("check")
        msg = _exception_message(r.exception_info)
        res = r.result or {}
        index = res.get("unexpected_index_list") or []
        failing = frozenset((d["submission_id"], d["column"]) for d in index if isinstance(d, dict))
        if msg is None and not r.success and not failing:
            msg = "GX reported a failure without naming the submissions"
        out[check] = Verdict(failing, msg)
    return out


def validate(df: "pd.DataFrame", rules: list[Rule], name: str, docs_dir: Path | None) -> tuple[dict, str | None]:
    """Run the rules over the long frame in one GX validation; with docs_dir, also write offline Data Docs."""
    _quiet_gx()
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=name, expectations=[r.make(gxe) for r in rules])
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if docs_dir is None:
            batch = _get_batch_definition().get_batch(batch_parameters={"dataframe": df})
            return _verdicts(batch.validate(suite, result_format=RESULT_FORMAT)), None
        result, index = _validate_with_docs(df, suite, Path(docs_dir))
        return _verdicts(result), index


def _validate_with_docs(df: "pd.DataFrame", suite: Any, docs_dir: Path) -> tuple[Any, str]:
    """One checkpoint run in a fresh context with a local Data Docs site; the pages are made offline-readable."""
    import great_expectations as gx

    docs_dir = docs_dir.resolve()
    docs_dir.mkdir(parents=True, exist_ok=True)
    ctx = _new_context()
    ctx.add_data_docs_site(site_name="tributary", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    bd = ctx.data_sources.add_pandas("tributary").add_dataframe_asset("submission_stats") \
        .add_batch_definition_whole_dataframe("whole")
    suite = ctx.suites.add(suite)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{suite.name}-{uuid.uuid4().hex[:8]}",
                                                                data=bd, suite=suite))
    # No UpdateDataDocsAction: it renders the site once more before build_data_docs renders it all (suite and
    # validation pages from the context's stores), doubling the cost of every gate with docs.
    cp = ctx.checkpoints.add(gx.Checkpoint(
        name=f"tributary-{uuid.uuid4().hex[:8]}", validation_definitions=[vd], result_format=RESULT_FORMAT))
    run = cp.run(batch_parameters={"dataframe": df})
    ctx.build_data_docs(site_names=["tributary"])
    offline_docs(docs_dir)
    (result,) = run.run_results.values()
    return result, str(docs_dir / "index.html")
