-- pgbench script: one sell on a random account; larger than the average buy, so some are
-- refused for insufficient holdings (counted by bench_sell, not errors for pgbench).
\set account random(1, :accounts)
\set broker 1 + (:account - 1) % :brokers
\set symbol random(1, 4)
\set quantity random(1, 150)
SELECT bench_sell(:account, :broker, (ARRAY['AAPL', 'MSFT', 'GOOG', 'AMZN'])[:symbol], :quantity);
