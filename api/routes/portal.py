"""The portal's home page: the customer table and the summary cards, read from projections."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.as_of import AsOf
from api.deps import After, ResellerAdmin, ServicesDep
from api.schemas import CustomerRowOut, CustomerTableOut, SummaryOut
from commands.errors import ProjectionLagging
from projections import as_of as as_of_view
from projections import customer_table, summary
from projections.as_of import queries as as_of_queries
from projections.customer_table import queries
from service.bootstrap import Services

router = APIRouter(prefix="/v1/resellers/{org_id}", tags=["portal"])

READ_YOUR_WRITES_SECONDS = 5.0


def _caught_up(services: Services, after: int | None, view: str) -> None:
    if after and not services.read_side.wait_for(after, [view], READ_YOUR_WRITES_SECONDS):
        raise ProjectionLagging(f"the {view.replace('_', ' ')} has not reached position {after} yet; retry shortly")


@router.get("/subscriptions", response_model=CustomerTableOut,
            summary="The customer table: subscriptions that have not expired, filtered, sorted and paged",
            description="The portal's customer table, one row per subscription that has not expired. `total` "
                        "counts the rows matching the filters when the first page is read; the `next_cursor` of "
                        "each page carries it on, so every page of one listing agrees. `?after=` waits (up to 5 s) "
                        "for the table to include your last change (503 `projection_lagging` if it has not); "
                        "`?as_of=` answers as the table was at that instant (in the future: 422). 422 "
                        "`validation_error` for an unknown status or sort, a limit out of range or a cursor of "
                        "another listing.")
def customer_rows(
    access: ResellerAdmin,
    services: ServicesDep,
    after: After,
    status: Annotated[str | None, Query(description="active, pending, canceled or past_due")] = None,
    plan: Annotated[str | None, Query(max_length=50)] = None,
    q: Annotated[str | None, Query(max_length=200, description="customer contains (case-insensitive)")] = None,
    sort: Annotated[str, Query(description="customer, created_at, current_period_start, current_period_end, "
                                           "seats, status or plan; prefix - for descending")] = "customer",
    limit: Annotated[int, Query(description="1 to 200")] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    as_of: AsOf = None,
) -> CustomerTableOut:
    view = customer_table.NAME if as_of is None else as_of_view.NAME
    _caught_up(services, after, view)
    found = (queries.page(services.read_side.db(view), services.cursors,
                          reseller_org_id=access.org_id, status=status, plan=plan, q=q or None, sort=sort,
                          limit=limit, cursor=cursor) if as_of is None else
             as_of_queries.page(services.read_side.db(view), services.cursors, reseller_org_id=access.org_id,
                                as_of=as_of, status=status, plan=plan, q=q or None, sort=sort, limit=limit,
                                cursor=cursor))
    return CustomerTableOut(items=[CustomerRowOut(**row) for row in found.items], next_cursor=found.next_cursor,
                            total=found.total)


@router.get("/summary", response_model=SummaryOut, summary="The summary cards over subscriptions not expired")
def summary_cards(access: ResellerAdmin, services: ServicesDep, after: After, as_of: AsOf = None) -> SummaryOut:
    """The portal's summary cards over the reseller's subscriptions that have not expired: customers, active, canceled
    (ending at their period's end) and seats in all. `?after=` waits (up to 5 s) for the cards to include your
    last change (503 `projection_lagging` if they have not); `?as_of=` answers as they were at that instant (in
    the future: 422)."""
    if as_of is not None:
        _caught_up(services, after, as_of_view.NAME)
        return SummaryOut(**vars(as_of_queries.cards(services.read_side.db(as_of_view.NAME), access.org_id, as_of)))
    _caught_up(services, after, summary.NAME)
    return SummaryOut(**vars(summary.cards(services.read_side.db(summary.NAME), access.org_id)))
