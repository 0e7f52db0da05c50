"""store.shared's row rules, which both backends apply alike (no I/O)."""

from __future__ import annotations

from marketd.store.shared import in_batches, pick_skus


async def test_in_batches_writes_until_a_transaction_is_short() -> None:
    """Each call touches at most ``batch`` rows; the loop ends on the first short one."""
    left = [5]
    asked: list[int] = []

    async def write(batch: int) -> int:
        asked.append(batch)
        n = min(batch, left[0])
        left[0] -= n
        return n

    assert await in_batches(write, 2) == 5
    assert asked == [2, 2, 2]  # 2 + 2 + 1: the third was short
    left[0] = 4
    assert await in_batches(write, 2) == 4
    assert asked[3:] == [2, 2, 2]  # a full last batch needs one more look, which finds none


def test_pick_skus_keeps_every_size_of_at_most_max_skus() -> None:
    rows = [("1", "A"), ("2", "B"), ("3", "A"), ("4", "C"), ("5", "B")]
    assert pick_skus(rows, 2) == ["1", "2", "3", "5"]
    assert pick_skus(rows, None) == ["1", "2", "3", "4", "5"]
