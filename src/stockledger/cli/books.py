"""The money side from the command line: move cash, read the portfolio and the lots."""

from __future__ import annotations

from typing import Any

import click

from stockledger.books import lots as account_lots
from stockledger.books.cash import move_cash
from stockledger.books.portfolio import portfolio as account_portfolio
from stockledger.books.requests import CashMovement, LotsPageQuery
from stockledger.cli.common import database_url, emit, json_option, reports_errors, validated
from stockledger.cli.main import main
from stockledger.db.pool import connect


@main.group()
def cash() -> None:
    """Cash: deposits to and withdrawals from an account (SPEC §1.4)."""


def _move(
    ctx: click.Context,
    kind: str,
    account_id: int,
    amount: str,
    reference: str | None,
    as_json: bool,
) -> None:
    movement = validated(CashMovement, kind=kind, amount=amount, reference=reference)
    with database_url(ctx.obj) as url, connect(url) as conn:
        made, _ = move_cash(conn, account_id, movement)
    emit(
        as_json,
        made,
        f"{kind} {made['amount']} on account {account_id} (movement {made['movement_id']}); "
        f"cash now {made['balance']}",
    )


_account = click.option("--account", "account_id", required=True, type=int)
_amount = click.option("--amount", required=True, help="Cents at most, e.g. 1000.00")
_reference = click.option("--reference", help="Free text, e.g. a transfer's reference.")


@cash.command("deposit")
@_account
@_amount
@_reference
@json_option
@click.pass_context
@reports_errors
def cash_deposit(
    ctx: click.Context, account_id: int, amount: str, reference: str | None, as_json: bool
) -> None:
    """Deposit cash to an account."""
    _move(ctx, "deposit", account_id, amount, reference, as_json)


@cash.command("withdraw")
@_account
@_amount
@_reference
@json_option
@click.pass_context
@reports_errors
def cash_withdraw(
    ctx: click.Context, account_id: int, amount: str, reference: str | None, as_json: bool
) -> None:
    """Withdraw cash from an account; never below zero."""
    _move(ctx, "withdrawal", account_id, amount, reference, as_json)


@main.command()
@_account
@json_option
@click.pass_context
@reports_errors
def portfolio(ctx: click.Context, account_id: int, as_json: bool) -> None:
    """Print an account's cash, positions at cost and at market, and realized P&L."""
    with database_url(ctx.obj) as url, connect(url) as conn:
        result = account_portfolio(conn, account_id)

    def table() -> str:
        limit = result["credit_limit"] or "none"
        lines = [
            f"cash {result['cash']}  credit limit {limit}  "
            f"buying power {result['buying_power'] or '-'}  lot method {result['lot_method']}",
            f"{'SYMBOL':<10} {'QUANTITY':>14} {'COST BASIS':>14} {'AVG COST':>12} "
            f"{'PRICE':>12} {'MARKET VALUE':>14} {'UNREALIZED':>12}",
        ]
        for p in result["positions"]:
            lines.append(
                f"{p['symbol']:<10} {p['quantity']!s:>14} {p['cost_basis']:>14} "
                f"{p['average_cost']:>12} {p.get('price', '-'):>12} "
                f"{p.get('market_value', '-'):>14} {p.get('unrealized', '-'):>12}"
            )
        totals = result["totals"]
        lines.append(
            f"{'TOTAL':<10} {'':>14} {totals['cost_basis']:>14} {'':>12} {'':>12} "
            f"{totals['market_value']:>14} {totals['unrealized']:>12}"
        )
        lines.append(f"realized to date {result['realized']}")
        return "\n".join(lines)

    emit(as_json, result, table)


@main.command()
@_account
@click.option("--symbol")
@click.option("--open", "open_only", is_flag=True, help="Open lots only.")
@json_option
@click.pass_context
@reports_errors
def lots(
    ctx: click.Context, account_id: int, symbol: str | None, open_only: bool, as_json: bool
) -> None:
    """Print an account's lots (every page), in the order they were opened."""
    fields: dict[str, Any] = {"symbol": symbol, "open": "true" if open_only else None}
    found: list[dict[str, Any]] = []
    with database_url(ctx.obj) as url, connect(url) as conn:
        cursor = None
        while True:
            page = account_lots.lots_page(
                conn,
                account_id,
                None,
                validated(LotsPageQuery, **fields, cursor=cursor, limit=1000),
            )
            found.extend(page["lots"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    result = {"account_id": account_id, "lots": found}

    def table() -> str:
        if not found:
            return f"account {account_id} has no such lots"
        return "\n".join(
            [
                f"{'LOT':>6} {'SYMBOL':<10} {'QUANTITY':>14} {'REMAINING':>14} {'COST':>14} "
                f"{'REMAINING COST':>16}  OPENED"
            ]
            + [
                f"{lot['lot_id']:>6} {lot['symbol']:<10} {lot['quantity']!s:>14} "
                f"{lot['remaining']!s:>14} {lot['cost']:>14} {lot['remaining_cost']:>16}  "
                f"{lot['opened_at']}"
                for lot in found
            ]
        )

    emit(as_json, result, table)
