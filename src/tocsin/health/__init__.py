"""Readiness: what this node measured about its ability to deliver, never what it assumes."""
