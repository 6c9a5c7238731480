-- Named queries, loaded by stockledger/queries.py. Each block runs to the next "-- name:".

-- name: trade
-- One round trip: the function locks, checks, appends and updates the position.
SELECT trade_id, account_id, broker_id, symbol, side, quantity, price, executed_at, seq,
       client_order_id, position_quantity
FROM trade(%(account_id)s, %(broker_id)s, %(symbol)s, %(side)s, %(quantity)s, %(price)s,
           %(executed_at)s, %(client_order_id)s);

-- name: trade_idempotent
-- The same, under an idempotency key: a replay returns the stored trade, replayed = true.
SELECT trade_id, account_id, broker_id, symbol, side, quantity, price, executed_at, seq,
       client_order_id, position_quantity, replayed
FROM trade_idempotent(%(idempotency_key)s, %(request_hash)s, %(account_id)s, %(broker_id)s,
                      %(symbol)s, %(side)s, %(quantity)s, %(price)s, %(executed_at)s,
                      %(client_order_id)s);

-- name: trade_for_key
-- trade, with the caller's API key checked first in the same statement (one round trip): the
-- trade runs for the broker broker_of_key() returns, and only after it returned. No row: the
-- key is not the broker's the caller expected (authenticate again).
SELECT t.trade_id, t.account_id, t.broker_id, t.symbol, t.side, t.quantity, t.price,
       t.executed_at, t.seq, t.client_order_id, t.position_quantity
FROM broker_of_key(%(key_id)s, %(secret_hash)s) AS k(broker_id)
CROSS JOIN LATERAL trade(%(account_id)s, k.broker_id, %(symbol)s, %(side)s, %(quantity)s,
                         %(price)s, %(executed_at)s, %(client_order_id)s) AS t
WHERE k.broker_id = %(broker_id)s;

-- name: trade_idempotent_for_key
-- trade_idempotent, with the key checked first as in trade_for_key.
SELECT t.trade_id, t.account_id, t.broker_id, t.symbol, t.side, t.quantity, t.price,
       t.executed_at, t.seq, t.client_order_id, t.position_quantity, t.replayed
FROM broker_of_key(%(key_id)s, %(secret_hash)s) AS k(broker_id)
CROSS JOIN LATERAL trade_idempotent(%(idempotency_key)s, %(request_hash)s, %(account_id)s,
                                    k.broker_id, %(symbol)s, %(side)s, %(quantity)s,
                                    %(price)s, %(executed_at)s, %(client_order_id)s) AS t
WHERE k.broker_id = %(broker_id)s;

-- name: trade_batch
-- All or nothing: one element of each array per trade, in batch order.
SELECT trade_id, account_id, broker_id, symbol, side, quantity, price, executed_at, seq,
       client_order_id, batch_id
FROM trade_batch(%(broker_id)s, %(account_ids)s::bigint[], %(symbols)s::text[],
                 %(sides)s::text[], %(quantities)s::bigint[], %(prices)s::numeric[],
                 %(executed_ats)s::timestamptz[], %(client_order_ids)s::text[]);

-- Reads take the caller's broker_id (NULL for the operator): a broker sees only the accounts
-- whose broker of record it is, and any other account is simply not found.

-- name: account_owner
SELECT a.account_id, c.client_id, c.name, c.email
FROM accounts a JOIN clients c ON c.client_id = a.client_id
WHERE a.account_id = %(account_id)s
  AND (%(broker_id)s::bigint IS NULL OR a.broker_id = %(broker_id)s::bigint);

-- name: account_holdings
-- O(positions of one account) through positions_pkey, whatever the size of the ledger. The
-- LEFT JOIN tells "no holdings" (one row, NULL symbol) from "no such account" (no row).
SELECT a.account_id, p.symbol, p.quantity
FROM accounts a
LEFT JOIN positions p ON p.account_id = a.account_id AND p.quantity > 0
WHERE a.account_id = %(account_id)s
  AND (%(broker_id)s::bigint IS NULL OR a.broker_id = %(broker_id)s::bigint)
