"""``python -m quasar``: the same command line as ``quasar``."""
from quasar.cli import main

if __name__ == "__main__":
    main()
