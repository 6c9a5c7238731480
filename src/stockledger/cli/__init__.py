"""The `stockledger` command: human output by default, --json for scripts.

main.py is the group; each module beside it adds the commands of one area.
"""

from stockledger.cli import (  # noqa: F401  (they register commands)
    books,
    imports,
    operations,
    registry,
    trading,
)
from stockledger.cli.main import main

__all__ = ["main"]
