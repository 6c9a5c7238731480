-- 0010: one trade row; one future bound.
--
-- The ten columns of a trade were declared in the RETURNS TABLE of trade(), trade_idempotent()
-- and trade_batch() and listed again by every query that reads trades. The view trade_rows is
-- now the one declaration (the columns in their base types, as clients read them): the
-- functions return it (trade() and trade_idempotent() as a column `trade` beside what they add,
-- trade_batch() as its rows), and the queries read it. trade() and trade_idempotent() read the
-- trade they inserted back through the view (one index probe on trades_pkey, a few
-- microseconds); trade_batch() returns its RETURNING list, which PostgreSQL checks against
-- the view's row type, because reading 10,000 rows back would not be a few microseconds.
--
-- The 5-second bound on a supplied execution time was written out five times in the two
-- admission triggers; future_tolerance() is now its one definition (an immutable SQL function:
-- inlined and folded into a constant when a statement is planned, so it costs nothing).

CREATE FUNCTION future_tolerance() RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT interval '5 seconds' $$;

CREATE VIEW trade_rows AS
SELECT trade_id, account_id, broker_id, symbol, side::text AS side,
       quantity::bigint AS quantity, price::numeric AS price, executed_at, seq,
       client_order_id::text AS client_order_id
FROM trades;

