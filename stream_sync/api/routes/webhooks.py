"""Operator endpoints for webhooks: register receivers, read the delivery log, redeliver.

Admins only. The signing secret is in the creation response and nowhere else.
Delivery ids are 64-bit, so their paths take larger numbers than other row ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from ...db.models import utcnow
from ...webhooks import deliveries, endpoints
from ...webhooks.deliveries import DeliveryStatus
from ...webhooks.events import WebhookEvent
from ..deps import AdminUser, Context, RowId

router = APIRouter(prefix="/api", tags=["webhooks"])
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class EndpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    description: str | None
    events: list[WebhookEvent]
    enabled: bool
    created_at: datetime


class EndpointCreatedOut(EndpointOut):
    secret: str = Field(description="Verify signatures with it; it is not shown again.")


class EndpointIn(BaseModel):
    url: str = Field(min_length=1, max_length=endpoints.URL_MAX)
    events: list[WebhookEvent] | None = Field(
        None, min_length=1, max_length=32, description="Default: every event type."
    )
    secret: str | None = Field(
        None,
        min_length=endpoints.SECRET_MIN,
        max_length=endpoints.SECRET_MAX,
        description="Default: a new random secret.",
    )
    description: str | None = Field(None, max_length=endpoints.DESCRIPTION_MAX)
    enabled: bool = True


class EndpointUpdateIn(BaseModel):
    enabled: bool


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    endpoint_id: int
    event_id: str
    type: str
    channel_id: int | None
    seq: int | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryDetailOut(DeliveryOut):
    payload: dict[str, Any] | None = Field(description="The JSON body sent on every attempt.")


@router.get("/webhooks")
async def list_endpoints(principal: AdminUser, context: Context) -> list[EndpointOut]:
    async with context.sessions() as session:
        return [EndpointOut.model_validate(e) for e in await endpoints.list_endpoints(session)]


@router.post("/webhooks", status_code=status.HTTP_201_CREATED)
async def create_endpoint(
    body: EndpointIn, principal: AdminUser, context: Context
) -> EndpointCreatedOut:
    async with context.sessions() as session:
        created = await endpoints.create_endpoint(
            session,
            secrets=context.secrets,
            url=body.url,
            actor=principal.actor,
            events=None if body.events is None else [str(event) for event in body.events],
            secret=body.secret,
            description=body.description,
            enabled=body.enabled,
        )
    shown = EndpointOut.model_validate(created.endpoint).model_dump()
    return EndpointCreatedOut(**shown, secret=created.secret)


@router.get("/webhooks/{endpoint_id}")
async def get_endpoint(endpoint_id: RowId, principal: AdminUser, context: Context) -> EndpointOut:
    async with context.sessions() as session:
        return EndpointOut.model_validate(
            await endpoints.get_endpoint(session, endpoint_id=endpoint_id)
        )


@router.patch("/webhooks/{endpoint_id}")
async def update_endpoint(
    endpoint_id: RowId, body: EndpointUpdateIn, principal: AdminUser, context: Context
) -> EndpointOut:
    """Pause or resume: a paused endpoint gets no new events; its pending ones wait."""
    async with context.sessions() as session:
        return EndpointOut.model_validate(
            await endpoints.set_enabled(
                session, endpoint_id=endpoint_id, enabled=body.enabled, actor=principal.actor
            )
        )


@router.delete("/webhooks/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_endpoint(endpoint_id: RowId, principal: AdminUser, context: Context) -> None:
    """Removes the endpoint and its delivery log."""
    async with context.sessions() as session:
        await endpoints.delete_endpoint(session, endpoint_id=endpoint_id, actor=principal.actor)


@router.get("/webhooks/{endpoint_id}/deliveries")
async def list_deliveries(
    endpoint_id: RowId,
    principal: AdminUser,
    context: Context,
    state: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    limit: int = Query(100, ge=1, le=deliveries.LIST_MAX),
    before: int | None = Query(None, ge=1, le=2**63 - 1),
) -> list[DeliveryOut]:
    """Newest first; page with ``before`` (the last id of the previous page)."""
    async with context.sessions() as session:
        rows = await deliveries.list_deliveries(
            session, endpoint_id=endpoint_id, status=state, limit=limit, before_id=before
        )
    return [DeliveryOut.model_validate(row) for row in rows]


@router.get("/webhook-deliveries/{delivery_id}")
async def get_delivery(
    delivery_id: DeliveryId, principal: AdminUser, context: Context
) -> DeliveryDetailOut:
    async with context.sessions() as session:
        row = await deliveries.get_delivery(session, delivery_id=delivery_id)
    return DeliveryDetailOut.model_validate(row)


@router.post("/webhook-deliveries/{delivery_id}/redeliver")
async def redeliver(delivery_id: DeliveryId, principal: AdminUser, context: Context) -> DeliveryOut:
    """Send it again within a second: same event id and body, a fresh day of retries."""
    async with context.sessions() as session:
        row = await deliveries.redeliver(
            session,
            delivery_id=delivery_id,
            now=utcnow(),
            policy=context.settings.webhook_policy(),
            actor=principal.actor,
        )
    return DeliveryOut.model_validate(row)
