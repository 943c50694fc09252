"""``python -m lmforge.dvc_deps [--check | --fix | --print]``: see the package docstring."""

from lmforge.dvc_deps.check import main
from lmforge.errors import run_cli

if __name__ == "__main__":
    run_cli(main, "lmforge.dvc_deps")
