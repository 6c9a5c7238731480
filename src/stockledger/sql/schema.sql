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
--   rule 10 supervision without cycles  brokers_manager_id_check, lock_supervision +
--                                        brokers_check_supervision; who supervises whom:
--                                        broker_supervisors, broker_supervises(),
--                                        broker_supervises_account() (a supervisor's reads)
--   prices                              stock_prices (append-only), stock_prices_admit
--   derived positions                   trades_apply_to_position, refuse_position_write
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
--   SL008 history is append-only (trades; account_holders but a removal; stock_prices)
--   SL009 unknown account
--   SL010 positions are derived data (written only by the trade triggers)
--   SL011 an immutable field was changed (tax ids, an account's client and broker, a key)
--   SL012 idempotency key reused for a different request
--   SL013 unknown, wrong or revoked API key (broker_of_key())
--   SL014 a fractional quantity of a stock that is not fractionable
--   SL015 a manager_id that would make the supervision chain loop
--   SL016 removing an account's last current holder
--   SL017 a supervisor's trade on an account it may only read
--   SL018 removing a client who is not a current holder of the account
-- Standard codes: 23514 a named CHECK (its constraint name says which), 23505 unique, 23503
-- foreign key, 23502 NOT NULL, 428C9 a value the database assigns (trade_id, seq), 22008 a
-- trade time before 1900-01-01Z, 22023 a malformed batch (arrays of unequal length, a batch
-- mark on a row of another statement).

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
CREATE DOMAIN trade_client_order_id AS text
    CONSTRAINT trades_client_order_id_check
        CHECK (octet_length(VALUE) BETWEEN 1 AND 64 AND VALUE ~ '^[\x21-\x7E]+$');
CREATE DOMAIN idempotency_key_text AS text
    CONSTRAINT idempotency_keys_key_check
        CHECK (octet_length(VALUE) BETWEEN 1 AND 255 AND VALUE ~ '^[\x21-\x7E]+$');
CREATE DOMAIN idempotency_request_hash AS bytea
    CONSTRAINT idempotency_keys_request_hash_check CHECK (octet_length(VALUE) = 32);

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
    status     text NOT NULL DEFAULT 'open',
    opened_at  timestamptz NOT NULL DEFAULT now(),
    -- The owner's tax id, filled from the client by accounts_check_tax_identity.
    owner_tax_id text NOT NULL,
    claims_owner boolean NOT NULL DEFAULT true,
    -- When its holders last changed: the row a removal updates (account_holders_change).
    holders_changed_at timestamptz,
    CONSTRAINT accounts_pkey PRIMARY KEY (account_id),
    CONSTRAINT accounts_client_id_fkey FOREIGN KEY (client_id) REFERENCES clients (client_id),
    CONSTRAINT accounts_broker_id_fkey FOREIGN KEY (broker_id) REFERENCES brokers (broker_id),
    CONSTRAINT accounts_status_check CHECK (status IN ('open', 'frozen', 'closed')),
    -- Rule 4: an account stands on its owner's tax identity claimed as an owner's.
    CONSTRAINT accounts_claims_owner_check CHECK (claims_owner),
    CONSTRAINT accounts_owner_fkey
        FOREIGN KEY (client_id, owner_tax_id) REFERENCES clients (client_id, tax_id),
    CONSTRAINT accounts_tax_identity_fkey
        FOREIGN KEY (owner_tax_id, claims_owner) REFERENCES tax_identities (tax_id, owns_account)
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
    CONSTRAINT positions_pkey PRIMARY KEY (account_id, symbol),
    CONSTRAINT positions_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (account_id),
    CONSTRAINT positions_symbol_fkey FOREIGN KEY (symbol) REFERENCES stocks (symbol),
    CONSTRAINT positions_quantity_check CHECK (quantity >= 0)
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
       client_order_id::text AS client_order_id
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


-- positions is derived data, written only from the trade triggers (SL010).
CREATE FUNCTION refuse_position_write() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'positions are derived from trades: % is not allowed; insert a trade instead',
        TG_OP USING ERRCODE = 'SL010';
END
$$;

-- Functions: admitting trades -------------------------------------------------------------

-- The one definition of how far ahead of the database's clock a supplied execution time may
-- be (SL002). An immutable SQL function: inlined and folded into a constant when a statement
-- is planned.
CREATE FUNCTION future_tolerance() RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT interval '5 seconds' $$;

-- Rules 1, 3, 5 and 6 for a single trade (any insert without a batch_id, from trade() or from
-- psql alike). The account row is locked (FOR NO KEY UPDATE) only after the broker of record
-- was checked: another broker's account answers as a missing one, even while it is locked.
CREATE FUNCTION trades_admit() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_account_status text;
    v_broker_status  text;
    v_stock_active   boolean;
    v_fractionable   boolean;
    v_of_record      bigint;
    v_last_seq       bigint;
    v_last_at        timestamptz;
    v_now            timestamptz;
BEGIN
    IF NEW.seq IS NOT NULL THEN
        RAISE EXCEPTION 'seq is assigned by the database' USING ERRCODE = '428C9', COLUMN = 'seq';
    END IF;

    -- Only the broker of record's trade locks the account: the broker is part of the
    -- condition, so another broker's trade finds no row, takes no lock and waits for none,
    -- and answers as for a missing account (SPEC §2.4), whatever the account's status.
    SELECT status INTO v_account_status
    FROM accounts WHERE account_id = NEW.account_id AND broker_id = NEW.broker_id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        SELECT broker_id INTO v_of_record FROM accounts WHERE account_id = NEW.account_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % does not exist', NEW.account_id USING ERRCODE = 'SL009';
        END IF;
        -- A supervisor of the broker of record reads the account but never trades it (SPEC
        -- §2.4): it may know the account exists. (Called here, not inside the query: a cluster
        -- refuses a function that reads a table within a query on a shard.)
        IF broker_supervises(NEW.broker_id, v_of_record) THEN
            RAISE EXCEPTION 'broker % supervises account % and may read it, not trade it',
                NEW.broker_id, NEW.account_id USING ERRCODE = 'SL017';
        END IF;
        RAISE EXCEPTION 'broker % is not the broker of record of account %',
            NEW.broker_id, NEW.account_id USING ERRCODE = 'SL004';
    END IF;
    IF v_account_status <> 'open' THEN
        RAISE EXCEPTION 'account % is %', NEW.account_id, v_account_status USING ERRCODE = 'SL003';
    END IF;

    SELECT status INTO v_broker_status FROM brokers WHERE broker_id = NEW.broker_id;
    IF v_broker_status <> 'active' THEN
        RAISE EXCEPTION 'broker % is %', NEW.broker_id, v_broker_status USING ERRCODE = 'SL005';
    END IF;

    SELECT active, fractionable INTO v_stock_active, v_fractionable
    FROM stocks WHERE symbol = NEW.symbol;
    IF v_stock_active IS NOT TRUE THEN
        RAISE EXCEPTION 'stock % is not tradable', NEW.symbol USING ERRCODE = 'SL006';
    END IF;
    -- Rule 9.
    IF NEW.quantity <> trunc(NEW.quantity) AND NOT v_fractionable THEN
        RAISE EXCEPTION 'stock % trades in whole shares only, not %', NEW.symbol, NEW.quantity
            USING ERRCODE = 'SL014';
    END IF;

    -- Under the account lock the latest committed trade is visible (READ COMMITTED takes a new
    -- snapshot per statement); a stale snapshot (REPEATABLE READ) computes a seq that already
    -- exists and fails on trades_pkey instead of writing out of order.
    SELECT seq, executed_at INTO v_last_seq, v_last_at
    FROM trades WHERE account_id = NEW.account_id
    ORDER BY seq DESC LIMIT 1;

    v_now := clock_timestamp();
    IF NEW.executed_at IS NULL THEN
        -- greatest() so that a clock step backwards cannot reorder the ledger.
        NEW.executed_at := greatest(v_now, v_last_at);
    ELSIF NEW.executed_at < v_last_at THEN
        RAISE EXCEPTION 'executed_at % is earlier than the latest trade of account % (%)',
            NEW.executed_at, NEW.account_id, v_last_at USING ERRCODE = 'SL002';
    ELSIF NEW.executed_at > v_now + future_tolerance() THEN
        RAISE EXCEPTION 'executed_at % is more than % seconds in the future', NEW.executed_at,
            extract(epoch FROM future_tolerance())::integer
            USING ERRCODE = 'SL002';
    ELSIF NEW.executed_at < '1900-01-01 00:00:00+00' THEN
        -- Every layer must be able to read a stored time back (SPEC §2.8): Python's datetime
        -- ends at year 1, so "0001-01-01T00:00:00+14:00" (year 0 in UTC) was stored and then
        -- answered 500. The range is the API's (stockledger.models.EARLIEST_TIME).
        RAISE EXCEPTION 'executed_at % is before 1900-01-01T00:00:00Z', NEW.executed_at
            USING ERRCODE = '22008', COLUMN = 'executed_at';
    END IF;

    NEW.seq := coalesce(v_last_seq, 0) + 1;
    -- Store every valid price with scale 4 ("187.2500"); invalid ones are left for the CHECK.
    IF NEW.price = trunc(NEW.price, 4) THEN
        NEW.price := trunc(NEW.price, 4);
    END IF;
    -- And every quantity without trailing zeros ("10", "2.5"): what the API answers.
    NEW.quantity := trim_scale(NEW.quantity);
    RETURN NEW;
END
$$;


-- AFTER, so it only sees rows that passed every check; the account lock taken by trades_admit
-- serialises the position update of one account. A sell is a conditional UPDATE … WHERE
-- quantity >= q: the last line of defence against an oversell.
CREATE FUNCTION trades_apply_to_position() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_held numeric;
BEGIN
    IF NEW.side = 'buy' THEN
        UPDATE positions SET quantity = trim_scale(quantity + NEW.quantity), updated_at = now()
        WHERE account_id = NEW.account_id AND symbol = NEW.symbol;
        IF NOT FOUND THEN
            INSERT INTO positions (account_id, symbol, quantity, updated_at)
            VALUES (NEW.account_id, NEW.symbol, NEW.quantity, now());
        END IF;
    ELSE
        UPDATE positions SET quantity = trim_scale(quantity - NEW.quantity), updated_at = now()
        WHERE account_id = NEW.account_id AND symbol = NEW.symbol AND quantity >= NEW.quantity;
        IF NOT FOUND THEN
            SELECT quantity INTO v_held FROM positions
            WHERE account_id = NEW.account_id AND symbol = NEW.symbol;
            RAISE EXCEPTION 'account % holds % shares of %, cannot sell %',
                NEW.account_id, coalesce(v_held, 0), NEW.symbol, NEW.quantity
                USING ERRCODE = 'SL001';
        END IF;
    END IF;
    RETURN NULL;
END
$$;



SET default_tablespace = '';

SET default_table_access_method = heap;


-- The same rules for an insert carrying a batch_id (trade_batch(), or psql), over the
-- statement's transition table: first as a few aggregates that prove most batches valid
-- without ordering them, and where they cannot (a broken rule, times of the batch's own,
-- shares sold that the batch bought first) as window functions over the batch in order, which
-- also name the first failing trade (its batch_index in the error's detail); then one
-- positions write per account and symbol.
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
    -- Its symbols, those it trades a fraction of, and the shares it sells per position.
    v_symbols      text[];
    v_fractional   text[];
    v_sold_account bigint[];
    v_sold_symbol  text[];
    v_sold         numeric[];
    -- Its net change per position, and the positions that existed.
    v_net_account  bigint[];
    v_net_symbol   text[];
    v_net          numeric[];
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
    SELECT count(*) AS rows, count(batch_id) AS batched,
           min(batch_id) AS first_batch, max(batch_id) AS last_batch
    INTO v FROM new_rows;
    IF v.batched <> v.rows OR v.first_batch <> v.last_batch THEN
        RAISE EXCEPTION 'one INSERT carries one batch, and only its trades'
            USING ERRCODE = '22023';
    END IF;

    SELECT array_agg(account_id ORDER BY account_id), array_agg(trades ORDER BY account_id),
           array_agg(first_seq ORDER BY account_id), array_agg(last_seq ORDER BY account_id),
           array_agg(min_broker ORDER BY account_id), array_agg(max_broker ORDER BY account_id),
           array_agg(first_at ORDER BY account_id), array_agg(last_at ORDER BY account_id)
    INTO v_accounts, v_trades, v_first_seqs, v_last_seqs, v_min_brokers, v_max_brokers,
         v_first_ats, v_last_ats
    FROM (
        SELECT account_id, count(*) AS trades, min(seq) AS first_seq, max(seq) AS last_seq,
               min(broker_id) AS min_broker, max(broker_id) AS max_broker,
               min(executed_at) AS first_at, max(executed_at) AS last_at
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
    -- account's active broker of record, their seqs fill the range right after the
    -- account's last trade, and they share one timestamp (as
    -- trade_batch() gives them) no earlier than that trade's and not in the future; every
    -- stock is tradable; per position, the batch sells no more than was held before it.
    IF EXISTS (
        SELECT FROM unnest(v_accounts, v_trades, v_first_seqs, v_last_seqs, v_min_brokers,
                           v_max_brokers, v_first_ats, v_last_ats)
                    AS b(account_id, trades, first_seq, last_seq, min_broker, max_broker,
                         first_at, last_at)
        LEFT JOIN (SELECT * FROM accounts WHERE account_id = ANY (v_accounts)) a
               ON a.account_id = b.account_id
        LEFT JOIN brokers br ON br.broker_id = a.broker_id
        -- An account's seqs run 1, 2, 3… and trades_pkey refused any the batch repeats, so
        -- the batch continues the account exactly when first_seq is 1 or first_seq - 1
        -- exists: a point lookup, where "the latest trade" scans an index page backwards.
        LEFT JOIN (SELECT * FROM trades WHERE account_id = ANY (v_accounts)) l
               ON l.account_id = b.account_id AND l.seq = b.first_seq - 1
        WHERE a.account_id IS NULL OR a.status <> 'open'
           OR b.min_broker <> a.broker_id OR b.max_broker <> a.broker_id
           OR br.status IS DISTINCT FROM 'active'
           OR (b.first_seq > 1 AND l.seq IS NULL)
           OR b.last_seq <> b.first_seq + b.trades - 1
           OR b.first_at <> b.last_at OR b.first_at < l.executed_at
           OR b.last_at > clock_timestamp() + future_tolerance()
           OR b.first_at < '1900-01-01 00:00:00+00'
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
        before_batch AS (
            -- Per account: the last trade before the batch.
            SELECT f.account_id, l.seq AS last_seq, l.executed_at AS last_at
            FROM unnest(v_accounts, v_first_seqs) AS f(account_id, first_seq)
            LEFT JOIN LATERAL (
                SELECT t.seq, t.executed_at FROM trades t
                WHERE t.account_id = ANY (v_accounts)
                  AND t.account_id = f.account_id AND t.seq < f.first_seq
                ORDER BY t.seq DESC LIMIT 1
            ) l ON true
        ),
        ordered AS (
            SELECT b.*,
                   coalesce(bb.last_seq, 0)
                       + row_number() OVER (PARTITION BY b.account_id ORDER BY b.seq)
                       AS expected_seq,
                   coalesce(lag(b.executed_at) OVER (PARTITION BY b.account_id ORDER BY b.seq),
                            bb.last_at) AS previous_at,
                   coalesce(p.quantity, 0) + sum(CASE b.side WHEN 'buy' THEN b.quantity
                                                              ELSE -b.quantity END)
                       OVER (PARTITION BY b.account_id, b.symbol ORDER BY b.seq) AS running
            FROM batch b
            JOIN before_batch bb ON bb.account_id = b.account_id
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
                    WHEN o.executed_at < o.previous_at
                      OR o.executed_at > clock_timestamp() + future_tolerance() THEN 'SL002'
                    WHEN o.executed_at < '1900-01-01 00:00:00+00' THEN '22008'
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
                    WHEN o.executed_at < o.previous_at THEN format(
                        'executed_at %s is earlier than the previous trade of account %s (%s)',
                        o.executed_at, o.account_id, o.previous_at)
                    WHEN o.executed_at > clock_timestamp() + future_tolerance() THEN format(
                        'executed_at %s is more than %s seconds in the future', o.executed_at,
                        extract(epoch FROM future_tolerance())::integer)
                    WHEN o.executed_at < '1900-01-01 00:00:00+00' THEN format(
                        'executed_at %s is before 1900-01-01T00:00:00Z', o.executed_at)
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

    -- One write per (account, symbol): the positions found are updated, the others inserted
    -- (INSERT … ON CONFLICT would check the proposed row, negative for a net sale, before
    -- seeing the conflict; a cluster's MERGE reads from its own tables only). The accounts
    -- are locked: no position of theirs can appear in between.
    SELECT array_agg(account_id), array_agg(symbol), array_agg(quantity)
    INTO v_net_account, v_net_symbol, v_net
    FROM (
        SELECT account_id, symbol,
               sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) AS quantity
        FROM new_rows
        GROUP BY account_id, symbol
    ) net;
    WITH updated AS (
        UPDATE positions p SET quantity = trim_scale(p.quantity + d.quantity), updated_at = v_now
        FROM (
            SELECT * FROM unnest(v_net_account, v_net_symbol, v_net)
                          AS n(account_id, symbol, quantity)
        ) d
        WHERE p.account_id = ANY (v_accounts)
          AND p.account_id = d.account_id AND p.symbol = d.symbol
        RETURNING p.account_id, p.symbol
    )
    SELECT array_agg(account_id), array_agg(symbol) INTO v_held_account, v_held_symbol
    FROM updated;
    IF coalesce(cardinality(v_held_account), 0) < cardinality(v_net_account) THEN
        INSERT INTO positions (account_id, symbol, quantity, updated_at)
        SELECT d.account_id, d.symbol, d.quantity, v_now
        FROM unnest(v_net_account, v_net_symbol, v_net) AS d(account_id, symbol, quantity)
        WHERE NOT EXISTS (
            SELECT FROM unnest(v_held_account, v_held_symbol) AS u(account_id, symbol)
            WHERE u.account_id = d.account_id AND u.symbol = d.symbol
        );
    END IF;
    RETURN NULL;
END
$$;

-- Functions: what the application calls ---------------------------------------------------

-- One trade, one round trip: the insert fires the triggers above, and the trade comes back
-- (read through trade_rows) with the account's position after it.
CREATE FUNCTION trade(
    p_account_id bigint,
    p_broker_id bigint,
    p_symbol text,
    p_side text,
    p_quantity numeric,
    p_price numeric,
    p_executed_at timestamp with time zone DEFAULT NULL::timestamp with time zone,
    p_client_order_id text DEFAULT NULL::text
) RETURNS TABLE(
    trade trade_rows,
    position_quantity numeric
)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
#variable_conflict use_column
DECLARE
    t trades;
BEGIN
    INSERT INTO trades AS x (account_id, broker_id, symbol, side, quantity, price,
                             executed_at, client_order_id)
    VALUES (p_account_id, p_broker_id, p_symbol, p_side, p_quantity, p_price,
            p_executed_at, p_client_order_id)
    RETURNING x.* INTO t;

    RETURN QUERY
    SELECT r, p.quantity
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
    p_client_order_id text DEFAULT NULL::text
) RETURNS TABLE(
    trade trade_rows,
    position_quantity numeric,
    replayed boolean
)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
#variable_conflict use_column
DECLARE
    claim  idempotency_keys;
    t      trades;
    v_held numeric;
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
        RETURN QUERY
        SELECT r, claim.position_quantity, true
        FROM trade_rows r
        WHERE r.trade_id = claim.trade_id AND r.account_id = claim.account_id;
        RETURN;
    END IF;

    -- What trade() does, without a second SECURITY DEFINER call: the triggers check and
    -- write the position; the position is read back for the answer and the claim.
    INSERT INTO trades AS x (account_id, broker_id, symbol, side, quantity, price,
                             executed_at, client_order_id)
    VALUES (p_account_id, p_broker_id, p_symbol, p_side, p_quantity, p_price,
            p_executed_at, p_client_order_id)
    RETURNING x.* INTO t;
    SELECT p.quantity INTO v_held FROM positions p
    WHERE p.account_id = t.account_id AND p.symbol = t.symbol;

    UPDATE idempotency_keys k
    SET trade_id = t.trade_id, position_quantity = v_held
    WHERE k.broker_id = p_broker_id AND k.account_id = p_account_id
      AND k.idempotency_key = p_idempotency_key;

    RETURN QUERY
    SELECT r, v_held, false
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
                             array_fill(NULL::text, ARRAY[cardinality(p_account_ids)])))
             WITH ORDINALITY AS x(account_id, symbol, side, quantity, price, executed_at,
                                  client_order_id, i)
        WHERE x.i <= p_count
    )
    INSERT INTO trades AS t (account_id, broker_id, symbol, side, quantity, price, executed_at,
                             client_order_id, seq, batch_id)
    SELECT x.account_id, p_broker_id, x.symbol, x.side, trim_scale(x.quantity),
           CASE WHEN x.price = trunc(x.price, 4) THEN trunc(x.price, 4) ELSE x.price END,
           coalesce(x.executed_at, greatest(p_now, l.executed_at)),
           x.client_order_id,
           coalesce(l.seq, 0) + row_number() OVER (PARTITION BY x.account_id ORDER BY x.i),
           p_batch_id
    FROM input x
    JOIN unnest(p_last_accounts, p_last_seqs, p_last_ats) AS l(account_id, seq, executed_at)
      ON l.account_id = x.account_id
    ORDER BY x.i
    -- The columns of trade_rows, in its order (PostgreSQL checks the shape): read back
    -- through the view instead, 10,000 rows would cost 10,000 index probes.
    RETURNING t.trade_id, t.account_id, t.broker_id, t.symbol, t.side::text, t.quantity::numeric,
              t.price::numeric, t.executed_at, t.seq, t.client_order_id::text;
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
    p_client_order_ids text[] DEFAULT NULL::text[]
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
       OR coalesce(cardinality(p_client_order_ids), n) <> n THEN
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
    -- before the locks were granted).
    SELECT array_agg(a.account_id), array_agg(l.seq), array_agg(l.executed_at)
    INTO v_last_accounts, v_last_seqs, v_last_ats
    FROM accounts a
    LEFT JOIN LATERAL (
        SELECT t.seq, t.executed_at FROM trades t
        WHERE t.account_id = a.account_id AND t.account_id = ANY (v_accounts)
        ORDER BY t.seq DESC LIMIT 1
    ) l ON true
    WHERE a.account_id = ANY (v_accounts);

    v_batch := nextval('trade_batch_id_seq');
    BEGIN
        RETURN QUERY SELECT * FROM trade_batch_insert(
            p_broker_id, v_batch, v_now, n, p_account_ids, p_symbols, p_sides, p_quantities,
            p_prices, p_executed_ats, p_client_order_ids, v_last_accounts, v_last_seqs,
            v_last_ats);
        RETURN;
    EXCEPTION WHEN SQLSTATE 'SL001' OR SQLSTATE 'SL002' OR SQLSTATE 'SL003'
                   OR SQLSTATE 'SL005' OR SQLSTATE 'SL006' OR SQLSTATE 'SL014'
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
                p_quantities, p_prices, p_executed_ats, p_client_order_ids, v_last_accounts,
                v_last_seqs, v_last_ats);
            -- Nothing before it fails: it is the first (the refusal below undoes the trades
            -- inserted here).
            EXIT;
        EXCEPTION WHEN SQLSTATE 'SL001' OR SQLSTATE 'SL002' OR SQLSTATE 'SL003'
                       OR SQLSTATE 'SL005' OR SQLSTATE 'SL006' OR SQLSTATE 'SL014'
                       OR SQLSTATE '22008' THEN
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
CREATE TRIGGER accounts_client_id_immutable BEFORE UPDATE OF client_id ON accounts
    FOR EACH ROW WHEN (OLD.client_id IS DISTINCT FROM NEW.client_id)
    EXECUTE FUNCTION refuse_immutable_change('client_id');
