"""TLS under every protocol: settings, contexts, listeners and the sans-IO TLS connection.

Owns: ``context`` (``TlsConfig``, ``ssl`` contexts, certificate reload, the TLS
listener that makes TLS connections) and ``conn`` (``TlsConn``: a core connection with
an ``ssl.SSLObject`` between the socket and the handler).

May import: ``mioreactor.workers.core``, ``mioreactor.reactor``. A protocol layer:
nothing in it knows HTTP; the HTTP layer does not import it either.
"""