CREATE OR REPLACE FUNCTION trades_admit() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_account_status text;
    v_broker_status  text;
    v_stock_active   boolean;
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
        IF EXISTS (SELECT FROM accounts WHERE account_id = NEW.account_id) THEN
            RAISE EXCEPTION 'broker % is not the broker of record of account %',
                NEW.broker_id, NEW.account_id USING ERRCODE = 'SL004';
        END IF;
        RAISE EXCEPTION 'account % does not exist', NEW.account_id USING ERRCODE = 'SL009';
    END IF;
    IF v_account_status <> 'open' THEN
        RAISE EXCEPTION 'account % is %', NEW.account_id, v_account_status USING ERRCODE = 'SL003';
    END IF;

    SELECT status INTO v_broker_status FROM brokers WHERE broker_id = NEW.broker_id;
    IF v_broker_status <> 'active' THEN
        RAISE EXCEPTION 'broker % is %', NEW.broker_id, v_broker_status USING ERRCODE = 'SL005';
    END IF;

    SELECT active INTO v_stock_active FROM stocks WHERE symbol = NEW.symbol;
    IF v_stock_active IS NOT TRUE THEN
        RAISE EXCEPTION 'stock % is not tradable', NEW.symbol USING ERRCODE = 'SL006';
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
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION trades_admit_batch() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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
    -- batches over the same accounts cannot deadlock. (Through trade_batch() they are locked
    -- already, and only if every one is the caller's; a row naming another broker's account
    -- is refused below as SL004, before its account's status is looked at.)
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
           OR b.last_at > clock_timestamp() + future_tolerance()
           OR b.first_at < '1900-01-01 00:00:00+00'
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
                    WHEN a.broker_id <> o.broker_id THEN 'SL004'
                    WHEN a.status <> 'open' THEN 'SL003'
                    WHEN br.status IS DISTINCT FROM 'active' THEN 'SL005'
                    WHEN s.active IS NOT TRUE THEN 'SL006'
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

DROP FUNCTION trade(bigint, bigint, text, text, bigint, numeric, timestamptz, text);
DROP FUNCTION trade_idempotent(text, bytea, bigint, bigint, text, text, bigint, numeric,
                               timestamptz, text);
DROP FUNCTION trade_batch(bigint, bigint[], text[], text[], bigint[], numeric[], timestamptz[],
                          text[]);

CREATE FUNCTION trade(
    p_account_id bigint,
    p_broker_id bigint,
    p_symbol text,
    p_side text,
    p_quantity bigint,
    p_price numeric,
    p_executed_at timestamptz DEFAULT NULL,
    p_client_order_id text DEFAULT NULL
) RETURNS TABLE(trade trade_rows, position_quantity bigint)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
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

CREATE FUNCTION trade_idempotent(
    p_idempotency_key text,
    p_request_hash bytea,
    p_account_id bigint,
    p_broker_id bigint,
    p_symbol text,
    p_side text,
    p_quantity bigint,
    p_price numeric,
    p_executed_at timestamptz DEFAULT NULL,
    p_client_order_id text DEFAULT NULL
) RETURNS TABLE(trade trade_rows, position_quantity bigint, replayed boolean)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
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

CREATE FUNCTION trade_batch(
    p_broker_id bigint,
    p_account_ids bigint[],
    p_symbols text[],
    p_sides text[],
    p_quantities bigint[],
    p_prices numeric[],
    p_executed_ats timestamp with time zone[] DEFAULT NULL::timestamp with time zone[],
    p_client_order_ids text[] DEFAULT NULL::text[]
) RETURNS SETOF trade_rows
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
#variable_conflict use_column
DECLARE
    n       integer := coalesce(cardinality(p_account_ids), 0);
    v_batch bigint;
    v_now   timestamptz := clock_timestamp();
    v_locked  bigint;
    v_foreign record;
BEGIN
    IF n = 0 OR n > 100000
       OR coalesce(cardinality(p_symbols), 0) <> n OR coalesce(cardinality(p_sides), 0) <> n
       OR coalesce(cardinality(p_quantities), 0) <> n OR coalesce(cardinality(p_prices), 0) <> n
       OR coalesce(cardinality(p_executed_ats), n) <> n
       OR coalesce(cardinality(p_client_order_ids), n) <> n THEN
        RAISE EXCEPTION 'a batch is 1 to 100000 trades, one element of each array per trade'
            USING ERRCODE = '22023';
    END IF;

    -- Only the caller's accounts are locked (the broker of record never changes); if that
    -- is fewer than the batch names, the first trade on an account of another broker (or
    -- none) answers as a missing account, before anything is inserted, and no account of
    -- another broker was locked or waited for (SPEC §2.4).
    PERFORM FROM accounts a
    WHERE a.account_id = ANY (p_account_ids) AND a.broker_id = p_broker_id
    ORDER BY a.account_id FOR NO KEY UPDATE;
    GET DIAGNOSTICS v_locked = ROW_COUNT;
    IF v_locked <> (SELECT count(DISTINCT u) FROM unnest(p_account_ids) u) THEN
        SELECT u.i - 1 AS idx, u.account_id, a.account_id IS NULL AS missing INTO v_foreign
        FROM unnest(p_account_ids) WITH ORDINALITY AS u(account_id, i)
        LEFT JOIN accounts a ON a.account_id = u.account_id
        WHERE a.broker_id IS DISTINCT FROM p_broker_id
        ORDER BY u.i LIMIT 1;
        RAISE EXCEPTION USING
            ERRCODE = CASE WHEN v_foreign.missing THEN 'SL009' ELSE 'SL004' END,
            MESSAGE = format('trade %s of the batch: account %s is not an account of broker %s',
                             v_foreign.idx, v_foreign.account_id, p_broker_id),
            DETAIL = json_build_object('batch_index', v_foreign.idx)::text;
    END IF;

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
    -- The columns of trade_rows, in its order (PostgreSQL checks the shape): read back
    -- through the view instead, 10,000 rows would cost 10,000 index probes.
    RETURNING t.trade_id, t.account_id, t.broker_id, t.symbol, t.side::text, t.quantity::bigint,
              t.price::numeric, t.executed_at, t.seq, t.client_order_id::text;
END
$$;

REVOKE EXECUTE ON FUNCTION
    future_tolerance(),
    trade(bigint, bigint, text, text, bigint, numeric, timestamptz, text),
    trade_idempotent(text, bytea, bigint, bigint, text, text, bigint, numeric, timestamptz, text),
    trade_batch(bigint, bigint[], text[], text[], bigint[], numeric[], timestamptz[], text[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    trade(bigint, bigint, text, text, bigint, numeric, timestamptz, text),
    trade_idempotent(text, bytea, bigint, bigint, text, text, bigint, numeric, timestamptz, text),
    trade_batch(bigint, bigint[], text[], text[], bigint[], numeric[], timestamptz[], text[])
    TO stockledger_app;
GRANT SELECT ON trade_rows TO stockledger_app;
