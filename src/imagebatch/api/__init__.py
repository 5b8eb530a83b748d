"""The read-only query API: routes (routes.py, a Powertools resolver), response models
(responses.py) and its OpenAPI document (openapi.py)."""
