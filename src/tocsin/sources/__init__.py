"""Aggregator mode: other authorities' CAP feeds polled, checked and relayed (docs/sources.md)."""
