"""The money side of an account (SPEC §1.4-§1.6): cash movements and the cash history, the
portfolio, lots and realized P&L. The database keeps every figure in the trade's (or the
movement's) own transaction; this package reads them and moves cash through move_cash()."""
