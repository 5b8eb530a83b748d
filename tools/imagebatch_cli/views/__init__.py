"""What the CLI prints: rich tables, the cost report, the estimate chart."""
