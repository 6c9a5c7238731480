-- 0002: the application's least-privilege role.
--
-- Migrations run as the owner of the schema. The application connects as stockledger_app (or
-- a login role granted it), which owns nothing, so it cannot disable triggers, change
-- session_replication_role or drop a rule. It reads what it serves, writes reference data
-- through plain INSERT/UPDATE (the triggers still apply), and trades only through trade():
-- it has no INSERT on trades and no write at all on positions or tax_identities.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'stockledger_app') THEN
        CREATE ROLE stockledger_app NOLOGIN;
    END IF;
END
$$;

-- Functions that write what the application may not write run as their owner. search_path is
-- pinned (pg_temp last) so that a caller's temporary tables cannot stand in for ours.
ALTER FUNCTION trade(bigint, bigint, text, text, bigint, numeric, timestamptz, text)
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION trades_apply_to_position()
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION brokers_claim_tax_identity()
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION accounts_claim_tax_identity()
    SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp;

-- Functions are executable by PUBLIC by default; only trade() is meant to be called.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
GRANT EXECUTE ON FUNCTION trade(bigint, bigint, text, text, bigint, numeric, timestamptz, text)
    TO stockledger_app;

GRANT USAGE ON SCHEMA public TO stockledger_app;
GRANT SELECT ON clients, brokers, accounts, stocks, trades, positions, holds, schema_migrations
    TO stockledger_app;
GRANT INSERT ON clients, brokers, accounts, stocks TO stockledger_app;
GRANT UPDATE (status) ON accounts, brokers TO stockledger_app;
GRANT UPDATE (name, active) ON stocks TO stockledger_app;
