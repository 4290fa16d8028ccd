"""tactile: MAE pretraining on tactile image sequences, a static task (one frame) and a dynamic task
(three frames reconstructed, the fourth predicted), joint or alternating (the TacQuad layout).

reader.py      the TacQuad layout and the generic index CSV, the 4-frame window contract, the Dataset
datamodule.py  object-level splits and loaders (the task needs nothing from the data: no DataSpec)
transforms.py  batch augmentation, one draw per sequence, and normalisation
model.py       TactileMAE (static + dynamic tasks) on the generic pieces of `sensorium.models.mae`
metrics.py     what validation and test measure: frame-4 prediction vs copying frame 3, masked PSNR,
               frozen features, the picture grid (below the task: val/pred_mse_ratio picks best.ckpt)
task.py        TactileTask, the LightningModule: the joint / alternating losses, validation and test
evaluate.py    `sensorium eval tactile`
report.py      the recipe's sections of report.html
demo.py        `sensorium demo tactile`
synth.py       `sensorium synth tactile`: synthetic TacQuad data
configs/       demo, paper and one YAML per training mode
"""
