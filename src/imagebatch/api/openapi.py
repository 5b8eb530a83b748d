"""The query API's OpenAPI document, generated from the routes and published as
schemas/openapi.json; a test keeps the file current."""

from __future__ import annotations

import json
from typing import Any

from imagebatch.api.routes import app

TITLE = "imagebatch query API"
VERSION = "1.0.0"
OPENAPI_FILE = "openapi.json"


def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(
            title=TITLE,
            version=VERSION,
            description="Read the imagebatch cost ledger. Every request is signed with SigV4 "
            "(API Gateway AWS_IAM authorization). Money is integer micro-dollars.",
        )
    )
    # Powertools declares `msg` required in ValidationError but its 422 bodies carry only
    # `loc` and `type` (schemathesis found it): publish what the handler really sends.
    validation_error = document["components"]["schemas"]["ValidationError"]
    validation_error["required"] = [n for n in validation_error["required"] if n != "msg"]
    # API Gateway's IAM authorization: requests carry a SigV4 Authorization header.
    document.setdefault("components", {})["securitySchemes"] = {
        "sigv4": {
            "type": "apiKey",
            "name": "Authorization",
            "in": "header",
            "x-amazon-apigateway-authtype": "awsSigv4",
        }
    }
    document["security"] = [{"sigv4": []}]
    return document


def openapi_text() -> str:
    """The exact text committed as schemas/openapi.json, so a test can tell when it drifts."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
