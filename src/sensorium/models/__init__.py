"""Networks: pure functions of their inputs; they know nothing of losses, files or Lightning.
One file per model family, each ending in size factories and a plain dict of sizes."""
