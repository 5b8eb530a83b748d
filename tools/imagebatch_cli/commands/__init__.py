"""The commands of the imagebatch CLI, one module per command group (app.py wires them)."""
