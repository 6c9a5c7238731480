-- 0004: idempotent trades (SPEC §2.5).
--
-- A key is scoped to (broker, account). trade_idempotent() claims the key with an INSERT
-- before it trades, in the same transaction, so the unique index is the arbiter:
--   * the first request inserts the claim, trades, and records the trade on the claim;
--   * a concurrent duplicate blocks on the claim until the first commits, then replays it
--     (or, if the first was rejected and rolled back, takes the claim and trades itself);
--   * a rejected trade rolls its claim back with it, so 4xx answers store nothing.
-- SL012: the key was used before for a different request.

CREATE TABLE idempotency_keys (
    broker_id         bigint NOT NULL,
    account_id        bigint NOT NULL,
    idempotency_key   text NOT NULL,
    request_hash      bytea NOT NULL,
    -- NULL only inside the claiming transaction, between the claim and the trade.
    trade_id          bigint,
    -- The position right after the trade, so a replay answers exactly what the first did.
    position_quantity bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (broker_id, account_id, idempotency_key),
    CONSTRAINT idempotency_keys_trade_fkey FOREIGN KEY (trade_id, account_id)
        REFERENCES trades (trade_id, account_id),
    CONSTRAINT idempotency_keys_key_check CHECK (idempotency_key ~ '^[\x21-\x7E]{1,255}$'),
    CONSTRAINT idempotency_keys_request_hash_check CHECK (octet_length(request_hash) = 32)
);

CREATE FUNCTION trade_idempotent(
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
    claim idempotency_keys;
    t     record;
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
        SELECT x.trade_id, x.account_id, x.broker_id, x.symbol, x.side, x.quantity, x.price,
               x.executed_at, x.seq, x.client_order_id, claim.position_quantity, true
        FROM trades x
        WHERE x.trade_id = claim.trade_id AND x.account_id = claim.account_id;
        RETURN;
    END IF;

    SELECT * INTO t FROM trade(p_account_id, p_broker_id, p_symbol, p_side, p_quantity,
                               p_price, p_executed_at, p_client_order_id);
    UPDATE idempotency_keys k
    SET trade_id = t.trade_id, position_quantity = t.position_quantity
    WHERE k.broker_id = p_broker_id AND k.account_id = p_account_id
      AND k.idempotency_key = p_idempotency_key;

    RETURN QUERY
    SELECT t.trade_id, t.account_id, t.broker_id, t.symbol, t.side, t.quantity, t.price,
           t.executed_at, t.seq, t.client_order_id, t.position_quantity, false;
END
$$;

-- The application calls the function; it neither reads nor writes the claims directly.
REVOKE EXECUTE ON FUNCTION trade_idempotent(text, bytea, bigint, bigint, text, text, bigint,
    numeric, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION trade_idempotent(text, bytea, bigint, bigint, text, text, bigint,
    numeric, timestamptz, text) TO stockledger_app;
