"""The prompt manifest: its schema (schema.py: batch settings, items, JSON Schema export), the
checks each line passes (checks.py) and the streaming reader that turns a JSONL or CSV file
into valid items and line errors (reader.py)."""
