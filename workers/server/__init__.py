"""The embeddable server: ``Server`` and ``serve``, bind specifications, the demo app.

Owns: ``server`` (builds the acceptor, workers, handlers and listeners from its
arguments; start, stop, stats), ``binds`` (``HOST:PORT``, ``unix:PATH``, ``fd://N`` to
listening sockets), ``demo`` (the app ``reactor serve`` runs with no app) and
``pytest_plugin`` (the ``reactor_server`` fixture).

May import: the protocols (``http``, ``tls``), ``core``, ``ops``, ``tools`` and
``mioreactor.reactor``. Nothing here knows of processes or the command line.
"""
