"""Scenario files shipped with gridpeer (package data: ``load_scenario(name)`` finds them)."""
