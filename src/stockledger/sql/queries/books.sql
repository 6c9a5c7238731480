-- Named queries of the money side of the books (stockledger/books): cash movements, the
-- portfolio, lots, realized P&L and the cash history. Reads take the caller's broker_id (NULL
-- for the operator), as in trading.sql; the pages are read once the account was found
-- readable (stockledger.registry.accounts.account).

-- name: move_cash
-- One round trip: the function locks the account, checks, appends and moves the balance.
SELECT * FROM move_cash(%(account_id)s, %(kind)s, %(amount)s, %(reference)s,
                        %(idempotency_key)s, %(request_hash)s);

-- name: account_portfolio
-- The maintained figures only: the account row and its positions (those held, and those
-- that realized something), each valued at its latest reference price. O(positions of one
-- account), however long the history. One row with NULL symbol: an account without positions.
SELECT a.account_id, a.cash, a.credit_limit, a.lot_method,
       p.symbol, p.quantity, p.cost_basis, p.realized, pr.price,
       round(p.quantity * pr.price, 2) AS market_value,
       round(p.cost_basis / nullif(p.quantity, 0), 4) AS average_cost
FROM accounts a
LEFT JOIN positions p ON p.account_id = a.account_id
LEFT JOIN LATERAL (
    SELECT sp.price FROM stock_prices sp
    WHERE sp.symbol = p.symbol ORDER BY sp.as_of DESC LIMIT 1
) pr ON true
WHERE a.account_id = %(account_id)s
  AND (%(broker_id)s::bigint IS NULL OR a.broker_id = %(broker_id)s::bigint)
ORDER BY p.symbol;

-- name: account_lots_page
-- Lots in lot_id order (the order they were opened), after a cursor; open ones through
-- lots_open_idx when a symbol is given.
SELECT lot_id, symbol, trade_id, quantity, remaining, cost, remaining_cost, opened_at
FROM lots
WHERE account_id = %(account_id)s
  AND lot_id > %(after_lot)s
  AND (%(symbol)s::text IS NULL OR symbol = %(symbol)s::text)
  AND (%(open)s::text IS NULL OR (remaining > 0) = (%(open)s::text = 'true'))
ORDER BY lot_id
LIMIT %(limit)s;

-- name: account_realized_page
-- Closures in the order they were made (the sell's seq, then the lot), through
-- lot_closures_pkey.
SELECT seq, trade_id, lot_id, symbol, quantity, cost_basis, proceeds, realized, closed_at
FROM lot_closures
WHERE account_id = %(account_id)s
  AND (seq, lot_id) > (%(after_seq)s, %(after_lot)s)
  AND (%(symbol)s::text IS NULL OR symbol = %(symbol)s::text)
  AND (%(since)s::timestamptz IS NULL OR closed_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR closed_at < %(until)s::timestamptz)
ORDER BY seq, lot_id
LIMIT %(limit)s;

-- name: account_cash_page
-- What moved the balance, oldest first: trades (by seq) and movements (by movement_id), each
-- after its own cursor, merged by time. Both are appended under the account's lock in commit
-- order, so each stream is in time order and a page boundary skips and repeats nothing.
SELECT *
FROM (
    (SELECT executed_at AS at, 1 AS stream, seq AS number, 'trade' AS entry, amount,
            trade_id, symbol, side, NULL::text AS reference, NULL::numeric AS balance
     FROM trades
     WHERE account_id = %(account_id)s AND seq > %(after_seq)s
       AND (%(since)s::timestamptz IS NULL OR executed_at >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR executed_at < %(until)s::timestamptz)
     ORDER BY seq
     LIMIT %(limit)s)
    UNION ALL
    (SELECT created_at, 0, movement_id, kind,
            CASE kind WHEN 'withdrawal' THEN -amount ELSE amount END,
            NULL, NULL, NULL, reference, balance
     FROM cash_movements
     WHERE account_id = %(account_id)s AND movement_id > %(after_movement)s
       AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
     ORDER BY movement_id
     LIMIT %(limit)s)
) entries
ORDER BY at, stream, number
LIMIT %(limit)s;

-- name: demo_lot
-- The demo's named sell: the open AAPL lot of the account with the most shares left.
SELECT lot_id FROM lots
WHERE account_id = %(account_id)s AND symbol = 'AAPL' AND remaining >= 1
ORDER BY remaining DESC, lot_id
LIMIT 1;
