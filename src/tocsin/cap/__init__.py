"""CAP 1.2, the alert format: model, parse (with validation) and render; no I/O."""
