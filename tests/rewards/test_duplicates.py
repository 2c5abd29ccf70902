"""Row hashes are stable byte-defined values; first_seen_mask keeps only first, previously unseen copies."""

from __future__ import annotations

import hashlib
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from rewards import duplicates
from rewards.duplicates import (
    DEFAULT_NEAR_TOL,
    NearIndex,
    exact_duplicate_of,
    first_seen_mask,
    near_duplicate_mask,
    near_duplicate_of,
    row_hashes,
)


def spec_hash(features: list[float], label: int | str) -> int:
    """The hash as the contract defines it, written independently with struct."""
    data = b"".join(struct.pack("<d", 0.0 if f == 0 else f) for f in features)
    data += label.encode("utf-8") if isinstance(label, str) else struct.pack("<q", label)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def test_known_values_are_stable() -> None:
    # Pinned: these values are stored in the lake, so they must never change.
    hashes = row_hashes(np.array([[1.5, -0.0, 3.0], [1.5, 0.0, 3.0]]), np.array([7, 7]))
    assert hashes.dtype == np.uint64
    assert hashes.tolist() == [16749766613524171735, 16749766613524171735]
    assert row_hashes(np.array([[1.5, 0.0, 3.0]]), np.array(["seven"])).tolist() == [3572019214482534171]
    assert hashes[0] == spec_hash([1.5, 0.0, 3.0], 7)
    assert row_hashes(np.array([[1.5, 0.0, 3.0]]), np.array(["seven"]))[0] == spec_hash([1.5, 0.0, 3.0], "seven")


def test_negative_zero_hashes_as_zero_and_nans_agree() -> None:
    a = row_hashes(np.array([[-0.0, 2.0, np.nan]]), np.array([1]))
    weird_nan = np.frombuffer(bytes.fromhex("010000000000f87f"), dtype="<f8")[0]  # NaN with another payload
    b = row_hashes(np.array([[0.0, 2.0, weird_nan]]), np.array([1]))
    assert a[0] == b[0]


def test_label_and_features_both_change_the_hash() -> None:
    x = np.array([[0.25, 4.0], [0.25, 4.0], [0.25, 4.5]])
    h = row_hashes(x, np.array([3, 4, 3]))
    assert h[0] != h[1]
    assert h[0] != h[2]
    assert row_hashes(x[:1], np.array(["3"]))[0] != h[0]


def test_label_types_are_canonical() -> None:
    x = np.array([[1.0, 2.0]] * 3)
    ints = row_hashes(x, np.array([5, 5, 5], dtype=np.int32))
    assert ints.tolist() == row_hashes(x, np.array([5, 5, 5], dtype=np.int64)).tolist()
    assert ints.tolist() == row_hashes(x, np.array([5, np.int64(5), 5.0], dtype=object)).tolist()
    strs = row_hashes(x, np.array(["ab", "ab", "ab"], dtype=object))
    assert strs.tolist() == row_hashes(x, np.array(["ab"] * 3)).tolist()
    with pytest.raises(TypeError):
        row_hashes(x[:1], np.array([None], dtype=object))
    with pytest.raises(ValueError):
        row_hashes(x, np.array([1, 2]))


def test_empty_input() -> None:
    assert row_hashes(np.zeros((0, 4)), np.zeros(0, dtype=np.int64)).shape == (0,)
    assert first_seen_mask(np.zeros(0, dtype=np.uint64), None).shape == (0,)


def test_first_seen_mask_keeps_first_copies_only() -> None:
    h = np.array([5, 9, 5, 2, 9, 9, 7], dtype=np.uint64)
    np.testing.assert_array_equal(first_seen_mask(h, None), [True, True, False, True, False, False, True])


@pytest.mark.parametrize("prior", [{9, 7}, np.array([9, 7, 100], dtype=np.uint64), [7, 9]])
def test_first_seen_mask_excludes_prior_hashes(prior: object) -> None:
    h = np.array([5, 9, 5, 2, 9, 9, 7], dtype=np.uint64)
    np.testing.assert_array_equal(first_seen_mask(h, prior), [True, False, False, True, False, False, False])


