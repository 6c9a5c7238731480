-- pgbench script: every client sells from account 1; refused once the position is empty.
SELECT bench_sell(1, 1, 'AAPL', 2);
