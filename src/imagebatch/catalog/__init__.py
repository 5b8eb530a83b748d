"""Scheduled product catalogs: products, prompt templates and variants (`products`), and the
nightly run that writes a manifest of what changed and publishes finished images (`nightly`)."""
