"""The threading core: the acceptor thread, the worker threads and the connections they own.

Owns: ``acceptor`` (drains ``accept()``, forwards readiness in batches), ``worker``
(the hot worker and its standbys, the dispatch queue), ``connection`` (one accepted
stream on its worker: buffered writes, reads, teardown), ``scheduler`` (run slots:
how many workers run Python at once), ``timers`` (a heap per worker) and ``handler``
(the protocol a handler implements, and the ``Connection`` it is given).

May import: ``mioreactor.reactor`` and the standard library. Knows no protocol:
HTTP, TLS and the rest sit above it and reach it only through ``handler``.
"""
