-- Named queries of the registry, loaded by name (stockledger/db/queries.py). Each block runs to
-- the next "-- name:". Clients, brokers, accounts, stocks, API keys.

-- Reads take the caller's broker_id (NULL for the operator): a broker sees only the accounts
-- whose broker of record it is, and any other account is simply not found.

-- name: account_owner
SELECT a.account_id, c.client_id, c.name, c.email
FROM accounts a JOIN clients c ON c.client_id = a.client_id
WHERE a.account_id = %(account_id)s
  AND (%(broker_id)s::bigint IS NULL OR a.broker_id = %(broker_id)s::bigint);

-- name: account
SELECT account_id, client_id, broker_id, status, opened_at
FROM accounts
WHERE account_id = %(account_id)s
  AND (%(broker_id)s::bigint IS NULL OR broker_id = %(broker_id)s::bigint);

-- name: insert_client
INSERT INTO clients (name, tax_id, email) VALUES (%(name)s, %(tax_id)s, %(email)s)
RETURNING client_id, name, tax_id, email, created_at;

-- name: insert_broker
-- register_broker() claims the tax identity and inserts, in one statement (rule 4).
SELECT broker_id, name, tax_id, license_no, status, created_at
FROM register_broker(%(name)s, %(tax_id)s, %(license_no)s);

-- name: insert_account
-- open_account() claims the owner's tax identity and inserts, in one statement (rule 4).
SELECT account_id, client_id, broker_id, status, opened_at
FROM open_account(%(client_id)s, %(broker_id)s);

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
-- The accounts of the clients with these tax ids, with the owner's name (the demo's own).
SELECT a.account_id, a.broker_id, c.name AS owner
FROM accounts a JOIN clients c ON c.client_id = a.client_id
WHERE c.tax_id = ANY(%(tax_ids)s)
ORDER BY a.account_id;
