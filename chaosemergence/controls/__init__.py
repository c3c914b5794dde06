"""Chaos Toolkit controls: start/stop the reference system and traffic, guard the blast radius."""
