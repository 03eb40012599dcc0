"""Operations: what a running server publishes, beside the core rather than inside it.

Owns: ``metrics`` (request accounting, merging stats over processes, the Prometheus
text), ``metrics_server`` (the ``/metrics`` endpoint, and how a supervisor reads its
children's figures), ``watchdog`` (names a request stuck in the app, with its stack)
and ``gcstats`` (the cyclic garbage collector's runs and pauses).

May import: ``core`` (to read what it publishes), ``tools``, ``mioreactor.reactor``.
Never ``server`` or ``process``: what it needs from a server is a ``Protocol`` here.
"""
