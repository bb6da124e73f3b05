"""Domain errors. The stores raise them; ``order_api.main`` turns each into an
HTTP answer with a JSON ``detail`` that says what is wrong."""


class NotFound(LookupError):
    """An id in the URL names nothing (404)."""


class Conflict(Exception):
    """The request collides with what exists, e.g. a product id taken (409)."""


class Unprocessable(ValueError):
    """The body is well formed but refers to something that does not exist (422)."""


class Unauthorized(Exception):
    """No token, or one that is unknown, revoked or expired (401)."""

    def __init__(self, detail: str, *, invalid_token: bool = False) -> None:
        super().__init__(detail)
        self.invalid_token = invalid_token


class Forbidden(Exception):
    """A valid token whose role or customer may not do this (403)."""


class OutcomeUnknown(Exception):
    """The order's script may have reached Redis, and no answer came: it may
    have been placed, or may still be (504). The client must not simply try
    again; it can look the order up, or resend with the same Idempotency-Key."""

    def __init__(self, order_id: str, cause: str) -> None:
        super().__init__(cause)
        self.order_id = order_id


class Unavailable(Exception):
    """The data store cannot serve the request now, for the reason given (503)."""
