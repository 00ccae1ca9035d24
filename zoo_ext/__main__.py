"""``python -m zoo_ext``: see :mod:`zoo_ext.cli`."""

from zoo_ext.cli import main

if __name__ == "__main__":
    main()
