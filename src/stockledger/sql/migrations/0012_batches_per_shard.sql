-- 0012: batches that hold on a Citus cluster as on one PostgreSQL (docs/scale-out.md).
--
-- On a cluster the statement trigger of a batch runs on each shard of trades, over that
-- shard's rows, and three things it did are refused there:
--
-- - a query that reads a distributed table may not read the transition table (new_rows): the
--   statement's rows are first gathered into arrays, and the checks read the arrays;
-- - a query run from a shard may only touch shards on the same node: every read of a
--   per-account table carries account_id = ANY (the statement's accounts), which prunes it to
--   the one colocated shard (on one PostgreSQL the same filter is an index condition);
-- - a row lock on a distributed table needs that filter too.
--
-- trade_batch() runs on the coordinator, where a lock spanning shards is refused: it locks the
-- caller's accounts one at a time, in account order (still no deadlock between batches), and
-- reads each account's latest trade through a join taken from accounts. A refused batch must
-- name its first failing trade, and each shard only knows its own: the trigger names the
-- failing trade by (account_id, seq) as well, trade_batch() turns that into the batch's index,
-- and asks again for the trades before it until none of them fails.

CREATE OR REPLACE FUNCTION trades_admit_batch() RETURNS trigger
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
    -- Its symbols, and the shares it sells per position.
    v_symbols      text[];
    v_sold_account bigint[];
    v_sold_symbol  text[];
    v_sold         bigint[];
    -- Its net change per position, and the positions that existed.
    v_net_account  bigint[];
    v_net_symbol   text[];
    v_net          bigint[];
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
    SELECT array_agg(DISTINCT symbol) INTO v_symbols FROM new_rows;
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
        UPDATE positions p SET quantity = p.quantity + d.quantity, updated_at = v_now
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
    p_quantities bigint[],
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
    SELECT x.account_id, p_broker_id, x.symbol, x.side, x.quantity,
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
    RETURNING t.trade_id, t.account_id, t.broker_id, t.symbol, t.side::text, t.quantity::bigint,
              t.price::numeric, t.executed_at, t.seq, t.client_order_id::text;
$$;
REVOKE EXECUTE ON FUNCTION trade_batch_insert(bigint, bigint, timestamptz, integer, bigint[],
    text[], text[], bigint[], numeric[], timestamp with time zone[], text[], bigint[], bigint[],
    timestamp with time zone[]) FROM PUBLIC;


-- Up to thousands of trades of one broker, all or nothing, in one round trip. The caller's
-- accounts only are locked, in account order (no deadlock between batches); an account of
-- another broker refuses the batch before any lock (SL004/SL009).
CREATE OR REPLACE FUNCTION trade_batch(
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
    n         integer := coalesce(cardinality(p_account_ids), 0);
    v_batch   bigint;
    v_now     timestamptz := clock_timestamp();
    v_foreign record;
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
        RAISE EXCEPTION USING
            ERRCODE = CASE WHEN EXISTS (SELECT FROM accounts
                                        WHERE account_id = v_foreign.account_id)
                           THEN 'SL004' ELSE 'SL009' END,
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
                   OR SQLSTATE 'SL005' OR SQLSTATE 'SL006' OR SQLSTATE '22008' THEN
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
                       OR SQLSTATE 'SL005' OR SQLSTATE 'SL006' OR SQLSTATE '22008' THEN
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
REVOKE EXECUTE ON FUNCTION trade_batch_index(bigint[], text) FROM PUBLIC;


-- SL011 names the table, not the shard a cluster runs the trigger on ("accounts", not
-- "accounts_102009"): no table of this schema ends in an underscore and digits
-- (db/distribution.py refuses one).
CREATE OR REPLACE FUNCTION refuse_immutable_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION '%.% cannot be changed', regexp_replace(TG_TABLE_NAME, '_[0-9]+$', ''),
        TG_ARGV[0] USING ERRCODE = 'SL011', COLUMN = TG_ARGV[0];
END
$$;


-- A missing client is refused in PostgreSQL's own words, which name the constraint: a cluster
-- relays an error's message but not its constraint field.
CREATE OR REPLACE FUNCTION accounts_check_tax_identity() RETURNS trigger
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
REVOKE EXECUTE ON FUNCTION issue_broker_key(bigint, text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION issue_broker_key(bigint, text, bytea) TO stockledger_app;
