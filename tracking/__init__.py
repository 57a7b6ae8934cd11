"""Tracking: one Tracker protocol, its sinks, activation capture, rendering and artifacts."""
