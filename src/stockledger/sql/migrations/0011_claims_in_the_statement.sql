-- 0011: rule 4 (a tax id is never both a broker and an account owner) without a trigger that
-- writes another table.
--
-- The claims on tax_identities were written by AFTER INSERT triggers on brokers and accounts.
-- On a Citus cluster those triggers run on the shards, where writing another table is refused
-- ("cannot execute a distributed query from a query on a shard"), so no broker and no account
-- could be created (docs/scale-out.md). The rule now stands on foreign keys, which hold on
-- every engine and for every writer:
--
-- - a broker row points at its tax identity with (tax_id, claims_broker = true) →
--   tax_identities (tax_id, is_broker): it cannot exist unless that identity is claimed as a
--   broker;
-- - an account carries its owner's tax id (owner_tax_id, filled from its client and tied to it
--   by a foreign key) and points at (owner_tax_id, claims_owner = true) →
--   tax_identities (tax_id, owns_account);
-- - tax_identities_not_broker_and_owner forbids one identity both flags.
--
-- The claim is made by whoever writes: register_broker() and open_account() (what the API and
-- the CLI call) claim and insert in one statement, and refuse a claim of the other kind with
-- SL007. Two writers claiming one identity meet on its row lock, so the rule is race-free. A
-- plain INSERT of a broker or an account still works once its identity is claimed
-- (claim_tax_identity()); BEFORE INSERT triggers, which only read, refuse one whose identity is
-- claimed the other way with SL007, and fill the account's owner_tax_id.

ALTER TABLE tax_identities
    ADD CONSTRAINT tax_identities_broker_key UNIQUE (tax_id, is_broker),
    ADD CONSTRAINT tax_identities_owner_key UNIQUE (tax_id, owns_account);

ALTER TABLE clients ADD CONSTRAINT clients_client_id_tax_id_key UNIQUE (client_id, tax_id);

DROP TRIGGER brokers_claim_tax_identity ON brokers;
DROP TRIGGER accounts_claim_tax_identity ON accounts;
DROP FUNCTION brokers_claim_tax_identity();
DROP FUNCTION accounts_claim_tax_identity();

ALTER TABLE brokers
    ADD COLUMN claims_broker boolean NOT NULL DEFAULT true
        CONSTRAINT brokers_claims_broker_check CHECK (claims_broker),
    ADD CONSTRAINT brokers_tax_identity_fkey
        FOREIGN KEY (tax_id, claims_broker) REFERENCES tax_identities (tax_id, is_broker);

ALTER TABLE accounts
    ADD COLUMN owner_tax_id text,
    ADD COLUMN claims_owner boolean NOT NULL DEFAULT true
        CONSTRAINT accounts_claims_owner_check CHECK (claims_owner);
UPDATE accounts a SET owner_tax_id = c.tax_id FROM clients c WHERE c.client_id = a.client_id;
ALTER TABLE accounts
    ALTER COLUMN owner_tax_id SET NOT NULL,
    ADD CONSTRAINT accounts_owner_fkey
        FOREIGN KEY (client_id, owner_tax_id) REFERENCES clients (client_id, tax_id),
    ADD CONSTRAINT accounts_tax_identity_fkey
        FOREIGN KEY (owner_tax_id, claims_owner) REFERENCES tax_identities (tax_id, owns_account);

-- The claim: the tax identity's one row, flagged for the role. A claim of the other kind
-- already there refuses it (SL007); a concurrent claim waits on the row lock and then sees it.
CREATE FUNCTION claim_tax_identity(p_tax_id text, p_as_broker boolean) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
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

-- What the API and the CLI call: claim, then insert, one statement.
CREATE FUNCTION register_broker(p_name text, p_tax_id text, p_license_no text)
    RETURNS SETOF brokers
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
BEGIN
    PERFORM claim_tax_identity(p_tax_id, true);
    RETURN QUERY
    INSERT INTO brokers (name, tax_id, license_no) VALUES (p_name, p_tax_id, p_license_no)
    RETURNING *;
END
$$;

CREATE FUNCTION open_account(p_client_id bigint, p_broker_id bigint) RETURNS SETOF accounts
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
DECLARE
    v_tax_id text;
BEGIN
    SELECT c.tax_id INTO v_tax_id FROM clients c WHERE c.client_id = p_client_id;
    IF FOUND THEN
        PERFORM claim_tax_identity(v_tax_id, false);
    END IF;  -- an unknown client is refused by the insert's foreign key
    RETURN QUERY
    INSERT INTO accounts (client_id, broker_id) VALUES (p_client_id, p_broker_id)
    RETURNING *;
END
$$;

-- The triggers only read (on a cluster they run on the shards), as the owner (the application
-- cannot read tax_identities): a broker or an account whose
-- identity is claimed the other way is refused with SL007 before the foreign keys would refuse
-- it less clearly; an account's owner_tax_id is its client's.
CREATE FUNCTION brokers_check_tax_identity() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
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
    SET search_path = pg_catalog, public, pg_temp
    AS $$
BEGIN
    SELECT c.tax_id INTO NEW.owner_tax_id FROM clients c WHERE c.client_id = NEW.client_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'client % does not exist', NEW.client_id
            USING ERRCODE = '23503', CONSTRAINT = 'accounts_client_id_fkey';
    END IF;
    IF EXISTS (SELECT FROM tax_identities ti WHERE ti.tax_id = NEW.owner_tax_id AND ti.is_broker) THEN
        RAISE EXCEPTION 'client % has the tax id of a registered broker and cannot own an account',
            NEW.client_id USING ERRCODE = 'SL007';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER brokers_check_tax_identity BEFORE INSERT ON brokers
    FOR EACH ROW EXECUTE FUNCTION brokers_check_tax_identity();
CREATE TRIGGER accounts_check_tax_identity BEFORE INSERT ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_check_tax_identity();
CREATE TRIGGER accounts_owner_tax_id_immutable BEFORE UPDATE OF owner_tax_id ON accounts
    FOR EACH ROW WHEN (OLD.owner_tax_id IS DISTINCT FROM NEW.owner_tax_id)
    EXECUTE FUNCTION refuse_immutable_change('owner_tax_id');

REVOKE EXECUTE ON FUNCTION
    claim_tax_identity(text, boolean),
    register_broker(text, text, text),
    open_account(bigint, bigint),
    brokers_check_tax_identity(),
    accounts_check_tax_identity()
    FROM PUBLIC;
-- The application registers and opens through these; it does not claim identities on its own
-- (an identity claimed with nothing on it would still bar the other role).
GRANT EXECUTE ON FUNCTION register_broker(text, text, text), open_account(bigint, bigint)
    TO stockledger_app;
