-- 0014: the foreign keys of 0013's new tables, now placed (on a cluster: account_holders
-- distributed with accounts, stock_prices a reference table), and every account opened before
-- 0013 gets its client as its primary holder, since it was opened (filled on the shards, next
-- to each account's row).
ALTER TABLE account_holders ADD CONSTRAINT account_holders_account_id_fkey
    FOREIGN KEY (account_id) REFERENCES accounts (account_id);
ALTER TABLE account_holders ADD CONSTRAINT account_holders_client_id_fkey
    FOREIGN KEY (client_id, tax_id) REFERENCES clients (client_id, tax_id);
-- Rule 4: a holder stands on its tax identity claimed as an owner's.
ALTER TABLE account_holders ADD CONSTRAINT account_holders_tax_identity_fkey
    FOREIGN KEY (tax_id, claims_owner) REFERENCES tax_identities (tax_id, owns_account);
ALTER TABLE stock_prices ADD CONSTRAINT stock_prices_symbol_fkey
    FOREIGN KEY (symbol) REFERENCES stocks (symbol);

INSERT INTO account_holders (account_id, client_id, added_at)
SELECT a.account_id, a.client_id, a.opened_at
FROM accounts a
WHERE NOT EXISTS (SELECT FROM account_holders h WHERE h.account_id = a.account_id);
