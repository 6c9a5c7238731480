-- 0007: the API key check as a function, so that a trade can carry its own authentication.
--
-- broker_of_key() answers which broker a live key belongs to, or refuses it with the reason:
-- SL013 (unknown key, wrong secret, revoked key: 401 unauthenticated) or SL005 (the broker is
-- not active: 403 forbidden, as the trades trigger says it). The API authenticates every
-- request with it, and the trade routes call it in the same statement as the trade
-- (FROM broker_of_key(…) CROSS JOIN LATERAL trade(…)): the trade runs only for the broker it
-- returns, after it returned, and one round trip does both.
--
-- The secret is compared as its SHA-256 digest. Comparing digests with = can reveal how many
-- leading bytes of the stored digest a guess's digest matches, which does not help find a
-- secret whose digest matches more (SHA-256 is preimage resistant); key_id is public.

CREATE FUNCTION broker_of_key(p_key_id text, p_secret_hash bytea) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY INVOKER AS $$
DECLARE
    k record;
BEGIN
    SELECT bk.broker_id, bk.secret_hash, bk.revoked_at, b.status INTO k
    FROM broker_keys bk JOIN brokers b ON b.broker_id = bk.broker_id
    WHERE bk.key_id = p_key_id;
    IF NOT FOUND OR k.secret_hash IS DISTINCT FROM p_secret_hash THEN
        RAISE EXCEPTION 'unknown credentials' USING ERRCODE = 'SL013';
    END IF;
    IF k.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'this key has been revoked' USING ERRCODE = 'SL013';
    END IF;
    IF k.status <> 'active' THEN
        RAISE EXCEPTION 'broker % is %', k.broker_id, k.status USING ERRCODE = 'SL005';
    END IF;
    RETURN k.broker_id;
END
$$;

REVOKE EXECUTE ON FUNCTION broker_of_key(text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION broker_of_key(text, bytea) TO stockledger_app;
