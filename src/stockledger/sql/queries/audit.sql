-- Named queries of the audit, loaded by name (stockledger/db/queries.py). Each block runs to
-- the next "-- name:".

-- Ledger invariants, checked by `stockledger verify`. Each query returns violations (at most
-- a few examples); no row means the invariant holds.

-- name: verify_positions_match_holds
SELECT coalesce(p.account_id, h.account_id) AS account_id,
       coalesce(p.symbol, h.symbol) AS symbol,
       p.quantity AS positions_quantity, h.quantity AS holds_quantity
FROM (SELECT account_id, symbol, quantity FROM positions WHERE quantity <> 0) p
FULL JOIN holds h ON h.account_id = p.account_id AND h.symbol = p.symbol
WHERE p.quantity IS DISTINCT FROM h.quantity
LIMIT 5;

-- name: verify_no_negative_position
SELECT account_id, symbol, quantity FROM positions WHERE quantity < 0 LIMIT 5;

-- name: verify_no_oversell_in_history
SELECT account_id, symbol, seq, running_quantity
FROM (
    SELECT account_id, symbol, seq,
           sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END)
               OVER (PARTITION BY account_id, symbol ORDER BY seq) AS running_quantity
    FROM trades
) t
WHERE running_quantity < 0
LIMIT 5;

-- name: verify_seq_gapless
SELECT account_id, count(*) AS trades, min(seq) AS first_seq, max(seq) AS last_seq
FROM trades
GROUP BY account_id
HAVING min(seq) <> 1 OR max(seq) <> count(*)
LIMIT 5;

-- name: verify_executed_at_ordered
SELECT account_id, seq, executed_at, previous_executed_at
FROM (
    SELECT account_id, seq, executed_at,
           lag(executed_at) OVER (PARTITION BY account_id ORDER BY seq) AS previous_executed_at
    FROM trades
) t
WHERE executed_at < previous_executed_at
LIMIT 5;

-- name: verify_no_broker_owned_account
-- Rule 4 over every holder an account has or had (history counts: a broker may not have held
-- an account either), read from the clients' tax ids, not from the claims the rule uses.
SELECT h.account_id, h.client_id, c.tax_id, b.broker_id
FROM account_holders h
JOIN clients c ON c.client_id = h.client_id
JOIN brokers b ON b.tax_id = c.tax_id
UNION ALL
SELECT a.account_id, a.client_id, c.tax_id, b.broker_id
FROM accounts a
JOIN clients c ON c.client_id = a.client_id
JOIN brokers b ON b.tax_id = c.tax_id
LIMIT 5;

-- name: verify_trades_by_broker_of_record
SELECT t.account_id, t.seq, t.broker_id, a.broker_id AS broker_of_record
FROM trades t JOIN accounts a ON a.account_id = t.account_id
WHERE t.broker_id <> a.broker_id
LIMIT 5;

-- name: verify_every_account_has_a_holder
-- Rule 8.
SELECT a.account_id
FROM accounts a
WHERE NOT EXISTS (SELECT FROM account_holders h
                  WHERE h.account_id = a.account_id AND h.removed_at IS NULL)
LIMIT 5;

-- name: verify_no_supervision_cycle
-- Rule 10: from each supervised broker up its chain, never visiting a broker twice; a chain
-- that comes back to where it started is a loop. (A path array rather than CYCLE, which a
-- cluster's planner refuses here.)
WITH RECURSIVE chain (start_id, broker_id, path) AS (
    SELECT broker_id, manager_id, ARRAY[broker_id] FROM brokers WHERE manager_id IS NOT NULL
    UNION ALL
    SELECT c.start_id, b.manager_id, c.path || b.broker_id
    FROM chain c JOIN brokers b ON b.broker_id = c.broker_id
    WHERE b.manager_id IS NOT NULL AND NOT b.broker_id = ANY (c.path)
)
SELECT DISTINCT start_id AS broker_id
FROM chain
WHERE broker_id = start_id
LIMIT 5;