CREATE TRIGGER accounts_broker_id_immutable BEFORE UPDATE OF broker_id ON accounts
    FOR EACH ROW WHEN (OLD.broker_id IS DISTINCT FROM NEW.broker_id)
    EXECUTE FUNCTION refuse_immutable_change('broker_id');
CREATE TRIGGER accounts_owner_tax_id_immutable BEFORE UPDATE OF owner_tax_id ON accounts
    FOR EACH ROW WHEN (OLD.owner_tax_id IS DISTINCT FROM NEW.owner_tax_id)
    EXECUTE FUNCTION refuse_immutable_change('owner_tax_id');
CREATE TRIGGER broker_keys_secret_immutable BEFORE UPDATE OF secret_hash, broker_id ON broker_keys
    FOR EACH ROW EXECUTE FUNCTION refuse_immutable_change('secret_hash');
CREATE TRIGGER broker_keys_revocation_final BEFORE UPDATE OF revoked_at ON broker_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at)
    EXECUTE FUNCTION refuse_immutable_change('revoked_at');

-- Single trades row by row; batches (batch_id set) once per statement.
CREATE TRIGGER trades_admit BEFORE INSERT ON trades
    FOR EACH ROW WHEN (NEW.batch_id IS NULL) EXECUTE FUNCTION trades_admit();
