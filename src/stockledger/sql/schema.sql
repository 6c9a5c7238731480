-- The current schema of stockledger, each object once and in its final form, grouped by kind:
-- roles, domains, tables (with their constraints and indexes), views, functions, triggers,
-- grants. It is for reading: sql/migrations/ is what runs, and
-- tests/migrations/test_migrations.py proves that applying every migration to an empty
-- database gives exactly this schema (and, as its control, that a one-constraint difference
-- shows). A migration that changes the schema changes this file in the same commit.
--
-- Where each rule of SPEC §1.2 lives:
--   rule 1  no oversell                 trades_admit (account row lock, positions probe),
--                                        trades_admit_batch (set-wise), positions_quantity_check
--   rule 2  append-only ledger          refuse_ledger_change on trades (row and statement)
--   rule 3  executed_at order, seq      trades_admit / trades_admit_batch, under the lock
--   rule 4  no broker-owned accounts    tax_identities, claimed by register_broker() and
--                                        open_account(); foreign keys make every writer claim
--   rule 4  (every holder)              account_holders_admit, add_account_holder(); the
--                                        holders' foreign key to tax_identities
--   rule 5  broker of record, active    trades_admit / trades_admit_batch, trade_batch
--   rule 6  listed, active stocks       trades_admit / trades_admit_batch
--   rule 8  joint accounts              account_holders (history), accounts_add_first_holder,
--                                        account_holders_change (never the last holder)
--   rule 9  fractional shares           share_quantity; trades_admit / trades_admit_batch
--                                        (only on fractionable stocks)
--   rule 11 no overdraft               accounts (cash, credit_limit) and
--                                        accounts_cash_within_limit; trades_admit /
--                                        trades_admit_batch, cash_movements_admit (withdrawals);
--                                        the limit itself: accounts_cash_within_limit
--   rule 12 lots agree with positions   trades_admit + trades_close_lots (one sell) and
--                                        trades_admit_batch + fifo_closures (set-wise): each
--                                        writes the lots and the position in one step
--   cash (§1.4)                         trade_amount (trades.amount, set by the triggers),
--                                        cash_movements, move_cash()
--   cost basis (§1.5)                   lots, lot_closures, cents_share (no penny drift)
--   rule 10 supervision without cycles  brokers_manager_id_check, lock_supervision +
--                                        brokers_check_supervision; who supervises whom:
--                                        broker_supervisors, broker_supervises(),
--                                        broker_supervises_account() (a supervisor's reads)
--   prices                              stock_prices (append-only), stock_prices_admit
--   derived data                        positions, lots, lot_closures, an account's cash and
--                                        latest trade: written only by the triggers
--                                        (refuse_derived_write)
--   identities never change             refuse_immutable_change
--   domain values                       named CHECK constraints and the trade_* domains
--
-- Error codes raised here. Callers map them by code, never by message text; the mapping is
-- stockledger/db/boundary.py, and tests/sql/test_error_catalog.py fails when a code raised
-- here has none.
--   SL001 insufficient holdings (sell larger than the position)
--   SL002 executed_at out of order (before the account's latest trade, or > 5 s ahead)
--   SL003 account not open (frozen or closed)
--   SL004 broker is not the account's broker of record (answered as SL009: not found)
--   SL005 broker suspended (trades, and broker_of_key())
--   SL006 stock not tradable (unknown or inactive)
--   SL007 a tax id would be both a broker and an account owner
--   SL008 history is append-only (trades; account_holders but a removal; stock_prices;
--         lot_closures; cash_movements)
--   SL009 unknown account
--   SL010 derived data (positions, lots, lot closures, an account's cash and latest trade) is
--         written only by the triggers that keep it
--   SL011 an immutable field was changed (tax ids, an account's client and broker, a key)
--   SL012 idempotency key reused for a different request
--   SL013 unknown, wrong or revoked API key (broker_of_key())
--   SL014 a fractional quantity of a stock that is not fractionable
--   SL015 a manager_id that would make the supervision chain loop
--   SL016 removing an account's last current holder
--   SL017 a supervisor's trade on an account it may only read
--   SL018 removing a client who is not a current holder of the account
--   SL019 insufficient funds: a buy or withdrawal past the credit limit (withdrawals: past
--         zero); a credit limit below what the account owes is accounts_cash_within_limit
--   SL020 a sell names a lot that is not open, not the account's or the symbol's, or too small
-- Standard codes: 23514 a named CHECK (its constraint name says which), 23505 unique, 23503
-- foreign key, 23502 NOT NULL, 428C9 a value the database assigns (trade_id, seq), 22008 a
-- trade time before 1900-01-01Z, 22023 a malformed batch (arrays of unequal length, a batch
-- mark on a row of another statement) or lot selection.

-- Roles ------------------------------------------------------------------------------------

-- The application connects as stockledger_app (or a login role granted it). It owns nothing,
-- so it cannot disable a trigger, change session_replication_role or drop a rule; what it may
-- do is in the grants at the end.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'stockledger_app') THEN
        CREATE ROLE stockledger_app NOLOGIN;
    END IF;
END
$$;

-- Domains ----------------------------------------------------------------------------------

-- A trade's values are domains, not table CHECKs, so that trade() and trade_batch() check
-- them in their own parameters' casts; the constraints keep the names callers know.
CREATE DOMAIN trade_side AS text
    CONSTRAINT trades_side_check CHECK (VALUE IN ('buy', 'sell'));
-- Whole or fractional (rule 9: whole unless the stock is fractionable, which trades_admit
-- checks), at most 6 decimal places: numeric without a typmod, which would round.
CREATE DOMAIN share_quantity AS numeric
    CONSTRAINT trades_quantity_check
        CHECK (VALUE > 0 AND VALUE <= 1000000000 AND VALUE = trunc(VALUE, 6));
-- numeric without a typmod on purpose: numeric(16,4) would silently round a fifth decimal
-- place away before any check could refuse it.
CREATE DOMAIN trade_price AS numeric
    CONSTRAINT trades_price_check
        CHECK (VALUE > 0 AND VALUE < 1000000000000 AND VALUE = trunc(VALUE, 4));
-- A trade's fee: cents, not negative.
CREATE DOMAIN trade_fee AS numeric
    CONSTRAINT trades_fee_check
        CHECK (VALUE >= 0 AND VALUE < 1000000000000 AND VALUE = trunc(VALUE, 2));
CREATE DOMAIN trade_client_order_id AS text
    CONSTRAINT trades_client_order_id_check
        CHECK (octet_length(VALUE) BETWEEN 1 AND 64 AND VALUE ~ '^[\x21-\x7E]+$');
CREATE DOMAIN idempotency_key_text AS text
    CONSTRAINT idempotency_keys_key_check
        CHECK (octet_length(VALUE) BETWEEN 1 AND 255 AND VALUE ~ '^[\x21-\x7E]+$');
CREATE DOMAIN idempotency_request_hash AS bytea
    CONSTRAINT idempotency_keys_request_hash_check CHECK (octet_length(VALUE) = 32);
-- An account's columns that no trade writes: a table CHECK would be rebuilt for every trade's
-- write of the account's cash (15 µs of CPU a trade), a domain's only where its value is
-- written (migration 0017).
CREATE DOMAIN account_status AS text
    CONSTRAINT accounts_status_check CHECK (VALUE IN ('open', 'frozen', 'closed'));
CREATE DOMAIN account_lot_method AS text
    CONSTRAINT accounts_lot_method_check CHECK (VALUE IN ('fifo', 'lifo', 'hifo'));
CREATE DOMAIN account_credit_limit AS numeric
    CONSTRAINT accounts_credit_limit_check
        CHECK (VALUE >= 0 AND VALUE < 1000000000000000 AND VALUE = trunc(VALUE, 2));

-- Functions: money --------------------------------------------------------------------------

-- §1.4: a trade's signed cash effect. A buy pays its notional, rounded to the cent (half away
-- from zero, as round(numeric) does), plus its fee; a sell receives its notional minus its fee.
-- The one definition: the admission triggers and trade_batch_insert use it.
CREATE FUNCTION trade_amount(p_side text, p_quantity numeric, p_price numeric, p_fee numeric)
    RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE p_side WHEN 'buy' THEN -(round(p_quantity * p_price, 2) + p_fee)
                       ELSE round(p_quantity * p_price, 2) - p_fee END;
$$;


-- §1.5: part/whole of total, rounded to the cent, half away from zero: a closure's share of a
-- lot's cost, and of a sell's proceeds. The division is carried to 40 decimal places (the
-- dividend's scale sets the quotient's), where a quotient of these bounded decimals that is
-- not exactly a half cent is always far from one, so the rounding is that of the exact value.
CREATE FUNCTION cents_share(p_total numeric, p_part numeric, p_whole numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT round(round(p_total * p_part, 40) / p_whole, 2);
$$;

-- Reference tables -------------------------------------------------------------------------

-- Rule 4. One row per legal identity that is a broker or owns an account. Whoever registers a
-- broker or opens an account claims the flag here first (claim_tax_identity(), called by
-- register_broker() and open_account()) with INSERT … ON CONFLICT, so two concurrent
-- transactions meet on the same row lock (or on a serialization failure under REPEATABLE READ)
-- instead of each checking the other's table and both succeeding; and brokers and accounts
-- point at their flagged row with foreign keys, so that no writer can skip the claim. No
-- trigger writes this table: on a Citus cluster triggers run on shards, where writing another
-- table is refused (docs/scale-out.md).
CREATE TABLE tax_identities (
    tax_id       text NOT NULL,
    is_broker    boolean NOT NULL DEFAULT false,
    owns_account boolean NOT NULL DEFAULT false,
    CONSTRAINT tax_identities_pkey PRIMARY KEY (tax_id),
    -- What brokers and accounts point at: (tax_id, true) exists only once claimed.
    CONSTRAINT tax_identities_broker_key UNIQUE (tax_id, is_broker),
    CONSTRAINT tax_identities_owner_key UNIQUE (tax_id, owns_account),
    CONSTRAINT tax_identities_not_broker_and_owner CHECK (NOT (is_broker AND owns_account))
);

CREATE TABLE clients (
    client_id  bigint GENERATED ALWAYS AS IDENTITY,
    name       text NOT NULL,
    tax_id     text NOT NULL,
    email      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    address    text,
    CONSTRAINT clients_pkey PRIMARY KEY (client_id),
    CONSTRAINT clients_tax_id_key UNIQUE (tax_id),
    -- What an account's (client_id, owner_tax_id) points at.
    CONSTRAINT clients_client_id_tax_id_key UNIQUE (client_id, tax_id),
    -- No control characters, no blank name.
    CONSTRAINT clients_name_check
        CHECK (char_length(btrim(name)) BETWEEN 1 AND 200 AND name !~ '[\x01-\x1f\x7f]'),
    -- Canonical form (upper case letters and digits) so that "de-123" and "DE123" cannot pose
    -- as two identities and slip past the broker-owned-account rule.
    CONSTRAINT clients_tax_id_check CHECK (tax_id ~ '^[A-Z0-9]{1,32}$'),
    CONSTRAINT clients_email_check CHECK (
        char_length(email) <= 254 AND email ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$'
        AND email !~ '[\x01-\x1f\x7f]'),
    -- Lines of a postal address may be separated by newlines; no other control character.
    CONSTRAINT clients_address_check
        CHECK (char_length(btrim(address)) BETWEEN 1 AND 500 AND address !~ '[\x01-\x09\x0b-\x1f\x7f]')
);

CREATE TABLE brokers (
    broker_id  bigint GENERATED ALWAYS AS IDENTITY,
    name       text NOT NULL,
    tax_id     text NOT NULL,
    license_no text NOT NULL,
    status     text NOT NULL DEFAULT 'active',
    created_at timestamptz NOT NULL DEFAULT now(),
    claims_broker boolean NOT NULL DEFAULT true,
    -- Rule 10: the broker that supervises this one; the chain never loops
    -- (brokers_check_supervision).
    manager_id bigint,
    CONSTRAINT brokers_pkey PRIMARY KEY (broker_id),
    -- Rule 4: a broker stands on its tax identity claimed as a broker's.
    CONSTRAINT brokers_claims_broker_check CHECK (claims_broker),
    CONSTRAINT brokers_tax_identity_fkey
        FOREIGN KEY (tax_id, claims_broker) REFERENCES tax_identities (tax_id, is_broker),
    CONSTRAINT brokers_tax_id_key UNIQUE (tax_id),
    CONSTRAINT brokers_license_no_key UNIQUE (license_no),
    CONSTRAINT brokers_name_check
        CHECK (char_length(btrim(name)) BETWEEN 1 AND 200 AND name !~ '[\x01-\x1f\x7f]'),
    CONSTRAINT brokers_tax_id_check CHECK (tax_id ~ '^[A-Z0-9]{1,32}$'),
    CONSTRAINT brokers_license_no_check CHECK (license_no ~ '^[A-Z0-9][A-Z0-9./-]{0,31}$'),
    CONSTRAINT brokers_status_check CHECK (status IN ('active', 'suspended')),
    CONSTRAINT brokers_manager_id_fkey FOREIGN KEY (manager_id) REFERENCES brokers (broker_id),
    CONSTRAINT brokers_manager_id_check CHECK (manager_id <> broker_id)
);
CREATE INDEX brokers_manager_id_idx ON brokers (manager_id);

-- A broker's API keys: slk_<key_id>_<secret>. key_id (public, 16 hex digits) finds the row;
-- only the SHA-256 of the 256-bit secret is stored. Several live keys per broker make
-- rotation free of downtime; revocation is immediate and final.
CREATE TABLE broker_keys (
    key_id      text NOT NULL,
    broker_id   bigint NOT NULL,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT broker_keys_pkey PRIMARY KEY (key_id),
    CONSTRAINT broker_keys_broker_id_fkey FOREIGN KEY (broker_id) REFERENCES brokers (broker_id),
    CONSTRAINT broker_keys_key_id_check CHECK (key_id ~ '^[0-9a-f]{16}$'),
    CONSTRAINT broker_keys_secret_hash_check CHECK (octet_length(secret_hash) = 32),
    CONSTRAINT broker_keys_revoked_at_check CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
CREATE INDEX broker_keys_broker_id_idx ON broker_keys (broker_id);

CREATE TABLE stocks (
    symbol     text NOT NULL,
    name       text NOT NULL,
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Rule 9: whether fractions of a share trade.
    fractionable boolean NOT NULL DEFAULT false,
    CONSTRAINT stocks_pkey PRIMARY KEY (symbol),
    CONSTRAINT stocks_symbol_check CHECK (symbol ~ '^[A-Z][A-Z0-9.-]{0,9}$'),
    CONSTRAINT stocks_name_check
        CHECK (char_length(btrim(name)) BETWEEN 1 AND 200 AND name !~ '[\x01-\x1f\x7f]')
);

-- Per-account tables: keyed and uniquely constrained with account_id (SPEC §1.3) -----------

CREATE TABLE accounts (
    account_id bigint GENERATED ALWAYS AS IDENTITY,
    client_id  bigint NOT NULL,
    broker_id  bigint NOT NULL,
    status     account_status NOT NULL DEFAULT 'open',
    opened_at  timestamptz NOT NULL DEFAULT now(),
    -- The owner's tax id, filled from the client by accounts_check_tax_identity.
    owner_tax_id text NOT NULL,
    claims_owner boolean NOT NULL DEFAULT true,
    -- When its holders last changed: the row a removal updates (account_holders_change).
    holders_changed_at timestamptz,
    -- §1.4: the balance (derived: movements and trade amounts), and how far below zero it may
    -- go (NULL: no limit, every trade is booked).
    cash         numeric NOT NULL DEFAULT 0,
    credit_limit account_credit_limit,
    -- §1.5: the order in which sells close lots.
    lot_method   account_lot_method NOT NULL DEFAULT 'fifo',
    -- The latest trade, kept with the cash under the lock every trade takes (derived).
    last_seq         bigint,
    last_executed_at timestamptz,
    CONSTRAINT accounts_pkey PRIMARY KEY (account_id),
    CONSTRAINT accounts_client_id_fkey FOREIGN KEY (client_id) REFERENCES clients (client_id),
    CONSTRAINT accounts_broker_id_fkey FOREIGN KEY (broker_id) REFERENCES brokers (broker_id),
    -- Rule 4: an account stands on its owner's tax identity claimed as an owner's.
    CONSTRAINT accounts_claims_owner_check CHECK (claims_owner),
    CONSTRAINT accounts_owner_fkey
        FOREIGN KEY (client_id, owner_tax_id) REFERENCES clients (client_id, tax_id),
    CONSTRAINT accounts_tax_identity_fkey
        FOREIGN KEY (owner_tax_id, claims_owner) REFERENCES tax_identities (tax_id, owns_account),
    -- Rule 11's last line of defence: whatever writes the row, the balance stays within the
    -- limit (a NULL limit books everything).
    CONSTRAINT accounts_cash_within_limit CHECK (cash >= -credit_limit)
);
CREATE INDEX accounts_client_id_idx ON accounts (client_id);
CREATE INDEX accounts_broker_id_idx ON accounts (broker_id);

-- The ledger. No foreign keys: each cost a lookup per row and per key (40% of a batch's time),
-- and every one of them is checked by the admission triggers under the account's lock anyway
-- (the account exists and is open, the broker is its broker of record and active, the stock
-- is listed and active). Rows are only ever appended (rule 2).
CREATE TABLE trades (
    trade_id        bigint GENERATED ALWAYS AS IDENTITY,
    account_id      bigint NOT NULL,
    broker_id       bigint NOT NULL,
    symbol          text NOT NULL,
    side            trade_side NOT NULL,
    quantity        share_quantity NOT NULL,
    price           trade_price NOT NULL,
    executed_at     timestamptz NOT NULL,
    seq             bigint NOT NULL,
    client_order_id trade_client_order_id,
    batch_id        bigint,
    fee             trade_fee NOT NULL DEFAULT 0,
    -- §1.4: the trade's signed cash effect, assigned by the database: by trades_admit for a
    -- single trade (which refuses a value a writer supplies), by trade_batch_insert for a batch
    -- (trades_admit_batch refuses a batch row whose amount is not trade_amount()'s). Not a
    -- generated column: planning one parsed trade_amount()'s body for every insert (0017).
    amount          numeric NOT NULL,
    -- §1.5: the lots a sell asked to close ([{"lot_id": 3, "quantity": 2}, …]), kept with the
    -- sell as its instruction; NULL when it closes by the account's lot method.
    named_lots      jsonb,
    -- The ledger's natural key: the n-th execution of an account. Also serves "latest trade of
    -- an account" (a backward index probe) and history pages in seq order.
    CONSTRAINT trades_pkey PRIMARY KEY (account_id, seq),
    -- trade_id leads so that a lookup by trade_id alone uses this index.
    CONSTRAINT trades_trade_id_key UNIQUE (trade_id, account_id),
    CONSTRAINT trades_seq_check CHECK (seq >= 1)
);
COMMENT ON COLUMN trades.batch_id IS 'the all-or-nothing batch this trade was submitted in (trade_batch()); NULL for single trades';
CREATE UNIQUE INDEX trades_client_order_id_key
    ON trades (account_id, broker_id, client_order_id) WHERE client_order_id IS NOT NULL;

-- Holdings, kept in each trade's transaction (derived data: direct writes are refused), so a
-- read costs O(positions of one account) however long the history.
CREATE TABLE positions (
    account_id bigint NOT NULL,
    symbol     text NOT NULL,
    quantity   numeric NOT NULL,
    updated_at timestamptz NOT NULL,
    -- §1.5: the cost of its open lots (rule 12), and what its sells realized.
    cost_basis numeric NOT NULL DEFAULT 0,
    realized   numeric NOT NULL DEFAULT 0,
    CONSTRAINT positions_pkey PRIMARY KEY (account_id, symbol),
    CONSTRAINT positions_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (account_id),
    CONSTRAINT positions_symbol_fkey FOREIGN KEY (symbol) REFERENCES stocks (symbol),
    CONSTRAINT positions_quantity_check CHECK (quantity >= 0),
    CONSTRAINT positions_cost_basis_check CHECK (cost_basis >= 0)
);

-- Idempotency-Key claims, scoped to (broker, account), written by trade_idempotent() in the
-- trade's own transaction: a replay reads the trade and the position quantity it answered.
CREATE TABLE idempotency_keys (
    broker_id         bigint NOT NULL,
    account_id        bigint NOT NULL,
    idempotency_key   idempotency_key_text NOT NULL,
    request_hash      idempotency_request_hash NOT NULL,
    trade_id          bigint,
    position_quantity numeric,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (broker_id, account_id, idempotency_key),
    CONSTRAINT idempotency_keys_trade_fkey
        FOREIGN KEY (trade_id, account_id) REFERENCES trades (trade_id, account_id)
);

-- Rule 8: the holders of each account, current and past (history is kept: a removal sets
-- removed_at). position 1 is the first holder, then in the order they were added; the primary
-- holder is the current one with the lowest position. Per-account data: keyed with account_id.
CREATE TABLE account_holders (
    account_id   bigint NOT NULL,
    position     integer NOT NULL,
    client_id    bigint NOT NULL,
    -- The holder's tax id, filled from the client by account_holders_admit (rule 4).
    tax_id       text NOT NULL,
    claims_owner boolean NOT NULL DEFAULT true,
    added_at     timestamptz NOT NULL DEFAULT now(),
    removed_at   timestamptz,
    CONSTRAINT account_holders_pkey PRIMARY KEY (account_id, position),
    CONSTRAINT account_holders_account_id_fkey
        FOREIGN KEY (account_id) REFERENCES accounts (account_id),
    CONSTRAINT account_holders_client_id_fkey
        FOREIGN KEY (client_id, tax_id) REFERENCES clients (client_id, tax_id),
    -- Rule 4: a holder stands on its tax identity claimed as an owner's.
    CONSTRAINT account_holders_claims_owner_check CHECK (claims_owner),
    CONSTRAINT account_holders_tax_identity_fkey
        FOREIGN KEY (tax_id, claims_owner) REFERENCES tax_identities (tax_id, owns_account),
    CONSTRAINT account_holders_position_check CHECK (position >= 1),
    CONSTRAINT account_holders_removed_at_check CHECK (removed_at >= added_at)
);
-- A client holds an account at most once at a time.
CREATE UNIQUE INDEX account_holders_current_key
    ON account_holders (account_id, client_id) WHERE removed_at IS NULL;
CREATE INDEX account_holders_client_id_idx ON account_holders (client_id);

-- The tables of the money side have no foreign keys, like trades: they are written only by
-- triggers that checked the account under its lock.

-- §1.5: the shares one buy bought, and what is left of them. lot_id is the seq of the buy
-- that opened the lot (unique in its account, and in the order lots were opened).
CREATE TABLE lots (
    account_id     bigint NOT NULL,
    lot_id         bigint NOT NULL,
    symbol         text NOT NULL,
    trade_id       bigint NOT NULL,
    quantity       numeric NOT NULL,
    remaining      numeric NOT NULL,
    -- The buy's notional plus its fee; the part of it not yet closed.
    cost           numeric NOT NULL,
    remaining_cost numeric NOT NULL,
    opened_at      timestamptz NOT NULL,
    CONSTRAINT lots_pkey PRIMARY KEY (account_id, lot_id),
    CONSTRAINT lots_remaining_check CHECK (remaining >= 0 AND remaining <= quantity),
    CONSTRAINT lots_remaining_cost_check CHECK (remaining_cost >= 0 AND remaining_cost <= cost),
    -- A closed lot has no cost left.
    CONSTRAINT lots_closed_check CHECK (remaining > 0 OR remaining_cost = 0)
);
-- The open lots of a position, oldest first: what a sell closes.
CREATE INDEX lots_open_idx ON lots (account_id, symbol, lot_id) WHERE remaining > 0;

-- §1.5: the part of a lot a sell closed (append-only). seq is the sell's.
CREATE TABLE lot_closures (
    account_id bigint NOT NULL,
    seq        bigint NOT NULL,
    lot_id     bigint NOT NULL,
    symbol     text NOT NULL,
    trade_id   bigint NOT NULL,
    quantity   numeric NOT NULL,
    cost_basis numeric NOT NULL,
    proceeds   numeric NOT NULL,
    realized   numeric GENERATED ALWAYS AS (proceeds - cost_basis) STORED,
    closed_at  timestamptz NOT NULL,
    CONSTRAINT lot_closures_pkey PRIMARY KEY (account_id, seq, lot_id),
    CONSTRAINT lot_closures_quantity_check CHECK (quantity > 0),
    CONSTRAINT lot_closures_cost_basis_check CHECK (cost_basis >= 0)
);

-- §1.4: deposits and withdrawals (append-only). movement_id counts an account's movements (1,
-- 2, 3 … assigned under the account's lock, like a trade's seq); balance is the account's cash
-- right after it. A movement made under an Idempotency-Key carries the key and the hash of its
-- request: the movement is its own claim.
CREATE TABLE cash_movements (
    account_id      bigint NOT NULL,
    movement_id     bigint NOT NULL,
    kind            text NOT NULL,
    amount          numeric NOT NULL,
    reference       text,
    created_at      timestamptz NOT NULL,
    balance         numeric NOT NULL,
    idempotency_key idempotency_key_text,
    request_hash    idempotency_request_hash,
    CONSTRAINT cash_movements_pkey PRIMARY KEY (account_id, movement_id),
    CONSTRAINT cash_movements_kind_check CHECK (kind IN ('deposit', 'withdrawal')),
    CONSTRAINT cash_movements_amount_check
        CHECK (amount > 0 AND amount < 1000000000000000 AND amount = trunc(amount, 2)),
    CONSTRAINT cash_movements_reference_check
        CHECK (char_length(btrim(reference)) BETWEEN 1 AND 200 AND reference !~ '[\x01-\x1f\x7f]'),
    CONSTRAINT cash_movements_idempotency_check
        CHECK ((idempotency_key IS NULL) = (request_hash IS NULL))
);
CREATE UNIQUE INDEX cash_movements_idempotency_key_key
    ON cash_movements (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- §1.6: reference prices, append-only; a stock's price is its latest (by as_of). A reference
-- table on a cluster, read by a backward probe of its key.
CREATE TABLE stock_prices (
    symbol      text NOT NULL,
    as_of       timestamptz NOT NULL DEFAULT now(),
    price       numeric NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_prices_pkey PRIMARY KEY (symbol, as_of),
    CONSTRAINT stock_prices_symbol_fkey FOREIGN KEY (symbol) REFERENCES stocks (symbol),
    CONSTRAINT stock_prices_price_check
        CHECK (price > 0 AND price < 1000000000000 AND price = trunc(price, 4))
);

-- The batch number of trade_batch() (trades.batch_id).
CREATE SEQUENCE trade_batch_id_seq;

-- Views ------------------------------------------------------------------------------------

-- A trade as callers read it: the one declaration of its columns, in their base types. trade()
-- and trade_idempotent() return it (as their column `trade`), trade_batch() returns its rows,
-- and the history queries read it.
CREATE VIEW trade_rows AS
SELECT trade_id, account_id, broker_id, symbol, side::text AS side,
       quantity::numeric AS quantity, price::numeric AS price, executed_at, seq,
       client_order_id::text AS client_order_id, fee::numeric AS fee, amount
FROM trades;

-- The seed's definition of holdings, straight from the ledger (verify compares it with
-- positions).
CREATE VIEW holds AS
SELECT account_id, symbol,
       sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) AS quantity
FROM trades
GROUP BY account_id, symbol
HAVING sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) <> 0;

-- Rule 10: every (broker, supervisor) pair, at any depth of the manager_id chain (what
-- broker_supervises() asks). UNION, not UNION ALL: even a chain that looped
-- (brokers_check_supervision refuses one) would end.
CREATE VIEW broker_supervisors AS
WITH RECURSIVE up (broker_id, supervisor_id) AS (
    SELECT broker_id, manager_id FROM brokers WHERE manager_id IS NOT NULL
    UNION
    SELECT up.broker_id, b.manager_id
    FROM up JOIN brokers b ON b.broker_id = up.supervisor_id
    WHERE b.manager_id IS NOT NULL
)
SELECT broker_id, supervisor_id FROM up;

-- Functions: rule 4, no broker-owned accounts ---------------------------------------------

-- The claim (SL007 when the identity is claimed the other way), and the two functions that
-- claim and insert in one statement: what the API and the CLI call. SECURITY DEFINER: the
-- application may not write tax_identities itself.
CREATE FUNCTION claim_tax_identity(p_tax_id text, p_as_broker boolean) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
    INSERT INTO tax_identities AS ti (tax_id, is_broker, owns_account)
    VALUES (p_tax_id, p_as_broker, NOT p_as_broker)
    ON CONFLICT (tax_id) DO UPDATE
        SET is_broker = ti.is_broker OR p_as_broker,
            owns_account = ti.owns_account OR NOT p_as_broker
        WHERE CASE WHEN p_as_broker THEN NOT ti.owns_account ELSE NOT ti.is_broker END;
    IF NOT FOUND THEN
        IF p_as_broker THEN
            RAISE EXCEPTION 'tax id % owns a brokerage account and cannot be registered as a broker',
                p_tax_id USING ERRCODE = 'SL007';
        END IF;
        RAISE EXCEPTION 'tax id % is a registered broker''s and cannot own an account', p_tax_id
            USING ERRCODE = 'SL007';
    END IF;
END
$$;

CREATE FUNCTION register_broker(p_name text, p_tax_id text, p_license_no text) RETURNS SETOF brokers
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
    PERFORM claim_tax_identity(p_tax_id, true);
    RETURN QUERY
    INSERT INTO brokers (name, tax_id, license_no) VALUES (p_name, p_tax_id, p_license_no)
    RETURNING *;
END
$$;

-- Read-only checks, as the owner (the application cannot read the claims): a broker or an
-- account whose identity is claimed the other way is refused with SL007 before the foreign keys
-- would refuse it less clearly; an account's owner_tax_id is its client's. On a cluster they
-- run on the shards, where reading is allowed.
CREATE FUNCTION brokers_check_tax_identity() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
    IF EXISTS (SELECT FROM tax_identities ti WHERE ti.tax_id = NEW.tax_id AND ti.owns_account) THEN
        RAISE EXCEPTION 'tax id % owns a brokerage account and cannot be registered as a broker',
            NEW.tax_id USING ERRCODE = 'SL007';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION accounts_check_tax_identity() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
    SELECT c.tax_id INTO NEW.owner_tax_id FROM clients c WHERE c.client_id = NEW.client_id;
    IF NOT FOUND THEN
        -- PostgreSQL's own words for it: a cluster relays the message but not the
        -- constraint's field, and the error boundary reads the name from there.
        RAISE EXCEPTION 'insert or update on table "accounts" violates foreign key constraint "accounts_client_id_fkey"'
            USING ERRCODE = '23503', CONSTRAINT = 'accounts_client_id_fkey',
                  DETAIL = format('Key (client_id)=(%s) is not present in table "clients".',
                                  NEW.client_id);
    END IF;
    IF EXISTS (SELECT FROM tax_identities ti WHERE ti.tax_id = NEW.owner_tax_id AND ti.is_broker) THEN
        RAISE EXCEPTION 'client % has the tax id of a registered broker and cannot own an account',
            NEW.client_id USING ERRCODE = 'SL007';
    END IF;
    RETURN NEW;
END
$$;

-- Functions: rule 8, joint accounts -------------------------------------------------------

-- Rule 8: an account's holders. Who holds an account is per-account data (distributed with
-- the account on a cluster); each holder's tax identity is claimed as an owner's, like the
-- account's first client's, so that rule 4 covers every holder: the foreign key to
-- tax_identities makes every writer claim it, and a claim meets a broker's registration on
-- the same row (claim_tax_identity()).
CREATE FUNCTION account_holders_admit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
    IF NEW.position IS NOT NULL THEN
        RAISE EXCEPTION 'a holder''s position is assigned by the database'
            USING ERRCODE = '428C9', COLUMN = 'position';
    END IF;
    IF NEW.removed_at IS NOT NULL THEN
        RAISE EXCEPTION 'a holder is added current; set removed_at to remove it afterwards'
            USING ERRCODE = '22023', COLUMN = 'removed_at';
    END IF;
    -- The account's row serialises its holder changes, as it serialises its trades.
    PERFORM FROM accounts WHERE account_id = NEW.account_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        -- PostgreSQL's own words, as accounts_check_tax_identity() says them (a cluster relays
        -- the message, not the constraint's field).
        RAISE EXCEPTION 'insert or update on table "account_holders" violates foreign key constraint "account_holders_account_id_fkey"'
            USING ERRCODE = '23503', CONSTRAINT = 'account_holders_account_id_fkey',
                  DETAIL = format('Key (account_id)=(%s) is not present in table "accounts".',
                                  NEW.account_id);
    END IF;
    SELECT c.tax_id INTO NEW.tax_id FROM clients c WHERE c.client_id = NEW.client_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insert or update on table "account_holders" violates foreign key constraint "account_holders_client_id_fkey"'
            USING ERRCODE = '23503', CONSTRAINT = 'account_holders_client_id_fkey',
                  DETAIL = format('Key (client_id)=(%s) is not present in table "clients".',
                                  NEW.client_id);
    END IF;
    IF EXISTS (SELECT FROM tax_identities ti WHERE ti.tax_id = NEW.tax_id AND ti.is_broker) THEN
        RAISE EXCEPTION 'client % has the tax id of a registered broker and cannot hold an account',
            NEW.client_id USING ERRCODE = 'SL007';
    END IF;
    SELECT coalesce(max(h.position), 0) + 1 INTO NEW.position
    FROM account_holders h WHERE h.account_id = NEW.account_id;
    RETURN NEW;
END
$$;


-- A holder's row never changes but for its removal, once; the last current holder cannot be
-- removed (SL016). The removal updates the account's row: two removals of one account's
-- holders queue there, and the second then sees the first (READ COMMITTED) or, with an older
-- snapshot (REPEATABLE READ), fails to serialise instead of removing the last holder too.
CREATE FUNCTION account_holders_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    v_now timestamptz;
BEGIN
    IF (NEW.account_id, NEW.position, NEW.client_id, NEW.tax_id, NEW.added_at)
       IS DISTINCT FROM (OLD.account_id, OLD.position, OLD.client_id, OLD.tax_id, OLD.added_at)
       OR OLD.removed_at IS NOT NULL THEN
        RAISE EXCEPTION 'account_holders is history: only a current holder''s removed_at can be set'
            USING ERRCODE = 'SL011', COLUMN = 'removed_at';
    END IF;
    IF NEW.removed_at IS NULL THEN
        RETURN NEW;
    END IF;
    v_now := clock_timestamp();
    UPDATE accounts SET holders_changed_at = v_now WHERE account_id = OLD.account_id;
    IF NOT EXISTS (SELECT FROM account_holders h
                   WHERE h.account_id = OLD.account_id AND h.removed_at IS NULL
                     AND h.position <> OLD.position) THEN
        RAISE EXCEPTION 'client % is the last holder of account % and cannot be removed',
            OLD.client_id, OLD.account_id USING ERRCODE = 'SL016';
    END IF;
    RETURN NEW;
END
$$;


-- Every account starts with its client as the primary holder, whoever inserts it.
CREATE FUNCTION accounts_add_first_holder() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
    INSERT INTO account_holders (account_id, client_id, added_at)
    VALUES (NEW.account_id, NEW.client_id, NEW.opened_at);
    RETURN NULL;
END
$$;


-- A joint account in one statement: every holder's identity is claimed (in tax id order, so
-- that two openings with the same holders queue instead of deadlocking), then the account is
-- inserted with the first as its primary holder, then the others in their order.
CREATE FUNCTION open_account(p_client_ids bigint[], p_broker_id bigint) RETURNS SETOF accounts
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    v_tax_id  text;
    v_account accounts;
BEGIN
    IF coalesce(cardinality(p_client_ids), 0) = 0 OR array_position(p_client_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'an account has at least one holder' USING ERRCODE = '22023';
    END IF;
    FOR v_tax_id IN
        SELECT DISTINCT c.tax_id FROM clients c WHERE c.client_id = ANY (p_client_ids)
        ORDER BY c.tax_id
    LOOP
        PERFORM claim_tax_identity(v_tax_id, false);
    END LOOP;  -- an unknown client is refused by the inserts' foreign keys
    INSERT INTO accounts (client_id, broker_id) VALUES (p_client_ids[1], p_broker_id)
    RETURNING * INTO v_account;
    INSERT INTO account_holders (account_id, client_id)
    SELECT v_account.account_id, u.client_id
    FROM unnest(p_client_ids[2:]) WITH ORDINALITY AS u(client_id, i)
    ORDER BY u.i;
    RETURN NEXT v_account;
END
$$;


-- Adding a holder claims its identity first, as opening an account does (rule 4).
CREATE FUNCTION add_account_holder(p_account_id bigint, p_client_id bigint)
    RETURNS SETOF account_holders
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    v_tax_id text;
BEGIN
    SELECT c.tax_id INTO v_tax_id FROM clients c WHERE c.client_id = p_client_id;
    IF FOUND THEN
        PERFORM claim_tax_identity(v_tax_id, false);
    END IF;
    RETURN QUERY
    INSERT INTO account_holders (account_id, client_id) VALUES (p_account_id, p_client_id)
    RETURNING *;
END
$$;


-- A current holder's removal (SL016 for the last one; SL018 for a client who does not hold
-- the account now; SL009 for an unknown account).
CREATE FUNCTION remove_account_holder(p_account_id bigint, p_client_id bigint)
    RETURNS SETOF account_holders
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    v_now timestamptz;
BEGIN
    -- A value: a cluster refuses a volatile function in an UPDATE of a distributed table.
    v_now := clock_timestamp();
    RETURN QUERY
    UPDATE account_holders h SET removed_at = v_now
    WHERE h.account_id = p_account_id AND h.client_id = p_client_id AND h.removed_at IS NULL
    RETURNING h.*;
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT FROM accounts WHERE account_id = p_account_id) THEN
            RAISE EXCEPTION 'account % does not exist', p_account_id USING ERRCODE = 'SL009';
        END IF;
        RAISE EXCEPTION 'client % is not a current holder of account %', p_client_id,
            p_account_id USING ERRCODE = 'SL018';
    END IF;
