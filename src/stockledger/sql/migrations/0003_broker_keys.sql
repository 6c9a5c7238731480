-- 0003: broker API keys, stored only as SHA-256 hashes of their secret part.
--
-- A key reads slk_<key_id>_<secret>: key_id (public, 16 hex digits) finds the row, the secret
-- (256 random bits) is compared in constant time against secret_hash by the application.
-- A broker may hold several live keys at once, so rotation has no downtime; revocation is
-- one-way.

CREATE TABLE broker_keys (
    key_id      text NOT NULL,
    broker_id   bigint NOT NULL,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT broker_keys_pkey PRIMARY KEY (key_id),
    CONSTRAINT broker_keys_broker_id_fkey FOREIGN KEY (broker_id) REFERENCES brokers (broker_id),
    CONSTRAINT broker_keys_key_id_check CHECK (key_id ~ '^[0-9a-f]{16}$'),
    CONSTRAINT broker_keys_secret_hash_check CHECK (octet_length(secret_hash) = 32),
    CONSTRAINT broker_keys_revoked_at_check CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
CREATE INDEX broker_keys_broker_id_idx ON broker_keys (broker_id);

CREATE TRIGGER broker_keys_revocation_final BEFORE UPDATE OF revoked_at ON broker_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at)
    EXECUTE FUNCTION refuse_immutable_change('revoked_at');
CREATE TRIGGER broker_keys_secret_immutable BEFORE UPDATE OF secret_hash, broker_id ON broker_keys
    FOR EACH ROW EXECUTE FUNCTION refuse_immutable_change('secret_hash');

GRANT SELECT, INSERT ON broker_keys TO stockledger_app;
GRANT UPDATE (revoked_at) ON broker_keys TO stockledger_app;
