"""The read-only query API: routes (Powertools resolver), response models and its OpenAPI
document."""