CREATE TRIGGER trades_apply_to_position AFTER INSERT ON trades
    FOR EACH ROW WHEN (NEW.batch_id IS NULL) EXECUTE FUNCTION trades_apply_to_position();
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
CREATE TRIGGER positions_derived_only BEFORE INSERT OR UPDATE OR DELETE ON positions
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION refuse_position_write();
CREATE TRIGGER positions_no_truncate BEFORE TRUNCATE ON positions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_position_write();

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
    trade(bigint, bigint, text, text, numeric, numeric, timestamptz, text),
    trade_idempotent(text, bytea, bigint, bigint, text, text, numeric, numeric, timestamptz, text),
    trade_batch(bigint, bigint[], text[], text[], numeric[], numeric[], timestamptz[], text[]),
    broker_of_key(text, bytea),
    issue_broker_key(bigint, text, bytea)
    TO stockledger_app;

-- It reads what it serves and writes reference data with plain INSERT and UPDATE (the
-- triggers still apply); it has no write on trades, positions, account_holders,
-- tax_identities or idempotency_keys: those only through the functions above. (Migration 0002
-- also grants it SELECT on schema_migrations, which migrate() creates, for /readyz.)
GRANT USAGE ON SCHEMA public TO stockledger_app;
GRANT SELECT ON clients, brokers, broker_keys, accounts, account_holders, stocks, stock_prices,
    trades, trade_rows, positions, holds, broker_supervisors TO stockledger_app;
GRANT INSERT ON clients, brokers, broker_keys, accounts, stocks TO stockledger_app;
-- The whole row, not its columns: a cluster's coordinator fills the defaults (recorded_at) and
-- sends every column to the placements.
GRANT INSERT ON stock_prices TO stockledger_app;
GRANT UPDATE (status) ON accounts TO stockledger_app;
GRANT UPDATE (status, manager_id) ON brokers TO stockledger_app;
GRANT UPDATE (name, active, fractionable) ON stocks TO stockledger_app;
GRANT UPDATE (revoked_at) ON broker_keys TO stockledger_app;
