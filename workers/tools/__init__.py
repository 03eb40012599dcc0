"""The tools behind ``reactor doctor``, ``reactor bench`` and ``reactor top``.

Owns: ``doctor`` and ``hostinfo`` (the host's limits, read from /proc and sysctl),
``loadgen`` (the load generator that says why connections failed) and ``top`` (a live
view from a ``/metrics`` endpoint).

May import: ``ops.metrics`` (to parse what a server publishes), ``mioreactor.reactor``.
"""
