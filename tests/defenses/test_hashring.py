"""Tests for consistent-hash routing over virtual nodes."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosemergence.defenses import HashRing, stable_hash

CELLS = [f"cell-{i}" for i in range(10)]
IDS = [f"user-{i}" for i in range(100_000)]


@pytest.fixture(scope="module")
def ring_and_routes() -> tuple[HashRing, dict[str, str]]:
    ring = HashRing(CELLS)
    return ring, {uid: ring.node_for(uid) for uid in IDS}


def test_hundred_thousand_ids_are_balanced_within_ten_percent(
    ring_and_routes: tuple[HashRing, dict[str, str]],
) -> None:
    """Each of 10 cells gets 10,000 +- 10% of 100,000 user ids."""
    _, routes = ring_and_routes
    counts = Counter(routes.values())
    assert set(counts) == set(CELLS)
    assert all(9_000 <= c <= 11_000 for c in counts.values()), counts


def test_adding_a_cell_moves_about_one_in_n_plus_one(
    ring_and_routes: tuple[HashRing, dict[str, str]],
) -> None:
    """Adding an 11th cell moves at most ~1/11 of ids, all of them to the new cell."""
    _, before = ring_and_routes
    ring = HashRing([*CELLS, "cell-10"])
    moved = [uid for uid in IDS if ring.node_for(uid) != before[uid]]
    assert {ring.node_for(uid) for uid in moved} == {"cell-10"}
    assert len(moved) / len(IDS) <= 1.1 / 11


def test_removing_a_cell_moves_only_its_ids(
    ring_and_routes: tuple[HashRing, dict[str, str]],
) -> None:
    """Removing a cell reassigns only the ids it owned."""
    _, before = ring_and_routes
    ring = HashRing(CELLS)
    ring.remove("cell-3")
    for uid in IDS[:20_000]:
        if before[uid] != "cell-3":
            assert ring.node_for(uid) == before[uid]
        else:
            assert ring.node_for(uid) != "cell-3"


def test_hash_is_stable_across_processes() -> None:
    """Routing does not depend on Python's randomized hash()."""
    assert stable_hash("user-1") == 11145382709976293768
    code = (
        "from chaosemergence.defenses import HashRing; print(HashRing(['a','b','c']).node_for('k'))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


node_names = st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=12, unique=True)


@settings(max_examples=25, deadline=None)
@given(nodes=node_names)
def test_any_node_set_is_balanced(nodes: list[str]) -> None:
    """Whatever the node names, each owns 1/N of the key space within +-10%."""
    shares = HashRing(nodes).shares()
    expected = 1 / len(nodes)
    assert all(abs(s - expected) <= 0.1 * expected for s in shares.values()), shares


@settings(max_examples=25, deadline=None)
@given(nodes=node_names, new=st.text(min_size=1, max_size=12))
def test_adding_any_node_moves_only_to_it(nodes: list[str], new: str) -> None:
    """Adding a node moves keys only onto that node, about 1/(N+1) of the key space."""
    if new in nodes:
        return
    before = HashRing(nodes)
    after = HashRing([*nodes, new])
    for i in range(2000):
        key = f"k{i}"
        old_owner, new_owner = before.node_for(key), after.node_for(key)
        assert new_owner in (old_owner, new)
    assert after.shares()[new] <= 1.1 / (len(nodes) + 1)


def test_add_and_remove_are_idempotent() -> None:
    """Adding an existing node or removing an absent one changes nothing."""
    ring = HashRing(["a", "b"], vnodes=64)
    ring.add("a")
    ring.remove("zzz")
    assert ring.nodes == ("a", "b")
    assert "a" in ring and len(ring) == 2


def test_empty_ring_raises_lookup_error() -> None:
    """Routing on an empty ring names the key that could not be routed."""
    with pytest.raises(LookupError, match="user-9"):
        HashRing().node_for("user-9")


def test_nodes_for_and_shuffle_shards_are_distinct_and_stable() -> None:
    """Replica lists hold distinct nodes, and a key's shuffle shard never changes."""
    ring = HashRing(CELLS, vnodes=64)
    replicas = ring.nodes_for("user-1", 3)
    assert len(set(replicas)) == 3 and replicas[0] == ring.node_for("user-1")
    shard = ring.shuffle_shard("user-1", 2)
    assert shard == ring.shuffle_shard("user-1", 2) and len(set(shard)) == 2
    assert ring.snapshot()["nodes"] == CELLS
