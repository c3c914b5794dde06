"""Tests for the call-graph metrics behind the interaction complexity score."""

from __future__ import annotations

import pytest

from chaosemergence.defenses.detect import (
    average_clustering,
    betweenness_centrality,
    density,
    interaction_complexity,
)

TRIANGLE = {"a": ["b", "c"], "b": ["c"]}
STAR = {"gw": ["s1", "s2", "s3", "s4"]}
PATH = {"a": ["b"], "b": ["c"]}


def test_density() -> None:
    """Density is edges over possible edges: 1 for a triangle, 0.4 for a 5-node star."""
    assert density(TRIANGLE) == pytest.approx(1.0)
    assert density(STAR) == pytest.approx(0.4)
    assert density({"solo": []}) == 0.0


def test_clustering() -> None:
    """A triangle is fully clustered, a star not at all."""
    assert average_clustering(TRIANGLE) == pytest.approx(1.0)
    assert average_clustering(STAR) == 0.0


def test_betweenness_matches_networkx_normalization() -> None:
    """The hub of a star and the middle of a path have betweenness 1, leaves 0."""
    star = betweenness_centrality(STAR)
    assert star["gw"] == pytest.approx(1.0)
    assert star["s1"] == 0.0
    assert betweenness_centrality(PATH)["b"] == pytest.approx(1.0)
    assert set(betweenness_centrality(TRIANGLE).values()) == {0.0}


def test_interaction_complexity_weights() -> None:
    """The score is 0.4 density + 0.3 clustering + 0.3 mean betweenness."""
    assert interaction_complexity(STAR) == pytest.approx(0.4 * 0.4 + 0.3 * 0.2)
    assert interaction_complexity(TRIANGLE) == pytest.approx(0.7)
    assert interaction_complexity({}) == 0.0


def test_direction_and_self_loops_are_ignored() -> None:
    """Calls in both directions count as one edge and self-calls are dropped."""
    assert density({"a": ["a", "b"], "b": ["a"]}) == pytest.approx(1.0)
