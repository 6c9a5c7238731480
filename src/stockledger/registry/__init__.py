"""Who and what may trade: clients, brokers (and their API keys), accounts, stocks."""
