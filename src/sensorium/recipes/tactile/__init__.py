"""tactile: MAE pretraining on tactile image sequences, a static task (one frame) and a dynamic task
(three frames reconstructed, the fourth predicted), joint or alternating (the TacQuad layout).

reader.py (TacQuad and index-CSV windows, the dataset, augmentation), datamodule.py, synth.py,
task.py, evaluate.py (frame-4 prediction, probes, grids), report.py, demo.py, configs/ (demo, paper
and one YAML per training mode).
"""