END
$$;



-- The single-holder form, kept for the scripts that call it.
CREATE FUNCTION open_account(p_client_id bigint, p_broker_id bigint) RETURNS SETOF accounts
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
    SELECT * FROM open_account(ARRAY[p_client_id], p_broker_id);
$$;


-- Functions: rule 10, supervision ----------------------------------------------------------

-- Rule 10: whether p_supervisor is above p_broker in the manager_id chain (at any depth).
-- Why a supervisor's trade is refused as SL017 rather than as an unknown account.
CREATE FUNCTION broker_supervises(p_supervisor bigint, p_broker bigint) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    SELECT EXISTS (SELECT FROM broker_supervisors s
                   WHERE s.broker_id = p_broker AND s.supervisor_id = p_supervisor);
$$;


-- Whether p_supervisor supervises the broker of record of an account: a supervisor's read.
CREATE FUNCTION broker_supervises_account(p_supervisor bigint, p_account_id bigint)
    RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    v_of_record bigint;
BEGIN
    SELECT broker_id INTO v_of_record FROM accounts WHERE account_id = p_account_id;
    RETURN FOUND AND broker_supervises(p_supervisor, v_of_record);
END
$$;


-- Rule 10, race-free. Every change of a manager takes one transaction-level lock first (a
-- statement trigger: before any row of the statement is locked), so changes queue, and each
-- walks the chain its new manager heads, seeing every change committed before it: two changes
-- that would close a loop together cannot both pass. The walk locks the rows it reads (FOR
-- SHARE), so a writer with an older snapshot (REPEATABLE READ) fails to serialise instead of
-- walking a chain that has changed.
CREATE FUNCTION lock_supervision() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(8319679467651230067);  -- "supervis" in ASCII
    RETURN NULL;
