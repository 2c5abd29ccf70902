"""Shared fixtures: a small real market home built through the same actions the CLI uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hypothesis import settings as hypothesis_settings

from engine import actions
from engine.home import Home, open_home

# Property tests are reproducible by default (the same examples every run, so CI is not a lottery); run with
# HYPOTHESIS_PROFILE=explore to search new random examples.
hypothesis_settings.register_profile("tributary", derandomize=True, deadline=None, print_blob=True)
hypothesis_settings.register_profile("explore", deadline=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tributary"))

TASK = "digits"
N_FEATURES = 8  # a narrow slice of load_digits keeps GX and KNN fast in tests


def digits_table(lo: int, hi: int, *, flip: bool = False, seed: int = 0) -> pa.Table:
    """Rows lo..hi of a fixed shuffle of sklearn's bundled digits, first N_FEATURES pixels (labels flipped if asked)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(seed).permutation(len(d.target))
    x, y = d.data[order][lo:hi, 20:20 + N_FEATURES], d.target[order][lo:hi].astype(np.int64)
    if flip:
        y = (y + 1 + np.arange(len(y)) % 9) % 10
    cols = {f"px_{i}": x[:, i] for i in range(N_FEATURES)}
    cols["label"] = y
    return pa.table(cols)


def shapley_by_enumeration(utility, n: int) -> np.ndarray:
    """The Shapley value of each of n players by definition: marginal gains averaged over every order (small n)."""
    import itertools
    import math

    values = np.zeros(n)
    for order in itertools.permutations(range(n)):
        for pos, j in enumerate(order):
            values[j] += utility(order[:pos + 1]) - utility(order[:pos])
    return values / math.factorial(n)


@dataclass
class Market:
    home: Home
    work: Path

    def write(self, name: str, table: pa.Table) -> Path:
        path = self.work / name
        pq.write_table(table, path)
        return path

    def submit(self, key: str, table: pa.Table, name: str) -> Path:
        path, _ = actions.submit(self.home, self.write(name, table), key=key, task=TASK)
        return path


def build_market(root: Path) -> Market:
    """A home under `root` with task `digits` (300-row hidden holdout), contributors alice/bob/carol and validator val
    (staked): the `market` fixture's home, for fixtures of wider scope."""
    root.mkdir(parents=True, exist_ok=True)
    home = open_home(root / "home")
    (root / "work").mkdir()
    m = Market(home, root / "work")
    actions.task_init(home, TASK, m.write("holdout.parquet", digits_table(0, 300)), "label",
                      bounds={"*": (0.0, 16.0)})  # digits pixels are 0..16: the operator declares it
    for name in ("alice", "bob", "carol"):
        actions.keygen(home, name)
        actions.register(home, name, "contributor")
    actions.keygen(home, "val")
    actions.register(home, "val", "validator")
    actions.grant(home, "val", "1000")
    actions.stake(home, "val", "1000")
    return m


@pytest.fixture(scope="session")
def market_template(tmp_path_factory) -> Path:
    """build_market once per session (per worker); a home holds no absolute path, so a copy is the same market."""
    root = tmp_path_factory.mktemp("market-template")
    build_market(root)
    return root


@pytest.fixture()
def market(tmp_path, market_template) -> Market:
    """A fresh copy of the session's market home for this test to change as it likes."""
    import shutil

    for part in ("home", "work"):
        shutil.copytree(market_template / part, tmp_path / part, symlinks=True)
    return Market(open_home(tmp_path / "home"), tmp_path / "work")


# ------------------------------------------------------------------------------------------ what a fast test may do
# `make test-fast` runs tests marked neither `slow`, `process` nor `browser`. Marks say what a test does, and this
# guard holds them to it: an unmarked test that starts a process or runs a whole epoch fails, naming the mark it needs.
_HEAVY_MARKS = ("slow", "process", "browser")


@pytest.fixture(autouse=True)
def _unmarked_tests_start_no_process_and_run_no_epoch(request, monkeypatch):
    if any(request.node.get_closest_marker(m) for m in _HEAVY_MARKS):
        yield
        return
    import subprocess

    import engine.epoch

    def no_process(*_args, **_kwargs):
        raise AssertionError("this test starts a process: mark it @pytest.mark.process (or slow)")

    real_score = engine.epoch.score

    def no_epoch(*args, **kwargs):
        import sys

        if sys._getframe(1).f_code is engine.epoch.run_epoch.__code__:  # scored by run_epoch itself: a whole epoch
            raise AssertionError("this test runs a whole epoch (run_epoch): mark it @pytest.mark.slow")
        return real_score(*args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", no_process)
    monkeypatch.setattr(engine.epoch, "score", no_epoch)
    yield


# The longest modules, measured with --durations (each over a minute on two cores), started first of all.
_LONGEST_MODULES = ("tests/engine/test_originality_market.py", "tests/simulation/test_simulate.py",
                    "tests/browser/test_ui.py", "tests/assets/test_dagster_daemon.py",
                    "tests/pipelines/test_ingest_crash.py", "tests/engine/test_epoch_lock.py")


def pytest_collection_modifyitems(config, items):
    """The longest modules first, then the other modules with heavy tests (slow, process, browser), each module's own
    order kept: with `make test` on two workers by module (--dist loadscope), the long ones start at once instead of
    ending the run alone."""
    def module(item) -> str:
        return item.nodeid.split("::")[0]

    missing = [m for m in _LONGEST_MODULES if not (config.rootpath / m).is_file()]
    assert not missing, f"_LONGEST_MODULES names files that are gone: {missing}"
    heavy = {module(i) for i in items if any(i.get_closest_marker(m) for m in _HEAVY_MARKS)}

    def rank(item) -> tuple[int, int]:
        m = module(item)
        if m in _LONGEST_MODULES:
            return 0, _LONGEST_MODULES.index(m)
        return (1 if m in heavy else 2), 0

    items.sort(key=rank)  # stable: each module's tests keep their order
