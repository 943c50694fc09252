"""``python -m lmforge.dvc_deps [--check | --fix | --print]``: see the package docstring."""

import sys

from lmforge.dvc_deps.check import main

if __name__ == "__main__":
    sys.exit(main())
