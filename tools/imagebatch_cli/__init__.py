"""The laptop side of imagebatch: the CLI. The local AWS it runs is imagebatch_local, below it."""
