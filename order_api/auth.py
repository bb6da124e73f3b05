"""Who is calling: the bearer token of each request, checked against Redis.

Routes declare what they need: ``Caller`` (any valid token) or ``Operator``;
``own_customer`` holds a customer token to its own customer, and ``orderer``
says whom an order is for. Reading the catalog and the health checks need
nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from access.tokens import Principal, verify
from order_api.errors import Forbidden, Unauthorized, Unprocessable

# With API_AUTH=false (loopback only): whoever calls may do anything, and
# names the customer of an order in its body.
TRUSTED = Principal("auth-off", "operator")

# Documents the scheme in OpenAPI (the docs' Authorize button); the checking
# is ours, so that every refusal is the API's own JSON answer.
bearer = HTTPBearer(
    auto_error=False, scheme_name="token",
    description="A token from `shopctl token create` (the demo tokens are in .data/tokens/).",
)


async def authenticate(request: Request) -> Principal:
    """The principal of the request's bearer token, or ``Unauthorized``."""
    app = request.app
    if not app.state.settings.api_auth:
        return TRUSTED
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("this route needs a token: send 'Authorization: Bearer <token>' "
                           "(create one with `shopctl token create`)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must read 'Bearer <token>'")
    principal = await verify(app.state.intake, app.state.topology, token.strip())
    if principal is None:
        raise Unauthorized("the token is unknown, revoked or expired", invalid_token=True)
    return principal


async def caller(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    return await authenticate(request)


Caller = Annotated[Principal, Depends(caller)]


async def operator(principal: Caller) -> Principal:
    if not principal.is_operator:
        raise Forbidden("only an operator may do this: use an operator token "
                        "(shopctl token create --role operator)")
    return principal


Operator = Annotated[Principal, Depends(operator)]


def own_customer(principal: Principal, customer_id: str | None) -> str | None:
    """The customer a request may act for: a customer token's own (another
    one named is ``Forbidden``); for an operator, whichever it names."""
    if principal.is_operator:
        return customer_id
    if customer_id is not None and customer_id != principal.customer_id:
        raise Forbidden(f"this token acts for customer {principal.customer_id!r}, "
                        f"not {customer_id!r}")
    return principal.customer_id


def orderer(principal: Principal, customer_id: str | None) -> str:
    """Who an order is placed for: a customer token's own customer; with
    authentication off, the one the body names. An operator places none: only
    a customer spends its own money."""
    if principal is TRUSTED:
        if customer_id is None:
            raise Unprocessable("customer_id: with API_AUTH=false the body names its customer")
        return customer_id
    if principal.is_operator:
        raise Forbidden("an order is placed with its customer's own token "
                        "(shopctl token create --customer ID), not an operator's")
    own = own_customer(principal, customer_id)
    assert own is not None
    return own
