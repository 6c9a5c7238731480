-- 0005: all-or-nothing batches of trades, checked set-wise.
--
-- A single trade goes through the row triggers (trades_admit, trades_apply_to_position): lock,
-- check, assign seq, update the position, one row at a time. For a batch that costs a trigger
-- call, a lookup and an UPDATE of the same position row per trade. Rows that carry a batch_id
-- skip the row triggers (WHEN batch_id IS NULL) and are checked instead by one statement-level
-- trigger over the transition table: every rule of trades_admit and trades_apply_to_position,
-- each as one set-wise query (window functions over the batch in seq order), then one position
-- write per (account, symbol). Whoever inserts -- trade_batch() or psql -- one of the two paths
-- checks every row; none skips both.
--
-- The first failing trade (lowest index in the batch) rejects the whole statement with that
-- rule's SQLSTATE and DETAIL {"batch_index": i}; nothing is written.

CREATE SEQUENCE trade_batch_id_seq;

-- The foreign keys of trades cost a lookup per row and per key (40% of a batch's time), and
-- they are implied: both paths refuse a trade whose account, broker or stock is missing
-- (SL009, SL004/SL005, SL006), and nothing a trade references can be deleted afterwards,
-- because every trade leaves a positions row (whose foreign keys still hold its account and
-- stock; positions rows are never deleted) and its broker is the account's broker of record
-- (accounts.broker_id: a foreign key, and immutable).
ALTER TABLE trades
    DROP CONSTRAINT trades_account_id_fkey,
    DROP CONSTRAINT trades_broker_id_fkey,
    DROP CONSTRAINT trades_symbol_fkey;

ALTER TABLE trades ADD COLUMN batch_id bigint;
COMMENT ON COLUMN trades.batch_id IS
    'the all-or-nothing batch this trade was submitted in (trade_batch()); NULL for single trades';

DROP TRIGGER trades_admit ON trades;
CREATE TRIGGER trades_admit BEFORE INSERT ON trades
    FOR EACH ROW WHEN (NEW.batch_id IS NULL) EXECUTE FUNCTION trades_admit();
DROP TRIGGER trades_apply_to_position ON trades;
CREATE TRIGGER trades_apply_to_position AFTER INSERT ON trades
    FOR EACH ROW WHEN (NEW.batch_id IS NULL) EXECUTE FUNCTION trades_apply_to_position();

CREATE FUNCTION trades_admit_batch() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v record;
BEGIN
    -- Single trades were checked row by row; this costs them one probe of the new rows.
    IF NOT EXISTS (SELECT FROM new_rows WHERE batch_id IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT FROM new_rows WHERE batch_id IS NULL)
       OR (SELECT count(DISTINCT batch_id) FROM new_rows) > 1 THEN
        RAISE EXCEPTION 'one INSERT carries one batch, and only its trades'
            USING ERRCODE = '22023';
    END IF;

    -- The accounts' serialization point, as for single trades; in account order, so two
    -- batches over the same accounts cannot deadlock.
    PERFORM FROM accounts WHERE account_id IN (SELECT account_id FROM new_rows)
    ORDER BY account_id FOR NO KEY UPDATE;

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
                   + row_number() OVER (PARTITION BY b.account_id ORDER BY b.seq) AS expected_seq,
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

    -- One write per (account, symbol). Not INSERT … ON CONFLICT: its CHECK applies to the
    -- proposed row (a net sale is negative) before the conflict is seen. The accounts are
    -- locked, so no position of theirs can appear between the UPDATE and the INSERT.
    WITH delta AS (
        SELECT account_id, symbol,
               sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) AS quantity
        FROM new_rows
        GROUP BY account_id, symbol
    ),
    updated AS (
        UPDATE positions p SET quantity = p.quantity + d.quantity, updated_at = now()
        FROM delta d
        WHERE p.account_id = d.account_id AND p.symbol = d.symbol
        RETURNING p.account_id, p.symbol
    )
    INSERT INTO positions (account_id, symbol, quantity, updated_at)
    SELECT d.account_id, d.symbol, d.quantity, now()
    FROM delta d
    WHERE NOT EXISTS (SELECT FROM updated u
                      WHERE u.account_id = d.account_id AND u.symbol = d.symbol);
    RETURN NULL;
END
$$;

CREATE TRIGGER trades_admit_batch AFTER INSERT ON trades
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trades_admit_batch();

-- The batch call: one round trip for up to thousands of trades of one broker. Parallel arrays
-- (one element per trade, in order) are the cheapest way to pass a set to a function. It locks
-- the accounts, assigns seq and executed_at in batch order, and inserts; the statement
-- trigger above checks every rule (so the lowest failing index wins, whatever the rule) and
-- writes the positions.
CREATE FUNCTION trade_batch(
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
    last_trade AS (
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
    RETURNING t.trade_id, t.account_id, t.broker_id, t.symbol, t.side, t.quantity, t.price,
              t.executed_at, t.seq, t.client_order_id, t.batch_id;
END
$$;

REVOKE EXECUTE ON FUNCTION trades_admit_batch() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION trade_batch(bigint, bigint[], text[], text[], bigint[], numeric[],
    timestamptz[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION trade_batch(bigint, bigint[], text[], text[], bigint[], numeric[],
    timestamptz[], text[]) TO stockledger_app;
