"""The address table behind the dedup sets and the cache, against a Python set.

Its growth is where it is most fragile: a small table is rehashed into a new block, a
large one (4 MiB on) grows in place, its entries moved within the doubled block.
``in_place=True`` grows in place from the first doubling on, so that short scripts reach
that path; the keys are made so that probe runs cluster at the table's start, middle
and end, and wrap around it, where a move in place can go wrong.
"""

from __future__ import annotations

import random

import pytest

from pyparams._extension import _C

MASK = (1 << 64) - 1
PHI = 0x9E3779B97F4A7C15  # the table's Fibonacci multiplier: a slot is the product's top bits
PHI_INVERSE = pow(PHI, -1, 1 << 64)


def key_hashing_to(product: int) -> int:
    """The key whose product with the multiplier is ``product`` (even, so is the key)."""
    assert product % 2 == 0
    return (product * PHI_INVERSE) & MASK


def clustered_keys(count: int, rng: random.Random) -> list[int]:
    """Keys whose slots crowd the end (wrapping to the start), the start and the middle
    of a table of any size, and some spread out."""
    keys = set()
    for index in range(count):
        where = index % 4
        if where == 0:  # the last slot of every table size: a run that wraps around
            product = (MASK - 1 - 2 * rng.randrange(1 << 20)) & ~1
        elif where == 1:  # slot 0 of every table size
            product = 2 * rng.randrange(1, 1 << 20)
        elif where == 2:  # the middle
            product = (1 << 63) + 2 * rng.randrange(1 << 20)
        else:
            product = rng.getrandbits(64) & ~1
        keys.add(key_hashing_to(product))
    keys.discard(0)
    return sorted(keys, key=lambda _: rng.random())


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "new-block"])
@pytest.mark.parametrize("seed", range(6))
def test_the_table_answers_as_a_set_does_through_every_growth(in_place: bool, seed: int) -> None:
    rng = random.Random(seed)
    keys = clustered_keys(6000, rng)
    model: set[int] = set()
    ops: list[tuple[str, int]] = []
    expected: list[bool] = []
    for key in keys:
        ops.append(("insert", key))
        expected.append(key not in model)
        model.add(key)
        if rng.random() < 0.2:  # erase one present (shifting its run back) or absent key
            victim = rng.choice(keys)
            ops.append(("erase", victim))
            expected.append(victim in model)
            model.discard(victim)
        if rng.random() < 0.2:  # a key inserted again
            again = rng.choice(keys)
            ops.append(("insert", again))
            expected.append(again not in model)
            model.add(again)
    for key in keys:  # the whole table, after its last growth
        ops.append(("find", key))
        expected.append(key in model)
    assert _C._address_table_ops(ops, in_place) == expected
    assert len(model) > 4000  # past seven doublings (16 ... 8192 slots)


def test_a_key_the_table_cannot_take_is_refused() -> None:
    for key in (0, 17):
        with pytest.raises(ValueError, match="nonzero and even"):
            _C._address_table_ops([("insert", key)], True)
    with pytest.raises(ValueError, match="unknown op"):
        _C._address_table_ops([("pop", 16)], True)
