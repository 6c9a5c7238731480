-- 0014: every account opened before 0013 gets its client as its primary holder, since it was
-- opened (a migration of its own: on a cluster, account_holders is placed after 0013 made it,
-- and filled here on its shards, next to each account's row).
INSERT INTO account_holders (account_id, client_id, added_at)
SELECT a.account_id, a.client_id, a.opened_at
FROM accounts a
WHERE NOT EXISTS (SELECT FROM account_holders h WHERE h.account_id = a.account_id);
