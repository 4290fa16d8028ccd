"""`sensorium demo <recipe> --out DIR`: synth -> (prepare) -> fit -> eval -> report at demo scale,
measured end to end and summarised in DIR/summary.json (see DESIGN.md for its keys)."""
