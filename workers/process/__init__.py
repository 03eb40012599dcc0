"""Process management: a checked ``Config``, one server process or a supervisor over several.

Owns: ``config`` (everything ``reactor serve`` does, as one value), ``configfile``
(TOML config files), ``appload`` (``MODULE:APP``), ``runner`` (one server process),
``supervisor`` (children, rolling restarts, ``--reload``, ``--max-requests``),
``reloader`` (source watching), ``logs`` (the ``mioreactor`` loggers' handlers) and ``settings`` (pid file, user and group, umask).

May import: ``server`` and everything below it. Only ``mioreactor.cli`` imports it.
"""
