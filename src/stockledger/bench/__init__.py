"""`stockledger bench`: throughput and latency against PostgreSQL's own ceiling, same server,
same run. Every figure that matters is a ratio to a reference measured minutes apart on the
same machine, because absolute numbers on a shared 2-core machine mean little.

Modules: ``servers`` (the PostgreSQL under test and its databases), ``pgbench`` (running the
pgbench shipped with the server, parsing its report), ``data`` (loading accounts and history),
``scenarios`` (one function per scenario), ``report`` (table, JSON, plot).
"""
