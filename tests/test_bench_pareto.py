"""The Pareto benchmark's bookkeeping: sharding a plan over processes and the statistics it reports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import bench_pareto as bp  # noqa: E402


def _plan() -> list[tuple]:
    """Three targets, 8 randoms and 2 baselines each, in the benchmark's tuple layout."""
    items = []
    for t in (4.0, 5.0, 6.0):
        items += [(t, "random", f"r{t}_{i}", 0, [], None, t) for i in range(8)]
        items += [(t, f"baseline:{f}", f"{f}{t}", 0, [], None, None, 0.25) for f in ("a", "b")]
        items.append((t, "baseline:c", "c_w0.25", 0, [], None, None, 0.25))  # one width fits every target
    return items


@pytest.mark.parametrize("n", [1, 2, 3])
def test_shards_cover_the_plan_once_and_balance_the_load(n: int) -> None:
    items = _plan()
    searches, cost = 3, 7
    shares = [bp.share(items, "searched:evolution", searches, k, n, cost) for k in range(n)]
    names = sorted(it[2] for s in shares for it in s)
    assert names == sorted(it[2] for it in items)  # every network trained by exactly one shard
    loads = [cost * len(range(k, searches, n)) + len({it[2] for it in s}) for k, s in enumerate(shares)]
    assert max(loads) - min(loads) <= 1
    for name in {it[2] for it in items}:  # one run folder, one process
        assert sum(any(it[2] == name for it in s) for s in shares) == 1


def test_a_shard_keeps_the_searched_networks_of_its_own_seeds() -> None:
    own = [(5.0, "searched", "s0", 0, [], Path("a.json"), 5.0)]
    mine = bp.share(own + _plan(), "searched", 3, 1, 2, 7)
    assert own[0] in mine


@pytest.mark.parametrize("text, expected", [("", None), ("0/2", (0, 2)), ("1/3", (1, 3))])
def test_parse_shard(text: str, expected: tuple[int, int] | None) -> None:
    assert bp._parse_shard(text) == expected


@pytest.mark.parametrize("text", ["2/2", "x/2", "1", "-1/2"])
def test_parse_shard_refuses_bad_text(text: str) -> None:
    with pytest.raises(SystemExit, match="--shard"):
        bp._parse_shard(text)


def test_percentile_and_bootstrap_interval() -> None:
    randoms = [0.40, 0.42, 0.44, 0.46, 0.48, 0.50, 0.52, 0.54]
    assert bp.percentile_of(0.53, randoms) == 87.5
    lo, hi = bp.bootstrap_diff([0.60, 0.61, 0.62], randoms)
    assert 0 < lo < hi  # clearly better than the random median
    lo, hi = bp.bootstrap_diff([0.46, 0.47, 0.48], randoms)
    assert lo < 0 < hi  # indistinguishable from it


def test_search_folders_per_strategy_and_variant() -> None:
    assert bp._search_names("evolution", [4.0, 5.0], 1) == ["evolution_s1"]
    assert bp._search_names("halving", [4.0, 5.0], 2, "halving16") == ["halving16_s2"]
    assert bp._search_names("native", [4.0, 5.5], 0) == ["search_4ms_s0", "search_5.5ms_s0"]
    assert bp._search_names("native", [4.0], 0, "long") == ["search_long_4ms_s0"]
