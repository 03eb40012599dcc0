"""A module that fails on import, for the one-line error of ``reactor serve``."""

raise RuntimeError("this module is broken on purpose")
