-- 0006: cheaper trades. Each change was measured with `stockledger bench` and pgbench on this
-- project's machines (docs/benchmarks.md); none changes what is accepted or refused.
--
-- 1. The value rules of a trade become domains. A table's CHECK constraints are read back from
--    the catalog and compiled again for every INSERT statement (18% of a single trade's CPU);
--    a domain's constraints are loaded once per session. The constraint names, the SQLSTATE
--    (23514) and so the API errors stay the same; the values are now checked when they are
--    cast to the column types, before the row triggers run. (Changing a column's type to a
--    domain rewrites trades once.)
-- 2. The trigger functions on trades run as the inserter. Only the owner inserts into trades:
--    the application role reaches it through trade() and trade_batch(), which run as the
--    owner; a role that is granted INSERT on trades but cannot write positions is refused.
--    SECURITY DEFINER with a pinned search_path cost a settings save and restore per call
--    (7% of a trade). Inserted through trade(), the triggers see its pinned search_path.
-- 3. A buy updates its position and inserts one only when there is none: the account is
--    locked, so none can appear in between, and INSERT … ON CONFLICT costs a speculative
--    insertion every time.
-- 4. The batch trigger first tries the rules as a few aggregates (per account, per symbol, per
--    position). They prove most batches valid without ordering the batch; only a batch they
--    cannot prove valid (it breaks a rule, carries its own increasing timestamps, or sells
--    shares it bought earlier in the batch) pays for the exact check in batch order, which
--    also names the first failing trade.

DROP VIEW holds;

CREATE DOMAIN trade_side AS text
    CONSTRAINT trades_side_check CHECK (VALUE IN ('buy', 'sell'));
CREATE DOMAIN trade_quantity AS bigint
    CONSTRAINT trades_quantity_check CHECK (VALUE BETWEEN 1 AND 1000000000);
-- numeric without a typmod on purpose: numeric(16,4) would silently round a fifth decimal
-- place away before any check could refuse it.
CREATE DOMAIN trade_price AS numeric
    CONSTRAINT trades_price_check CHECK (
        VALUE > 0 AND VALUE < 1000000000000 AND VALUE = trunc(VALUE, 4));
CREATE DOMAIN trade_client_order_id AS text
    CONSTRAINT trades_client_order_id_check CHECK (VALUE ~ '^[\x21-\x7E]{1,64}$');

ALTER TABLE trades
    DROP CONSTRAINT trades_side_check,
    DROP CONSTRAINT trades_quantity_check,
    DROP CONSTRAINT trades_price_check,
    DROP CONSTRAINT trades_client_order_id_check,
    ALTER COLUMN side TYPE trade_side,
    ALTER COLUMN quantity TYPE trade_quantity,
    ALTER COLUMN price TYPE trade_price,
    ALTER COLUMN client_order_id TYPE trade_client_order_id;

-- The seed's definition of holdings, straight from the ledger (as in 0001).
CREATE VIEW holds AS
SELECT account_id, symbol,
       sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) AS quantity
FROM trades
GROUP BY account_id, symbol
HAVING sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) <> 0;
GRANT SELECT ON holds TO stockledger_app;

-- The functions that return trades' columns return their base types, as before.

