"""The money side over HTTP (SPEC §2.6): cash movements under an Idempotency-Key, the portfolio,
lots, realized P&L and the cash history (keyset pages), credit limits and lot methods; trades
with fees and named lots; each refusal by its code, writing nothing."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support import ADMIN_TOKEN, World, as_caller, assert_problem, bearer, ledger_snapshot

pytestmark = pytest.mark.citus  # the distributed tier runs these too (pytest -m citus)

ADMIN = bearer(ADMIN_TOKEN)


def move(client: FlaskClient, account: int, kind: str, amount: Any, **headers: str) -> Any:
    return client.post(
        f"/v1/accounts/{account}/cash",
        json={"kind": kind, "amount": amount, "reference": "wire 42"},
        headers={**ADMIN, **headers},
    )


def trade(client: FlaskClient, world: World, **fields: Any) -> Any:
    body = {"account_id": world.account, "symbol": "AAPL", "side": "buy", "quantity": 1}
    return as_caller(client, world.key_a).post("/v1/trades", json={"price": "10", **body, **fields})


def test_a_deposit_and_a_withdrawal_move_the_balance(client: FlaskClient, world: World) -> None:
    # The world's account bought 100 AAPL at 10 before cash existed: -1000.00.
    made = move(client, world.account, "deposit", "1500")
    assert made.status_code == 201, made.get_json()
    assert made.get_json() | {"created_at": None} == {
        "account_id": world.account,
        "movement_id": 1,
        "kind": "deposit",
        "amount": "1500.00",
        "reference": "wire 42",
        "created_at": None,
        "balance": "500.00",
    }
    assert move(client, world.account, "withdrawal", 200.5).get_json()["balance"] == "299.50"
    refused = move(client, world.account, "withdrawal", "299.51")
    assert_problem(refused, 409, "insufficient_funds")


def test_a_repeated_key_replays_the_movement(client: FlaskClient, world: World, conn: Any) -> None:
    first = move(client, world.account, "deposit", "10", **{"Idempotency-Key": "dep-1"})
    again = move(client, world.account, "deposit", "10.00", **{"Idempotency-Key": "dep-1"})
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    before = ledger_snapshot(conn)
    other = move(client, world.account, "deposit", "11", **{"Idempotency-Key": "dep-1"})
    assert_problem(other, 422, "idempotency_key_reused")
    assert ledger_snapshot(conn) == before


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "deposit", "amount": "0"},
        {"kind": "deposit", "amount": "1.001"},
        {"kind": "gift", "amount": "1"},
        {"kind": "deposit", "amount": "1", "reference": ""},
        {"kind": "deposit"},
    ],
)
def test_a_malformed_movement_is_refused(
    client: FlaskClient, world: World, conn: Any, body: dict[str, Any]
) -> None:
    before = ledger_snapshot(conn)
    response = client.post(f"/v1/accounts/{world.account}/cash", json=body, headers=ADMIN)
    assert_problem(response, 422, "invalid_request")
    assert ledger_snapshot(conn) == before


def test_a_broker_moves_no_cash(client: FlaskClient, world: World) -> None:
    response = as_caller(client, world.key_a).post(
        f"/v1/accounts/{world.account}/cash", json={"kind": "deposit", "amount": "1"}
    )
    assert_problem(response, 403, "forbidden")


def test_a_cash_account_refuses_a_buy_it_cannot_pay_for(
    client: FlaskClient, world: World, conn: Any
) -> None:
    move(client, world.account, "deposit", "1100")  # 100.00 in cash
    patched = client.patch(
        f"/v1/accounts/{world.account}", json={"credit_limit": "0"}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.get_json()
    assert (patched.get_json()["cash"], patched.get_json()["credit_limit"]) == ("100.00", "0.00")
    before = ledger_snapshot(conn)
    assert_problem(trade(client, world, quantity=11), 409, "insufficient_funds")
    assert ledger_snapshot(conn) == before
    bought = trade(client, world, quantity=9, fee="10")
    assert bought.get_json()["trade"]["amount"] == "-100.00"


def test_a_limit_below_the_debt_is_refused(client: FlaskClient, world: World) -> None:
    response = client.patch(
        f"/v1/accounts/{world.account}", json={"credit_limit": "999.99"}, headers=ADMIN
    )
    assert_problem(response, 409, "insufficient_funds")
    cleared = client.patch(
        f"/v1/accounts/{world.account}", json={"credit_limit": None}, headers=ADMIN
    )
    assert cleared.get_json()["credit_limit"] is None


def test_a_sell_answers_its_closures_and_the_portfolio_adds_up(
    client: FlaskClient, world: World
) -> None:
    client.post("/v1/stocks/AAPL/prices", json={"price": "12"}, headers=ADMIN)
    trade(client, world, quantity=10, price="20")  # lot 2
    sold = trade(client, world, side="sell", quantity=15, price="30", fee="1.50",
                 lots=[{"lot_id": 2, "quantity": 10}, {"lot_id": 1, "quantity": "5"}])  # fmt: skip
    assert sold.status_code == 201, sold.get_json()
    answer = sold.get_json()
    assert answer["trade"]["amount"] == "448.50"
    assert answer["closures"] == [
        {"lot_id": 1, "quantity": 5, "cost_basis": "50.00", "proceeds": "149.50",
         "realized": "99.50"},
        {"lot_id": 2, "quantity": 10, "cost_basis": "200.00", "proceeds": "299.00",
         "realized": "99.00"},
    ]  # fmt: skip
    portfolio = as_caller(client, world.key_a).get(f"/v1/accounts/{world.account}/portfolio")
    assert portfolio.status_code == 200
    body = portfolio.get_json()
    assert body["positions"] == [
        {"symbol": "AAPL", "quantity": 95, "cost_basis": "950.00", "average_cost": "10.0000",
         "realized": "198.50", "price": "12.0000", "market_value": "1140.00",
         "unrealized": "190.00"},
    ]  # fmt: skip
    assert body["realized"] == "198.50"
    assert body["cash"] == "-751.50"  # -1000 - 200 + 448.50
    assert (body["credit_limit"], body["buying_power"]) == (None, None)
    assert body["totals"]["unrealized"] == "190.00"


def test_lots_and_realized_are_pages(client: FlaskClient, world: World) -> None:
    for _ in range(3):
        trade(client, world, quantity=2)
    trade(client, world, side="sell", quantity=101)
    reader = as_caller(client, world.key_a)
    first = reader.get(f"/v1/accounts/{world.account}/lots?limit=2&symbol=AAPL").get_json()
    assert [lot["lot_id"] for lot in first["lots"]] == [1, 2]
    rest = reader.get(
        f"/v1/accounts/{world.account}/lots?limit=2&cursor={first['next_cursor']}"
    ).get_json()
    assert [lot["lot_id"] for lot in rest["lots"]] == [3, 4] and rest["next_cursor"] is None
    open_lots = reader.get(f"/v1/accounts/{world.account}/lots?open=true").get_json()["lots"]
    assert [(lot["lot_id"], lot["remaining"]) for lot in open_lots] == [(2, 1), (3, 2), (4, 2)]
    closures = reader.get(f"/v1/accounts/{world.account}/realized?limit=1").get_json()
    assert [c["lot_id"] for c in closures["closures"]] == [1]
    more = reader.get(
        f"/v1/accounts/{world.account}/realized?cursor={closures['next_cursor']}"
    ).get_json()
    assert [c["lot_id"] for c in more["closures"]] == [2]


def test_the_cash_history_merges_trades_and_movements(client: FlaskClient, world: World) -> None:
    move(client, world.account, "deposit", "5")
    trade(client, world, quantity=1)
    reader = as_caller(client, world.key_a)
    walked: list[dict[str, Any]] = []
    url = f"/v1/accounts/{world.account}/cash?limit=1"
    while url:
        page = reader.get(url).get_json()
        walked.extend(page["entries"])
        url = (
            page["next_cursor"]
            and f"/v1/accounts/{world.account}/cash?limit=1&cursor={page['next_cursor']}"
        )
    assert [(e["entry"], e["amount"]) for e in walked] == [
        ("trade", "-1000.00"), ("deposit", "5.00"), ("trade", "-10.00"),
    ]  # fmt: skip
    assert page["cash"] == "-1005.00"


@pytest.mark.parametrize(
    "fields",
    [
        {"side": "buy", "lots": [{"lot_id": 1, "quantity": 1}]},
        {"side": "sell", "lots": [{"lot_id": 1, "quantity": 2}]},
        {"side": "sell", "lots": [{"lot_id": 1, "quantity": 1}, {"lot_id": 1, "quantity": 0}]},
        {"side": "sell", "lots": []},
        {"fee": "-1"},
        {"fee": "0.001"},
    ],
)
def test_a_malformed_fee_or_selection_is_refused(
    client: FlaskClient, world: World, conn: Any, fields: dict[str, Any]
) -> None:
    before = ledger_snapshot(conn)
    assert_problem(trade(client, world, **fields), 422, "invalid_request")
    assert ledger_snapshot(conn) == before


def test_a_lot_that_cannot_serve_is_lot_not_available(
    client: FlaskClient, world: World, conn: Any
) -> None:
    before = ledger_snapshot(conn)
    response = trade(client, world, side="sell", lots=[{"lot_id": 7, "quantity": 1}])
    assert_problem(response, 409, "lot_not_available")
    assert ledger_snapshot(conn) == before


def test_a_batch_names_no_lots(client: FlaskClient, world: World) -> None:
    order = {"account_id": world.account, "symbol": "AAPL", "side": "sell", "quantity": 1,
             "price": "1", "lots": [{"lot_id": 1, "quantity": 1}]}  # fmt: skip
    response = as_caller(client, world.key_a).post("/v1/trades/batch", json={"trades": [order]})
    assert_problem(response, 422, "invalid_request")


def test_another_brokers_books_are_not_found(client: FlaskClient, world: World) -> None:
    reader = as_caller(client, world.key_b)
    for part in ("portfolio", "lots", "realized", "cash"):
        assert_problem(reader.get(f"/v1/accounts/{world.account}/{part}"), 404, "not_found")
