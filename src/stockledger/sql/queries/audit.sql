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

-- name: verify_cash_matches_movements_and_trades
-- §1.4: the balance is derived: its movements plus its trades' amounts.
SELECT a.account_id, a.cash, coalesce(m.total, 0) + coalesce(t.total, 0) AS derived
FROM accounts a
LEFT JOIN (
    SELECT account_id, sum(CASE kind WHEN 'withdrawal' THEN -amount ELSE amount END) AS total
    FROM cash_movements GROUP BY account_id
) m ON m.account_id = a.account_id
LEFT JOIN (
    SELECT account_id, sum(amount) AS total FROM trades GROUP BY account_id
) t ON t.account_id = a.account_id
WHERE a.cash <> coalesce(m.total, 0) + coalesce(t.total, 0)
LIMIT 5;

-- name: verify_cash_within_limit
-- Rule 11, at the end.
SELECT account_id, cash, credit_limit FROM accounts WHERE cash < -credit_limit LIMIT 5;

-- name: verify_latest_trade_on_account
-- What trades_admit reads under the lock instead of the ledger: the account's latest trade.
SELECT a.account_id, a.last_seq, a.last_executed_at, t.seq, t.executed_at
FROM accounts a
LEFT JOIN (
    SELECT DISTINCT ON (account_id) account_id, seq, executed_at
    FROM trades ORDER BY account_id, seq DESC
) t ON t.account_id = a.account_id
WHERE a.last_seq IS DISTINCT FROM t.seq OR a.last_executed_at IS DISTINCT FROM t.executed_at
LIMIT 5;

-- name: verify_lots_match_positions
-- Rule 12: per position, the open lots' remaining shares and cost are its quantity and cost
-- basis.
SELECT coalesce(p.account_id, l.account_id) AS account_id,
       coalesce(p.symbol, l.symbol) AS symbol,
       p.quantity, l.remaining, p.cost_basis, l.remaining_cost
FROM (SELECT * FROM positions WHERE quantity <> 0 OR cost_basis <> 0) p
FULL JOIN (
    SELECT account_id, symbol, sum(remaining) AS remaining, sum(remaining_cost) AS remaining_cost
    FROM lots WHERE remaining > 0
    GROUP BY account_id, symbol
) l ON l.account_id = p.account_id AND l.symbol = p.symbol
WHERE p.quantity IS DISTINCT FROM l.remaining OR p.cost_basis IS DISTINCT FROM l.remaining_cost
LIMIT 5;

-- name: verify_lots_match_buys
-- §1.5: every buy opened exactly one lot, of its shares, costing what it paid.
SELECT coalesce(t.account_id, l.account_id) AS account_id, t.seq, l.lot_id,
       t.quantity, l.quantity AS lot_quantity, -t.amount AS paid, l.cost
FROM (SELECT * FROM trades WHERE side = 'buy') t
FULL JOIN lots l ON l.account_id = t.account_id AND l.lot_id = t.seq
WHERE t.seq IS NULL OR l.lot_id IS NULL OR l.symbol <> t.symbol
   OR l.quantity <> t.quantity OR l.cost <> -t.amount
LIMIT 5;

-- name: verify_closures_match_lots
-- §1.5: what is left of each lot is what its closures did not take, in shares and in cost; so
-- the closures of a closed lot add up to its cost (no penny drift).
SELECT l.account_id, l.lot_id, l.quantity, l.remaining, l.cost, l.remaining_cost,
       coalesce(c.quantity, 0) AS closed, coalesce(c.cost_basis, 0) AS closed_cost
FROM lots l
LEFT JOIN (
    SELECT account_id, lot_id, sum(quantity) AS quantity, sum(cost_basis) AS cost_basis
    FROM lot_closures GROUP BY account_id, lot_id
) c ON c.account_id = l.account_id AND c.lot_id = l.lot_id
WHERE l.quantity - coalesce(c.quantity, 0) <> l.remaining
   OR l.cost - coalesce(c.cost_basis, 0) <> l.remaining_cost
LIMIT 5;

-- name: verify_closures_match_sells
-- §1.5: every sell closed exactly its shares, and its closures' proceeds are its amount;
-- realized = proceeds - cost basis, and each position's realized figure is its closures'.
SELECT coalesce(t.account_id, c.account_id) AS account_id, coalesce(t.seq, c.seq) AS seq,
       t.quantity, c.quantity AS closed, t.amount, c.proceeds
FROM (SELECT * FROM trades WHERE side = 'sell') t
FULL JOIN (
    SELECT account_id, seq, sum(quantity) AS quantity, sum(proceeds) AS proceeds,
           bool_and(realized = proceeds - cost_basis) AS realized_ok
    FROM lot_closures GROUP BY account_id, seq
) c ON c.account_id = t.account_id AND c.seq = t.seq
WHERE t.quantity IS DISTINCT FROM c.quantity OR t.amount IS DISTINCT FROM c.proceeds
   OR NOT c.realized_ok
UNION ALL
SELECT p.account_id, NULL, NULL, NULL, p.realized, r.realized
FROM positions p
LEFT JOIN (
    SELECT account_id, symbol, sum(realized) AS realized
    FROM lot_closures GROUP BY account_id, symbol
) r ON r.account_id = p.account_id AND r.symbol = p.symbol
WHERE p.realized <> coalesce(r.realized, 0)
LIMIT 5;
