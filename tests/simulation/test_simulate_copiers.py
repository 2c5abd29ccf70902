"""The simulator's lake copiers and synthesizers: jitter_copier, smote_copier, self_augmenter, same_epoch_copier.

Their scenario keys and rules, the synthesis they use (same-class interpolations on segments, jitter at the right
scale, the same rows for the same seed), and one small market with all of them. The market's figures are printed
(`pytest -s -m slow`), not asserted: the valuation rule that should pay them nothing is being written.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tomli_w

from simulation import data as sd
from simulation.report import contributor_summary, vs_honest_per_epoch
from simulation.scenario import ScenarioError, load_scenario, parse_scenario
from simulation.strategies import make_players

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "simulate" / "copiers.toml"
NEW = ("jitter_copier", "smote_copier", "self_augmenter", "same_epoch_copier")
HONEST = {"strategy": "honest", "count": 2, "rows": 20}
SEGMENT_TOL = 1e-9  # an interpolation lies on its segment up to float rounding (relative to the segment's length)
SCALE_TOL = 0.05  # a jitter's measured std, in feature stds, within 5% of the asked scale (thousands of draws)
MARKET_EPOCHS = 4


def write_scenario(path: Path, doc: dict) -> Path:
    path.write_text(tomli_w.dumps(doc))
    return path


def doc_with(*groups: dict, dataset: str = "wine") -> dict:
    return {"data": {"dataset": dataset}, "contributors": [HONEST, *groups]}


# ------------------------------------------------------------------------------------------------ the scenario file
def test_copiers_example_parses():
    s = load_scenario(EXAMPLE)
    assert s.dataset == "breast_cancer" and s.epochs and s.market["commit_reveal"] is True
    assert set(NEW) <= {g.strategy for g in s.contributors}
    keys = s.group("augmenter_keys")
    assert (keys.strategy, keys.mode, keys.keys, keys.synthetic, keys.jitter) == (
        "self_augmenter", "jitter", 3, 3, 0.05)


def test_new_strategies_defaults_and_keys():
    s = parse_scenario(doc_with({"strategy": "jitter_copier"}, {"strategy": "smote_copier"},
                                {"strategy": "self_augmenter", "rows": 20},
                                {"strategy": "self_augmenter", "name": "aug_keys", "rows": 20, "keys": 3},
                                {"strategy": "same_epoch_copier"}))
    g = {x.name: x for x in s.contributors}
    assert g["jitter_copier"].jitter == 0.1 and g["jitter_copier"].target == "honest"
    assert g["same_epoch_copier"].jitter == 0.05 and g["same_epoch_copier"].target == "honest"
    assert g["smote_copier"].target == "honest"
    aug = g["self_augmenter"]
    assert (aug.synthetic, aug.mode, aug.jitter, aug.keys) == (3, "interpolate", 0.05, 1)
    ds = sd.load_dataset("wine")
    contributors, _ = make_players(s, 0, (ds.x[:10], ds.y[:10]), ds)
    keys = {p.group.name: p.keys for p in contributors}
    assert keys["self_augmenter"] == ["self_augmenter-1"]
    assert keys["aug_keys"] == ["aug_keys-1-k1", "aug_keys-1-k2", "aug_keys-1-k3"]
    assert [p.strategy for p in contributors if p.plans_late] == ["same_epoch_copier"]


@pytest.mark.parametrize("group,key,words", [
    ({"strategy": "jitter_copier", "jitter": 0.5}, "jitter", "must be in [0, 0.3], got 0.5"),
    ({"strategy": "jitter_copier", "jitter": "lots"}, "jitter", "must be a finite number"),
    ({"strategy": "jitter_copier", "rows": 20}, "rows", "unknown key"),
    ({"strategy": "jitter_copier", "target": "nobody"}, "target", "names no contributor group"),
    ({"strategy": "smote_copier", "jitter": 0.1}, "jitter", "unknown key"),
    ({"strategy": "smote_copier", "name": "smote", "target": "smote"}, "target", "a group cannot copy itself"),
    ({"strategy": "same_epoch_copier", "jitter": 0.31}, "jitter", "must be in [0, 0.3]"),
    ({"strategy": "same_epoch_copier", "days": 3}, "days", "unknown key"),
    ({"strategy": "self_augmenter", "synthetic": 4}, "synthetic", "must be in 1..3, got 4"),
    ({"strategy": "self_augmenter", "synthetic": 0}, "synthetic", "must be in 1..3, got 0"),
    ({"strategy": "self_augmenter", "synthetic": 1.5}, "synthetic", "must be a whole number"),
    ({"strategy": "self_augmenter", "mode": "gan"}, "mode", "must be one of interpolate, jitter, got 'gan'"),
    ({"strategy": "self_augmenter", "jitter": 0.1}, "jitter", 'only with mode = "jitter"'),
    ({"strategy": "self_augmenter", "mode": "interpolate", "jitter": 0.1}, "jitter", 'only with mode = "jitter"'),
    ({"strategy": "self_augmenter", "mode": "jitter", "jitter": 0.4}, "jitter", "must be in [0, 0.3]"),
    ({"strategy": "self_augmenter", "target": "honest"}, "target", "unknown key"),
    ({"strategy": "self_augmenter", "rows": 5}, "rows", "below the task's min_rows 10"),
    ({"strategy": "self_augmenter", "rows": 10, "synthetic": 1, "keys": 3}, "keys",
     "10 synthetic rows over 2 keys leaves 5 rows a key, below the task's min_rows 10"),
    ({"strategy": "self_augmenter", "keys": 0}, "keys", "must be in 1..1000"),
])
def test_bad_new_strategy_params_name_file_key_and_rule(tmp_path, group, key, words):
    path = write_scenario(tmp_path / "bad.toml", doc_with(group))
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    message = str(e.value)
    print(message)
    dotted = f"contributors[1].{key}"
    assert e.value.key == dotted and message.startswith(f"{path}: key '{dotted}': ") and words in message, message
    assert "\n" not in message


@pytest.mark.parametrize("first,copier", [("jitter_copier", "same_epoch_copier"), ("same_epoch_copier", "smote_copier"),
                                          ("smote_copier", "exact_copier"), ("near_copier", "jitter_copier")])
def test_a_copiers_target_sends_its_own_data(first, copier):
    """A copier of a copier would copy nothing of its own: every copier names a group that sends its own data."""
    with pytest.raises(ScenarioError, match=r"contributors\[2\]\.target.*must name a group that sends its own data"):
        parse_scenario(doc_with({"strategy": first, "name": "first"}, {"strategy": copier, "target": "first"}))


# ------------------------------------------------------------------------------------------------ the synthesis
@pytest.fixture(scope="module")
def wine() -> sd.Dataset:
    return sd.load_dataset("wine")


def sample(ds: sd.Dataset, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n rows of the dataset in a fixed shuffle (every class present)."""
    pick = np.random.default_rng(seed).permutation(len(ds.y))[:n]
    return ds.x[pick], ds.y[pick]


