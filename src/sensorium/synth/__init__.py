"""Synthetic generators, one per recipe, each writing the recipe's real on-disk layout.

Each module exposes `main(argv) -> int`, called by `sensorium synth <recipe> ...`."""
