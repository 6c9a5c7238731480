-- Named statements of `stockledger bench` (loaded by stockledger/bench/data.py). They run in
-- a database of the benchmark's own, never in the user's.

-- name: brokers
-- Broker i and account j: broker of record of account j is 1 + (j - 1) mod brokers, which the
-- pgbench scripts compute again (ids start at 1 in a fresh database).
SELECT register_broker('Bench broker ' || i, 'BENCHB' || i, 'BL-' || i)
FROM generate_series(1, %(brokers)s) AS i;

-- name: clients
INSERT INTO clients (name, tax_id)
SELECT 'Bench client ' || i, 'BENCHC' || i
FROM generate_series(1, %(accounts)s) AS i;

-- name: accounts
SELECT open_account(i, 1 + (i - 1) %% %(brokers)s)
FROM generate_series(1, %(accounts)s) AS i
ORDER BY i;

-- name: stocks
INSERT INTO stocks (symbol, name)
SELECT symbol, symbol || ' Inc.' FROM unnest(%(symbols)s::text[]) AS symbol;

-- name: prices
-- Reference prices, a year of daily ones per symbol: holdings carry the latest (SPEC §1.6),
-- found by a backward probe of stock_prices_pkey.
INSERT INTO stock_prices (symbol, as_of, price)
SELECT symbol, now() - make_interval(days => d), 100 + d %% 7
FROM unnest(%(symbols)s::text[]) AS symbol, generate_series(0, 364) AS d;

-- name: layout_check
-- The scripts assume account j exists with broker 1 + (j - 1) mod brokers.
SELECT count(*) FROM accounts
WHERE account_id BETWEEN 1 AND %(accounts)s AND broker_id = 1 + (account_id - 1) %% %(brokers)s;

-- name: bench_sell
-- A sell that may be refused (insufficient holdings) without aborting the pgbench client:
-- pgbench ends a client on any error it cannot retry. The exception block costs a
-- subtransaction, which only the sell script pays.
CREATE FUNCTION bench_sell(p_account bigint, p_broker bigint, p_symbol text, p_quantity bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM trade(p_account, p_broker, p_symbol, 'sell', p_quantity, 100.25);
    RETURN true;
EXCEPTION WHEN SQLSTATE 'SL001' THEN
    RETURN false;
END
$$;

-- name: holds_of
SELECT symbol, quantity FROM holds WHERE account_id = %(account_id)s ORDER BY symbol;

-- name: trade_counts
SELECT account_id, count(*) FROM trades WHERE account_id = ANY(%(accounts)s) GROUP BY account_id;
