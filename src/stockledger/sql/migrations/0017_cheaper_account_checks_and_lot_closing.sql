-- 0017: a trade's CPU, where it went (docs/benchmarks.md, "Migration 0017"). Four changes, in
-- this order below: the account's CHECKs that no trade needs, as domains; a sell's lots closed
-- as they are read; the trade's amount set by the triggers instead of generated; the batch's
-- sells, open lots and closures read and computed for what the batch needs.
--
-- A table's CHECK constraints are rebuilt from the catalog's text for every statement that
-- writes the table (ExecConstraints: stringToNode, then planned), whatever columns it writes.
-- Every trade writes its account's cash, seq and time, and paid 15 µs of CPU for the
-- account's checks on status, lot method and credit limit, which no trade changes. As domains
-- they are checked only where a value of theirs is written, from a plan kept for the session.
-- The constraints keep their names (the API and the tests know them), as the trade's domains do.

CREATE DOMAIN account_status AS text
    CONSTRAINT accounts_status_check CHECK (VALUE IN ('open', 'frozen', 'closed'));
CREATE DOMAIN account_lot_method AS text
    CONSTRAINT accounts_lot_method_check CHECK (VALUE IN ('fifo', 'lifo', 'hifo'));
CREATE DOMAIN account_credit_limit AS numeric
    CONSTRAINT accounts_credit_limit_check
        CHECK (VALUE >= 0 AND VALUE < 1000000000000000 AND VALUE = trunc(VALUE, 2));

ALTER TABLE accounts
    DROP CONSTRAINT accounts_status_check,
    DROP CONSTRAINT accounts_lot_method_check,
    DROP CONSTRAINT accounts_credit_limit_check;
ALTER TABLE accounts
    ALTER COLUMN status TYPE account_status,
    ALTER COLUMN lot_method TYPE account_lot_method,
    ALTER COLUMN credit_limit TYPE account_credit_limit;


-- A sell's lots, closed one by one as they are read -------------------------------------------

-- The lots a sell closes are read through a cursor, oldest (or newest, or dearest) first, and
-- each is written as it is reached: a sell that closes one lot reads one. Before, the open
-- lots were read into an array of rows (eight, then all if eight were not enough) and written
-- back with UPDATE … FROM unnest; building and unpacking the composite arrays cost more than
-- the writes. Named lots take the same loop: each is checked as it is reached (a refusal
-- undoes the statement, the lots written before it with it).
CREATE OR REPLACE FUNCTION trades_close_lots(
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


-- A trade's amount, assigned by the trigger ---------------------------------------------------

-- trades.amount was a stored generated column. PostgreSQL plans its expression for every
-- statement that inserts a trade, and planning it inlines trade_amount(), parsing the
-- function's body from its text each time: 8 % of a trade's CPU (perf). It is now a plain
-- column, set by trades_admit for a single trade (a value a writer supplies is refused, as
-- for seq) and by trade_batch_insert for a batch; trades_admit_batch refuses a batch row whose
-- amount is not the one §1.4 gives it, so a batch written with psql names its amount as it
-- names its seq. The values already booked stay as they are (DROP EXPRESSION rewrites
-- nothing).
--
-- Citus refuses DROP EXPRESSION on a distributed table ("alter table command is currently
-- unsupported"): there the statement is made on the coordinator's table, on the workers'
-- copies of its definition, and on every shard, with the cluster's propagation of DDL off.
DO $$
DECLARE
    v_distributed boolean := false;
    v_propagation text;
BEGIN
    IF to_regclass('pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT FROM pg_dist_partition
                                WHERE logicalrelid = ''trades''::regclass)'
            INTO v_distributed;
    END IF;
    IF v_distributed THEN
        -- Off for this statement only: the migration's later statements (the functions below)
        -- must reach the workers.
        v_propagation := current_setting('citus.enable_ddl_propagation');
        PERFORM set_config('citus.enable_ddl_propagation', 'off', true);
        ALTER TABLE trades ALTER COLUMN amount DROP EXPRESSION;
        PERFORM set_config('citus.enable_ddl_propagation', v_propagation, true);
        -- Each in a transaction of its own, not the migration's: IF EXISTS, so that a
        -- migration that failed after them can be run again.
        PERFORM run_command_on_workers(
            'SET LOCAL citus.enable_ddl_propagation = off; '
            'ALTER TABLE public.trades ALTER COLUMN amount DROP EXPRESSION IF EXISTS');
        PERFORM run_command_on_shards(
            'trades', 'ALTER TABLE %s ALTER COLUMN amount DROP EXPRESSION IF EXISTS');
    ELSE
        ALTER TABLE trades ALTER COLUMN amount DROP EXPRESSION;
    END IF;
END
$$;
ALTER TABLE trades ALTER COLUMN amount SET NOT NULL;

CREATE OR REPLACE FUNCTION trades_admit() RETURNS trigger
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


-- A batch's rows carry their amounts, as they carry their seqs.
CREATE OR REPLACE FUNCTION trade_batch_insert(
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


-- A batch row's amount is checked with the rules of its account: in the aggregate that proves
-- most batches valid, and trade by trade in the order of the rules (after its seq) when that
-- aggregate cannot. And the batch's first-in-first-out sells are read without a join against
-- the accounts' lot methods (the planner rescanned the batch once per account: 68 ms of a
-- 10,000-trade batch), their open lots per position until they cover what the batch sells
-- (before: the first eight of each by a lateral join that walked closed lots too, then every
-- open lot of a position they did not cover), and the lots' filters name the batch's distinct
-- accounts rather than its sells.
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



-- A batch's closures divide only where a share is what a closure gets: the closure that empties
-- its lot takes what is left of the lot's cost, and the one that completes its sell what is
-- left of its proceeds, whatever their shares. Each share is a division carried to 40 digits.
CREATE OR REPLACE FUNCTION fifo_closures(
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

