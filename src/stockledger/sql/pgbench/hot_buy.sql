-- pgbench script: every client trades account 1.
SELECT trade_id FROM trade(1, 1, 'AAPL', 'buy', 1, 100.25);
