-- pgbench script: one buy on a random account, through trade().
\set account random(1, :accounts)
\set broker 1 + (:account - 1) % :brokers
\set symbol random(1, 4)
\set quantity random(1, 100)
SELECT (trade).trade_id FROM trade(:account, :broker, (ARRAY['AAPL', 'MSFT', 'GOOG', 'AMZN'])[:symbol], 'buy', :quantity, 100.25);