def nearest_same_class(ds: sd.Dataset, x: np.ndarray, y: np.ndarray, i: int, k: int) -> np.ndarray:
    """Brute force: the indices of row i's k nearest other rows of its class, distance in feature stds."""
    mates = np.flatnonzero((y == y[i]) & (np.arange(len(y)) != i))
    d = (((x[mates] - x[i]) / ds.std) ** 2).sum(axis=1)
    return mates[np.argsort(d, kind="stable")[:k]]


def segment_position(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float | None:
    """u where p = a + u (b - a) with u in [0, 1] (up to rounding), or None if p is not on that segment."""
    span = b - a
    u = float(np.dot(p - a, span) / np.dot(span, span))
    on_line = np.linalg.norm(p - (a + u * span)) <= SEGMENT_TOL * (1 + np.linalg.norm(span))
    return u if on_line and -SEGMENT_TOL <= u <= 1 + SEGMENT_TOL else None


@pytest.mark.parametrize("per_row", [1, 3])
def test_smote_rows_are_same_class_and_on_a_segment_to_a_near_neighbour(wine, per_row):
    x, y = sample(wine, 40)
    sx, sy = sd.smote(wine, x, y, per_row, np.random.default_rng(5))
    assert sx.shape == (per_row * len(y), x.shape[1]) and np.array_equal(sy, np.repeat(y, per_row))
    us = []
    for j, row in enumerate(sx):
        i = j // per_row  # rows come in row order, per_row of each
        on = [u for b in x[nearest_same_class(wine, x, y, i, sd.SMOTE_NEIGHBOURS)]
              if (u := segment_position(row, x[i], b)) is not None]
        assert on, f"synthetic row {j} is on no segment from row {i} to one of its 5 nearest same-class rows"
        us.append(on[0])
    assert 0.0 < min(us) and max(us) < 1.0 and len(set(np.round(us, 6))) > len(us) // 2  # u ~ U(0, 1), not fixed


def test_smote_row_alone_in_its_class_repeats_itself(wine):
    x, y = sample(wine, 20)
    keep = (y != y[0]) | (np.arange(len(y)) == 0)  # row 0 is the only one of its class
    x, y = x[keep], y[keep]
    sx, sy = sd.smote(wine, x, y, 2, np.random.default_rng(1))
    assert np.array_equal(sx[:2], np.vstack([x[0], x[0]])) and np.array_equal(sy[:2], [y[0], y[0]])


def test_synthesis_is_determined_by_the_seed(wine):
    x, y = sample(wine, 30)
    for mode in ("interpolate", "jitter"):
        one = sd.augment(wine, x, y, 3, mode, 0.05, np.random.default_rng(42))
        two = sd.augment(wine, x, y, 3, mode, 0.05, np.random.default_rng(42))
        other = sd.augment(wine, x, y, 3, mode, 0.05, np.random.default_rng(43))
        assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1]), mode
        assert not np.array_equal(one[0], other[0]), mode


