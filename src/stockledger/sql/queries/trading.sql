-- Named queries of trading, loaded by name (stockledger/db/queries.py). Each block runs to
-- the next "-- name:". Trades, batches, positions, history.

-- name: trade
-- One round trip: the function locks, checks, appends and updates the position.
SELECT (t.trade).*, t.position_quantity, t.closures
FROM trade(%(account_id)s, %(broker_id)s, %(symbol)s, %(side)s, %(quantity)s, %(price)s,
           %(executed_at)s, %(client_order_id)s, %(fee)s, %(lots)s::jsonb) AS t;

-- name: trade_idempotent
-- The same, under an idempotency key: a replay returns the stored trade, replayed = true.
SELECT (t.trade).*, t.position_quantity, t.closures, t.replayed
FROM trade_idempotent(%(idempotency_key)s, %(request_hash)s, %(account_id)s, %(broker_id)s,
                      %(symbol)s, %(side)s, %(quantity)s, %(price)s, %(executed_at)s,
                      %(client_order_id)s, %(fee)s, %(lots)s::jsonb) AS t;

-- name: trade_for_key
-- trade, with the caller's API key checked first in the same statement (one round trip): the
-- trade runs for the broker broker_of_key() returns, and only after it returned. No row: the
-- key is not the broker's the caller expected (authenticate again).
SELECT (t.trade).*, t.position_quantity, t.closures
FROM broker_of_key(%(key_id)s, %(secret_hash)s) AS k(broker_id)
CROSS JOIN LATERAL trade(%(account_id)s, k.broker_id, %(symbol)s, %(side)s, %(quantity)s,
                         %(price)s, %(executed_at)s, %(client_order_id)s, %(fee)s,
                         %(lots)s::jsonb) AS t
WHERE k.broker_id = %(broker_id)s;

-- name: trade_idempotent_for_key
-- trade_idempotent, with the key checked first as in trade_for_key.
SELECT (t.trade).*, t.position_quantity, t.closures, t.replayed
FROM broker_of_key(%(key_id)s, %(secret_hash)s) AS k(broker_id)
CROSS JOIN LATERAL trade_idempotent(%(idempotency_key)s, %(request_hash)s, %(account_id)s,
                                    k.broker_id, %(symbol)s, %(side)s, %(quantity)s,
                                    %(price)s, %(executed_at)s, %(client_order_id)s,
                                    %(fee)s, %(lots)s::jsonb) AS t
WHERE k.broker_id = %(broker_id)s;

-- name: trade_batch
-- All or nothing: one element of each array per trade, in batch order.
SELECT *
FROM trade_batch(%(broker_id)s, %(account_ids)s::bigint[], %(symbols)s::text[],
                 %(sides)s::text[], %(quantities)s::numeric[], %(prices)s::numeric[],
                 %(executed_ats)s::timestamptz[], %(client_order_ids)s::text[],
                 %(fees)s::numeric[]);

-- Reads take the caller's broker_id (NULL for the operator): a broker sees the accounts whose
-- broker of record it is, and any other account is simply not found. A supervisor's read is
-- that of the operator once supervises_account said so (registry/accounts.py).

-- name: account_holdings
-- O(positions of one account) through positions_pkey, whatever the size of the ledger, and
-- one backward probe of stock_prices_pkey per position for its latest price. The LEFT JOIN
-- tells "no holdings" (one row, NULL symbol) from "no such account" (no row).
SELECT a.account_id, p.symbol, p.quantity, pr.price,
       round(p.quantity * pr.price, 2) AS market_value
FROM accounts a
LEFT JOIN positions p ON p.account_id = a.account_id AND p.quantity > 0
LEFT JOIN LATERAL (
    SELECT sp.price FROM stock_prices sp
    WHERE sp.symbol = p.symbol ORDER BY sp.as_of DESC LIMIT 1
) pr ON true
WHERE a.account_id = %(account_id)s
  AND (%(broker_id)s::bigint IS NULL OR a.broker_id = %(broker_id)s::bigint)
ORDER BY p.symbol;

-- name: account_trades_page
-- Keyset pagination on seq through trades_pkey (account_id, seq). A trade becomes visible
-- only when it commits, and trades of one account commit in seq order (the account row is
-- locked until commit), so a page boundary never skips a trade nor shows one twice.
SELECT *
FROM trade_rows
WHERE account_id = %(account_id)s
  AND seq > %(after_seq)s
  AND (%(symbol)s::text IS NULL OR symbol = %(symbol)s::text)
  AND (%(side)s::text IS NULL OR side = %(side)s::text)
  AND (%(since)s::timestamptz IS NULL OR executed_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR executed_at < %(until)s::timestamptz)
  AND (%(client_order_id)s::text IS NULL OR client_order_id = %(client_order_id)s::text)
ORDER BY seq
LIMIT %(limit)s;

-- name: trade_by_id
SELECT t.*
FROM trade_rows t JOIN accounts a ON a.account_id = t.account_id
WHERE t.trade_id = %(trade_id)s
  AND (%(broker_id)s::bigint IS NULL OR a.broker_id = %(broker_id)s::bigint);
