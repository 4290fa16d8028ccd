"""rgbpc: fused patch features of several frozen image encoders aligned point by point to a point
encoder's features (InfoNCE at each point's pixel), distilled into an RGB-only student, and measured
by point-to-patch retrieval and by one action head fed each feature source in turn.

reader.py (the on-disk layout), synth.py, prepare.py (the design note's .pt packs -> this layout),
extract.py (frozen encoders -> zarr feature packs, `sensorium.data.packs`), verify.py,
datamodule.py, model.py, task.py (AlignTask, DistilTask), evaluate.py, embed.py, report.py,
demo.py, configs/{demo,distil,paper,paper_distil}.yaml.
"""