@pytest.mark.parametrize("scale", [0.05, 0.1, 0.3])
def test_jitter_noise_is_scale_times_each_features_std(wine, scale):
    """Around the dataset's mean row (far from its bounds, so clipping does not shrink the noise)."""
    centre = wine.x.mean(axis=0, keepdims=True)
    n = 4000
    noisy, labels = sd.augment(wine, np.repeat(centre, n // 4, axis=0), np.zeros(n // 4, dtype=np.int64), 4, "jitter",
                               scale, np.random.default_rng(9))
    assert noisy.shape == (n, centre.shape[1]) and not labels.any()
    measured = ((noisy - centre) / wine.std).std(axis=0)
    assert np.all(np.abs(measured / scale - 1) < SCALE_TOL), measured / scale
    assert np.all(np.abs(((noisy - centre) / wine.std).mean(axis=0)) < 4 * scale / np.sqrt(n))


# ------------------------------------------------------------------------------------------------ the plans
class FakeWorld(SimpleNamespace):
    """What a contributor's plan looks at: the data, the row source and the target's files (here: fixed ones)."""

    def member_key(self, group: str, index: int) -> str:
        return f"{group}-{index}"

    def accepted_files(self, key: str, epoch: int) -> list[Path]:
        return list(self.accepted.get((key, epoch), []))

    def dropped_files(self, key: str, epoch: int) -> list[Path]:
        return list(self.dropped.get((key, epoch), []))


def plans(tmp_path: Path, group: dict, epoch: int = 2, seed: int = 0, *, target_sent: bool = True):
    """Plan one epoch for a scenario of two honest players and `group`; the target's file (if it sent one) is 20
    shuffled wine rows, accepted last epoch and dropped this one. Returns (plans, its rows, the source's fresh rows)."""
    scenario = parse_scenario(doc_with(group))
    ds = sd.load_dataset("wine")
    x, y = sample(ds, 20, seed=3)
    target = tmp_path / "target.parquet"
    pq.write_table(sd.to_table(ds, x, y), target)
    source = sd.RowSource(ds, 0.3, seed, synthesize=True)
    fresh = sd.RowSource(ds, 0.3, seed, synthesize=True).take(scenario.contributors[1].rows, "same")
    files = [target] if target_sent else []
    world = FakeWorld(ds=ds, source=source, accepted={("honest-1", epoch - 1): files},
                      dropped={("honest-1", epoch): files})
    contributors, _ = make_players(scenario, seed, source.holdout(), ds)
    player = next(p for p in contributors if p.group.name == scenario.contributors[1].name)
    return player.plan(epoch, world), (x, y), fresh


def rows(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    return sd.from_table(sd.load_dataset("wine"), table)


def test_jitter_copier_sends_the_targets_rows_jittered(tmp_path):
    out, (x, y), _ = plans(tmp_path, {"strategy": "jitter_copier", "jitter": 0.2})
    assert [p.key for p in out] == ["jitter_copier-1"]
    px, py = rows(out[0].table)
    assert np.array_equal(py, y) and px.shape == x.shape and not np.all(px == x, axis=1).any()
    ds = sd.load_dataset("wine")
    assert 0.1 < float(np.abs((px - x) / ds.std).mean()) < 0.3  # E|N(0, 0.2)| = 0.16 (clipping only shrinks it)


def test_smote_copier_sends_as_many_same_class_interpolations_as_the_target(tmp_path):
    out, (x, y), _ = plans(tmp_path, {"strategy": "smote_copier"})
    px, py = rows(out[0].table)
    assert out[0].key == "smote_copier-1" and np.array_equal(py, y) and px.shape == x.shape
    for c in np.unique(y):
        lo, hi = x[y == c].min(axis=0), x[y == c].max(axis=0)  # inside its class's box: convex combinations
        assert np.all((px[py == c] >= lo - 1e-12) & (px[py == c] <= hi + 1e-12))


def test_copiers_send_nothing_without_a_target_file(tmp_path):
    for strategy in ("jitter_copier", "smote_copier", "same_epoch_copier"):
        out, _, _ = plans(tmp_path, {"strategy": strategy}, target_sent=False)
        assert out == [], strategy


def test_same_epoch_copier_copies_this_epochs_dropped_file(tmp_path):
    out, (x, y), _ = plans(tmp_path, {"strategy": "same_epoch_copier"}, epoch=7)
    px, py = rows(out[0].table)
    assert out[0].key == "same_epoch_copier-1" and np.array_equal(py, y)
    assert 0.0 < float(np.abs((px - x) / sd.load_dataset("wine").std).max()) < 1.0


def test_self_augmenter_one_key_sends_fresh_rows_first_then_synthetic(tmp_path):
    out, _, (fx, fy) = plans(tmp_path, {"strategy": "self_augmenter", "rows": 12, "synthetic": 2})
    assert [p.key for p in out] == ["self_augmenter-1"]
    px, py = rows(out[0].table)
    assert len(py) == 12 * 3 and np.array_equal(px[:12], fx) and np.array_equal(py[:12], fy)
    assert np.array_equal(py[12:], np.repeat(fy, 2))
    assert not (px[12:, None, :] == fx[None, :, :]).all(axis=2).any()  # no synthetic row is a copy of a fresh one


def test_self_augmenter_several_keys_sends_fresh_from_the_first(tmp_path):
    out, _, (fx, fy) = plans(tmp_path, {"strategy": "self_augmenter", "rows": 12, "synthetic": 3, "mode": "jitter",
                                        "jitter": 0.1, "keys": 3})
    assert [p.key for p in out] == ["self_augmenter-1-k1", "self_augmenter-1-k2", "self_augmenter-1-k3"]
    first = rows(out[0].table)
    assert np.array_equal(first[0], fx) and np.array_equal(first[1], fy)
    synthetic = [rows(p.table) for p in out[1:]]
    assert [len(s[1]) for s in synthetic] == [18, 18]
    sy = np.concatenate([s[1] for s in synthetic])
    assert np.array_equal(sy, np.repeat(fy, 3))


# ------------------------------------------------------------------------------------------------ the market
def copiers_market_doc() -> dict:
    """A few honest players and one of each new strategy on breast_cancer; 15 + 3 x 20 = 90 fresh rows an epoch, so
    the real supply (398 rows after the holdout) lasts the run and nothing is synthesized by the source."""
    return {
        "data": {"dataset": "breast_cancer", "holdout_fraction": 0.3},
        "task": {"k": 5, "scaling": "standard"},
        "market": {"commit_reveal": True, "kappa": 0.5, "house_stake_units": 2_000 * 10**9},
        "contributors": [
            {"strategy": "honest", "count": 3, "rows": 20},
            {"strategy": "jitter_copier", "target": "honest"},
            {"strategy": "smote_copier", "target": "honest"},
            {"strategy": "self_augmenter", "rows": 15},
            {"strategy": "self_augmenter", "name": "augmenter_keys", "rows": 15, "mode": "jitter", "keys": 2},
            {"strategy": "same_epoch_copier", "target": "honest"},
        ],
        "validators": [{"strategy": "honest", "count": 2, "stake": 1000}],
    }


COPY_SHARE_MAX = 0.10  # a copy's tokens per row over honest data's
SYNTHESIS_GAIN_MAX = 0.05  # what synthetic rows may add to a contributor's total


@pytest.mark.slow
def test_market_with_every_new_strategy_pays_copies_and_synthesis_nothing(tmp_path):
    from ledger.db import open_ledger
    from simulation.market import simulate
    from engine.settings import HomePaths

    scenario = load_scenario(write_scenario(tmp_path / "copiers.toml", copiers_market_doc()))
    result = simulate(scenario, epochs=MARKET_EPOCHS, seed=3, out=tmp_path / "copiers")
    accounts = result.accounts.to_pylist()

    print(f"\nbreast_cancer, {MARKET_EPOCHS} epochs, seed 3: tokens per accepted row against honest")
    print(f"{'group':18} {'strategy':18} {'sent':>5} {'accepted':>8} {'dups':>5} {'per row':>8} {'vs honest':>9}")
    for s in contributor_summary(result.accounts):
        vs = "" if s["vs_honest"] is None else f"{s['vs_honest']:.1%}"
        print(f"{s['group']:18} {s['strategy']:18} {s['rows_sent']:>5} {s['rows_accepted']:>8} "
              f"{s['duplicate_rows']:>5} {s['tokens_per_row']:>8.4f} {vs:>9}")
    per_epoch = vs_honest_per_epoch(result.accounts)
    print("per epoch, vs honest: " + "; ".join(
        f"{g} " + " ".join("-" if v is None else f"{v:.1%}" for v in es.values()) for g, es in per_epoch.items()))
    honest_rate = next(s for s in contributor_summary(result.accounts) if s["group"] == "honest")["tokens_per_row"]
    for key in ("augmenter_keys-1-k1", "augmenter_keys-1-k2"):
        mine = [r for r in accounts if r["account"] == key]
        landed = sum(r["rows_accepted"] for r in mine)
        rate = sum(r["amount_units"] for r in mine) / 1e9 / landed if landed else 0.0
        print(f"{key} ({'fresh' if key.endswith('k1') else 'synthetic'} rows): {landed} rows, {rate:.4f} tokens per "
              f"row ({rate / honest_rate if honest_rate else float('nan'):.1%} of honest)")

    keys = sum(g.count * (g.keys if g.strategy in ("sybil", "self_augmenter") else 1) for g in scenario.contributors)
    assert result.epochs == MARKET_EPOCHS and result.accounts.num_rows == MARKET_EPOCHS * keys
    assert result.synthesized_rows == 0 and (result.out / "report.md").is_file()
    assert "as a share of honest contributors'" in (result.out / "report.md").read_text()
    sent = {}
    for r in accounts:
        sent[r["account"]] = sent.get(r["account"], 0) + r["rows_sent"]
    new_keys = {r["account"] for r in accounts if r["strategy"] in NEW}
    assert new_keys == {"jitter_copier-1", "smote_copier-1", "self_augmenter-1", "augmenter_keys-1-k1",
                        "augmenter_keys-1-k2", "same_epoch_copier-1"}
    assert all(sent[k] > 0 for k in new_keys), sent
    # Copiers of last epoch send from epoch 2 on, as many rows as their target; the rest every epoch.
    assert sent["jitter_copier-1"] == sent["smote_copier-1"] == 20 * (MARKET_EPOCHS - 1)
    assert sent["same_epoch_copier-1"] == 20 * MARKET_EPOCHS
    assert sent["self_augmenter-1"] == sent["augmenter_keys-1-k1"] + sent["augmenter_keys-1-k2"] == 60 * MARKET_EPOCHS

    # The bounds of README's "What your data earns, and why": copies earn at most 10% of honest data's tokens per
    # row; synthetic rows earn nothing more than the fresh rows they were made from would.
    summary = {s["group"]: s for s in contributor_summary(result.accounts)}
    for group in ("jitter_copier", "smote_copier", "same_epoch_copier"):
        assert summary[group]["tokens_per_row"] <= COPY_SHARE_MAX * honest_rate, summary[group]
    paid = {r["account"]: 0 for r in accounts}
    for r in accounts:
        paid[r["account"]] += r["amount_units"]
    fresh_rows = 20 * MARKET_EPOCHS  # each augmenter's own fresh rows
    fair = (1 + SYNTHESIS_GAIN_MAX) * honest_rate * 1e9 * fresh_rows
    assert paid["self_augmenter-1"] <= fair and paid["augmenter_keys-1-k1"] + paid["augmenter_keys-1-k2"] <= fair
    assert paid["augmenter_keys-1-k2"] == 0  # a key of synthetic rows only

    with open_ledger(HomePaths(result.home).ledger, read_only=True) as con:
        arrivals = con.execute("SELECT epoch, name, arrival FROM arrivals WHERE name LIKE '%.parquet'").fetchall()
    at = {(e, name.split("-", 2)[2].removesuffix(".parquet")): a for e, name, a in arrivals}
    for epoch in range(1, MARKET_EPOCHS + 1):
        target, copy = at.get((epoch, "honest-1")), at.get((epoch, "same_epoch_copier-1"))
        assert target is not None and copy is not None and copy > target, (epoch, target, copy)
