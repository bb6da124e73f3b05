"""The API's OpenAPI document, as true as the answers: every route with its
error answers (``schemas.answers``), and links from what a POST creates to
what can be done with it, so that a client (or schemathesis's stateful phase)
can follow them."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from order_api.routes import orders
from order_api.schemas import OrderIn

ID = "$response.body#/id"
# (path, method, status) of an answer -> what can be done next with what it
# names: (path, method) of the operation, and the link's parameters or body.
LINKS: dict[tuple[str, str, str], list[tuple[str, str, dict[str, Any]]]] = {
    ("/products", "post", "201"): [
        (path, verb, {"parameters": {"product_id": ID}}) for path, verb in [
            ("/products/{product_id}", "get"), ("/products/{product_id}", "patch"),
            ("/products/{product_id}/restock", "post"), ("/products/{product_id}", "delete")]],
    ("/products", "get", "200"): [  # buy the first product listed
        ("/orders", "post", {"requestBody": {
            "lines": [{"product_id": "$response.body#/0/id", "quantity": 1}]}})],
    ("/customers", "post", "201"): [
        ("/customers/{customer_id}", "get", {"parameters": {"customer_id": ID}})],
    ("/orders", "post", "202"): [("/orders/{order_id}", "get", {"parameters": {"order_id": ID}})],
}


def document(app: FastAPI) -> None:
    """What FastAPI's own document lacks: POST /orders, a plain Starlette route
    (routes/orders.py), with the body schema it parses; the error answers'
    models; and the links from each created resource to the operations on it."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = default()
            _, definitions = models_json_schema(
                [(OrderIn, "validation")], ref_template="#/components/schemas/{model}"
            )
            spec["components"]["schemas"].update(definitions["$defs"])
            spec["paths"].setdefault("/orders", {})["post"] = orders.PLACE_ORDER_DOCS | {
                "responses": orders.PLACE_ORDER_DOCS["responses"] | _documented(
                    orders.PLACE_ORDER_ERRORS, spec)}
            _link(spec)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _documented(errors: dict[int | str, dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    """Error answers of ``schemas.answers`` as OpenAPI response objects, their
    models added to the document's schemas."""
    models = [info["model"] for info in errors.values()]
    _, definitions = models_json_schema([(m, "serialization") for m in models],
                                        ref_template="#/components/schemas/{model}")
    spec["components"]["schemas"].update(definitions.get("$defs", {}))
    return {str(code): {"description": info["description"], "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{info['model'].__name__}"}}}}
        for code, info in errors.items()}


def _link(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    for (path, method, status), targets in LINKS.items():
        paths[path][method]["responses"][status]["links"] = {
            paths[target][verb]["operationId"]: {
                "operationId": paths[target][verb]["operationId"], **link}
            for target, verb, link in targets
        }


def methods_of(app: FastAPI, path: str) -> list[str]:
    """The methods OpenAPI documents for the path a request named."""
    for template, operations in app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\{[^/}]+\}", "[^/]+", template), path):
            return sorted(method.upper() for method in operations)
    return []
