"""rgbpc: fused patch features of several frozen image encoders aligned point by point to a point
encoder's features (InfoNCE at each point's pixel), distilled into an RGB-only student, and measured
by point-to-patch retrieval and by one action head fed each feature source in turn.

reader.py       the layout (rgb/, pc/, actions/, feature packs), its constants, frames, the Dataset
datamodule.py   episode splits and loaders; RgbpcDataSpec
model.py        AlignNet, the RGB-only StudentCNN (and load_student, its export read back), ActionHead
metrics.py      retrieval (val/point_top1 picks best.ckpt) and the test's action-head test, depth
                probe and similarity histogram (below the task, which computes them)
task.py         AlignTask: point and set InfoNCE, retrieval validation, the held-out evaluation
distil_task.py  DistilTask: the RGB-only student distilled from an AlignTask checkpoint
evaluate.py     `sensorium eval rgbpc`
report.py       the report's retrieval, action-head, fusion and depth-probe sections
demo.py         `sensorium demo rgbpc`
synth.py        `sensorium synth rgbpc`: synthetic tabletop episodes in the real layout
prepare.py      `sensorium prepare rgbpc`: the design note's .pt packs -> this layout
encoders.py     the frozen image encoders (built in, or a local transformers backbone), shape8's
                pretraining on views rendered by synth.py
extract.py      `sensorium extract rgbpc`: encoders -> zarr feature packs
verify.py       `sensorium verify rgbpc`: the layout and its packs checked before training
embed.py        `sensorium embed rgbpc`: the student's features as packs
configs/        demo, paper, distil, paper_distil
"""
