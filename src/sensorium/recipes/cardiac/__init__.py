"""cardiac: a VecSet autoencoder of multi-class cardiac shapes, one SDF per structure, measured by
per-class IoU and Chamfer distance (NIfTI label volumes, prepared into SDF samples).

prepare.py (label volumes -> per-case npz of surface and SDF samples, the split), datamodule.py,
synth.py, task.py, evaluate.py, report.py, demo.py, configs/{demo,paper}.yaml.
"""