def test_first_seen_mask_handles_full_64_bit_range() -> None:
    big = np.array([2**64 - 1, 2**63, 2**64 - 1], dtype=np.uint64)
    np.testing.assert_array_equal(first_seen_mask(big, {2**63}), [True, False, False])
    # The same hashes stored as signed BIGINT wrap to the same values.
    np.testing.assert_array_equal(first_seen_mask(big, np.array([-(2**63)], dtype=np.int64)), [True, False, False])


# ------------------------------------------------------------------------------------------------ near duplicates



def brute_near_duplicates(x_new, x_prior, scale, tol, candidates=None) -> np.ndarray:
    """The definition, row by row in arrival order, with full distance scans: the earliest earlier row within tol
    (any prior row, else an earlier new row that is not a duplicate itself), or -1."""
    z_new = np.asarray(x_new, dtype=float) / scale
    z_prior = np.asarray(x_prior, dtype=float).reshape(-1, z_new.shape[1]) / scale
    n_prior = z_prior.shape[0]
    judged = np.ones(len(z_new), dtype=bool) if candidates is None else np.asarray(candidates)
    source = np.full(len(z_new), -1, dtype=np.int64)
    accepted: list[int] = []
    for i, z in enumerate(z_new):
        if not judged[i] or not np.isfinite(z).all():
            continue
        ok_prior = np.isfinite(z_prior).all(axis=1)
        hits = np.flatnonzero((np.sqrt(((z_prior - z) ** 2).sum(axis=1)) < tol) & ok_prior)
        if hits.size:
            source[i] = hits[0]
            continue
        near = [j for j in accepted if np.sqrt(((z_new[j] - z) ** 2).sum()) < tol]
        if near:
            source[i] = n_prior + near[0]
        else:
            accepted.append(i)
    return source


@pytest.mark.parametrize("seed", range(25))
def test_near_duplicates_match_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 40))
    base = rng.random((40, d))

    def rows(k: int) -> np.ndarray:  # copies of a few base rows, each moved by 0, 1e-7, 1e-5 or 1e-3
        return base[rng.integers(0, 40, k)] + rng.choice([0.0, 1e-7, 1e-5, 1e-3], size=(k, 1)) * rng.normal(size=(k, d))

    n, n_prior = int(rng.integers(1, 150)), int(rng.integers(0, 150))
    x_new, x_prior = rows(n), rows(n_prior)
    scale = rng.random(d) + 0.5
    tol = float(rng.choice([1e-5, 1e-4, 1e-2]))
    candidates = rng.random(n) < 0.9
    got = near_duplicate_of(x_new, x_prior, scale, tol, candidates=candidates)
    assert got.dtype == np.int64 and got.shape == (n,)
    np.testing.assert_array_equal(got, brute_near_duplicates(x_new, x_prior, scale, tol, candidates))
    np.testing.assert_array_equal(near_duplicate_mask(x_new, x_prior, scale, tol),
                                  brute_near_duplicates(x_new, x_prior, scale, tol) >= 0)


def test_a_keys_own_replay_is_a_duplicate() -> None:
    # The attack: a key re-sends its own accepted rows with tiny jitter. Whose row it copies does not matter.
    rng = np.random.default_rng(5)
    own = rng.random((50, 8))
    replay = own + rng.normal(0, 1e-7, own.shape)
    np.testing.assert_array_equal(near_duplicate_of(replay, own), np.arange(50))


def test_arrival_order_decides() -> None:
    x = np.array([[0.0, 0.0], [0.0, 1e-9], [5.0, 5.0], [5.0, 5.0 + 1e-9], [0.0, 2e-9]])
    # Row 1 copies row 0, row 3 copies row 2; row 4 is near row 0 (accepted) and row 1 (a duplicate, so it does not
    # count): the source is row 0.
    np.testing.assert_array_equal(near_duplicate_of(x), [-1, 0, -1, 2, 0])
    # Against the lake, the earliest lake row within tol is the source; later new rows never are.
    got = near_duplicate_of(np.array([[0.0, 1e-9], [0.0, 2e-9], [7.0, 7.0]]),
                            np.array([[9.0, 9.0], [0.0, 0.0], [0.0, 1e-10]]))
    np.testing.assert_array_equal(got, [1, 1, -1])


