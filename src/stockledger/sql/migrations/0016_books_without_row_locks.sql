-- 0016: the trade path writes no lock records. Measured with pg_walinspect (docs/benchmarks.md,
-- "Issue 16's changes"): a trade wrote two or three Heap/LOCK records besides its rows. One was
-- the explicit lock of the account row (FOR NO KEY UPDATE), taken before the trigger wrote that
-- same row at its end. The others came from the guards: PostgreSQL locks a row, and logs the
-- lock, before it runs the BEFORE UPDATE row triggers of its table, whatever their WHEN or
-- column list says, so every UPDATE of a position, a lot or an account was a lock and then an
-- update.
--
-- So: the guards on positions, lots, closures and an account's books and identity become
-- statement triggers (they refuse writes from outside the trade triggers, pg_trigger_depth() =
-- 0, and need no row); the account's credit-limit check is left to its constraint
-- (accounts_cash_within_limit, which the API already answers as insufficient_funds); and the
-- trade's first write is the update of its account, with every condition of its admission in
-- the WHERE: the account's one write is also its lock. A trade that update does not find is
-- refused, and the refusal is named afterwards, under the lock, in the order the rules have
-- always been checked.

-- Guards that lock nothing ------------------------------------------------------------------------

DROP TRIGGER positions_derived_only ON positions;
CREATE TRIGGER positions_derived_only BEFORE INSERT OR UPDATE OR DELETE ON positions
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION refuse_derived_write();
DROP TRIGGER lots_derived_only ON lots;
CREATE TRIGGER lots_derived_only BEFORE INSERT OR UPDATE OR DELETE ON lots
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION refuse_derived_write();
DROP TRIGGER lot_closures_derived_only ON lot_closures;
CREATE TRIGGER lot_closures_derived_only BEFORE INSERT ON lot_closures
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION refuse_derived_write();

-- An account's books: any statement that names them, from outside the triggers, is refused
-- (before, one that set them to what they were was let through).
DROP TRIGGER accounts_books_derived_only ON accounts;
CREATE TRIGGER accounts_books_derived_only
    BEFORE UPDATE OF cash, last_seq, last_executed_at ON accounts
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION refuse_derived_write('an account''s cash and latest trade');

-- An account's identity: any statement that names the column is refused (before, one that set
-- it to what it was was let through). Other tables keep their row triggers: nothing updates
-- them on the trade path.
DROP TRIGGER accounts_client_id_immutable ON accounts;
DROP TRIGGER accounts_broker_id_immutable ON accounts;
DROP TRIGGER accounts_owner_tax_id_immutable ON accounts;
CREATE TRIGGER accounts_client_id_immutable BEFORE UPDATE OF client_id ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_immutable_change('client_id');
CREATE TRIGGER accounts_broker_id_immutable BEFORE UPDATE OF broker_id ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_immutable_change('broker_id');
CREATE TRIGGER accounts_owner_tax_id_immutable BEFORE UPDATE OF owner_tax_id ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_immutable_change('owner_tax_id');

-- A credit limit below what the account owes: accounts_cash_within_limit refuses it (23514).
DROP TRIGGER accounts_check_credit_limit ON accounts;
DROP FUNCTION accounts_check_credit_limit();

-- The single trade -----------------------------------------------------------------------------

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


-- What a sell answers ----------------------------------------------------------------------------

-- The lot closures of a sell, as the API answers them (NULL for a buy): JSON with exact
-- decimal strings, in lot order. PL/pgSQL, not SQL: its query's plan is kept for the session.
-- As a SQL function it cost a sell 170 µs (pg_stat_statements, track = all), six times the
-- query's own time.
CREATE OR REPLACE FUNCTION trade_closures(p_account_id bigint, p_seq bigint) RETURNS jsonb
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