END
$$;


CREATE FUNCTION brokers_check_supervision() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_manager bigint := NEW.manager_id;
BEGIN
    WHILE v_manager IS NOT NULL LOOP
        IF v_manager = NEW.broker_id THEN
            RAISE EXCEPTION 'broker % cannot be supervised by broker %: the chain would loop',
                NEW.broker_id, NEW.manager_id USING ERRCODE = 'SL015';
        END IF;
        IF TG_TABLE_NAME = 'brokers' THEN
            SELECT b.manager_id INTO v_manager FROM brokers b WHERE b.broker_id = v_manager
            FOR SHARE;
        ELSE
            -- A placement of the reference table, on a cluster. Citus serialises every UPDATE
            -- of a reference table on its first worker before any placement runs it, so the
            -- walk sees every change committed before this one; a row lock taken here would
            -- have to reach every other placement, from inside this one's statement (Citus
            -- cancels that as a distributed deadlock).
            SELECT b.manager_id INTO v_manager FROM brokers b WHERE b.broker_id = v_manager;
        END IF;
    END LOOP;
    RETURN NEW;
END
$$;



-- Functions: reference prices ---------------------------------------------------------------

-- A reference price's time: not ahead of the database's clock by more than a trade's may be
-- (SL002), not before 1900 (22008); its price is stored with scale 4. SECURITY DEFINER: the
-- application inserts prices itself, and may not call future_tolerance().
CREATE FUNCTION stock_prices_admit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
BEGIN
    IF NEW.as_of > clock_timestamp() + future_tolerance() THEN
        RAISE EXCEPTION 'as_of % is more than % seconds in the future', NEW.as_of,
            extract(epoch FROM future_tolerance())::integer USING ERRCODE = 'SL002';
    ELSIF NEW.as_of < '1900-01-01 00:00:00+00' THEN
        RAISE EXCEPTION 'as_of % is before 1900-01-01T00:00:00Z', NEW.as_of
            USING ERRCODE = '22008', COLUMN = 'as_of';
    END IF;
    IF NEW.price = trunc(NEW.price, 4) THEN
        NEW.price := trunc(NEW.price, 4);
    END IF;
    RETURN NEW;
END
$$;

-- Functions: what never changes -----------------------------------------------------------

-- Identities (tax ids, an account's client and broker, a key's secret and broker, a
-- revocation) never change: a change would bypass the claims above (SL011). The message names
-- the table, not the shard a cluster runs the trigger on ("accounts", not "accounts_102009"):
-- no table of this schema ends in an underscore and digits (db/distribution.py refuses one).
CREATE FUNCTION refuse_immutable_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION '%.% cannot be changed', regexp_replace(TG_TABLE_NAME, '_[0-9]+$', ''),
        TG_ARGV[0] USING ERRCODE = 'SL011', COLUMN = TG_ARGV[0];
END
$$;


-- History is append-only (SL008): the ledger (rule 2), account holders, reference prices.
CREATE FUNCTION refuse_ledger_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION '% is append-only history: % is not allowed',
        regexp_replace(TG_TABLE_NAME, '_[0-9]+$', ''), TG_OP USING ERRCODE = 'SL008';
END
$$;


