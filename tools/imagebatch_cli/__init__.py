"""The laptop side of imagebatch: CLI, local AWS, local model serving."""
