"""cardiac: a VecSet autoencoder of multi-class cardiac shapes, one SDF per structure, measured by
per-class IoU and Chamfer distance (NIfTI label volumes, prepared into SDF samples).

reader.py: the layout (labels.json, <case>.npz, split.csv), CARDIAC_STRUCTURES, the Dataset
datamodule.py: splits and loaders; CardiacDataSpec
transforms.py: augmentation (one random rotation and scale per training sample)
task.py: CardiacTask (the shared VecSetAutoEncoder and SdfLoss; val IoU; test meshes, Chamfer)
evaluate.py: `sensorium eval cardiac` and the mean-shape baseline
report.py: the report's shape sections
demo.py: `sensorium demo cardiac`
synth.py: `sensorium synth cardiac` (synthetic NIfTI label volumes)
prepare.py: `sensorium prepare cardiac` (label volumes -> per-case npz of surface and SDF samples)
configs/: demo.yaml, paper.yaml
"""
