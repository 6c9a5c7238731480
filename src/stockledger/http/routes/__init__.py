"""One blueprint per resource: the seed's endpoints, accounts, trades, stocks, administration,
operations."""