CREATE OR REPLACE FUNCTION trade(
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
    position_quantity bigint
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
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
    SELECT t.trade_id, t.account_id, t.broker_id, t.symbol, t.side::text, t.quantity::bigint,
           t.price::numeric, t.executed_at, t.seq, t.client_order_id::text, p.quantity
    FROM positions p
    WHERE p.account_id = t.account_id AND p.symbol = t.symbol;
END
$$;

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
        SELECT x.trade_id, x.account_id, x.broker_id, x.symbol, x.side::text, x.quantity::bigint,
               x.price::numeric, x.executed_at, x.seq, x.client_order_id::text,
               claim.position_quantity, true
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

CREATE OR REPLACE FUNCTION trade_batch(
    p_broker_id        bigint,
    p_account_ids      bigint[],
    p_symbols          text[],
    p_sides            text[],
    p_quantities       bigint[],
    p_prices           numeric[],
    p_executed_ats     timestamptz[] DEFAULT NULL,
    p_client_order_ids text[] DEFAULT NULL
) RETURNS TABLE (
    trade_id        bigint,
    account_id      bigint,
    broker_id       bigint,
    symbol          text,
    side            text,
    quantity        bigint,
    price           numeric,
    executed_at     timestamptz,
    seq             bigint,
    client_order_id text,
    batch_id        bigint
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    n       integer := coalesce(cardinality(p_account_ids), 0);
    v_batch bigint;
    v_now   timestamptz := clock_timestamp();
BEGIN
    IF n = 0 OR n > 100000
       OR coalesce(cardinality(p_symbols), 0) <> n OR coalesce(cardinality(p_sides), 0) <> n
       OR coalesce(cardinality(p_quantities), 0) <> n OR coalesce(cardinality(p_prices), 0) <> n
       OR coalesce(cardinality(p_executed_ats), n) <> n
       OR coalesce(cardinality(p_client_order_ids), n) <> n THEN
        RAISE EXCEPTION 'a batch is 1 to 100000 trades, one element of each array per trade'
            USING ERRCODE = '22023';
    END IF;

    PERFORM FROM accounts a WHERE a.account_id = ANY (p_account_ids)
    ORDER BY a.account_id FOR NO KEY UPDATE;

    v_batch := nextval('trade_batch_id_seq');
    RETURN QUERY
    WITH input AS (
        SELECT x.*
        FROM unnest(p_account_ids, p_symbols, p_sides, p_quantities, p_prices,
                    coalesce(p_executed_ats, array_fill(NULL::timestamptz, ARRAY[n])),
                    coalesce(p_client_order_ids, array_fill(NULL::text, ARRAY[n])))
             WITH ORDINALITY AS x(account_id, symbol, side, quantity, price, executed_at,
                                  client_order_id, i)
    ),
    -- MATERIALIZED: once per account. Inlined, the generic plan of this function looked
    -- the latest trade up again for every trade of the batch (half of a batch's time).
    last_trade AS MATERIALIZED (
        SELECT d.account_id, l.seq, l.executed_at
        FROM (SELECT DISTINCT account_id FROM input) d
        LEFT JOIN LATERAL (
            SELECT t.seq, t.executed_at FROM trades t
            WHERE t.account_id = d.account_id ORDER BY t.seq DESC LIMIT 1
        ) l ON true
    )
    INSERT INTO trades AS t (account_id, broker_id, symbol, side, quantity, price, executed_at,
                             client_order_id, seq, batch_id)
    SELECT x.account_id, p_broker_id, x.symbol, x.side, x.quantity,
           CASE WHEN x.price = trunc(x.price, 4) THEN trunc(x.price, 4) ELSE x.price END,
           coalesce(x.executed_at, greatest(v_now, l.executed_at)),
           x.client_order_id,
           coalesce(l.seq, 0) + row_number() OVER (PARTITION BY x.account_id ORDER BY x.i),
           v_batch
    FROM input x JOIN last_trade l ON l.account_id = x.account_id
    ORDER BY x.i
    RETURNING t.trade_id, t.account_id, t.broker_id, t.symbol, t.side::text, t.quantity::bigint,
              t.price::numeric, t.executed_at, t.seq, t.client_order_id::text, t.batch_id;
END
$$;

CREATE OR REPLACE FUNCTION trades_apply_to_position() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
    v_held bigint;
BEGIN
    IF NEW.side = 'buy' THEN
        UPDATE positions SET quantity = quantity + NEW.quantity, updated_at = now()
        WHERE account_id = NEW.account_id AND symbol = NEW.symbol;
        IF NOT FOUND THEN
            INSERT INTO positions (account_id, symbol, quantity, updated_at)
            VALUES (NEW.account_id, NEW.symbol, NEW.quantity, now());
        END IF;
    ELSE
        UPDATE positions SET quantity = quantity - NEW.quantity, updated_at = now()
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

CREATE OR REPLACE FUNCTION trades_admit_batch() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
    v record;
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

    -- The accounts' serialization point, as for single trades; in account order, so two
    -- batches over the same accounts cannot deadlock.
    PERFORM FROM accounts WHERE account_id IN (SELECT account_id FROM new_rows)
    ORDER BY account_id FOR NO KEY UPDATE;

    -- Sufficient for every rule, in aggregates: per account, its trades all name its open
    -- account's active broker of record, their seqs fill the range right after the
    -- account's last trade, and they share one timestamp (as
    -- trade_batch() gives them) no earlier than that trade's and not in the future; every
    -- stock is tradable; per position, the batch sells no more than was held before it.
    IF EXISTS (
        WITH per_account AS (
            SELECT account_id, count(*) AS trades, min(seq) AS first_seq, max(seq) AS last_seq,
                   min(broker_id) AS min_broker, max(broker_id) AS max_broker,
                   min(executed_at) AS first_at, max(executed_at) AS last_at
            FROM new_rows
            GROUP BY account_id
        )
        SELECT FROM per_account b
        LEFT JOIN accounts a ON a.account_id = b.account_id
        LEFT JOIN brokers br ON br.broker_id = a.broker_id
        -- An account's seqs run 1, 2, 3… and trades_pkey refused any the batch repeats, so
        -- the batch continues the account exactly when first_seq is 1 or first_seq - 1
        -- exists: a point lookup, where "the latest trade" scans an index page backwards.
        LEFT JOIN trades l ON l.account_id = b.account_id AND l.seq = b.first_seq - 1
        WHERE a.account_id IS NULL OR a.status <> 'open'
           OR b.min_broker <> a.broker_id OR b.max_broker <> a.broker_id
           OR br.status IS DISTINCT FROM 'active'
           OR (b.first_seq > 1 AND l.seq IS NULL)
           OR b.last_seq <> b.first_seq + b.trades - 1
           OR b.first_at <> b.last_at OR b.first_at < l.executed_at
           OR b.last_at > clock_timestamp() + interval '5 seconds'
        UNION ALL
        SELECT FROM (SELECT DISTINCT symbol FROM new_rows) n
        LEFT JOIN stocks s ON s.symbol = n.symbol
        WHERE s.active IS NOT TRUE
        UNION ALL
        SELECT FROM (
            SELECT account_id, symbol, sum(quantity) AS sold
            FROM new_rows WHERE side = 'sell'
            GROUP BY account_id, symbol
        ) d
        LEFT JOIN positions p ON p.account_id = d.account_id AND p.symbol = d.symbol
        WHERE d.sold > coalesce(p.quantity, 0)
    ) THEN
        -- Not proven valid: every trade against every rule, in batch order.
        WITH batch AS (
            -- trade_id follows insertion order, hence the index in the submitted batch.
            SELECT n.*, row_number() OVER (ORDER BY n.trade_id) - 1 AS idx
            FROM new_rows n
        ),
        before_batch AS (
            -- Per account: the last trade before the batch.
            SELECT f.account_id, l.seq AS last_seq, l.executed_at AS last_at
            FROM (SELECT account_id, min(seq) AS first_seq FROM batch GROUP BY account_id) f
            LEFT JOIN LATERAL (
                SELECT t.seq, t.executed_at FROM trades t
                WHERE t.account_id = f.account_id AND t.seq < f.first_seq
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
            LEFT JOIN positions p ON p.account_id = b.account_id AND p.symbol = b.symbol
        ),
        checked AS (
            -- Each trade's first broken rule, in the order trades_admit checks them.
            SELECT o.idx,
                CASE
                    WHEN a.account_id IS NULL THEN 'SL009'
                    WHEN a.status <> 'open' THEN 'SL003'
                    WHEN a.broker_id <> o.broker_id THEN 'SL004'
                    WHEN br.status IS DISTINCT FROM 'active' THEN 'SL005'
                    WHEN s.active IS NOT TRUE THEN 'SL006'
                    WHEN o.seq <> o.expected_seq THEN '428C9'
                    WHEN o.executed_at < o.previous_at
                      OR o.executed_at > clock_timestamp() + interval '5 seconds' THEN 'SL002'
                    WHEN o.running < 0 THEN 'SL001'
                END AS code,
                CASE
                    WHEN a.account_id IS NULL THEN format('account %s does not exist', o.account_id)
                    WHEN a.status <> 'open' THEN format('account %s is %s', o.account_id, a.status)
                    WHEN a.broker_id <> o.broker_id THEN format(
                        'broker %s is not the broker of record of account %s',
                        o.broker_id, o.account_id)
                    WHEN br.status IS DISTINCT FROM 'active' THEN format(
                        'broker %s is %s', o.broker_id, coalesce(br.status, 'unknown'))
                    WHEN s.active IS NOT TRUE THEN format('stock %s is not tradable', o.symbol)
                    WHEN o.seq <> o.expected_seq THEN format(
                        'seq %s of account %s does not continue its sequence (%s)',
                        o.seq, o.account_id, o.expected_seq)
                    WHEN o.executed_at < o.previous_at THEN format(
                        'executed_at %s is earlier than the previous trade of account %s (%s)',
                        o.executed_at, o.account_id, o.previous_at)
                    WHEN o.executed_at > clock_timestamp() + interval '5 seconds' THEN format(
                        'executed_at %s is more than 5 seconds in the future', o.executed_at)
                    WHEN o.running < 0 THEN format(
                        'account %s holds %s shares of %s, cannot sell %s',
                        o.account_id, o.running + o.quantity, o.symbol, o.quantity)
                END AS msg  -- NULL (and no format() call) for the trades that pass
            FROM ordered o
            LEFT JOIN accounts a ON a.account_id = o.account_id
            LEFT JOIN brokers br ON br.broker_id = o.broker_id
            LEFT JOIN stocks s ON s.symbol = o.symbol
        )
        SELECT idx, code, msg INTO v FROM checked WHERE code IS NOT NULL ORDER BY idx LIMIT 1;

        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = v.code,
                MESSAGE = format('trade %s of the batch: %s', v.idx, v.msg),
                DETAIL = json_build_object('batch_index', v.idx)::text;
        END IF;
    END IF;

    -- One write per (account, symbol), one join: MERGE inserts only the positions it does
    -- not find (INSERT … ON CONFLICT would check the proposed row, negative for a net sale,
    -- before seeing the conflict). The accounts are locked: no position of theirs can appear
    -- meanwhile.
    MERGE INTO positions p
    USING (
        SELECT account_id, symbol,
               sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) AS quantity
        FROM new_rows
        GROUP BY account_id, symbol
    ) d ON p.account_id = d.account_id AND p.symbol = d.symbol
    WHEN MATCHED THEN
        UPDATE SET quantity = p.quantity + d.quantity, updated_at = now()
    WHEN NOT MATCHED THEN
        INSERT (account_id, symbol, quantity, updated_at)
        VALUES (d.account_id, d.symbol, d.quantity, now());
    RETURN NULL;
END
$$;
