"""``python -m mioreactor``: the ``reactor`` command."""

from .cli import main

if __name__ == "__main__":
    main()
