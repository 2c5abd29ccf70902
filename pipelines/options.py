"""Beam pipeline options with an explicit in-process runner; user options pass through unchanged."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

# Beam's in-process portable runner: no binary download at start (Prism does one), so it works offline.
DEFAULT_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"
# With more than one worker FnApiRunner only parallelises in a threading or processing mode.
DEFAULT_RUNNING_MODE = "multi_threading"
BEAM_LOG_LEVEL = logging.WARNING
# The same ingest on a cluster, through the runner's portable job server (README: "Ingest on a cluster"). drop/, the
# lake and staging/ must then be on storage every worker sees (a shared mount, or a FileSystems URL like gs://).
JOB_ENDPOINT = "localhost:8099"
CLUSTER_PIPELINE_ARGS = {
    "flink": ["--runner=PortableRunner", f"--job_endpoint={JOB_ENDPOINT}", "--environment_type=LOOPBACK"],
    "spark": ["--runner=PortableRunner", f"--job_endpoint={JOB_ENDPOINT}", "--environment_type=LOOPBACK"],
}


def _has_flag(args: Sequence[str], name: str) -> bool:
    """Whether `--name` or `--name=value` appears among the user's args."""
    flag = f"--{name}"
    return any(a == flag or a.startswith(flag + "=") for a in args)


def default_pipeline_args() -> list[str]:
    """The defaults: FnApiRunner in-process with one worker per core."""
    return [
        f"--runner={DEFAULT_RUNNER}",
        f"--direct_num_workers={os.cpu_count() or 1}",
        f"--direct_running_mode={DEFAULT_RUNNING_MODE}",
    ]


def pipeline_arg_list(pipeline_args: Sequence[str] = ()) -> list[str]:
    """Defaults the user did not set, then the user's args exactly as given (they reach Beam unchanged)."""
    user = list(pipeline_args)
    defaults = [d for d in default_pipeline_args() if not _has_flag(user, d[2:].split("=", 1)[0])]
    return defaults + user


def build_options(pipeline_args: Sequence[str] = ()) -> PipelineOptions:
    """PipelineOptions for an ingest run: the runner is always explicit, `--runner=...` overrides it."""
    return PipelineOptions(pipeline_arg_list(pipeline_args))


def quiet_beam_logging(level: int = BEAM_LOG_LEVEL) -> None:
    """Keep Beam's per-run INFO chatter out of the operator's log."""
    logging.getLogger("apache_beam").setLevel(level)