def test_exact_duplicate_of_points_at_the_first_copy() -> None:
    np.testing.assert_array_equal(exact_duplicate_of(np.array([5, 6, 5, 7, 6, 9], dtype=np.uint64),
                                                     np.array([9, 1, 9], dtype=np.uint64)),
                                  [-1, -1, 3, -1, 4, 0])
    np.testing.assert_array_equal(exact_duplicate_of(np.array([2**64 - 1, 2**64 - 1], dtype=np.uint64)), [-1, 0])
    assert exact_duplicate_of(np.zeros(0, dtype=np.uint64)).shape == (0,)


def test_default_tolerance_catches_jitter_and_spares_distinct_rows() -> None:
    rng = np.random.default_rng(3)
    d = 64
    scale = rng.uniform(1, 100, d)
    lake = rng.normal(0, 1, (2000, d)) * scale
    jittered = lake[:500] + rng.uniform(-1e-4, 1e-4, (500, d)) * scale  # 1e-4 of the std, every feature
    honest = rng.normal(0, 1, (500, d)) * scale
    mask = near_duplicate_mask(np.concatenate([jittered, honest]), lake, scale)
    assert mask[:500].all() and not mask[500:].any()
    assert DEFAULT_NEAR_TOL >= 1e-4 * np.sqrt(100)


def test_scale_is_per_feature() -> None:
    # 0.5 apart on a feature whose scale is 1e6 is a near duplicate at tol 1e-5; on a scale of 1 it is not.
    x_prior, x_new = np.array([[0.0, 0.0]]), np.array([[0.5, 0.0], [0.0, 0.5]])
    got = near_duplicate_mask(x_new, x_prior, scale=np.array([1e6, 1.0]), tol=1e-5)
    np.testing.assert_array_equal(got, [True, False])


def test_piles_of_identical_lake_rows_are_collapsed_exactly() -> None:
    rng = np.random.default_rng(9)
    pile = np.repeat(rng.random((1, 6)), 300, axis=0)
    lake = np.concatenate([rng.random((200, 6)), pile])
    x_new = np.concatenate([pile[:3] + 1e-9, rng.random((20, 6)), lake[:10]])
    x_new = np.concatenate([x_new, x_new[5:7] + 1e-9])  # copies of earlier new rows, found past the collapsed pile
    got = near_duplicate_of(x_new, lake)
    np.testing.assert_array_equal(got, brute_near_duplicates(x_new, lake, 1.0, DEFAULT_NEAR_TOL))
    assert (got[:3] == 200).all()  # the pile's first row
    np.testing.assert_array_equal(got[-2:], len(lake) + np.array([5, 6]))


