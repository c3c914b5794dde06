"""Cellular routing versus the naive shared mode (failover across instances)."""

from __future__ import annotations

from chaosemergence.app.routing import Routing


def test_cellular_routing_never_fails_over() -> None:
    """A user's only candidate is their home cell, even when it is dead."""
    routing = Routing(4)
    home = routing.home("alice")
    assert routing.candidates("alice", alive=lambda cell: cell != home) == [home]


def test_shared_mode_fails_over_to_every_live_instance() -> None:
    """Without cellular routing, a dead home cell's users land on the others, home first."""
    routing = Routing(4)
    routing.cellular = False
    home = routing.home("alice")
    everyone = routing.candidates("alice", alive=lambda cell: True)
    assert everyone[0] == home and sorted(everyone) == [0, 1, 2, 3]
    without_home = routing.candidates("alice", alive=lambda cell: cell != home)
    assert home not in without_home and len(without_home) == 3


def test_homes_follow_the_hash_ring() -> None:
    """The same user always has the same home; users spread over every cell."""
    routing = Routing(4)
    assert routing.home("bob") == routing.home("bob")
    assert {routing.home(f"u{i}") for i in range(200)} == {0, 1, 2, 3}