-- Derived data (positions, lots, closures, an account's cash and latest trade) is written only
-- by the triggers that keep it (SL010).
CREATE FUNCTION refuse_derived_write() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION '% is derived data, kept by the database: % is not allowed',
        coalesce(TG_ARGV[0], regexp_replace(TG_TABLE_NAME, '_[0-9]+$', '')), TG_OP
        USING ERRCODE = 'SL010';
END
$$;

-- Functions: admitting trades -------------------------------------------------------------

-- The one definition of how far ahead of the database's clock a supplied execution time may
-- be (SL002). An immutable SQL function: inlined and folded into a constant when a statement
-- is planned.
CREATE FUNCTION future_tolerance() RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT interval '5 seconds' $$;

-- Rules 1, 3, 5, 6, 9, 11 and 12 for a single trade (any insert without a batch_id, from trade()
-- or from psql alike), and its books: the account's cash and latest trade, the position, the
-- lot it opens or the lots it closes. All of it BEFORE the row is written: any later failure
-- of the insert undoes the statement, these writes with it.
--
-- The first statement is the account's write, with every condition of the trade's admission
-- that does not depend on its lots in the WHERE. Only the broker of record's trade finds the
-- row: another broker's trade locks nothing and waits for nothing, and answers as for a
-- missing account (SPEC §2.4), whatever the account's status. When the write finds no row, the
-- trade is refused: the account is locked (FOR NO KEY UPDATE) and the rules are checked one by
-- one, in their order, for the first that fails. Should none fail (the account changed between
-- the write and the lock: a deposit, a limit raised), the write is made again, under the lock.
CREATE FUNCTION trades_admit() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_account_status text;
    v_cash           numeric;
    v_credit_limit   numeric;
    v_lot_method     text;
    v_last_at        timestamptz;
    v_seq            bigint;
    v_executed_at    timestamptz;
    v_broker_status  text;
    v_stock_active   boolean;
    v_fractionable   boolean;
    v_of_record      bigint;
    v_now            timestamptz;
    v_amount         numeric;
    v_cost           numeric;
    v_held           numeric;
    v_pass           integer;
BEGIN
    IF NEW.seq IS NOT NULL THEN
        RAISE EXCEPTION 'seq is assigned by the database' USING ERRCODE = '428C9', COLUMN = 'seq';
    END IF;
    IF NEW.amount IS NOT NULL THEN
        RAISE EXCEPTION 'amount is assigned by the database' USING ERRCODE = '428C9',
            COLUMN = 'amount';
    END IF;

    SELECT status INTO v_broker_status FROM brokers WHERE broker_id = NEW.broker_id;
    SELECT active, fractionable INTO v_stock_active, v_fractionable
    FROM stocks WHERE symbol = NEW.symbol;
    v_now := clock_timestamp();
    -- Rule 11: what the trade pays may not take the balance past the credit limit (a NULL
    -- limit books everything). A sell pays only when its fee is more than its notional. (A
    -- NULL fee fails the insert itself, after this trigger: until then it counts as none.)
    v_amount := trade_amount(NEW.side, NEW.quantity, NEW.price, coalesce(NEW.fee, 0));

    FOR v_pass IN 1 .. 2 LOOP
        -- greatest() so that a clock step backwards cannot reorder the ledger. READ COMMITTED
        -- re-reads a row another trade changed while this one waited for it; a stale snapshot
        -- (REPEATABLE READ) fails to serialise on it.
        UPDATE accounts
        SET cash = cash + v_amount, last_seq = coalesce(last_seq, 0) + 1,
            last_executed_at = coalesce(NEW.executed_at, greatest(v_now, last_executed_at))
        WHERE account_id = NEW.account_id AND broker_id = NEW.broker_id AND status = 'open'
          AND v_broker_status = 'active' AND v_stock_active
          AND (NEW.quantity = trunc(NEW.quantity) OR v_fractionable)
          AND (NEW.executed_at IS NULL
               OR (NEW.executed_at >= coalesce(last_executed_at, NEW.executed_at)
                   AND NEW.executed_at <= v_now + future_tolerance()
                   AND NEW.executed_at >= '1900-01-01 00:00:00+00'))
          AND (v_amount >= 0 OR cash + v_amount >= -credit_limit OR credit_limit IS NULL)
        -- (Into variables: a write that finds no row sets them to NULL.)
        RETURNING last_seq, last_executed_at, lot_method INTO v_seq, v_executed_at, v_lot_method;
        EXIT WHEN FOUND;
        IF v_pass = 2 THEN
            RAISE EXCEPTION 'a trade of account % fits no rule''s refusal and no row', NEW.account_id
                USING ERRCODE = 'XX000';
        END IF;

        -- Refused: which rule, in their order, under the account's lock.
        SELECT status, cash, credit_limit, last_executed_at
        INTO v_account_status, v_cash, v_credit_limit, v_last_at
        FROM accounts WHERE account_id = NEW.account_id AND broker_id = NEW.broker_id
        FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            SELECT broker_id INTO v_of_record FROM accounts WHERE account_id = NEW.account_id;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'account % does not exist', NEW.account_id
                    USING ERRCODE = 'SL009';
            END IF;
            -- A supervisor of the broker of record reads the account but never trades it
            -- (SPEC §2.4): it may know the account exists. (Called here, not inside the query:
            -- a cluster refuses a function that reads a table within a query on a shard.)
            IF broker_supervises(NEW.broker_id, v_of_record) THEN
                RAISE EXCEPTION 'broker % supervises account % and may read it, not trade it',
                    NEW.broker_id, NEW.account_id USING ERRCODE = 'SL017';
            END IF;
            RAISE EXCEPTION 'broker % is not the broker of record of account %',
                NEW.broker_id, NEW.account_id USING ERRCODE = 'SL004';
        END IF;
        IF v_account_status <> 'open' THEN
            RAISE EXCEPTION 'account % is %', NEW.account_id, v_account_status
                USING ERRCODE = 'SL003';
        END IF;
        IF v_broker_status IS DISTINCT FROM 'active' THEN
            RAISE EXCEPTION 'broker % is %', NEW.broker_id, v_broker_status USING ERRCODE = 'SL005';
        END IF;
        IF v_stock_active IS NOT TRUE THEN
            RAISE EXCEPTION 'stock % is not tradable', NEW.symbol USING ERRCODE = 'SL006';
        END IF;
        -- Rule 9.
        IF NEW.quantity <> trunc(NEW.quantity) AND NOT v_fractionable THEN
            RAISE EXCEPTION 'stock % trades in whole shares only, not %', NEW.symbol, NEW.quantity
                USING ERRCODE = 'SL014';
        END IF;
        IF NEW.executed_at < v_last_at THEN
            RAISE EXCEPTION 'executed_at % is earlier than the latest trade of account % (%)',
                NEW.executed_at, NEW.account_id, v_last_at USING ERRCODE = 'SL002';
        ELSIF NEW.executed_at > v_now + future_tolerance() THEN
            RAISE EXCEPTION 'executed_at % is more than % seconds in the future', NEW.executed_at,
                extract(epoch FROM future_tolerance())::integer
                USING ERRCODE = 'SL002';
        ELSIF NEW.executed_at < '1900-01-01 00:00:00+00' THEN
            -- Every layer must be able to read a stored time back (SPEC §2.8): Python's
            -- datetime ends at year 1, so "0001-01-01T00:00:00+14:00" (year 0 in UTC) was
            -- stored and then answered 500. The range is the API's
            -- (stockledger.models.EARLIEST_TIME).
            RAISE EXCEPTION 'executed_at % is before 1900-01-01T00:00:00Z', NEW.executed_at
                USING ERRCODE = '22008', COLUMN = 'executed_at';
        END IF;
        IF v_amount < 0 AND v_cash + v_amount < -v_credit_limit THEN
            RAISE EXCEPTION 'account % has % in cash and a credit limit of %: it cannot pay %',
                NEW.account_id, v_cash, v_credit_limit, -v_amount USING ERRCODE = 'SL019';
        END IF;
    END LOOP;
    NEW.seq := v_seq;
    NEW.executed_at := v_executed_at;
    NEW.amount := v_amount;

    -- Store every valid price with scale 4 ("187.2500"); invalid ones are left for the CHECK.
    IF NEW.price = trunc(NEW.price, 4) THEN
        NEW.price := trunc(NEW.price, 4);
    END IF;
    -- And every quantity without trailing zeros ("10", "2.5"): what the API answers.
    NEW.quantity := trim_scale(NEW.quantity);

    IF NEW.side = 'buy' THEN
        IF NEW.named_lots IS NOT NULL THEN
            RAISE EXCEPTION 'only a sell names the lots it closes'
                USING ERRCODE = '22023', COLUMN = 'named_lots';
        END IF;
        -- A lot of its own, costing what the buy paid.
        v_cost := -v_amount;
        UPDATE positions
        SET quantity = trim_scale(quantity + NEW.quantity), cost_basis = cost_basis + v_cost,
            updated_at = now()
        WHERE account_id = NEW.account_id AND symbol = NEW.symbol;
        IF NOT FOUND THEN
            INSERT INTO positions (account_id, symbol, quantity, cost_basis, updated_at)
            VALUES (NEW.account_id, NEW.symbol, NEW.quantity, v_cost, now());
        END IF;
        INSERT INTO lots (account_id, lot_id, symbol, trade_id, quantity, remaining, cost,
                          remaining_cost, opened_at)
        VALUES (NEW.account_id, NEW.seq, NEW.symbol, NEW.trade_id, NEW.quantity, NEW.quantity,
                v_cost, v_cost, NEW.executed_at);
    ELSE
        -- Rule 1, before any lot is read: a refused sell costs one probe.
        SELECT quantity INTO v_held FROM positions
        WHERE account_id = NEW.account_id AND symbol = NEW.symbol;
        IF coalesce(v_held, 0) < NEW.quantity THEN
            RAISE EXCEPTION 'account % holds % shares of %, cannot sell %',
                NEW.account_id, coalesce(v_held, 0), NEW.symbol, NEW.quantity
                USING ERRCODE = 'SL001';
        END IF;
        -- Rule 12: the open lots are the position.
        v_cost := trades_close_lots(NEW.account_id, NEW.symbol, NEW.seq, NEW.trade_id,
                                    NEW.quantity, v_amount, NEW.executed_at, v_lot_method,
                                    NEW.named_lots, v_fractionable);
        -- WHERE quantity >= q: the last line of defence against an oversell.
        UPDATE positions
        SET quantity = trim_scale(quantity - NEW.quantity), cost_basis = cost_basis - v_cost,
            realized = realized + v_amount - v_cost, updated_at = now()
        WHERE account_id = NEW.account_id AND symbol = NEW.symbol AND quantity >= NEW.quantity;
        IF NOT FOUND THEN
            SELECT quantity INTO v_held FROM positions
            WHERE account_id = NEW.account_id AND symbol = NEW.symbol;
            RAISE EXCEPTION 'account % holds % shares of %, cannot sell %',
                NEW.account_id, coalesce(v_held, 0), NEW.symbol, NEW.quantity
                USING ERRCODE = 'SL001';
        END IF;
    END IF;
    RETURN NEW;
END
$$;


-- §1.5 for one sell: close its lots — those it names, or the open lots opened before it in the
-- order of the account's lot method (fifo: oldest first; lifo: newest first; hifo: highest
-- cost per share first, then oldest) — and return the cost basis it closed. The caller checked
-- rule 1 (the position holds the shares; rule 12: the open lots are the position). Raises
-- SL020 for a named lot that is not open, not the account's or the symbol's, or too small,
-- SL014 for a fraction of a lot of a whole-share stock, 22023 for a malformed selection.
-- Called by trades_admit, and by trades_admit_batch for the accounts that do not close first
-- in first out, under the account's lock. The lots are read through a cursor in that order
-- and each is written as it is reached, so a sell that closes one lot reads one (a refusal of
-- a named lot undoes the lots written before it with the statement); the closures are written
-- in one insert.
CREATE FUNCTION trades_close_lots(
    p_account_id bigint, p_symbol text, p_seq bigint, p_trade_id bigint, p_quantity numeric,
    p_amount numeric, p_executed_at timestamptz, p_method text, p_named jsonb,
    p_fractionable boolean
) RETURNS numeric
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_open     refcursor;
    v_lot      record;
    v_item     jsonb;
    v_i        integer := 0;
    v_named    bigint[];
    v_wanted   numeric[];
    v_take     numeric;
    v_left     numeric := p_quantity;
    v_cost     numeric;
    v_proceeds numeric;
    v_given    numeric := 0;  -- proceeds allocated so far
    v_closed   numeric := 0;  -- cost basis closed so far
    -- The closures: lot, quantity, cost basis, proceeds (one insert for all of them).
    v_ids      bigint[];
    v_shares   numeric[];
    v_costs    numeric[];
    v_proceeds_of numeric[];
BEGIN
    IF p_named IS NOT NULL THEN
        -- The shape of a selection: [{"lot_id": id, "quantity": q}, …], distinct lots, adding
        -- up to the sell (the API says so before it calls; this says it to every writer).
        IF jsonb_typeof(p_named) IS DISTINCT FROM 'array' OR jsonb_array_length(p_named) = 0 THEN
            RAISE EXCEPTION 'lots must be a non-empty array of {"lot_id", "quantity"}'
                USING ERRCODE = '22023', COLUMN = 'named_lots';
        END IF;
        FOR v_item IN SELECT e FROM jsonb_array_elements(p_named) AS e LOOP
            IF jsonb_typeof(v_item) IS DISTINCT FROM 'object'
               OR (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(v_item) AS k)
                  IS DISTINCT FROM ARRAY['lot_id', 'quantity']
               OR jsonb_typeof(v_item -> 'lot_id') <> 'number'
               OR v_item ->> 'lot_id' !~ '^[1-9][0-9]{0,17}$'
               OR jsonb_typeof(v_item -> 'quantity') NOT IN ('number', 'string')
               OR v_item ->> 'quantity' !~ '^[0-9]{1,10}(\.[0-9]{1,6})?$'
               OR (v_item ->> 'quantity')::numeric NOT BETWEEN 0.000001 AND 1000000000 THEN
                RAISE EXCEPTION 'lots[%] must be {"lot_id": a lot id, "quantity": a positive quantity with at most 6 decimal places}',
                    v_i USING ERRCODE = '22023', COLUMN = 'named_lots';
            END IF;
            v_named := v_named || (v_item ->> 'lot_id')::bigint;
            v_wanted := v_wanted || trim_scale((v_item ->> 'quantity')::numeric);
            v_i := v_i + 1;
        END LOOP;
        IF (SELECT count(DISTINCT id) FROM unnest(v_named) AS id) <> cardinality(v_named) THEN
            RAISE EXCEPTION 'lots names a lot twice' USING ERRCODE = '22023', COLUMN = 'named_lots';
        END IF;
        IF (SELECT sum(q) FROM unnest(v_wanted) AS q) <> p_quantity THEN
            RAISE EXCEPTION 'lots add up to %, not to the sell''s %',
                (SELECT sum(q) FROM unnest(v_wanted) AS q), p_quantity
                USING ERRCODE = '22023', COLUMN = 'named_lots';
        END IF;
        IF NOT p_fractionable AND EXISTS (SELECT FROM unnest(v_wanted) AS q WHERE q <> trunc(q)) THEN
            RAISE EXCEPTION 'stock % trades in whole shares only: a lot closes in whole shares',
                p_symbol USING ERRCODE = 'SL014';
        END IF;
        -- The named lots in the order named; a name that is no lot reads as NULLs.
        OPEN v_open FOR
            SELECT u.named, u.wanted, l.lot_id, l.symbol, l.quantity, l.remaining, l.cost,
                   l.remaining_cost
            FROM unnest(v_named, v_wanted) WITH ORDINALITY AS u(named, wanted, i)
            LEFT JOIN lots l ON l.account_id = p_account_id AND l.lot_id = u.named
            ORDER BY u.i;
    -- By the account's method: every open lot of the position opened before the sell (in a
    -- batch, its later buys' lots exist already), as much of each as it has.
    ELSIF p_method = 'lifo' THEN
        OPEN v_open FOR
            SELECT l.lot_id AS named, l.remaining AS wanted, l.lot_id, l.symbol, l.quantity,
                   l.remaining, l.cost, l.remaining_cost
            FROM lots l
            WHERE l.account_id = p_account_id AND l.symbol = p_symbol AND l.remaining > 0
              AND l.lot_id < p_seq
            ORDER BY l.lot_id DESC;
    ELSIF p_method = 'hifo' THEN
        OPEN v_open FOR
            SELECT l.lot_id AS named, l.remaining AS wanted, l.lot_id, l.symbol, l.quantity,
                   l.remaining, l.cost, l.remaining_cost
            FROM lots l
            WHERE l.account_id = p_account_id AND l.symbol = p_symbol AND l.remaining > 0
              AND l.lot_id < p_seq
            ORDER BY round(l.cost, 40) / l.quantity DESC, l.lot_id;
    ELSE
        OPEN v_open FOR
            SELECT l.lot_id AS named, l.remaining AS wanted, l.lot_id, l.symbol, l.quantity,
                   l.remaining, l.cost, l.remaining_cost
            FROM lots l
            WHERE l.account_id = p_account_id AND l.symbol = p_symbol AND l.remaining > 0
              AND l.lot_id < p_seq
            ORDER BY l.lot_id;
    END IF;

    LOOP
        FETCH v_open INTO v_lot;
        EXIT WHEN NOT FOUND;
        -- Only a named lot can fail this: the method's query reads open lots only.
        IF v_lot.lot_id IS NULL OR v_lot.symbol <> p_symbol OR v_lot.remaining = 0
           OR v_lot.lot_id >= p_seq OR v_lot.remaining < v_lot.wanted THEN
            RAISE EXCEPTION 'lot % of account % is not an open lot of % with % shares',
                v_lot.named, p_account_id, p_symbol, v_lot.wanted USING ERRCODE = 'SL020';
        END IF;
        v_take := least(v_lot.wanted, v_left);
        v_left := v_left - v_take;
        -- The closure that empties a lot takes what is left of its cost (no penny drift).
        IF v_take = v_lot.remaining THEN
            v_cost := v_lot.remaining_cost;
        ELSE
            v_cost := least(cents_share(v_lot.cost, v_take, v_lot.quantity), v_lot.remaining_cost);
        END IF;
        -- The closure that completes the sell takes what is left of its proceeds.
        IF v_left = 0 THEN
            v_proceeds := p_amount - v_given;
        ELSE
            v_proceeds := cents_share(p_amount, v_take, p_quantity);
        END IF;
        v_given := v_given + v_proceeds;
        v_closed := v_closed + v_cost;
        UPDATE lots
        SET remaining = trim_scale(remaining - v_take), remaining_cost = remaining_cost - v_cost
        WHERE account_id = p_account_id AND lot_id = v_lot.lot_id;
        v_ids := v_ids || v_lot.lot_id;
        v_shares := v_shares || trim_scale(v_take);
        v_costs := v_costs || v_cost;
        v_proceeds_of := v_proceeds_of || v_proceeds;
        EXIT WHEN v_left = 0;
    END LOOP;
    CLOSE v_open;
    IF v_left > 0 THEN
        -- Not reached while rule 12 holds: the caller checked the position.
        RAISE EXCEPTION 'account % holds % shares of % in open lots, cannot sell %',
            p_account_id, p_quantity - v_left, p_symbol, p_quantity USING ERRCODE = 'SL001';
    END IF;
    INSERT INTO lot_closures (account_id, seq, lot_id, symbol, trade_id, quantity, cost_basis,
                              proceeds, closed_at)
    SELECT p_account_id, p_seq, c.lot_id, p_symbol, p_trade_id, c.quantity, c.cost, c.proceeds,
           p_executed_at
    FROM unnest(v_ids, v_shares, v_costs, v_proceeds_of) AS c(lot_id, quantity, cost, proceeds);
    RETURN v_closed;
