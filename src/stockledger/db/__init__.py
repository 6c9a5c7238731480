"""Talking to PostgreSQL: the pool, named queries, migrations, the embedded server, and the
boundary where the database's errors become stockledger's."""
