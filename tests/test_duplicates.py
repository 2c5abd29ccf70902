"""Row hashes are stable byte-defined values; first_seen_mask keeps only first, previously unseen copies."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from rewards import duplicates
from rewards.duplicates import (
    DEFAULT_NEAR_TOL,
    first_seen_mask,
    near_duplicate_mask,
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



def brute_near_duplicates(x_new, owners_new, x_prior, owners_prior, scale, tol) -> np.ndarray:
    """The definition, row by row in arrival order, with full distance scans."""
    z_new = np.asarray(x_new, dtype=float) / scale
    z_prior = np.asarray(x_prior, dtype=float).reshape(-1, z_new.shape[1]) / scale
    owners_prior = np.asarray(owners_prior).reshape(-1)
    flagged = np.zeros(len(z_new), dtype=bool)
    accepted: list[int] = []
    for i, (z, owner) in enumerate(zip(z_new, owners_new)):
        d_prior = np.sqrt(((z_prior - z) ** 2).sum(axis=1))
        hit = bool(((d_prior < tol) & (owners_prior != owner)).any())
        if not hit and accepted:
            earlier = np.array(accepted)
            d_new = np.sqrt(((z_new[earlier] - z) ** 2).sum(axis=1))
            hit = bool(((d_new < tol) & (np.asarray(owners_new)[earlier] != owner)).any())
        flagged[i] = hit
        if not hit:
            accepted.append(i)
    return flagged


@pytest.mark.parametrize("seed", range(25))
def test_near_duplicates_match_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 40))
    base = rng.random((40, d))

    def rows(k: int) -> np.ndarray:  # copies of a few base rows, each moved by 0, 1e-7, 1e-5 or 1e-3
        return base[rng.integers(0, 40, k)] + rng.choice([0.0, 1e-7, 1e-5, 1e-3], size=(k, 1)) * rng.normal(size=(k, d))

    n, n_prior = int(rng.integers(1, 150)), int(rng.integers(0, 150))
    x_new, x_prior = rows(n), rows(n_prior)
    owners_new, owners_prior = rng.integers(0, 3, n), rng.integers(0, 3, n_prior)
    scale = rng.random(d) + 0.5
    tol = float(rng.choice([1e-5, 1e-4, 1e-2]))
    got = near_duplicate_mask(x_new, owners_new, x_prior, owners_prior, scale, tol)
    assert got.dtype == bool and got.shape == (n,)
    np.testing.assert_array_equal(got, brute_near_duplicates(x_new, owners_new, x_prior, owners_prior, scale, tol))


def test_arrival_order_and_owners_decide() -> None:
    x = np.array([[0.0, 0.0], [0.0, 1e-9], [5.0, 5.0], [5.0, 5.0 + 1e-9], [0.0, 2e-9]])
    # Row 1 copies row 0 from another key; row 3 copies row 2 from the same key (fine); row 4 is near row 0
    # (accepted, key a) and row 1 (a duplicate, so it does not count): a near duplicate because of row 0 only.
    got = near_duplicate_mask(x, ["a", "b", "c", "c", "b"])
    np.testing.assert_array_equal(got, [False, True, False, False, True])
    # Only row 1's copy exists for key a's row 4: row 1 was flagged, so it cannot make row 4 a duplicate.
    got = near_duplicate_mask(x[[0, 1, 4]], ["b", "a", "a"])
    np.testing.assert_array_equal(got, [False, True, True])
    got = near_duplicate_mask(np.array([[0.0, 0.0], [0.0, 1e-9], [0.0, 2e-9]]), ["x", "y", "y"],
                              np.array([[0.0, 0.0]]), ["y"])
    np.testing.assert_array_equal(got, [True, False, False])  # key y owns the lake row: its own copies are fine


def test_default_tolerance_catches_jitter_and_spares_distinct_rows() -> None:
    rng = np.random.default_rng(3)
    d = 64
    scale = rng.uniform(1, 100, d)
    lake = rng.uniform(0, 1, (2000, d)) * scale
    jittered = lake[:500] + rng.uniform(-1e-6, 1e-6, (500, d)) * scale  # 1e-6 of the range, every feature
    honest = rng.uniform(0, 1, (500, d)) * scale
    mask = near_duplicate_mask(np.concatenate([jittered, honest]), "copier", lake, "honest", scale)
    assert mask[:500].all() and not mask[500:].any()
    assert not near_duplicate_mask(jittered, "honest", lake, "honest", scale).any()
    assert DEFAULT_NEAR_TOL >= 1e-6 * np.sqrt(100)


def test_scale_is_per_feature() -> None:
    # 0.5 apart on a feature whose range is 1e6 is a near duplicate at tol 1e-5; on a range of 1 it is not.
    x_prior, x_new = np.array([[0.0, 0.0]]), np.array([[0.5, 0.0], [0.0, 0.5]])
    got = near_duplicate_mask(x_new, "b", x_prior, "a", scale=np.array([1e6, 1.0]), tol=1e-5)
    np.testing.assert_array_equal(got, [True, False])


def test_piles_of_identical_lake_rows_are_collapsed_exactly() -> None:
    rng = np.random.default_rng(9)
    pile = np.repeat(rng.random((1, 6)), 300, axis=0)
    lake = np.concatenate([pile, rng.random((200, 6))])
    owners = np.concatenate([np.full(300, 7), rng.integers(0, 5, 200)])
    owners[150] = 8  # one other owner in the pile
    x_new = np.concatenate([pile[:3] + 1e-9, rng.random((20, 6)), lake[300:310]])
    for who in (7, 8, 9):
        got = near_duplicate_mask(x_new, who, lake, owners)
        np.testing.assert_array_equal(got, brute_near_duplicates(x_new, np.full(len(x_new), who), lake, owners,
                                                                 1.0, DEFAULT_NEAR_TOL))
    assert near_duplicate_mask(x_new[:3], 7, lake, owners).all()  # owner 8 also holds the pile


def test_near_duplicates_bad_inputs_and_nans() -> None:
    x = np.array([[0.0, np.nan], [0.0, np.nan], [1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(near_duplicate_mask(x, ["a", "b", "a", "b"]), [False, False, False, True])
    assert near_duplicate_mask(np.zeros((0, 3)), []).shape == (0,)
    with pytest.raises(ValueError, match="scale"):
        near_duplicate_mask(x, "a", scale=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="tol"):
        near_duplicate_mask(x, "a", tol=0.0)
    with pytest.raises(ValueError, match="owners_new"):
        near_duplicate_mask(x, ["a", "b"])
    with pytest.raises(ValueError, match="x_prior"):
        near_duplicate_mask(x, "a", np.zeros((2, 3)), "b")


def test_candidates_are_a_superset_near_bucket_edges() -> None:
    # Rows placed right at bucket edges on every projection still find their partners across the edge.
    rng = np.random.default_rng(4)
    d, tol = 3, 1e-4  # d <= projections: the projections are the coordinates themselves
    width = duplicates._NEAR_CELL * tol
    edge = np.round(rng.uniform(0, 50, (200, d))) * width
    x_prior = edge + rng.uniform(-tol / 3, tol / 3, (200, d))
    x_new = edge + rng.uniform(-tol / 3, tol / 3, (200, d))
    assert near_duplicate_mask(x_new, "b", x_prior, "a", tol=tol).all()


@pytest.mark.slow  # importing sklearn.datasets alone takes seconds
@pytest.mark.parametrize("features", [slice(0, 64), slice(20, 28)])
def test_honest_digits_are_never_flagged(features: slice) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data[:, features].astype(np.float64)
    scale = np.full(x.shape[1], 16.0)  # the pixel range
    keys = np.array(["alice", "bob", "carol"])[np.arange(len(x)) % 3]
    got = near_duplicate_mask(x, keys, scale=scale)
    # Distinct pixel rows are >= 1/16 apart after scaling, so only identical rows can be near duplicates: those from
    # another key than an earlier accepted identical row are (a decision: identical rows from another key are
    # duplicates), and each one flagged has an identical earlier row.
    np.testing.assert_array_equal(got, brute_near_duplicates(x, keys, np.zeros((0, x.shape[1])), [], scale,
                                                             DEFAULT_NEAR_TOL))
    _, first, counts = np.unique(x, axis=0, return_index=True, return_counts=True)
    assert not got[first].any()
    if features == slice(0, 64):
        assert counts.max() == 1 and not got.any()  # every full digit is distinct: nothing flagged
    else:
        assert got.any()  # 8 pixels repeat a lot; the repeats from other keys are flagged
    # A copier jittering every pixel by up to 1e-6 of the range is flagged on every row; the owner is not.
    rng = np.random.default_rng(0)
    jittered = x + rng.uniform(-1e-6, 1e-6, x.shape) * scale
    assert near_duplicate_mask(jittered, "mallory", x, keys, scale).all()
    if counts.max() == 1:  # each key re-jittering only its own (distinct) rows copies nobody
        assert not near_duplicate_mask(jittered, keys, x, keys, scale).any()
