-- pgbench script: every client trades account 1.
SELECT (trade).trade_id FROM trade(1, 1, 'AAPL', 'buy', 1, 100.25);
