"""Faithful fakes of the outside world tocsin cannot reach from here: push gateways.

Each fake checks what the real service checks (signatures, encryption, headers, limits) and
answers what it answers, errors included, and can be told at run time to fail.
"""