END
$$;





SET default_tablespace = '';

SET default_table_access_method = heap;


-- The same rules for an insert carrying a batch_id (trade_batch(), or psql), over the
-- statement's transition table: first as a few aggregates that prove most batches valid
-- without ordering them, and where they cannot (a broken rule, times of the batch's own,
-- shares sold that the batch bought first, cash it spends before it receives) as window
-- functions over the batch in order, which also name the first failing trade (its batch_index
-- in the error's detail). Then the books, set-wise: the buys' lots, the closures of the sells
-- (first in first out in one statement, fifo_closures(); the other lot methods sell by sell,
-- trades_close_lots()), one positions write per account and symbol, one accounts write per
-- account.
CREATE FUNCTION trades_admit_batch() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v record;
    -- The statement's accounts, in order, and what it does per account.
    v_accounts    bigint[];
    v_trades      bigint[];
    v_first_seqs  bigint[];
    v_last_seqs   bigint[];
    v_min_brokers bigint[];
    v_max_brokers bigint[];
    v_first_ats   timestamptz[];
    v_last_ats    timestamptz[];
    v_amounts     numeric[];
    v_debits      numeric[];
    v_misstated   bigint[];
    v_methods     text[];
    v_not_fifo    bigint[];
    -- Its symbols, those it trades a fraction of, and the shares it sells per position.
    v_symbols      text[];
    v_fractional   text[];
    v_sold_account bigint[];
    v_sold_symbol  text[];
    v_sold         numeric[];
    -- The sells that close first in first out, the open lots they may close, and the
    -- closures; the cost basis every sell closed.
    v_sell_account  bigint[];
    v_sell_symbol   text[];
    v_sell_seq      bigint[];
    v_sell_quantity numeric[];
    v_sell_amount   numeric[];
    v_lot_account   bigint[];
    v_lot_symbol    text[];
    v_lot_id        bigint[];
    v_lot_quantity  numeric[];
    v_lot_cost      numeric[];
    v_lot_remaining numeric[];
    v_lot_left_cost numeric[];
    v_position      record;
    v_open          record;
    v_held          numeric;
    v_closed_account bigint[];
    v_closed_symbol  text[];
    v_closed_cost    numeric[];
    v_sell          record;
    -- Rows being written (lots, closures), as arrays.
    v_c_account  bigint[];
    v_c_seq      bigint[];
    v_c_symbol   text[];
    v_c_trade    bigint[];
    v_c_lot      bigint[];
    v_c_quantity numeric[];
    v_c_cost     numeric[];
    v_c_proceeds numeric[];
    v_c_at       timestamptz[];
    -- Its change per position, and the positions that existed.
    v_net_account  bigint[];
    v_net_symbol   text[];
    v_net          numeric[];
    v_net_cost     numeric[];
    v_net_realized numeric[];
    v_held_account bigint[];
    v_held_symbol  text[];
    -- Its rows in insertion order, when they have to be checked one by one.
    v_rows         trades[];
    -- A cluster's MERGE takes no call of a volatile function (now()): a value.
    v_now          timestamptz := now();
BEGIN
    -- Single trades were checked row by row; this costs them one probe of the new rows.
    IF NOT EXISTS (SELECT FROM new_rows WHERE batch_id IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    -- One pass, no sort (count(DISTINCT) sorted the batch).
    SELECT count(*) AS rows, count(batch_id) AS batched, count(named_lots) AS named,
           min(batch_id) AS first_batch, max(batch_id) AS last_batch
    INTO v FROM new_rows;
    IF v.batched <> v.rows OR v.first_batch <> v.last_batch THEN
        RAISE EXCEPTION 'one INSERT carries one batch, and only its trades'
            USING ERRCODE = '22023';
    END IF;
    IF v.named > 0 THEN
        RAISE EXCEPTION 'a batch closes lots by each account''s lot method: it names none'
            USING ERRCODE = '22023', COLUMN = 'named_lots';
    END IF;

    SELECT array_agg(account_id ORDER BY account_id), array_agg(trades ORDER BY account_id),
           array_agg(first_seq ORDER BY account_id), array_agg(last_seq ORDER BY account_id),
           array_agg(min_broker ORDER BY account_id), array_agg(max_broker ORDER BY account_id),
           array_agg(first_at ORDER BY account_id), array_agg(last_at ORDER BY account_id),
           array_agg(amount ORDER BY account_id), array_agg(debits ORDER BY account_id),
           array_agg(misstated ORDER BY account_id)
    INTO v_accounts, v_trades, v_first_seqs, v_last_seqs, v_min_brokers, v_max_brokers,
         v_first_ats, v_last_ats, v_amounts, v_debits, v_misstated
    FROM (
        SELECT account_id, count(*) AS trades, min(seq) AS first_seq, max(seq) AS last_seq,
               min(broker_id) AS min_broker, max(broker_id) AS max_broker,
               min(executed_at) AS first_at, max(executed_at) AS last_at,
               sum(amount) AS amount, coalesce(sum(amount) FILTER (WHERE amount < 0), 0) AS debits,
               count(*) FILTER (WHERE amount IS DISTINCT FROM
                                      trade_amount(side, quantity, price, fee)) AS misstated
        FROM new_rows
        GROUP BY account_id
    ) per_account;
    SELECT array_agg(DISTINCT symbol),
           array_agg(DISTINCT symbol) FILTER (WHERE quantity <> trunc(quantity))
    INTO v_symbols, v_fractional
    FROM new_rows;
    SELECT array_agg(account_id), array_agg(symbol), array_agg(sold)
    INTO v_sold_account, v_sold_symbol, v_sold
    FROM (
        SELECT account_id, symbol, sum(quantity) AS sold
        FROM new_rows WHERE side = 'sell'
        GROUP BY account_id, symbol
    ) sales;

    -- The accounts' serialization point, as for single trades; in account order, so two
    -- batches over the same accounts cannot deadlock. (Through trade_batch() they are locked
    -- already, and only if every one is the caller's; a row naming another broker's account
    -- is refused below as SL004, before its account's status is looked at.)
    PERFORM FROM accounts WHERE account_id = ANY (v_accounts)
    ORDER BY account_id FOR NO KEY UPDATE;

    -- Sufficient for every rule, in aggregates: per account, its trades all name its open
    -- account's active broker of record, their seqs fill the range right after the account's
    -- last trade, and they share one timestamp (as trade_batch() gives them) no earlier than
    -- that trade's and not in the future, each states the amount §1.4 gives it, and all it pays
    -- together stays within its credit limit; every stock is tradable; per position, the batch
    -- sells no more than was held before it.
    IF EXISTS (
        SELECT FROM unnest(v_accounts, v_trades, v_first_seqs, v_last_seqs, v_min_brokers,
                           v_max_brokers, v_first_ats, v_last_ats, v_debits, v_misstated)
                    AS b(account_id, trades, first_seq, last_seq, min_broker, max_broker,
                         first_at, last_at, debits, misstated)
        LEFT JOIN (SELECT * FROM accounts WHERE account_id = ANY (v_accounts)) a
               ON a.account_id = b.account_id
        LEFT JOIN brokers br ON br.broker_id = a.broker_id
        WHERE a.account_id IS NULL OR a.status <> 'open'
           OR b.min_broker <> a.broker_id OR b.max_broker <> a.broker_id
           OR br.status IS DISTINCT FROM 'active'
           -- trades_pkey refused any seq the batch repeats: first and last bound the range.
           OR b.first_seq <> coalesce(a.last_seq, 0) + 1
           OR b.last_seq <> b.first_seq + b.trades - 1
           OR b.first_at <> b.last_at OR b.first_at < a.last_executed_at
           OR b.last_at > clock_timestamp() + future_tolerance()
           OR b.first_at < '1900-01-01 00:00:00+00'
           OR b.misstated > 0
           OR a.cash + b.debits < -a.credit_limit
        UNION ALL
        SELECT FROM unnest(v_symbols) AS n(symbol)
        LEFT JOIN stocks s ON s.symbol = n.symbol
        WHERE s.active IS NOT TRUE
        UNION ALL
        SELECT FROM unnest(v_fractional) AS f(symbol)
        JOIN stocks s ON s.symbol = f.symbol
        WHERE NOT s.fractionable
        UNION ALL
        SELECT FROM unnest(v_sold_account, v_sold_symbol, v_sold) AS d(account_id, symbol, sold)
        LEFT JOIN (SELECT * FROM positions WHERE account_id = ANY (v_accounts)) p
               ON p.account_id = d.account_id AND p.symbol = d.symbol
        WHERE d.sold > coalesce(p.quantity, 0)
    ) THEN
        -- Not proven valid: every trade against every rule, in batch order. trade_id follows
        -- insertion order, hence the index in the submitted batch.
        SELECT array_agg(n ORDER BY n.trade_id) INTO v_rows FROM new_rows n;
        WITH batch AS (
            SELECT r.*, r.ordinality - 1 AS idx
            FROM unnest(v_rows) WITH ORDINALITY AS r
        ),
        ordered AS (
            SELECT b.*,
                   coalesce(a.last_seq, 0)
                       + row_number() OVER (PARTITION BY b.account_id ORDER BY b.seq)
                       AS expected_seq,
                   coalesce(lag(b.executed_at) OVER (PARTITION BY b.account_id ORDER BY b.seq),
                            a.last_executed_at) AS previous_at,
                   coalesce(p.quantity, 0) + sum(CASE b.side WHEN 'buy' THEN b.quantity
                                                              ELSE -b.quantity END)
                       OVER (PARTITION BY b.account_id, b.symbol ORDER BY b.seq) AS running,
                   a.cash + sum(b.amount) OVER (PARTITION BY b.account_id ORDER BY b.seq)
                       AS running_cash,
                   a.credit_limit
            FROM batch b
            LEFT JOIN (SELECT * FROM accounts WHERE account_id = ANY (v_accounts)) a
                   ON a.account_id = b.account_id
            LEFT JOIN (SELECT * FROM positions WHERE account_id = ANY (v_accounts)) p
                   ON p.account_id = b.account_id AND p.symbol = b.symbol
        ),
        checked AS (
            -- Each trade's first broken rule, in the order trades_admit checks them.
            SELECT o.idx, o.account_id, o.seq,
                CASE
                    WHEN a.account_id IS NULL THEN 'SL009'
                    WHEN a.broker_id <> o.broker_id THEN 'SL004'
                    WHEN a.status <> 'open' THEN 'SL003'
                    WHEN br.status IS DISTINCT FROM 'active' THEN 'SL005'
                    WHEN s.active IS NOT TRUE THEN 'SL006'
                    WHEN o.quantity <> trunc(o.quantity) AND NOT s.fractionable THEN 'SL014'
                    WHEN o.seq <> o.expected_seq THEN '428C9'
                    WHEN o.amount IS DISTINCT FROM trade_amount(o.side, o.quantity, o.price, o.fee)
                        THEN '428C9'
                    WHEN o.executed_at < o.previous_at
                      OR o.executed_at > clock_timestamp() + future_tolerance() THEN 'SL002'
                    WHEN o.executed_at < '1900-01-01 00:00:00+00' THEN '22008'
                    WHEN o.amount < 0 AND o.running_cash < -o.credit_limit THEN 'SL019'
                    WHEN o.running < 0 THEN 'SL001'
                END AS code,
                CASE
                    WHEN a.account_id IS NULL THEN format('account %s does not exist', o.account_id)
                    WHEN a.broker_id <> o.broker_id THEN format(
                        'broker %s is not the broker of record of account %s',
                        o.broker_id, o.account_id)
                    WHEN a.status <> 'open' THEN format('account %s is %s', o.account_id, a.status)
                    WHEN br.status IS DISTINCT FROM 'active' THEN format(
                        'broker %s is %s', o.broker_id, coalesce(br.status, 'unknown'))
                    WHEN s.active IS NOT TRUE THEN format('stock %s is not tradable', o.symbol)
                    WHEN o.quantity <> trunc(o.quantity) AND NOT s.fractionable THEN format(
                        'stock %s trades in whole shares only, not %s', o.symbol, o.quantity)
                    WHEN o.seq <> o.expected_seq THEN format(
                        'seq %s of account %s does not continue its sequence (%s)',
                        o.seq, o.account_id, o.expected_seq)
                    WHEN o.amount IS DISTINCT FROM trade_amount(o.side, o.quantity, o.price, o.fee)
                        THEN format('amount %s of account %s''s seq %s is not the %s it pays or receives',
                                    coalesce(o.amount::text, 'NULL'), o.account_id, o.seq,
                                    trade_amount(o.side, o.quantity, o.price, o.fee))
                    WHEN o.executed_at < o.previous_at THEN format(
                        'executed_at %s is earlier than the previous trade of account %s (%s)',
                        o.executed_at, o.account_id, o.previous_at)
                    WHEN o.executed_at > clock_timestamp() + future_tolerance() THEN format(
                        'executed_at %s is more than %s seconds in the future', o.executed_at,
                        extract(epoch FROM future_tolerance())::integer)
                    WHEN o.executed_at < '1900-01-01 00:00:00+00' THEN format(
                        'executed_at %s is before 1900-01-01T00:00:00Z', o.executed_at)
                    WHEN o.amount < 0 AND o.running_cash < -o.credit_limit THEN format(
                        'account %s has %s in cash and a credit limit of %s: it cannot pay %s',
                        o.account_id, o.running_cash - o.amount, o.credit_limit, -o.amount)
                    WHEN o.running < 0 THEN format(
                        'account %s holds %s shares of %s, cannot sell %s',
                        o.account_id, o.running + o.quantity, o.symbol, o.quantity)
                END AS msg  -- NULL (and no format() call) for the trades that pass
            FROM ordered o
            LEFT JOIN (SELECT * FROM accounts WHERE account_id = ANY (v_accounts)) a
                   ON a.account_id = o.account_id
            LEFT JOIN brokers br ON br.broker_id = o.broker_id
            LEFT JOIN stocks s ON s.symbol = o.symbol
        )
        SELECT idx, account_id, seq, code, msg INTO v
        FROM checked WHERE code IS NOT NULL ORDER BY idx LIMIT 1;

        IF FOUND THEN
            -- batch_index counts the statement's rows; on a cluster, this shard's rows only
            -- (trade_batch() answers the batch's own index from account_id and seq).
            RAISE EXCEPTION USING ERRCODE = v.code,
                MESSAGE = format('trade %s of the batch: %s', v.idx, v.msg),
                DETAIL = json_build_object('batch_index', v.idx, 'account_id', v.account_id,
                                           'seq', v.seq)::text;
        END IF;
    END IF;

    -- Every buy opens a lot. (From arrays: on a cluster an INSERT into a distributed table
    -- may not read the transition table.)
    SELECT array_agg(account_id), array_agg(seq), array_agg(symbol), array_agg(trade_id),
           array_agg(quantity::numeric), array_agg(-amount), array_agg(executed_at)
    INTO v_c_account, v_c_seq, v_c_symbol, v_c_trade, v_c_quantity, v_c_cost, v_c_at
    FROM new_rows WHERE side = 'buy';
    INSERT INTO lots (account_id, lot_id, symbol, trade_id, quantity, remaining, cost,
                      remaining_cost, opened_at)
    SELECT b.account_id, b.seq, b.symbol, b.trade_id, b.quantity, b.quantity, b.cost, b.cost,
           b.executed_at
    FROM unnest(v_c_account, v_c_seq, v_c_symbol, v_c_trade, v_c_quantity, v_c_cost, v_c_at)
         AS b(account_id, seq, symbol, trade_id, quantity, cost, executed_at);

    -- The sells of the accounts that close first in first out: all at once.
    v_methods := ARRAY(SELECT lot_method FROM accounts WHERE account_id = ANY (v_accounts)
                       ORDER BY account_id);
    v_not_fifo := ARRAY(SELECT m.account_id
                        FROM unnest(v_accounts, v_methods) AS m(account_id, lot_method)
                        WHERE m.lot_method <> 'fifo');
    -- In no order: fifo_closures() orders by itself (an ORDER BY per array sorted the batch
    -- five times over). Not a join with the accounts' methods: the planner, blind to the
    -- sizes of both, rescanned the batch once per account (68 ms of a batch of 10,000).
    SELECT array_agg(n.account_id), array_agg(n.symbol), array_agg(n.seq),
           array_agg(n.quantity::numeric), array_agg(n.amount)
    INTO v_sell_account, v_sell_symbol, v_sell_seq, v_sell_quantity, v_sell_amount
    FROM new_rows n
    WHERE n.side = 'sell' AND n.account_id <> ALL (v_not_fifo);
    IF v_sell_account IS NOT NULL THEN
        -- The open lots each selling position's sells may close, oldest first, until they
        -- hold what the batch sells of it: one scan of the open lots per position, which
        -- stops there, whatever the position's history and however many lots are open. (It
        -- read the first eight with one lateral join and, for a position they did not cover,
        -- every open lot; the planner, blind to the arrays' sizes, preferred to walk each
        -- account's closed lots as well.) One account per query: on a cluster each goes to
        -- its shard.
        FOR v_position IN
            SELECT s.account_id, s.symbol, sum(s.quantity) AS sold
            FROM unnest(v_sell_account, v_sell_symbol, v_sell_quantity)
                 AS s(account_id, symbol, quantity)
            GROUP BY s.account_id, s.symbol
        LOOP
            v_held := 0;
            FOR v_open IN
                SELECT l.lot_id, l.quantity, l.cost, l.remaining, l.remaining_cost
                FROM lots l
                WHERE l.account_id = v_position.account_id AND l.symbol = v_position.symbol
                  AND l.remaining > 0
                ORDER BY l.lot_id
            LOOP
                v_lot_account := v_lot_account || v_position.account_id;
                v_lot_symbol := v_lot_symbol || v_position.symbol;
                v_lot_id := v_lot_id || v_open.lot_id;
                v_lot_quantity := v_lot_quantity || v_open.quantity;
                v_lot_cost := v_lot_cost || v_open.cost;
                v_lot_remaining := v_lot_remaining || v_open.remaining;
                v_lot_left_cost := v_lot_left_cost || v_open.remaining_cost;
                v_held := v_held + v_open.remaining;
                EXIT WHEN v_held >= v_position.sold;
            END LOOP;
        END LOOP;

        SELECT array_agg(c.account_id), array_agg(c.symbol), array_agg(c.seq),
               array_agg(c.lot_id), array_agg(c.quantity), array_agg(c.cost_basis),
               array_agg(c.proceeds), array_agg(n.trade_id), array_agg(n.executed_at)
        INTO v_c_account, v_c_symbol, v_c_seq, v_c_lot, v_c_quantity, v_c_cost,
             v_c_proceeds, v_c_trade, v_c_at
        FROM fifo_closures(v_lot_account, v_lot_symbol, v_lot_id, v_lot_quantity, v_lot_cost,
                           v_lot_remaining, v_lot_left_cost, v_sell_account, v_sell_symbol,
                           v_sell_seq, v_sell_quantity, v_sell_amount) c
        JOIN new_rows n ON n.account_id = c.account_id AND n.seq = c.seq;

        INSERT INTO lot_closures (account_id, seq, lot_id, symbol, trade_id, quantity,
                                  cost_basis, proceeds, closed_at)
        SELECT * FROM unnest(v_c_account, v_c_seq, v_c_lot, v_c_symbol, v_c_trade,
                             v_c_quantity, v_c_cost, v_c_proceeds, v_c_at);
        UPDATE lots l
        SET remaining = trim_scale(l.remaining - c.quantity),
            remaining_cost = l.remaining_cost - c.cost
        FROM (
            SELECT u.account_id, u.lot_id, sum(u.quantity) AS quantity, sum(u.cost) AS cost
            FROM unnest(v_c_account, v_c_lot, v_c_quantity, v_c_cost)
                 AS u(account_id, lot_id, quantity, cost)
            GROUP BY u.account_id, u.lot_id
        ) c
        WHERE l.account_id = ANY (v_accounts)
          AND l.account_id = c.account_id AND l.lot_id = c.lot_id;
        v_closed_account := v_c_account;
        v_closed_symbol := v_c_symbol;
        v_closed_cost := v_c_cost;
    END IF;

    -- The sells of the other accounts, one by one in order (each sees the lots the batch's
    -- earlier trades left).
    FOR v_sell IN
        SELECT n.*, m.lot_method
        FROM new_rows n
        JOIN unnest(v_accounts, v_methods) AS m(account_id, lot_method)
          ON m.account_id = n.account_id AND m.lot_method <> 'fifo'
        WHERE n.side = 'sell'
        ORDER BY n.account_id, n.seq
    LOOP
        v_closed_account := v_closed_account || v_sell.account_id;
        v_closed_symbol := v_closed_symbol || v_sell.symbol;
        v_closed_cost := v_closed_cost || trades_close_lots(
            v_sell.account_id, v_sell.symbol, v_sell.seq, v_sell.trade_id, v_sell.quantity,
            v_sell.amount, v_sell.executed_at, v_sell.lot_method, NULL, true);
    END LOOP;

    -- One write per (account, symbol): its net quantity, the cost of the lots its buys opened
    -- less the cost basis its sells closed, and what its sells realized (their amounts less
    -- that cost basis). The positions found are updated, the others inserted (INSERT … ON
    -- CONFLICT would check the proposed row, negative for a net sale, before seeing the
    -- conflict; a cluster's MERGE reads from its own tables only). The accounts are locked: no
    -- position of theirs can appear in between.
    SELECT array_agg(account_id), array_agg(symbol), array_agg(quantity), array_agg(cost),
           array_agg(realized)
    INTO v_net_account, v_net_symbol, v_net, v_net_cost, v_net_realized
    FROM (
        SELECT account_id, symbol, sum(quantity) AS quantity, sum(cost) AS cost,
               sum(realized) AS realized
        FROM (
            SELECT account_id, symbol,
                   CASE side WHEN 'buy' THEN quantity ELSE -quantity END AS quantity,
                   CASE side WHEN 'buy' THEN -amount ELSE 0 END AS cost,
                   CASE side WHEN 'sell' THEN amount ELSE 0 END AS realized
            FROM new_rows
            UNION ALL
            SELECT c.account_id, c.symbol, 0, -c.cost, -c.cost
            FROM unnest(v_closed_account, v_closed_symbol, v_closed_cost)
                 AS c(account_id, symbol, cost)
        ) change
        GROUP BY account_id, symbol
    ) net;
    WITH updated AS (
        UPDATE positions p
        SET quantity = trim_scale(p.quantity + d.quantity), cost_basis = p.cost_basis + d.cost,
            realized = p.realized + d.realized, updated_at = v_now
        FROM (
            SELECT * FROM unnest(v_net_account, v_net_symbol, v_net, v_net_cost, v_net_realized)
                          AS n(account_id, symbol, quantity, cost, realized)
        ) d
        WHERE p.account_id = ANY (v_accounts)
          AND p.account_id = d.account_id AND p.symbol = d.symbol
        RETURNING p.account_id, p.symbol
    )
    SELECT array_agg(account_id), array_agg(symbol) INTO v_held_account, v_held_symbol
    FROM updated;
    IF coalesce(cardinality(v_held_account), 0) < cardinality(v_net_account) THEN
        INSERT INTO positions (account_id, symbol, quantity, cost_basis, realized, updated_at)
        SELECT d.account_id, d.symbol, trim_scale(d.quantity), d.cost, d.realized, v_now
        FROM unnest(v_net_account, v_net_symbol, v_net, v_net_cost, v_net_realized)
             AS d(account_id, symbol, quantity, cost, realized)
        WHERE NOT EXISTS (
            SELECT FROM unnest(v_held_account, v_held_symbol) AS u(account_id, symbol)
            WHERE u.account_id = d.account_id AND u.symbol = d.symbol
        );
    END IF;

    -- One write per account: its cash, and its latest trade.
    UPDATE accounts a
    SET cash = a.cash + d.amount, last_seq = d.last_seq, last_executed_at = d.last_at
    FROM (
        SELECT * FROM unnest(v_accounts, v_amounts, v_last_seqs, v_last_ats)
                      AS u(account_id, amount, last_seq, last_at)
    ) d
    WHERE a.account_id = ANY (v_accounts) AND a.account_id = d.account_id;
    RETURN NULL;
END
$$;


-- §1.5, first in first out, set-wise: the closures that sells make of lots, given the open
-- lots (in lot_id order) and the sells (in seq order) of some positions. Lots are laid end to
-- end by what remains of them, and so are the sells by their quantities: a sell closes exactly
-- the lots its stretch overlaps. (A sell never reaches a lot opened after it: rule 1 held, so
-- everything before its stretch was bought before it.) A closure's cost is its share of its
-- lot's cost, rounded to the cent and never more than the lot has left; the closure that
-- empties a lot takes what is left. Its proceeds are its share of the sell's amount; the
-- closure that completes a sell takes what is left of it. It reads no table: the batch trigger
-- and the migration that builds lots from a history call it with arrays (on a cluster a
-- function that reads a table may not run inside a query on a shard).
CREATE FUNCTION fifo_closures(
    p_lot_accounts bigint[], p_lot_symbols text[], p_lot_ids bigint[],
    p_lot_quantities numeric[], p_lot_costs numeric[], p_lot_remaining numeric[],
    p_lot_remaining_costs numeric[],
    p_sell_accounts bigint[], p_sell_symbols text[], p_sell_seqs bigint[],
    p_sell_quantities numeric[], p_sell_amounts numeric[]
) RETURNS TABLE(account_id bigint, symbol text, seq bigint, lot_id bigint, quantity numeric,
                cost_basis numeric, proceeds numeric)
    LANGUAGE sql IMMUTABLE
    AS $$
    WITH lot AS (
        SELECT l.*,
               sum(l.remaining) OVER w - l.remaining AS starts, sum(l.remaining) OVER w AS ends
        FROM unnest(p_lot_accounts, p_lot_symbols, p_lot_ids, p_lot_quantities, p_lot_costs,
                    p_lot_remaining, p_lot_remaining_costs)
             AS l(account_id, symbol, lot_id, quantity, cost, remaining, remaining_cost)
        WINDOW w AS (PARTITION BY l.account_id, l.symbol ORDER BY l.lot_id)
    ),
    sell AS (
        SELECT s.*,
               sum(s.quantity) OVER w - s.quantity AS starts, sum(s.quantity) OVER w AS ends
        FROM unnest(p_sell_accounts, p_sell_symbols, p_sell_seqs, p_sell_quantities,
                    p_sell_amounts) AS s(account_id, symbol, seq, quantity, amount)
        WINDOW w AS (PARTITION BY s.account_id, s.symbol ORDER BY s.seq)
    ),
    piece AS (
        SELECT s.account_id, s.symbol, s.seq, l.lot_id,
               least(l.ends, s.ends) - greatest(l.starts, s.starts) AS quantity,
               l.ends <= s.ends AS empties_lot, s.ends <= l.ends AS completes_sell,
               -- A share only where it is what the closure gets (NULL elsewhere): the closure
               -- that empties its lot takes the rest of the cost, the one that completes its
               -- sell the rest of the proceeds.
               CASE WHEN l.ends > s.ends
                    THEN cents_share(l.cost, least(l.ends, s.ends) - greatest(l.starts, s.starts),
                                     l.quantity) END AS cost_share,
               CASE WHEN s.ends > l.ends
                    THEN cents_share(s.amount, least(l.ends, s.ends) - greatest(l.starts, s.starts),
                                     s.quantity) END AS proceeds_share,
               l.remaining_cost, s.amount
        FROM sell s
        JOIN lot l ON l.account_id = s.account_id AND l.symbol = s.symbol
                  AND l.starts < s.ends AND l.ends > s.starts
    ),
    summed AS (
        SELECT p.*,
               coalesce(sum(p.cost_share) OVER (
                   PARTITION BY p.account_id, p.lot_id ORDER BY p.seq
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS cost_before,
               -- The shares of the sell's other closures (its completing one has none).
               coalesce(sum(p.proceeds_share) OVER (PARTITION BY p.account_id, p.seq), 0)
                   AS proceeds_shares
        FROM piece p
    )
    SELECT s.account_id, s.symbol, s.seq, s.lot_id, trim_scale(s.quantity),
           CASE WHEN s.empties_lot THEN greatest(s.remaining_cost - s.cost_before, 0)
                ELSE greatest(least(s.cost_share, s.remaining_cost - s.cost_before), 0) END,
           CASE WHEN s.completes_sell THEN s.amount - s.proceeds_shares
                ELSE s.proceeds_share END
    FROM summed s;
$$;

-- Functions: what the application calls ---------------------------------------------------

-- The lot closures of a sell, as the API answers them (NULL for a buy): JSON with exact
-- decimal strings, in lot order. PL/pgSQL, not SQL: its query's plan is kept for the session.
-- As a SQL function it cost a sell 170 µs (pg_stat_statements, track = all), six times the
-- query's own time.
CREATE FUNCTION trade_closures(p_account_id bigint, p_seq bigint) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    RETURN (
        SELECT jsonb_agg(jsonb_build_object(
                   'lot_id', c.lot_id, 'quantity', c.quantity::text,
                   'cost_basis', c.cost_basis::text, 'proceeds', c.proceeds::text,
                   'realized', c.realized::text) ORDER BY c.lot_id)
        FROM lot_closures c
        WHERE c.account_id = p_account_id AND c.seq = p_seq);
END
$$;


-- One trade, one round trip: the insert fires the trigger above, and the trade comes back
-- (read through trade_rows) with the account's position after it and, for a sell, the lot
-- closures it made.
CREATE FUNCTION trade(
    p_account_id bigint,
    p_broker_id bigint,
    p_symbol text,
    p_side text,
    p_quantity numeric,
    p_price numeric,
    p_executed_at timestamp with time zone DEFAULT NULL::timestamp with time zone,
    p_client_order_id text DEFAULT NULL::text,
    p_fee numeric DEFAULT 0,
    p_lots jsonb DEFAULT NULL::jsonb
) RETURNS TABLE(
    trade trade_rows,
    position_quantity numeric,
    closures jsonb
)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
#variable_conflict use_column
DECLARE
    t          trades;
    v_closures jsonb;
BEGIN
    INSERT INTO trades AS x (account_id, broker_id, symbol, side, quantity, price,
                             executed_at, client_order_id, fee, named_lots)
    VALUES (p_account_id, p_broker_id, p_symbol, p_side, p_quantity, p_price,
            p_executed_at, p_client_order_id, coalesce(p_fee, 0), p_lots)
    RETURNING x.* INTO t;
    -- In a statement of its own: on a cluster a function that reads a table may not run
    -- inside a query on a shard.
    IF t.side = 'sell' THEN
        v_closures := trade_closures(t.account_id, t.seq);
    END IF;

    RETURN QUERY
    SELECT r, p.quantity, v_closures
    FROM trade_rows r
    JOIN positions p ON p.account_id = r.account_id AND p.symbol = r.symbol
    WHERE r.account_id = t.account_id AND r.seq = t.seq;
END
$$;


-- A trade under an Idempotency-Key: the claim is stored in the trade's own transaction; a
-- retry of the same request (same hash) answers the stored trade again (replayed), another
-- request under the same key is refused (SL012), a concurrent duplicate waits and replays.
CREATE FUNCTION trade_idempotent(
    p_idempotency_key text,
    p_request_hash bytea,
    p_account_id bigint,
    p_broker_id bigint,
    p_symbol text,
    p_side text,
    p_quantity numeric,
    p_price numeric,
    p_executed_at timestamp with time zone DEFAULT NULL::timestamp with time zone,
    p_client_order_id text DEFAULT NULL::text,
    p_fee numeric DEFAULT 0,
    p_lots jsonb DEFAULT NULL::jsonb
) RETURNS TABLE(
    trade trade_rows,
    position_quantity numeric,
    closures jsonb,
    replayed boolean
)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
#variable_conflict use_column
DECLARE
    claim      idempotency_keys;
    t          trades;
    v_held     numeric;
    v_closures jsonb;
BEGIN
    INSERT INTO idempotency_keys (broker_id, account_id, idempotency_key, request_hash)
    VALUES (p_broker_id, p_account_id, p_idempotency_key, p_request_hash)
    ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING;

    IF NOT FOUND THEN
        -- Claimed by a committed request (a concurrent one was waited for by the INSERT).
        SELECT * INTO claim FROM idempotency_keys k
        WHERE k.broker_id = p_broker_id AND k.account_id = p_account_id
          AND k.idempotency_key = p_idempotency_key;
        IF claim.request_hash <> p_request_hash THEN
            RAISE EXCEPTION 'idempotency key % was used for a different request',
                p_idempotency_key USING ERRCODE = 'SL012';
        END IF;
        SELECT * INTO t FROM trades x
        WHERE x.trade_id = claim.trade_id AND x.account_id = claim.account_id;
        IF t.side = 'sell' THEN
            v_closures := trade_closures(t.account_id, t.seq);
        END IF;
        RETURN QUERY
        SELECT r, claim.position_quantity, v_closures, true
        FROM trade_rows r
        WHERE r.account_id = t.account_id AND r.seq = t.seq;
        RETURN;
    END IF;

    -- What trade() does, without a second SECURITY DEFINER call: the trigger checks and
    -- writes the books; the position is read back for the answer and the claim.
    INSERT INTO trades AS x (account_id, broker_id, symbol, side, quantity, price,
                             executed_at, client_order_id, fee, named_lots)
    VALUES (p_account_id, p_broker_id, p_symbol, p_side, p_quantity, p_price,
            p_executed_at, p_client_order_id, coalesce(p_fee, 0), p_lots)
    RETURNING x.* INTO t;
    SELECT p.quantity INTO v_held FROM positions p
    WHERE p.account_id = t.account_id AND p.symbol = t.symbol;

    UPDATE idempotency_keys k
    SET trade_id = t.trade_id, position_quantity = v_held
    WHERE k.broker_id = p_broker_id AND k.account_id = p_account_id
      AND k.idempotency_key = p_idempotency_key;

    IF t.side = 'sell' THEN
        v_closures := trade_closures(t.account_id, t.seq);
    END IF;

    RETURN QUERY
    SELECT r, v_held, v_closures, false
    FROM trade_rows r
    WHERE r.account_id = t.account_id AND r.seq = t.seq;
END
$$;


-- The insert of trade_batch(): its first p_count trades (all of them, or the trades before a
-- failing one, when trade_batch() looks for the batch's first failure), numbered after each
-- account's latest trade (p_last_*). Not callable by the application: trade_batch() checks
-- the caller's accounts, locks them and reads their latest trades first. It reads no table
-- itself, so that on a cluster the coordinator only routes its rows to their shards.
CREATE FUNCTION trade_batch_insert(
    p_broker_id bigint,
    p_batch_id bigint,
    p_now timestamptz,
    p_count integer,
    p_account_ids bigint[],
    p_symbols text[],
    p_sides text[],
    p_quantities numeric[],
    p_prices numeric[],
    p_executed_ats timestamp with time zone[],
    p_client_order_ids text[],
    p_fees numeric[],
    p_last_accounts bigint[],
    p_last_seqs bigint[],
    p_last_ats timestamp with time zone[]
) RETURNS SETOF trade_rows
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
    WITH input AS (
        SELECT x.*
        FROM unnest(p_account_ids, p_symbols, p_sides, p_quantities, p_prices,
                    coalesce(p_executed_ats,
                             array_fill(NULL::timestamptz, ARRAY[cardinality(p_account_ids)])),
                    coalesce(p_client_order_ids,
                             array_fill(NULL::text, ARRAY[cardinality(p_account_ids)])),
                    coalesce(p_fees, array_fill(0::numeric, ARRAY[cardinality(p_account_ids)])))
             WITH ORDINALITY AS x(account_id, symbol, side, quantity, price, executed_at,
                                  client_order_id, fee, i)
        WHERE x.i <= p_count
    )
    INSERT INTO trades AS t (account_id, broker_id, symbol, side, quantity, price, executed_at,
                             client_order_id, fee, amount, seq, batch_id)
    SELECT x.account_id, p_broker_id, x.symbol, x.side, trim_scale(x.quantity),
           CASE WHEN x.price = trunc(x.price, 4) THEN trunc(x.price, 4) ELSE x.price END,
           coalesce(x.executed_at, greatest(p_now, l.executed_at)),
           x.client_order_id, coalesce(x.fee, 0),
           trade_amount(x.side, x.quantity, x.price, coalesce(x.fee, 0)),
           coalesce(l.seq, 0) + row_number() OVER (PARTITION BY x.account_id ORDER BY x.i),
           p_batch_id
    FROM input x
    JOIN unnest(p_last_accounts, p_last_seqs, p_last_ats) AS l(account_id, seq, executed_at)
      ON l.account_id = x.account_id
    ORDER BY x.i
    -- The columns of trade_rows, in its order (PostgreSQL checks the shape): read back
    -- through the view instead, 10,000 rows would cost 10,000 index probes.
    RETURNING t.trade_id, t.account_id, t.broker_id, t.symbol, t.side::text, t.quantity::numeric,
              t.price::numeric, t.executed_at, t.seq, t.client_order_id::text, t.fee::numeric,
              t.amount;
$$;


-- Which trade of a batch (its index, from 0) an error of trades_admit_batch names by its
-- account and seq; NULL if it names none. Under the batch's locks, its accounts' latest
-- trades are those before it.
CREATE FUNCTION trade_batch_index(p_account_ids bigint[], p_detail text) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
DECLARE
    v_account bigint;
    v_seq     bigint;
    v_before  bigint;
BEGIN
    BEGIN
        v_account := (p_detail::json ->> 'account_id')::bigint;
        v_seq := (p_detail::json ->> 'seq')::bigint;
    EXCEPTION WHEN invalid_text_representation THEN
        RETURN NULL;
    END;
    IF v_account IS NULL OR v_seq IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(max(seq), 0) INTO v_before FROM trades WHERE account_id = v_account;
    RETURN (
        SELECT u.i - 1
        FROM (
            SELECT x.i, row_number() OVER (ORDER BY x.i) AS nth
            FROM unnest(p_account_ids) WITH ORDINALITY AS x(account_id, i)
            WHERE x.account_id = v_account
        ) u
        WHERE u.nth = v_seq - v_before
    );
END
$$;


-- Up to thousands of trades of one broker, all or nothing, in one round trip. The caller's
-- accounts only are locked, in account order (no deadlock between batches); an account of
-- another broker refuses the batch before any lock (SL004/SL009).
CREATE FUNCTION trade_batch(
    p_broker_id bigint,
    p_account_ids bigint[],
    p_symbols text[],
    p_sides text[],
    p_quantities numeric[],
    p_prices numeric[],
    p_executed_ats timestamp with time zone[] DEFAULT NULL::timestamp with time zone[],
    p_client_order_ids text[] DEFAULT NULL::text[],
    p_fees numeric[] DEFAULT NULL::numeric[]
) RETURNS SETOF trade_rows
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
#variable_conflict use_column
DECLARE
    n         integer := coalesce(cardinality(p_account_ids), 0);
    v_batch   bigint;
    v_now     timestamptz := clock_timestamp();
    v_foreign record;
    v_of_record bigint;
    v_account bigint;
    -- A refusal from the insert, and the index in this batch of the trade it names.
    v_state   text;
    v_message text;
    v_detail  text;
    v_failing integer;
    -- The batch's accounts, those of the caller, and their latest trades before it.
    v_accounts      bigint[];
    v_mine          bigint[];
    v_last_accounts bigint[];
    v_last_seqs     bigint[];
    v_last_ats      timestamptz[];
BEGIN
    IF n = 0 OR n > 100000
       OR coalesce(cardinality(p_symbols), 0) <> n OR coalesce(cardinality(p_sides), 0) <> n
       OR coalesce(cardinality(p_quantities), 0) <> n OR coalesce(cardinality(p_prices), 0) <> n
       OR coalesce(cardinality(p_executed_ats), n) <> n
       OR coalesce(cardinality(p_client_order_ids), n) <> n
       OR coalesce(cardinality(p_fees), n) <> n THEN
        RAISE EXCEPTION 'a batch is 1 to 100000 trades, one element of each array per trade'
            USING ERRCODE = '22023';
    END IF;

    -- The batch's accounts, once each, in order; every read below is filtered by them, which
    -- prunes a cluster's reads to the batch's shards (Citus prunes each table by its own
    -- filter).
    v_accounts := ARRAY(SELECT DISTINCT u FROM unnest(p_account_ids) u ORDER BY u);

    -- The first trade on an account of another broker (or none) answers as a missing
    -- account, before anything is locked or inserted: no account of another broker is
    -- locked or waited for (SPEC §2.4). The broker of record never changes, so a plain read
    -- decides it.
    v_mine := ARRAY(SELECT account_id FROM accounts
                    WHERE account_id = ANY (v_accounts) AND broker_id = p_broker_id);
    IF cardinality(v_mine) <> cardinality(v_accounts) THEN
        SELECT u.i - 1 AS idx, u.account_id INTO v_foreign
        FROM unnest(p_account_ids) WITH ORDINALITY AS u(account_id, i)
        WHERE u.account_id IS NULL OR NOT u.account_id = ANY (v_mine)
        ORDER BY u.i LIMIT 1;
        v_of_record := (SELECT broker_id FROM accounts WHERE account_id = v_foreign.account_id);
        RAISE EXCEPTION USING
            ERRCODE = CASE WHEN v_of_record IS NULL THEN 'SL009'
                           WHEN broker_supervises(p_broker_id, v_of_record) THEN 'SL017'
                           ELSE 'SL004' END,
            MESSAGE = format('trade %s of the batch: account %s is not an account of broker %s',
                             v_foreign.idx, v_foreign.account_id, p_broker_id),
            DETAIL = json_build_object('batch_index', v_foreign.idx)::text;
    END IF;

    -- The caller's accounts, one at a time in account order: on a cluster a row lock must
    -- name one account (one shard).
    FOREACH v_account IN ARRAY v_accounts LOOP
        PERFORM FROM accounts WHERE account_id = v_account FOR NO KEY UPDATE;
    END LOOP;

    -- Once all are locked (a new statement, so a new snapshot: it sees every trade committed
    -- before the locks were granted), their latest trades, kept on their rows.
    SELECT array_agg(a.account_id), array_agg(a.last_seq), array_agg(a.last_executed_at)
    INTO v_last_accounts, v_last_seqs, v_last_ats
    FROM accounts a
    WHERE a.account_id = ANY (v_accounts);

    v_batch := nextval('trade_batch_id_seq');
    BEGIN
        RETURN QUERY SELECT * FROM trade_batch_insert(
            p_broker_id, v_batch, v_now, n, p_account_ids, p_symbols, p_sides, p_quantities,
            p_prices, p_executed_ats, p_client_order_ids, p_fees, v_last_accounts, v_last_seqs,
            v_last_ats);
        RETURN;
    EXCEPTION WHEN SQLSTATE 'SL001' OR SQLSTATE 'SL002' OR SQLSTATE 'SL003'
                   OR SQLSTATE 'SL005' OR SQLSTATE 'SL006' OR SQLSTATE 'SL014'
                   OR SQLSTATE 'SL019'
                   OR SQLSTATE '22008' THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                                v_detail = PG_EXCEPTION_DETAIL;
    END;

    -- A trade was refused. Each shard of a cluster names the first failure among its own
    -- trades, so the one named is a failing trade but maybe not the batch's first: the trades
    -- before it are inserted again (and undone) until none of them fails.
    LOOP
        v_failing := trade_batch_index(p_account_ids, v_detail);
        IF v_failing IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = v_message, DETAIL = v_detail;
        END IF;
        EXIT WHEN v_failing = 0;
        BEGIN
            PERFORM FROM trade_batch_insert(
                p_broker_id, v_batch, v_now, v_failing, p_account_ids, p_symbols, p_sides,
                p_quantities, p_prices, p_executed_ats, p_client_order_ids, p_fees,
                v_last_accounts, v_last_seqs, v_last_ats);
            -- Nothing before it fails: it is the first (the refusal below undoes the trades
            -- inserted here).
            EXIT;
        EXCEPTION WHEN SQLSTATE 'SL001' OR SQLSTATE 'SL002' OR SQLSTATE 'SL003'
                       OR SQLSTATE 'SL005' OR SQLSTATE 'SL006' OR SQLSTATE 'SL014'
                       OR SQLSTATE 'SL019' OR SQLSTATE '22008' THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                                    v_detail = PG_EXCEPTION_DETAIL;
        END;
    END LOOP;
    RAISE EXCEPTION USING ERRCODE = v_state,
        MESSAGE = regexp_replace(v_message, '^trade [0-9]+ of the batch',
                                 format('trade %s of the batch', v_failing)),
        DETAIL = json_build_object('batch_index', v_failing)::text;
END
$$;


-- A movement: its account locked (FOR NO KEY UPDATE, as a trade locks it), its number and time
-- assigned (a supplied time, for a backfill, as a trade's: not before the account's latest
-- movement, not more than 5 s ahead), its balance computed; a withdrawal may not take the
-- balance below zero, whatever the credit limit (SL019). A closed account moves no cash; a
-- frozen one takes deposits only (SL003). Under an Idempotency-Key already used on the
-- account, nothing is inserted (the caller answers the movement made then), or SL012 when it
-- was used for another request: checked under the lock, so a concurrent duplicate waits, then
-- finds the first.
CREATE FUNCTION cash_movements_admit() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_status  text;
    v_cash    numeric;
    v_hash    bytea;
    v_last_id bigint;
    v_last_at timestamptz;
    v_now     timestamptz;
BEGIN
    IF NEW.movement_id IS NOT NULL OR NEW.balance IS NOT NULL THEN
        RAISE EXCEPTION 'a movement''s movement_id and balance are assigned by the database'
            USING ERRCODE = '428C9';
    END IF;
    SELECT status, cash INTO v_status, v_cash
    FROM accounts WHERE account_id = NEW.account_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', NEW.account_id USING ERRCODE = 'SL009';
    END IF;
    IF NEW.idempotency_key IS NOT NULL THEN
        SELECT request_hash INTO v_hash FROM cash_movements
        WHERE account_id = NEW.account_id AND idempotency_key = NEW.idempotency_key;
        IF FOUND THEN
            IF v_hash IS DISTINCT FROM NEW.request_hash THEN
                RAISE EXCEPTION 'idempotency key % was used for a different request',
                    NEW.idempotency_key USING ERRCODE = 'SL012';
            END IF;
            RETURN NULL;
        END IF;
    END IF;
    IF v_status = 'closed' OR (v_status = 'frozen' AND NEW.kind = 'withdrawal') THEN
        RAISE EXCEPTION 'account % is %', NEW.account_id, v_status USING ERRCODE = 'SL003';
    END IF;

    SELECT movement_id, created_at INTO v_last_id, v_last_at
    FROM cash_movements WHERE account_id = NEW.account_id
    ORDER BY movement_id DESC LIMIT 1;
    v_now := clock_timestamp();
    IF NEW.created_at IS NULL THEN
        NEW.created_at := greatest(v_now, v_last_at);
    ELSIF NEW.created_at < v_last_at THEN
        RAISE EXCEPTION 'created_at % is earlier than the latest movement of account % (%)',
            NEW.created_at, NEW.account_id, v_last_at USING ERRCODE = 'SL002';
    ELSIF NEW.created_at > v_now + future_tolerance() THEN
        RAISE EXCEPTION 'created_at % is more than % seconds in the future', NEW.created_at,
            extract(epoch FROM future_tolerance())::integer USING ERRCODE = 'SL002';
    ELSIF NEW.created_at < '1900-01-01 00:00:00+00' THEN
        RAISE EXCEPTION 'created_at % is before 1900-01-01T00:00:00Z', NEW.created_at
            USING ERRCODE = '22008', COLUMN = 'created_at';
    END IF;
    NEW.movement_id := coalesce(v_last_id, 0) + 1;
    -- Every valid amount with scale 2 ("100.00"); invalid ones are left for the CHECK.
    IF NEW.amount = trunc(NEW.amount, 2) THEN
        NEW.amount := trunc(NEW.amount, 2);
    END IF;
    NEW.balance := v_cash + CASE NEW.kind WHEN 'withdrawal' THEN -NEW.amount ELSE NEW.amount END;
    IF NEW.kind = 'withdrawal' AND NEW.balance < 0 THEN
        RAISE EXCEPTION 'account % has % in cash: it cannot withdraw %', NEW.account_id,
            v_cash, NEW.amount USING ERRCODE = 'SL019';
    END IF;
    RETURN NEW;
END
$$;


-- AFTER: only a movement actually written moves the balance (the trigger above may skip one).
CREATE FUNCTION cash_movements_apply() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE accounts SET cash = NEW.balance WHERE account_id = NEW.account_id;
    RETURN NULL;
END
$$;


-- A deposit or withdrawal, in one round trip: what the API and the CLI call. Under an
-- Idempotency-Key, a retry of the same request answers the movement made the first time
-- (replayed), another request under the same key is refused (SL012).
CREATE FUNCTION move_cash(
    p_account_id bigint,
    p_kind text,
    p_amount numeric,
    p_reference text DEFAULT NULL::text,
    p_idempotency_key text DEFAULT NULL::text,
    p_request_hash bytea DEFAULT NULL::bytea
) RETURNS TABLE(
    account_id bigint,
    movement_id bigint,
    kind text,
    amount numeric,
    reference text,
    created_at timestamp with time zone,
    balance numeric,
    replayed boolean
)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
#variable_conflict use_column
DECLARE
    m cash_movements;
BEGIN
    INSERT INTO cash_movements AS x (account_id, kind, amount, reference, idempotency_key,
                                     request_hash)
    VALUES (p_account_id, p_kind, p_amount, p_reference, p_idempotency_key, p_request_hash)
    RETURNING x.* INTO m;
    IF m.account_id IS NOT NULL THEN
        RETURN QUERY SELECT m.account_id, m.movement_id, m.kind, m.amount, m.reference,
                            m.created_at, m.balance, false;
        RETURN;
    END IF;
    -- Skipped: the key's movement was made before.
    SELECT * INTO m FROM cash_movements c
    WHERE c.account_id = p_account_id AND c.idempotency_key = p_idempotency_key;
    RETURN QUERY SELECT m.account_id, m.movement_id, m.kind, m.amount, m.reference,
                        m.created_at, m.balance, true;
END
$$;


-- An API key is issued as the schema's owner, like the broker it belongs to (register_broker()):
-- a new broker and its first key are one transaction, and on a cluster a transaction that
-- writes reference tables once as the owner and once as the application waits on itself on
-- the first worker (Citus locks the reference tables' shards there per user's connection, and
-- cancels the transaction as a distributed deadlock).
CREATE FUNCTION issue_broker_key(p_broker_id bigint, p_key_id text, p_secret_hash bytea)
    RETURNS SETOF broker_keys
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
    INSERT INTO broker_keys (key_id, broker_id, secret_hash)
    VALUES (p_key_id, p_broker_id, p_secret_hash)
    RETURNING *;
$$;


-- The broker of a live API key, or SL013 (unknown key, wrong secret, revoked) or SL005
-- (suspended broker). The digest is compared in constant time over its bytes.
CREATE FUNCTION broker_of_key(p_key_id text, p_secret_hash bytea) RETURNS bigint
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    k record;
BEGIN
    SELECT bk.broker_id, bk.secret_hash, bk.revoked_at, b.status INTO k
    FROM broker_keys bk JOIN brokers b ON b.broker_id = bk.broker_id
    WHERE bk.key_id = p_key_id;
    IF NOT FOUND OR k.secret_hash IS DISTINCT FROM p_secret_hash THEN
        RAISE EXCEPTION 'unknown credentials' USING ERRCODE = 'SL013';
    END IF;
    IF k.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'this key has been revoked' USING ERRCODE = 'SL013';
    END IF;
    IF k.status <> 'active' THEN
        RAISE EXCEPTION 'broker % is %', k.broker_id, k.status USING ERRCODE = 'SL005';
    END IF;
    RETURN k.broker_id;
END
$$;

-- Triggers --------------------------------------------------------------------------------

CREATE TRIGGER brokers_check_tax_identity BEFORE INSERT ON brokers
    FOR EACH ROW EXECUTE FUNCTION brokers_check_tax_identity();
CREATE TRIGGER accounts_check_tax_identity BEFORE INSERT ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_check_tax_identity();
CREATE TRIGGER accounts_add_first_holder AFTER INSERT ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_add_first_holder();
CREATE TRIGGER account_holders_admit BEFORE INSERT ON account_holders
    FOR EACH ROW EXECUTE FUNCTION account_holders_admit();
CREATE TRIGGER account_holders_change BEFORE UPDATE ON account_holders
    FOR EACH ROW EXECUTE FUNCTION account_holders_change();
CREATE TRIGGER account_holders_history_only BEFORE DELETE ON account_holders
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER account_holders_no_truncate BEFORE TRUNCATE ON account_holders
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();

CREATE TRIGGER brokers_supervision_lock BEFORE UPDATE OF manager_id ON brokers
    FOR EACH STATEMENT EXECUTE FUNCTION lock_supervision();
CREATE TRIGGER brokers_check_supervision BEFORE UPDATE OF manager_id ON brokers
    FOR EACH ROW WHEN (NEW.manager_id IS NOT NULL AND NEW.manager_id IS DISTINCT FROM OLD.manager_id)
    EXECUTE FUNCTION brokers_check_supervision();

CREATE TRIGGER cash_movements_admit BEFORE INSERT ON cash_movements
    FOR EACH ROW EXECUTE FUNCTION cash_movements_admit();
CREATE TRIGGER cash_movements_apply AFTER INSERT ON cash_movements
    FOR EACH ROW EXECUTE FUNCTION cash_movements_apply();
CREATE TRIGGER cash_movements_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON cash_movements
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();

CREATE TRIGGER stock_prices_admit BEFORE INSERT ON stock_prices
    FOR EACH ROW EXECUTE FUNCTION stock_prices_admit();
CREATE TRIGGER stock_prices_append_only_statement BEFORE UPDATE OR DELETE OR TRUNCATE ON stock_prices
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();

CREATE TRIGGER clients_tax_id_immutable BEFORE UPDATE OF tax_id ON clients
    FOR EACH ROW WHEN (OLD.tax_id IS DISTINCT FROM NEW.tax_id)
    EXECUTE FUNCTION refuse_immutable_change('tax_id');
CREATE TRIGGER brokers_tax_id_immutable BEFORE UPDATE OF tax_id ON brokers
    FOR EACH ROW WHEN (OLD.tax_id IS DISTINCT FROM NEW.tax_id)
    EXECUTE FUNCTION refuse_immutable_change('tax_id');
-- Accounts are updated by every trade, and PostgreSQL locks a row, and logs the lock, before
-- it runs any BEFORE UPDATE row trigger of its table: the account's guards are statement
-- triggers (a statement that names the column is refused).
CREATE TRIGGER accounts_client_id_immutable BEFORE UPDATE OF client_id ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_immutable_change('client_id');
CREATE TRIGGER accounts_broker_id_immutable BEFORE UPDATE OF broker_id ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_immutable_change('broker_id');
CREATE TRIGGER accounts_owner_tax_id_immutable BEFORE UPDATE OF owner_tax_id ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_immutable_change('owner_tax_id');
CREATE TRIGGER broker_keys_secret_immutable BEFORE UPDATE OF secret_hash, broker_id ON broker_keys
    FOR EACH ROW EXECUTE FUNCTION refuse_immutable_change('secret_hash');
CREATE TRIGGER broker_keys_revocation_final BEFORE UPDATE OF revoked_at ON broker_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at)
    EXECUTE FUNCTION refuse_immutable_change('revoked_at');

-- Single trades row by row; batches (batch_id set) once per statement.
CREATE TRIGGER trades_admit BEFORE INSERT ON trades
    FOR EACH ROW WHEN (NEW.batch_id IS NULL) EXECUTE FUNCTION trades_admit();
CREATE TRIGGER trades_admit_batch AFTER INSERT ON trades
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trades_admit_batch();

-- Statement level catches statements that match no row; row level is the second lock on the
-- door (and names the row).
CREATE TRIGGER trades_append_only_statement BEFORE UPDATE OR DELETE OR TRUNCATE ON trades
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER trades_append_only_row BEFORE UPDATE OR DELETE ON trades
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();

-- pg_trigger_depth() = 0: a write from outside any trigger, i.e. not from the trade triggers.
-- Statement triggers: a row trigger before UPDATE would lock (and log) every row the trade
-- triggers update.
CREATE TRIGGER positions_derived_only BEFORE INSERT OR UPDATE OR DELETE ON positions
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION refuse_derived_write();
CREATE TRIGGER positions_no_truncate BEFORE TRUNCATE ON positions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_derived_write();
CREATE TRIGGER lots_derived_only BEFORE INSERT OR UPDATE OR DELETE ON lots
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION refuse_derived_write();
CREATE TRIGGER lots_no_truncate BEFORE TRUNCATE ON lots
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_derived_write();
CREATE TRIGGER lot_closures_derived_only BEFORE INSERT ON lot_closures
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION refuse_derived_write();
CREATE TRIGGER lot_closures_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON lot_closures
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();
-- An account starts with no cash and no trade; afterwards only the triggers change them.
CREATE TRIGGER accounts_books_start_empty BEFORE INSERT ON accounts
    FOR EACH ROW WHEN (NEW.cash <> 0 OR NEW.last_seq IS NOT NULL OR NEW.last_executed_at IS NOT NULL)
    EXECUTE FUNCTION refuse_derived_write('an account''s cash and latest trade');
CREATE TRIGGER accounts_books_derived_only
    BEFORE UPDATE OF cash, last_seq, last_executed_at ON accounts
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION refuse_derived_write('an account''s cash and latest trade');

-- Grants ----------------------------------------------------------------------------------

-- Functions are executable by PUBLIC by default; the application may call only these.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    register_broker(text, text, text),
    open_account(bigint, bigint),
    open_account(bigint[], bigint),
    add_account_holder(bigint, bigint),
    remove_account_holder(bigint, bigint),
    broker_supervises(bigint, bigint),
    broker_supervises_account(bigint, bigint),
    trade(bigint, bigint, text, text, numeric, numeric, timestamptz, text, numeric, jsonb),
    trade_idempotent(text, bytea, bigint, bigint, text, text, numeric, numeric, timestamptz, text,
                     numeric, jsonb),
    trade_batch(bigint, bigint[], text[], text[], numeric[], numeric[], timestamptz[], text[],
                numeric[]),
    move_cash(bigint, text, numeric, text, text, bytea),
    broker_of_key(text, bytea),
    issue_broker_key(bigint, text, bytea)
    TO stockledger_app;

-- It reads what it serves and writes reference data with plain INSERT and UPDATE (the
-- triggers still apply); it has no write on trades, positions, account_holders,
-- tax_identities, idempotency_keys, lots, lot_closures or cash_movements: those only through
-- the functions above. (Migration 0002
-- also grants it SELECT on schema_migrations, which migrate() creates, for /readyz.)
GRANT USAGE ON SCHEMA public TO stockledger_app;
GRANT SELECT ON clients, brokers, broker_keys, accounts, account_holders, stocks, stock_prices,
    trades, trade_rows, positions, holds, broker_supervisors, lots, lot_closures, cash_movements
    TO stockledger_app;
GRANT INSERT ON clients, brokers, broker_keys, accounts, stocks TO stockledger_app;
-- The whole row, not its columns: a cluster's coordinator fills the defaults (recorded_at) and
-- sends every column to the placements.
GRANT INSERT ON stock_prices TO stockledger_app;
GRANT UPDATE (status, credit_limit, lot_method) ON accounts TO stockledger_app;
GRANT UPDATE (status, manager_id) ON brokers TO stockledger_app;
GRANT UPDATE (name, active, fractionable) ON stocks TO stockledger_app;
GRANT UPDATE (revoked_at) ON broker_keys TO stockledger_app;
