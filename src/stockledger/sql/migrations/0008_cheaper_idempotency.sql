-- 0008: cheaper idempotent trades. The same requests are accepted and refused as before; each
-- change was measured with pgbench (prepared statements, as the application sends them) on
-- copies of one database (docs/benchmarks.md).
--
-- 1. An idempotency key was checked with '^[\x21-\x7E]{1,255}$', a client_order_id with
--    '{1,64}'. PostgreSQL's regex engine unrolls a bounded repetition into that many states
--    and builds its DFA lazily for every statement: matching the key was a quarter of an
--    idempotent trade's CPU, and ran twice (a table CHECK is checked again on UPDATE). The
--    same rule as a length bound and an unbounded repetition needs three states. (The
--    characters allowed are one byte each, so octet_length is the length in characters.)
-- 2. The claim's checks become domains, as 0006 did for trades: a table's CHECKs are
--    compiled for every INSERT and UPDATE statement, a domain's once per session, and the
--    claim's UPDATE does not assign the key or the hash, so it no longer checks them. The
--    constraint names stay, so does the SQLSTATE (23514).
-- 3. trade_idempotent() inserts its trade itself instead of calling trade(), which, as a
--    SECURITY DEFINER function with its own search_path, saved and restored the settings
--    once more per trade. The triggers on trades still check everything.

ALTER DOMAIN trade_client_order_id DROP CONSTRAINT trades_client_order_id_check;
ALTER DOMAIN trade_client_order_id ADD CONSTRAINT trades_client_order_id_check
    CHECK (octet_length(VALUE) BETWEEN 1 AND 64 AND VALUE ~ '^[\x21-\x7E]+$');

CREATE DOMAIN idempotency_key_text AS text
    CONSTRAINT idempotency_keys_key_check
    CHECK (octet_length(VALUE) BETWEEN 1 AND 255 AND VALUE ~ '^[\x21-\x7E]+$');
CREATE DOMAIN idempotency_request_hash AS bytea
    CONSTRAINT idempotency_keys_request_hash_check CHECK (octet_length(VALUE) = 32);

ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_key_check,
    DROP CONSTRAINT idempotency_keys_request_hash_check,
    ALTER COLUMN idempotency_key TYPE idempotency_key_text,
    ALTER COLUMN request_hash TYPE idempotency_request_hash;

CREATE OR REPLACE FUNCTION trade_idempotent(
    p_idempotency_key text,
    p_request_hash    bytea,
    p_account_id      bigint,
    p_broker_id       bigint,
    p_symbol          text,
    p_side            text,
    p_quantity        bigint,
    p_price           numeric,
    p_executed_at     timestamptz DEFAULT NULL,
    p_client_order_id text DEFAULT NULL
) RETURNS TABLE (
    trade_id          bigint,
    account_id        bigint,
    broker_id         bigint,
    symbol            text,
    side              text,
    quantity          bigint,
    price             numeric,
    executed_at       timestamptz,
    seq               bigint,
    client_order_id   text,
    position_quantity bigint,
    replayed          boolean
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    claim  idempotency_keys;
    t      trades;
    v_held bigint;
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
        SELECT x.trade_id, x.account_id, x.broker_id, x.symbol, x.side::text, x.quantity::bigint,
               x.price::numeric, x.executed_at, x.seq, x.client_order_id::text,
               claim.position_quantity, true
        FROM trades x
        WHERE x.trade_id = claim.trade_id AND x.account_id = claim.account_id;
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
    SELECT t.trade_id, t.account_id, t.broker_id, t.symbol, t.side::text, t.quantity::bigint,
           t.price::numeric, t.executed_at, t.seq, t.client_order_id::text, v_held, false;
END
$$;
