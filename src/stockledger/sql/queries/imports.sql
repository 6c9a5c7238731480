-- A book from elsewhere (SPEC §2.9, stockledger/imports/): its records are copied into
-- temporary tables as they are read, then applied section by section, in the spec's order,
-- through the same functions and triggers as every other writer. All of it in one
-- transaction, as the schema's owner.

-- name: import_staging
-- One table per section; ord is the record's index in its section. Dropped at the end of the
-- transaction.
CREATE TEMPORARY TABLE import_stocks (
    ord bigint PRIMARY KEY, symbol text, name text, fractionable boolean, active boolean,
    price numeric, price_as_of timestamptz
) ON COMMIT DROP;
CREATE TEMPORARY TABLE import_clients (
    ord bigint PRIMARY KEY, client_id bigint, name text, tax_id text, email text, address text
) ON COMMIT DROP;
CREATE TEMPORARY TABLE import_brokers (
    ord bigint PRIMARY KEY, broker_id bigint, name text, tax_id text, license_no text,
    manager_id bigint, status text
) ON COMMIT DROP;
CREATE TEMPORARY TABLE import_accounts (
    ord bigint PRIMARY KEY, account_id bigint, broker_id bigint, holders bigint[],
    credit_limit numeric, lot_method text, status text
) ON COMMIT DROP;
CREATE TEMPORARY TABLE import_cash (
    ord bigint PRIMARY KEY, account_id bigint, kind text, amount numeric, reference text
) ON COMMIT DROP;
CREATE TEMPORARY TABLE import_trades (
    ord bigint PRIMARY KEY, account_id bigint, symbol text, side text, quantity numeric,
    price numeric, executed_at timestamptz, seq bigint, fee numeric, client_order_id text
) ON COMMIT DROP;

-- name: import_ids_continue
-- Before the records without an id are inserted: an identity sequence moves past the
-- largest id the source gave (never back), so that every id it assigns comes after them, now
-- and later. (Like every sequence, it does not move back if the import is then refused.)
SELECT setval(s.seq, s.largest)
FROM (
    SELECT pg_get_serial_sequence('clients', 'client_id')::regclass AS seq,
           (SELECT max(client_id) FROM import_clients) AS largest
    UNION ALL
    SELECT pg_get_serial_sequence('brokers', 'broker_id')::regclass,
           (SELECT max(broker_id) FROM import_brokers)
    UNION ALL
    SELECT pg_get_serial_sequence('accounts', 'account_id')::regclass,
           (SELECT max(account_id) FROM import_accounts)
) s
WHERE s.largest > coalesce(pg_sequence_last_value(s.seq), 0);

-- name: import_stock
INSERT INTO stocks (symbol, name, fractionable)
VALUES (%(symbol)s, %(name)s, %(fractionable)s);

-- name: import_stock_price
INSERT INTO stock_prices (symbol, price, as_of)
VALUES (%(symbol)s, %(price)s, coalesce(%(price_as_of)s::timestamptz, now()));

-- name: import_client
INSERT INTO clients (client_id, name, tax_id, email, address) OVERRIDING SYSTEM VALUE
VALUES (coalesce(%(client_id)s, nextval(pg_get_serial_sequence('clients', 'client_id'))),
        %(name)s, %(tax_id)s, %(email)s, %(address)s)
RETURNING client_id;

-- name: import_broker
-- A broker stands on its tax identity claimed as a broker's (rule 4), as register_broker()
-- claims it.
WITH claim AS (SELECT claim_tax_identity(%(tax_id)s, true))
INSERT INTO brokers (broker_id, name, tax_id, license_no) OVERRIDING SYSTEM VALUE
SELECT coalesce(%(broker_id)s, nextval(pg_get_serial_sequence('brokers', 'broker_id'))),
       %(name)s, %(tax_id)s, %(license_no)s
FROM claim
RETURNING broker_id;

-- name: import_broker_manager
-- Rule 10 (no supervision cycle) is brokers_check_supervision's, row by row.
UPDATE brokers SET manager_id = %(manager_id)s WHERE broker_id = %(broker_id)s;

-- name: import_claim_holders
-- Every holder's identity claimed as an owner's, in tax id order, as open_account() claims
-- them (rule 4: a broker's tax id cannot).
SELECT claim_tax_identity(c.tax_id, false)
FROM (SELECT DISTINCT tax_id FROM clients WHERE client_id = ANY (%(holders)s) ORDER BY tax_id) c;

-- name: import_account
-- The first holder is the primary (accounts_add_first_holder); the others follow in order.
INSERT INTO accounts (account_id, client_id, broker_id, credit_limit, lot_method)
    OVERRIDING SYSTEM VALUE
VALUES (coalesce(%(account_id)s, nextval(pg_get_serial_sequence('accounts', 'account_id'))),
        %(holder)s, %(broker_id)s, %(credit_limit)s, %(lot_method)s)
RETURNING account_id;

-- name: import_holder
SELECT account_id FROM add_account_holder(%(account_id)s, %(client_id)s);

-- name: import_cash
SELECT movement_id FROM move_cash(%(account_id)s, %(kind)s, %(amount)s, %(reference)s);

-- name: import_brokers_of_record
SELECT account_id, broker_id FROM accounts WHERE account_id = ANY (%(account_ids)s);

-- name: import_account_status
-- After the trades: a closed account traded while it was open.
UPDATE accounts SET status = %(status)s WHERE account_id = %(account_id)s;

-- name: import_broker_status
UPDATE brokers SET status = %(status)s WHERE broker_id = %(broker_id)s;

-- name: import_stock_inactive
UPDATE stocks SET active = false WHERE symbol = %(symbol)s;
