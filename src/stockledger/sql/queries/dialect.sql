-- The seed's own dialect (SPEC §2.7, stockledger/dialect/): what its three requests
-- read. No broker scopes them: the dialect answers loopback clients only, as the seed did.

-- name: dialect_account_holders
-- The current holders, primary first (the lowest position); none when there is no account.
SELECT h.tax_id
FROM account_holders h
WHERE h.account_id = %(account_id)s AND h.removed_at IS NULL
ORDER BY h.position;

-- name: dialect_position
-- A row when both the account and the stock exist; quantity 0 when it holds none.
SELECT coalesce(p.quantity, 0) AS quantity
FROM accounts a
CROSS JOIN stocks s
LEFT JOIN positions p ON p.account_id = a.account_id AND p.symbol = s.symbol
WHERE a.account_id = %(account_id)s AND s.symbol = %(symbol)s;

-- name: dialect_broker_of_record
-- Who trades for the account (never changes: accounts_broker_id_immutable).
SELECT a.broker_id FROM accounts a WHERE a.account_id = %(account_id)s;
