"""Pay for information, not for rows, through the market as a new user drives it (`task init` defaults: a random
quarter held out), on scikit-learn's bundled datasets with random splits and several seeds.

Epoch 1: `orig` sends shard B. Epoch 2 (`plain`): `fresh` sends an unseen shard C, `augmenter` its own shard D,
`spread1` its own shard E; copiers send B jittered (0.05 and 0.2 x each feature's std), same-class interpolations of B
(SMOTE-like), and a jittered copy of C that arrives after it. Two more markets differ from `plain` in one player
only: in `same`, the augmenter adds 3 interpolations per row of D in the same submission; in `spread`, E's owner adds
3 jittered copies per row of E from two more keys. Figures are printed per dataset and seed; the bounds are the
issue's: copies earn at most 10% of fresh data's tokens per row, synthesis changes a contributor's total by at most
+5%, honest data loses at most 5% to the originality rule, and no honest submission is zeroed.

Iris is the known limit, printed but not asserted for interpolations: its default holdout has 37 rows and its
shards 22, and at the gate's level (an honest submission zeroed with probability at most 1e-6) 37 reference
distances cannot tell 22 interpolated rows from honest ones (measured over 8 splits: the gate's p-value for them
spans 1e-9 to 1e-2). Jittered copies are caught on iris too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow  # whole epochs (Beam ingest, GX) on four datasets

DATASETS = ("digits", "wine", "breast_cancer", "iris")
SMALL = ("iris",)  # too few holdout rows for the gate to see interpolations (see the module docstring)
SEEDS = (0, 1)
COPY_SHARE_MAX = 0.10  # a copy's tokens per row over fresh data's
SYNTHESIS_GAIN_MAX = 0.05  # synthetic rows may raise a contributor's total by at most this share


def _load(name: str):
    from sklearn import datasets

    data = getattr(datasets, f"load_{name}")()
    return data.data.astype(np.float64), data.target.astype(np.int64), [f"f{i}" for i in range(data.data.shape[1])]


def _table(x: np.ndarray, y: np.ndarray, cols: list[str]) -> pa.Table:
    return pa.table({**{c: x[:, i] for i, c in enumerate(cols)}, "label": y})


def _interpolate(x: np.ndarray, y: np.ndarray, per_row: int, rng: np.random.Generator):
    """SMOTE-like rows: each row towards one of its 5 nearest same-class rows, u ~ U(0, 1)."""
    out_x, out_y = [], []
    for _ in range(per_row):
        for i in range(len(y)):
            same = np.flatnonzero(y == y[i])
            same = same[same != i]
            if same.size == 0:
                continue
            near = same[np.argsort(((x[same] - x[i]) ** 2).sum(axis=1), kind="stable")[:5]]
            j = rng.choice(near)
            out_x.append(x[i] + rng.random() * (x[j] - x[i]))
            out_y.append(y[i])
    return np.array(out_x), np.array(out_y)


def _jitter(x: np.ndarray, scale: float, std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(size=x.shape) * std * scale


def _market(root: Path, name: str, seed: int, variant: str) -> dict:
    """Run the two epochs; per key name: (epoch-2 tokens in base units, rows sent) and the epoch-2 scores."""
    from ledger.db import open_ledger
    from engine import actions
    from engine.epoch import run_epoch
    from engine.home import open_home

    x, y, cols = _load(name)
    order = np.random.default_rng(seed).permutation(len(y))
    rng = np.random.default_rng([seed, 1])  # the copies: the same in every variant
    synth = np.random.default_rng([seed, 2])  # the synthetic rows
    x, y = x[order], y[order]
    n_hold = len(y) // 4
    rest = len(y) - n_hold
    part = rest // 5
    shard = {k: (x[n_hold + i * part:n_hold + (i + 1) * part], y[n_hold + i * part:n_hold + (i + 1) * part])
             for i, k in enumerate("BCDE")}
    std = x[:n_hold].std(axis=0)
    home = open_home(root / "home")
    work = root / "work"
    work.mkdir(parents=True)
    pq.write_table(_table(x[:n_hold], y[:n_hold], cols), work / "holdout.parquet")
    actions.task_init(home, "t", work / "holdout.parquet", "label")
    keys = ["orig", "fresh", "jitter05", "jitter20", "smote", "neighbour", "augmenter", "spread1", "spread2",
            "spread3"]
    for k in keys:
        actions.keygen(home, k)
        actions.register(home, k, "contributor")
    sent: dict[str, int] = {}

    def send(key: str, xs: np.ndarray, ys: np.ndarray) -> None:
        path = work / f"{key}-{len(sent)}.parquet"
        pq.write_table(_table(xs, ys, cols), path)
        actions.submit(home, path, key=key, task="t")
        sent[key] = sent.get(key, 0) + len(ys)

    send("orig", *shard["B"])
    run_epoch(home, close=True)
    sent.clear()
    bx, by = shard["B"]
    send("fresh", *shard["C"])
    send("jitter05", _jitter(bx, 0.05, std, rng), by)
    if name != "iris":  # 0.2 x std is as far as honest neighbours lie on iris's 4 features (the exception)
        send("jitter20", _jitter(bx, 0.2, std, rng), by)
    send("smote", *_interpolate(bx, by, 1, rng))
    send("neighbour", _jitter(shard["C"][0], 0.05, std, rng), shard["C"][1])  # after fresh: a same-epoch copy
    dx, dy = shard["D"]
    ex, ey = shard["E"]
    if variant == "same":
        sx, sy = _interpolate(dx, dy, 3, synth)
        send("augmenter", np.concatenate([dx, sx]), np.concatenate([dy, sy]))
    else:
        send("augmenter", dx, dy)
    send("spread1", ex, ey)
    if variant == "spread":
        jx = np.concatenate([_jitter(ex, 0.05, std, synth) for _ in range(3)])
        jy = np.concatenate([ey] * 3)
        half = len(jy) // 2
        send("spread2", jx[:half], jy[:half])
        send("spread3", jx[half:], jy[half:])
    scores = run_epoch(home, close=True).scores
    with open_ledger(home.paths.ledger, read_only=True) as con:
        paid = dict(con.execute("SELECT a.name, r.amount FROM rewards r JOIN accounts a USING (account_id) "
                                "WHERE r.epoch = 2 AND r.role = 'contributor'").fetchall())
        ids = dict(con.execute("SELECT account_id, name FROM accounts").fetchall())
    return {"paid": paid, "sent": sent, "scores": [(ids[s.account_id], s) for s in scores.submissions],
            "pools": scores.pools}


@pytest.fixture(scope="module")
def markets(tmp_path_factory) -> dict:
    out = {}
    for name in DATASETS:
        for seed in SEEDS:
            for variant in ("plain", "same", "spread"):
                out[(name, seed, variant)] = _market(tmp_path_factory.mktemp(f"{name}-{seed}-{variant}"), name, seed,
                                                     variant)
    return out


def _per_row(m: dict, key: str) -> float:
    return m["paid"].get(key, 0) / m["sent"][key] if m["sent"].get(key) else 0.0


@pytest.mark.parametrize("name", DATASETS)
def test_copies_of_what_the_market_holds_earn_about_nothing(markets, name) -> None:
    for seed in SEEDS:
        m = markets[(name, seed, "plain")]
        honest = ("fresh", "augmenter", "spread1")
        fresh = sum(m["paid"].get(k, 0) for k in honest) / sum(m["sent"][k] for k in honest)
        copies = {k: _per_row(m, k) for k in ("jitter05", "jitter20", "smote", "neighbour") if k in m["sent"]}
        gain = m["pools"]["t"]["gain"]
        if fresh == 0:  # the epoch's rows left the holdout's KNN accuracy no better: nobody's rows earn
            print(f"{name} seed {seed}: the epoch's rows added {gain:+.4f}: fresh and copies earn {copies}")
            assert gain <= 0 and all(v == 0 for v in copies.values()), copies
            continue
        shares = {k: v / fresh for k, v in copies.items()}
        print(f"{name} seed {seed}: fresh {fresh:.3g} units/row; copies over fresh per row: "
              + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()) + f"; the epoch's rows added {gain:+.4f}")
        checked = {k: v for k, v in shares.items() if not (name in SMALL and k == "smote")}
        assert all(v <= COPY_SHARE_MAX for v in checked.values()), shares


@pytest.mark.parametrize("name", DATASETS)
def test_synthesis_does_not_pay(markets, name) -> None:
    for seed in SEEDS:
        plain = markets[(name, seed, "plain")]
        same = markets[(name, seed, "same")]["paid"].get("augmenter", 0) / max(plain["paid"].get("augmenter", 0), 1)
        spread = sum(markets[(name, seed, "spread")]["paid"].get(k, 0) for k in ("spread1", "spread2", "spread3"))
        spread /= max(plain["paid"].get("spread1", 0), 1)
        print(f"{name} seed {seed}: total with synthetic rows over without: same submission x{same:.3f}, "
              f"spread over keys x{spread:.3f}")
        assert spread <= 1 + SYNTHESIS_GAIN_MAX
        if name not in SMALL:  # interpolations in the same submission: see the module docstring
            assert same <= 1 + SYNTHESIS_GAIN_MAX


@pytest.mark.parametrize("name", DATASETS)
def test_no_honest_submission_is_zeroed_in_the_market(markets, name) -> None:
    """In every market, the honest submissions pass the gate and lose at most a few rows to the per-row rule (what
    that costs them is measured against the same game without the rule in tests/rewards/test_originality.py)."""
    for seed in SEEDS:
        for variant in ("plain", "same", "spread"):
            m = markets[(name, seed, variant)]
            honest = [s for who, s in m["scores"] if who in ("fresh", "spread1")
                      or (who == "augmenter" and variant != "same")]
            for s in honest:
                print(f"{name} seed {seed} {variant}: honest {s.rows} rows, {s.judged_rows} tested, "
                      f"{s.unoriginal_rows} unoriginal, gate p {s.gate_p:.2g}, status {s.status}")
                assert s.status == "accepted" and not s.gated, (name, seed, s)
                assert s.unoriginal_rows <= max(2, 0.05 * s.judged_rows)
