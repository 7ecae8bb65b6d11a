"""The bare endpoint `bench/http.py` compares the ledger with (issue 10, goal 1): a FastAPI app whose sync POST
route validates the ledger's create body with the ledger's own pydantic model and INSERTs it as one row into
PostgreSQL through a psycopg pool; a second route UPDATEs that row's seats by id (the "seat increase").

    python -m bench.bare_app --port PORT [--workers N]     (BARE_DATABASE_URL, BARE_DATABASE_SCHEMA)

It runs under uvicorn with the keywords `ledger serve` uses (``api.server.uvicorn_options`` of the default
settings): the same HTTP protocol class, keep-alive and connection bounds, no access log.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID, uuid4

from fastapi import FastAPI, HTTPException
from psycopg_pool import ConnectionPool
from pydantic import BaseModel

from api.schemas import CreateSubscriptionIn, SeatsIn

POOL_SIZE = 4
"""As the ledger's event store pool (``POSTGRES_POOL_SIZE``)."""
TABLE = "bare_subscriptions"


def _pool() -> ConnectionPool:
    schema = os.environ.get("BARE_DATABASE_SCHEMA", "public")
    return ConnectionPool(os.environ["BARE_DATABASE_URL"], min_size=POOL_SIZE, max_size=POOL_SIZE, open=True,
                          kwargs={"options": f"-c search_path={schema}"}, name="bare")


def create_table() -> None:
    with _pool() as pool, pool.connection() as connection:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id uuid PRIMARY KEY, reseller_id text NOT NULL, "
                           "plan text NOT NULL, billing_cycle text NOT NULL, seats int, organization_name text, "
                           "admin_email text, end_user_email text, display_name text, quote_id text, "
                           "created_at timestamptz NOT NULL DEFAULT now())")


class Created(BaseModel):
    id: UUID
    seats: int | None


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = _pool()
    try:
        yield
    finally:
        app.state.pool.close()


app = FastAPI(lifespan=_lifespan)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/resellers/{org_id}/subscriptions", status_code=201, response_model=Created)
def create(org_id: str, body: CreateSubscriptionIn) -> Created:
    new_id = uuid4()
    with app.state.pool.connection() as connection:
        connection.execute(
            f"INSERT INTO {TABLE} (id, reseller_id, plan, billing_cycle, seats, organization_name, admin_email, "
            "end_user_email, display_name, quote_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (new_id, org_id, body.plan, body.billing_cycle, body.seats, body.organization_name,
             str(body.admin_email) if body.admin_email else None,
             str(body.end_user_email) if body.end_user_email else None, body.display_name, body.quote_id),
            prepare=True)
    return Created(id=new_id, seats=body.seats)


@app.post("/v1/resellers/{org_id}/subscriptions/{id}/seats", response_model=Created)
def change_seats(org_id: str, id: UUID, body: SeatsIn) -> Created:
    with app.state.pool.connection() as connection:
        changed = connection.execute(f"UPDATE {TABLE} SET seats = %s WHERE id = %s AND reseller_id = %s",
                                     (body.seats, id, org_id), prepare=True).rowcount
    if not changed:
        raise HTTPException(404, "not found")
    return Created(id=id, seats=body.seats)


def main() -> None:
    import uvicorn

    from api.server import uvicorn_options
    from service.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    create_table()
    uvicorn.run("bench.bare_app:app", host="127.0.0.1", port=args.port, workers=args.workers,
                **uvicorn_options(Settings(_env_file=None)))  # type: ignore[call-arg]


if __name__ == "__main__":
    main()