def test_near_duplicates_bad_inputs_and_nans() -> None:
    x = np.array([[0.0, np.nan], [0.0, np.nan], [1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(near_duplicate_of(x), [-1, -1, -1, 2])
    assert near_duplicate_of(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="scale"):
        near_duplicate_mask(x, scale=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="tol"):
        near_duplicate_mask(x, tol=0.0)
    with pytest.raises(ValueError, match="candidates"):
        near_duplicate_of(x, candidates=np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="x_prior"):
        near_duplicate_mask(x, np.zeros((2, 3)))


def test_candidates_are_a_superset_near_bucket_edges() -> None:
    # Rows placed right at bucket edges on every projection still find their partners across the edge.
    rng = np.random.default_rng(4)
    d, tol = 3, 1e-4  # d <= projections: the projections are the coordinates themselves
    width = duplicates._NEAR_CELL * tol
    edge = np.round(rng.uniform(0, 50, (200, d))) * width
    x_prior = edge + rng.uniform(-tol / 3, tol / 3, (200, d))
    x_new = edge + rng.uniform(-tol / 3, tol / 3, (200, d))
    assert near_duplicate_mask(x_new, x_prior, tol=tol).all()


@pytest.mark.slow  # importing sklearn.datasets alone takes seconds
@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "digits"])
def test_honest_rows_are_never_flagged(name: str) -> None:
    from sklearn import datasets

    from rewards.scaling import fit_scaling

    data = getattr(datasets, f"load_{name}")()
    x = data.data.astype(np.float64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x = x[order]
    std = fit_scaling(x[: len(x) // 3], "standard").scale  # a holdout third, as the market does
    got = near_duplicate_of(x, scale=std)
    # Only rows identical to an earlier row are flagged (iris holds one such pair); distinct rows never are.
    _, first = np.unique(x, axis=0, return_index=True)
    assert (got[first] < 0).all()
    assert (got >= 0).sum() == len(x) - len(first)
    # A copier (or the sender itself) jittering every feature by up to 1e-6 of its std is caught on every row.
    jittered = x + rng.uniform(-1e-6, 1e-6, x.shape) * std
    assert (near_duplicate_of(jittered, x, std) >= 0).all()


# ------------------------------------------------------------------------------------------ the persistent index


def epoch_data(rng: np.random.Generator, d: int, tol: float, steps: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Prior rows in `steps` batches and a batch of new rows: jittered copies of a few base rows (some within tol,
    some not), a pile of identical rows growing across batches, NaN rows; new rows also copy prior rows exactly, the
    pile, and earlier new rows."""
    base = rng.random((30, d))
    pile = base[:1]

    def rows(k: int) -> np.ndarray:
        jitter = rng.choice([0.0, 0.1 * tol, 0.5 * tol, 2.0 * tol], size=(k, 1)) * rng.normal(size=(k, d))
        return base[rng.integers(0, len(base), k)] + jitter / np.sqrt(d)

    def with_nans(x: np.ndarray) -> np.ndarray:
        at = np.flatnonzero(rng.random(len(x)) < 0.05)
        x[at, rng.integers(0, d, at.size)] = np.nan
        return x

    batches = []
    for _ in range(steps):
        parts = [rows(int(rng.integers(0, 80)))]
        if rng.random() < 0.6:
            parts.append(np.repeat(pile, int(rng.integers(5, 45)), axis=0))
        batch = np.concatenate(parts)
        batches.append(with_nans(batch[rng.permutation(len(batch))]))
    prior = np.concatenate(batches)
    new = [rows(int(rng.integers(1, 120))), np.repeat(pile + rng.choice([0.0, 0.3 * tol]), 3, axis=0)]
    if len(prior):
        new.append(prior[rng.integers(0, len(prior), 10)])
    x_new = with_nans(np.concatenate(new))
    x_new = np.concatenate([x_new, x_new[:5] + 0.2 * tol / np.sqrt(d)])  # copies of earlier new rows
    return batches, x_new


@pytest.mark.parametrize("seed", range(40))
def test_near_index_answers_as_near_duplicate_of(seed: int) -> None:
    # Built in several extend steps, queried after each: the same answers as near_duplicate_of against every prior
    # row so far, for d below and above the projection count, piles (the crowd path), NaN rows and a tol that is
    # large against the data (every row in one bucket).
    rng = np.random.default_rng(seed)
    d = int(rng.choice([1, 2, 5, 8, 9, 20, 40]))
    tol = float(rng.choice([1e-5, 1e-3, 3e-2, 0.4]))
    scale = rng.random(d) + 0.5 if rng.random() < 0.7 else 1.0
    batches, x_new = epoch_data(rng, d, tol, steps=int(rng.integers(1, 5)))
    candidates = rng.random(len(x_new)) < 0.9
    index = NearIndex.build(batches[0], scale, tol)
    for step in range(len(batches)):
        if step:
            index.extend(batches[step])
        x_prior = np.concatenate(batches[:step + 1])
        assert index.n_prior == len(x_prior)
        got = index.query(x_new, candidates=candidates)
        assert got.dtype == np.int64 and got.shape == (len(x_new),)
        np.testing.assert_array_equal(got, near_duplicate_of(x_new, x_prior, scale, tol, candidates=candidates))
    np.testing.assert_array_equal(got, brute_near_duplicates(x_new, x_prior, scale, tol, candidates))
    np.testing.assert_array_equal(index.query(x_new), near_duplicate_of(x_new, x_prior, scale, tol))


def test_near_index_from_nothing_and_in_single_rows() -> None:
    rng = np.random.default_rng(11)
    batches, x_new = epoch_data(rng, 12, 1e-3, steps=3)
    index = NearIndex.build(np.zeros((0, 12)), None, 1e-3)
    assert index.n_prior == 0
    np.testing.assert_array_equal(index.query(x_new), near_duplicate_of(x_new, None, None, 1e-3))
    rows = np.concatenate(batches)
    for row in rows:
        index.extend(row[None, :])
    index.extend(np.zeros((0, 12)))
    np.testing.assert_array_equal(index.query(x_new), near_duplicate_of(x_new, rows, None, 1e-3))
    assert len(index._runs) <= int(np.log2(len(rows))) + 1  # runs and row blocks are merged as they grow
    assert len(index._blocks) <= int(np.log2(len(rows))) + 1


def bucketed_rows(index: NearIndex) -> int:
    """How many prior rows the index holds bucket keys for."""
    return sum(keys.size for keys, _ in index._runs)


def test_near_index_collapses_piles_across_extends() -> None:
    # Each batch adds 20 copies of one row: alone no bucket is crowded; together they are, and later copies are left
    # out of the buckets (their earliest copy answers for them), so probes near the pile stay cheap.
    rng = np.random.default_rng(2)
    d, tol = 6, 1e-3
    pile = np.repeat(rng.random((1, d)), 20, axis=0)
    batches = [np.concatenate([rng.random((30, d)), pile]) for _ in range(5)]
    index = NearIndex.build(batches[0], 1.0, tol)
    for batch in batches[1:]:
        index.extend(batch)
    x_prior = np.concatenate(batches)
    assert bucketed_rows(index) < len(x_prior) - 3 * 20
    x_new = np.concatenate([pile[:2] + 1e-6, rng.random((10, d)), x_prior[[40, 60]]])
    got = index.query(x_new)
    np.testing.assert_array_equal(got, near_duplicate_of(x_new, x_prior, 1.0, tol))
    np.testing.assert_array_equal(got, brute_near_duplicates(x_new, x_prior, 1.0, tol))
    assert (got[:2] == 30).all()  # the pile's first row


def test_near_index_rows_beyond_its_grid() -> None:
    # A tiny tol: the grid is fixed for rows up to 16 x the magnitude at build. Rows past that re-bucket the index
    # on extend, and a query row past it (within tol of nothing in the index) is still judged against new rows.
    tol, d = 1e-9, 2
    x0 = np.array([[1.0, 0.5], [0.25, -1.0]])
    index = NearIndex.build(x0, 1.0, tol)
    zlimit = index._grid.zlimit
    assert zlimit == pytest.approx(16.0)
    near_edge = np.array([[zlimit - 5e-10, 0.0]])  # within the grid, but a row within tol of it is not
    index.extend(near_edge)
    assert index._grid.zlimit > zlimit  # re-bucketed, with headroom
    x_prior = np.concatenate([x0, near_edge])
    x_new = np.array([[zlimit + 3e-10, 0.0], [1e6, 1e6], [1e6, 1e6 + 1e-10], [1.0, 0.5 + 1e-10], [3e7, 0.0]])
    got = index.query(x_new)
    np.testing.assert_array_equal(got, [2, -1, 4, 0, -1])
    np.testing.assert_array_equal(got, near_duplicate_of(x_new, x_prior, 1.0, tol))
    before = index._grid
    index.extend(x_new)  # far larger rows: re-bucketed again
    assert index._grid.zlimit > before.zlimit and index._grid.width > before.width
    x_prior = np.concatenate([x_prior, x_new])
    probe = np.array([[1e6, 1e6 + 2e-10], [3e7 + 1e-9 / 4, 0.0], [1.0, 0.5], [zlimit, 0.0]])
    np.testing.assert_array_equal(index.query(probe), near_duplicate_of(probe, x_prior, 1.0, tol))
    np.testing.assert_array_equal(index.query(probe), [4, 7, 0, 2])


def test_near_index_grows_within_its_grid_without_rebucketing() -> None:
    rng = np.random.default_rng(8)
    index = NearIndex.build(rng.random((50, 4)), 1.0, 1e-3)
    grid = index._grid
    for _ in range(5):
        index.extend(rng.random((20, 4)) * 3)
    assert index._grid is grid


def test_near_index_save_and_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    batches, x_new = epoch_data(rng, 10, 1e-3, steps=4)
    scale = rng.random(10) + 0.5
    index = NearIndex.build(batches[0], scale, 1e-3)
    for batch in batches[1:3]:
        index.extend(batch)
    path = tmp_path / "near.npz"
    path.write_bytes(b"an older file, replaced whole")
    index.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["near.npz"]  # no temporary file left behind
    with np.load(path, allow_pickle=False) as z:  # plain arrays, no pickles
        assert "features_0" in z.files and all(z[name].dtype != object for name in z.files)
    loaded = NearIndex.load(path)
    assert loaded.n_prior == index.n_prior
    np.testing.assert_array_equal(loaded.prior_features(), np.concatenate(batches[:3]))  # NaN rows included
    np.testing.assert_array_equal(loaded.query(x_new), index.query(x_new))
    # Both go on the same way after more rows.
    loaded.extend(batches[3])
    index.extend(batches[3])
    expected = near_duplicate_of(x_new, np.concatenate(batches), scale, 1e-3)
    np.testing.assert_array_equal(loaded.query(x_new), expected)
    np.testing.assert_array_equal(index.query(x_new), expected)
    loaded.save(path)
    np.testing.assert_array_equal(NearIndex.load(path).query(x_new), expected)
    assert loaded.tol == 1e-3 and np.array_equal(loaded.scale, scale)


def test_near_index_save_and_load_without_bucketed_rows(tmp_path: Path) -> None:
    for x_prior in (np.zeros((0, 3)), np.full((2, 3), np.nan)):
        NearIndex.build(x_prior, 1.0, 1e-3).save(tmp_path / "near.npz")
        loaded = NearIndex.load(tmp_path / "near.npz")
        assert loaded.n_prior == len(x_prior) and loaded._runs == []
        x_new = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1e-4]])
        np.testing.assert_array_equal(loaded.query(x_new), [-1, len(x_prior)])
        loaded.extend(x_new)
        np.testing.assert_array_equal(loaded.query(x_new), [len(x_prior), len(x_prior)])


def test_near_index_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, features=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="not a near-duplicate index"):
        NearIndex.load(path)
    index = NearIndex.build(np.random.default_rng(0).random((100, 3)), 1.0, 1e-3)
    index.save(path)
    with np.load(path) as z:
        arrays = {name: z[name] for name in z.files}
    arrays["keys"] = arrays["keys"][::-1].copy()
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="not sorted"):
        NearIndex.load(path)


def test_near_index_bad_inputs() -> None:
    x = np.random.default_rng(0).random((10, 3))
    index = NearIndex.build(x, 1.0, 1e-3)
    with pytest.raises(ValueError, match="x_rows"):
        index.extend(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="x_new"):
        index.query(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="candidates"):
        index.query(x, candidates=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="tol"):
        NearIndex.build(x, 1.0, 0.0)
    with pytest.raises(ValueError, match="scale"):
        NearIndex.build(x, np.array([1.0, 0.0, 1.0]), 1e-3)
    with pytest.raises(ValueError, match="feature"):
        NearIndex.build(np.zeros((3, 0)), 1.0, 1e-3)
    assert index.query(np.zeros((0, 3))).shape == (0,)
    assert index.n_prior == 10


@pytest.mark.slow  # about 5 s: a million-row lake
def test_near_index_query_cost_against_a_large_lake(capsys: pytest.CaptureFixture[str]) -> None:
    # Not a timed assertion: prints what a query of 10k new rows x 32 features costs against 1M prior rows (build is
    # allowed O(N log N)), next to near_duplicate_of, which sorts the whole lake on every call.
    rng = np.random.default_rng(1)
    n_lake, n_new, d = 1_000_000, 10_000, 32
    scale = rng.uniform(1, 50, d)
    lake = rng.random((n_lake, d)) * scale
    x_new = rng.random((n_new, d)) * scale
    copied = rng.choice(n_new, 100, replace=False)
    x_new[copied] = lake[rng.integers(0, n_lake, copied.size)] + rng.uniform(-1e-6, 1e-6, (copied.size, d)) * scale
    start = time.perf_counter()
    index = NearIndex.build(lake, scale, DEFAULT_NEAR_TOL)
    built = time.perf_counter() - start
    start = time.perf_counter()
    got = index.query(x_new)
    queried = time.perf_counter() - start
    start = time.perf_counter()
    expected = near_duplicate_of(x_new, lake, scale, DEFAULT_NEAR_TOL)
    old = time.perf_counter() - start
    start = time.perf_counter()
    index.extend(x_new)
    extended = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nNearIndex, {n_new} x {d} new rows vs {n_lake:,} prior rows: query {queried:.3f} s "
              f"(build {built:.2f} s, extend by the batch {extended:.3f} s); near_duplicate_of {old:.2f} s")
    np.testing.assert_array_equal(got, expected)
    assert set(np.flatnonzero(got >= 0)) == set(copied)
