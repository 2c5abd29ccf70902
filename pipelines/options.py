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
# The same ingest on a cluster (README: "Ingest on a cluster"). drop/, the lake and staging/ must then be on storage
# every worker sees (a shared mount, or a FileSystems URL like gs://).
#
# Flink and Spark, through the runner's portable job server. The environment says where the Python transforms run:
# LOOPBACK would run every one of them in the submitting process (the cluster only shuffles), DOCKER would run Beam's
# stock SDK image (no Tributary code, none of its pins) unless one is built, and PROCESS needs a boot binary on every
# worker. EXTERNAL hands each bundle to a Beam worker pool that the operator starts beside every Flink task manager or
# Spark worker from the project's own venv (`python -m apache_beam.runners.worker.worker_pool_main
# --service_port=50000`), so transforms run on the cluster's machines with the code and pins of requirements.lock.
# The address is resolved on each task manager / worker: localhost is the pool beside it.
JOB_ENDPOINT = "localhost:8099"
WORKER_POOL_ENDPOINT = "localhost:50000"
_PORTABLE = ["--runner=PortableRunner", f"--job_endpoint={JOB_ENDPOINT}", "--environment_type=EXTERNAL",
             f"--environment_config={WORKER_POOL_ENDPOINT}"]
# Dask: Beam's DaskRunner submits the graph to a dask.distributed scheduler whose workers run the project's venv
# (`dask scheduler`, `dask worker tcp://SCHEDULER:8786 --nthreads 1`); it has no short runner name.
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
DASK_SCHEDULER = "SCHEDULER:8786"


def dask_pipeline_args(scheduler_address: str = DASK_SCHEDULER, partition_size: int = 1) -> list[str]:
    """Pipeline args for the DaskRunner on the scheduler at `scheduler_address` (host:port or tcp://host:port).

    The default partitioning puts 128 elements in one partition, which would put every submission on one worker:
    one submission per partition spreads them over the workers."""
    return [f"--runner={DASK_RUNNER}", f"--dask_client_address={scheduler_address}",
            f"--dask_partition_size={partition_size}"]


CLUSTER_PIPELINE_ARGS = {
    "flink": list(_PORTABLE),
    "spark": list(_PORTABLE),
    "dask": dask_pipeline_args(),
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
