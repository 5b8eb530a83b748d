"""The prompt manifest: its schema (batch settings, items, JSON Schema export) and the
streaming reader that turns a JSONL or CSV file into valid items and line errors."""
