-- Named queries of the registry, loaded by name (stockledger/db/queries.py). Each block runs to
-- the next "-- name:". Clients, brokers, accounts, stocks, API keys.

-- Reads take the caller's broker_id (NULL for the operator): a broker sees the accounts whose
-- broker of record it is, and any other account is simply not found. A supervisor's read is
-- that of the operator once supervises_account said so (registry/accounts.py).

-- name: account_owners
-- The current holders, primary first.
SELECT a.account_id, c.client_id, c.name, c.email
FROM accounts a
JOIN account_holders h ON h.account_id = a.account_id AND h.removed_at IS NULL
JOIN clients c ON c.client_id = h.client_id
WHERE a.account_id = %(account_id)s
  AND (%(broker_id)s::bigint IS NULL OR a.broker_id = %(broker_id)s::bigint)
ORDER BY h.position;

-- name: account
-- client_id is the primary holder: the current holder added first.
SELECT a.account_id, h.holders[1] AS client_id, h.holders, a.broker_id, a.status, a.opened_at,
       a.cash, a.credit_limit, a.lot_method
FROM accounts a
CROSS JOIN LATERAL (
    SELECT array_agg(ah.client_id ORDER BY ah.position) AS holders
    FROM account_holders ah
    WHERE ah.account_id = a.account_id AND ah.removed_at IS NULL
) h
WHERE a.account_id = %(account_id)s
  AND (%(broker_id)s::bigint IS NULL OR a.broker_id = %(broker_id)s::bigint);

-- name: supervises_account
-- On a cluster this runs on the coordinator: a function that reads a table may not run inside a
-- query on a shard, so it is not a condition of the reads themselves.
SELECT broker_supervises_account(%(broker_id)s, %(account_id)s);

-- name: account_of_trade
SELECT account_id FROM trades WHERE trade_id = %(trade_id)s;

-- name: add_holder
-- add_account_holder() claims the client's tax identity and inserts, in one statement (rule 4).
SELECT account_id, client_id, position, added_at, removed_at
FROM add_account_holder(%(account_id)s, %(client_id)s);

-- name: remove_holder
SELECT account_id, client_id, position, added_at, removed_at
FROM remove_account_holder(%(account_id)s, %(client_id)s);

-- name: insert_client
INSERT INTO clients (name, tax_id, email, address)
VALUES (%(name)s, %(tax_id)s, %(email)s, %(address)s)
RETURNING client_id, name, tax_id, email, address, created_at;

-- name: insert_broker
-- register_broker() claims the tax identity and inserts, in one statement (rule 4).
SELECT broker_id, name, tax_id, license_no, status, manager_id, created_at
FROM register_broker(%(name)s, %(tax_id)s, %(license_no)s);

-- name: insert_account
-- open_account() claims every holder's tax identity and inserts, in one statement (rule 4).
SELECT account_id FROM open_account(%(holders)s::bigint[], %(broker_id)s);

-- name: insert_stock
INSERT INTO stocks (symbol, name, fractionable) VALUES (%(symbol)s, %(name)s, %(fractionable)s)
RETURNING symbol;

-- name: insert_stock_if_missing
INSERT INTO stocks (symbol, name, fractionable) VALUES (%(symbol)s, %(name)s, %(fractionable)s)
ON CONFLICT (symbol) DO NOTHING;

-- name: stock
-- With its latest reference price (a backward probe of stock_prices_pkey).
SELECT s.symbol, s.name, s.active, s.fractionable, p.price, p.as_of AS price_as_of, s.created_at
FROM stocks s
LEFT JOIN LATERAL (
    SELECT sp.price, sp.as_of FROM stock_prices sp
    WHERE sp.symbol = s.symbol ORDER BY sp.as_of DESC LIMIT 1
) p ON true
WHERE s.symbol = %(symbol)s;

-- name: change_stock
-- Each field only when given (NULL: unchanged).
UPDATE stocks
SET name = coalesce(%(name)s, name),
    active = coalesce(%(active)s, active),
    fractionable = coalesce(%(fractionable)s, fractionable)
WHERE symbol = %(symbol)s
RETURNING symbol;

-- name: insert_stock_price
INSERT INTO stock_prices (symbol, price, as_of)
VALUES (%(symbol)s, %(price)s, coalesce(%(as_of)s::timestamptz, now()))
RETURNING symbol, price, as_of, recorded_at;

-- name: change_account
-- Each field only if the change names it (a NULL credit limit is a value: no limit).
UPDATE accounts
SET status = coalesce(%(status)s, status),
    credit_limit = CASE WHEN %(set_credit_limit)s THEN %(credit_limit)s::numeric
                        ELSE credit_limit END,
    lot_method = coalesce(%(lot_method)s, lot_method)
WHERE account_id = %(account_id)s
RETURNING account_id;

-- name: set_broker_status
UPDATE brokers SET status = %(status)s WHERE broker_id = %(broker_id)s
RETURNING broker_id, name, tax_id, license_no, status, manager_id, created_at;

-- name: broker
SELECT broker_id, name, tax_id, license_no, status, manager_id, created_at
FROM brokers WHERE broker_id = %(broker_id)s;

-- name: set_broker_manager
-- Refused as supervision_cycle when the chain would loop (rule 10, brokers_check_supervision).
UPDATE brokers SET manager_id = %(manager_id)s WHERE broker_id = %(broker_id)s
RETURNING broker_id, name, tax_id, license_no, status, manager_id, created_at;

-- name: insert_broker_key
-- As the schema's owner, like register_broker() (docs/scale-out.md: one user per transaction
-- for the writes to reference tables).
SELECT key_id, broker_id, created_at
FROM issue_broker_key(%(broker_id)s, %(key_id)s, %(secret_hash)s);

-- name: revoke_broker_key
-- A live key only: a revocation is final, and its time is the first revocation's. (Not
-- coalesce(revoked_at, now()): a cluster refuses now() inside coalesce in an UPDATE.)
UPDATE broker_keys SET revoked_at = now()
WHERE key_id = %(key_id)s AND broker_id = %(broker_id)s AND revoked_at IS NULL
RETURNING key_id, broker_id, created_at, revoked_at;

-- name: broker_key
SELECT key_id, broker_id, created_at, revoked_at FROM broker_keys
WHERE key_id = %(key_id)s AND broker_id = %(broker_id)s;

-- name: revoke_broker_keys
UPDATE broker_keys SET revoked_at = now()
WHERE broker_id = %(broker_id)s AND revoked_at IS NULL;

-- name: broker_of_key
-- The broker of a live key; refused with SL013 (401) or SL005 (403) otherwise.
SELECT broker_of_key(%(key_id)s, %(secret_hash)s);

-- name: accounts_of_tax_ids
-- The accounts whose primary holder has one of these tax ids, with the holder's name (the
-- demo's own).
SELECT a.account_id, a.broker_id, c.name AS owner
FROM accounts a
JOIN account_holders h ON h.account_id = a.account_id AND h.position = 1
JOIN clients c ON c.client_id = h.client_id
WHERE c.tax_id = ANY(%(tax_ids)s)
ORDER BY a.account_id;