ORDER BY p.symbol;

-- name: account
SELECT account_id, client_id, broker_id, status, opened_at
FROM accounts
WHERE account_id = %(account_id)s
  AND (%(broker_id)s::bigint IS NULL OR broker_id = %(broker_id)s::bigint);

-- name: account_trades_page
-- Keyset pagination on seq through trades_pkey (account_id, seq). A trade becomes visible
-- only when it commits, and trades of one account commit in seq order (the account row is
-- locked until commit), so a page boundary never skips a trade nor shows one twice.
SELECT trade_id, account_id, broker_id, symbol, side, quantity, price, executed_at, seq,
       client_order_id
FROM trades
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
SELECT t.trade_id, t.account_id, t.broker_id, t.symbol, t.side, t.quantity, t.price,
       t.executed_at, t.seq, t.client_order_id
FROM trades t JOIN accounts a ON a.account_id = t.account_id
WHERE t.trade_id = %(trade_id)s
  AND (%(broker_id)s::bigint IS NULL OR a.broker_id = %(broker_id)s::bigint);

-- name: insert_client
INSERT INTO clients (name, tax_id, email) VALUES (%(name)s, %(tax_id)s, %(email)s)
RETURNING client_id, name, tax_id, email, created_at;

-- name: insert_broker
INSERT INTO brokers (name, tax_id, license_no) VALUES (%(name)s, %(tax_id)s, %(license_no)s)
RETURNING broker_id, name, tax_id, license_no, status, created_at;

-- name: insert_account
INSERT INTO accounts (client_id, broker_id) VALUES (%(client_id)s, %(broker_id)s)
RETURNING account_id, client_id, broker_id, status, opened_at;

-- name: insert_stock
INSERT INTO stocks (symbol, name) VALUES (%(symbol)s, %(name)s)
RETURNING symbol, name, active, created_at;

-- name: insert_stock_if_missing
INSERT INTO stocks (symbol, name) VALUES (%(symbol)s, %(name)s)
ON CONFLICT (symbol) DO NOTHING;

-- name: set_account_status
UPDATE accounts SET status = %(status)s WHERE account_id = %(account_id)s
RETURNING account_id, client_id, broker_id, status, opened_at;

-- name: set_broker_status
UPDATE brokers SET status = %(status)s WHERE broker_id = %(broker_id)s
RETURNING broker_id, name, tax_id, license_no, status, created_at;

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
SELECT a.account_id, c.tax_id, b.broker_id
FROM accounts a
JOIN clients c ON c.client_id = a.client_id
JOIN brokers b ON b.tax_id = c.tax_id
LIMIT 5;

-- name: verify_trades_by_broker_of_record
SELECT t.account_id, t.seq, t.broker_id, a.broker_id AS broker_of_record
FROM trades t JOIN accounts a ON a.account_id = t.account_id
WHERE t.broker_id <> a.broker_id
LIMIT 5;

-- name: insert_broker_key
INSERT INTO broker_keys (key_id, broker_id, secret_hash)
VALUES (%(key_id)s, %(broker_id)s, %(secret_hash)s)
RETURNING key_id, broker_id, created_at;

-- name: revoke_broker_key
UPDATE broker_keys SET revoked_at = coalesce(revoked_at, now())
WHERE key_id = %(key_id)s AND broker_id = %(broker_id)s
RETURNING key_id, broker_id, created_at, revoked_at;

-- name: revoke_broker_keys
UPDATE broker_keys SET revoked_at = now()
WHERE broker_id = %(broker_id)s AND revoked_at IS NULL;

-- name: broker_of_key
-- The broker of a live key; refused with SL013 (401) or SL005 (403) otherwise.
SELECT broker_of_key(%(key_id)s, %(secret_hash)s);
