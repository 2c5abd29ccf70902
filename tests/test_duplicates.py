"""Row hashes are stable byte-defined values; first_seen_mask keeps only first, previously unseen copies."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from rewards.duplicates import first_seen_mask, row_hashes


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
