"""Domain errors. The stores raise them; ``order_api.main`` turns each into an
HTTP answer with a JSON ``detail`` that says what is wrong."""


class NotFound(LookupError):
    """An id in the URL names nothing (404)."""


class Conflict(Exception):
    """The request collides with what exists, e.g. a product id taken (409)."""


class Unprocessable(ValueError):
    """The body is well formed but refers to something that does not exist (422)."""
