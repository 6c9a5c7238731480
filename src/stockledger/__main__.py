"""`python -m stockledger` is the `stockledger` command."""

from stockledger.cli import main

main()
