"""prober."""
