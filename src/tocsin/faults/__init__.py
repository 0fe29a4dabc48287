"""The fault suite of RELIABILITY.md: run a cluster, a device fleet and an issuer, inject a
fault, heal it, and check the five invariants against the history of every operation.

history.py   JSON-lines history of every operation, written by the harness and the fleet
fleet.py     the simulated device fleet (its own process, uvloop, raw asyncio streams)
workload.py  the issuer: CAP alerts at a rate through the public API, retried on other nodes
netns.py     network namespaces and veth pairs, for partitions (F06)
disks.py     tmpfs, loop devices and power-loss copies of a node's disk (F11-F13)
harness.py   one run: cluster, fleet, issuer, /readyz sampler, fault, heal, final state
checker.py   the five invariants and the figures, from a history and a final state
scenarios.py F01-F22
report.py    docs/reliability-report.md
cli.py       `tocsin-faults --all | --only F05,F06`
"""
