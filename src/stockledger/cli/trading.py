"""Trading from the command line: one trade, an account's holdings, the ledger's proof."""

from __future__ import annotations

import json

import click

from stockledger.audit.verify import verify as verify_ledger
from stockledger.cli.common import (
    database_url,
    emit,
    fail,
    json_option,
    reports_errors,
    validated,
)
from stockledger.cli.main import main
from stockledger.db.pool import connect
from stockledger.json_text import quantity_json
from stockledger.trading.positions import holdings as account_holdings
from stockledger.trading.requests import TradeRequest
from stockledger.trading.trades import execute_trade


@main.command()
@click.option("--account", "account_id", required=True, type=int)
@click.option("--broker", "broker_id", required=True, type=int)
@click.option("--symbol", required=True)
@click.option("--side", required=True, type=click.Choice(["buy", "sell"]))
@click.option(
    "--quantity", required=True, help="Shares: whole, or up to 6 places where fractionable."
)
@click.option("--price", required=True, help="Decimal with at most 4 places, e.g. 187.25")
@click.option("--executed-at", help="RFC 3339 time for a backfill; default: now.")
@click.option("--client-order-id")
@click.option("--fee", help="Cents at most, e.g. 1.50; default 0.")
@json_option
@click.pass_context
@reports_errors
def trade(
    ctx: click.Context,
    account_id: int,
    broker_id: int,
    symbol: str,
    side: str,
    quantity: str,
    price: str,
    executed_at: str | None,
    client_order_id: str | None,
    fee: str | None,
    as_json: bool,
) -> None:
    """Execute one trade, under the same rules as the API."""
    request = validated(
        TradeRequest,
        account_id=account_id,
        broker_id=broker_id,
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=price,
        executed_at=executed_at,
        client_order_id=client_order_id,
        fee=fee,
    )
    with database_url(ctx.obj) as url, connect(url) as conn:
        result = execute_trade(conn, request)
    t = result.trade
    emit(
        as_json,
        result.to_json(),
        f"{'bought' if t.side == 'buy' else 'sold'} {quantity_json(t.quantity)} {t.symbol} @ "
        f"{result.to_json()['trade']['price']} for account {t.account_id} "
        f"(trade {t.trade_id}, seq {t.seq}); amount {result.to_json()['trade']['amount']}; "
        f"position now {quantity_json(result.position_quantity)}",
    )


@main.command()
@click.option("--account", "account_id", required=True, type=int)
@json_option
@click.pass_context
@reports_errors
def holdings(ctx: click.Context, account_id: int, as_json: bool) -> None:
    """Print an account's current holdings."""
    with database_url(ctx.obj) as url, connect(url) as conn:
        result = account_holdings(conn, account_id)

    def table() -> str:
        rows = result["holdings"]
        if not rows:
            return f"account {account_id} holds nothing"
        return "\n".join(
            [f"{'SYMBOL':<10} {'QUANTITY':>18} {'PRICE':>16} {'MARKET VALUE':>18}"]
            + [
                f"{h['symbol']:<10} {h['quantity']!s:>18} {h.get('price', '-'):>16} "
                f"{h.get('market_value', '-'):>18}"
                for h in rows
            ]
        )

    emit(as_json, result, table)


@main.command()
@json_option
@click.pass_context
@reports_errors
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check every ledger invariant; exit 0 only if all hold."""
    with database_url(ctx.obj) as url, connect(url) as conn:
        checks = verify_ledger(conn)
    ok = all(c.holds for c in checks)

    def report() -> str:
        lines = []
        for c in checks:
            if c.holds:
                lines.append(f"ok    {c.name}")
            else:
                lines.append(f"FAIL  {c.name}: e.g. {json.dumps(c.violations[0], default=str)}")
        return "\n".join(lines)

    emit(
        as_json,
        {
            "ok": ok,
            "invariants": [
                {"name": c.name, "holds": c.holds, "violations": c.violations} for c in checks
            ],
        },
        report,
    )
    if not ok:
        failed = ", ".join(c.name for c in checks if not c.holds)
        fail(f"ledger invariant violated: {failed}")
