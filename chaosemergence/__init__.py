"""chaosemergence: defenses against emergent failures, a reference system and a Chaos Toolkit extension."""
