"""welding: a fused embedding of process video, post-weld photos, audio and sensor traces, trained
with supervised contrastive loss and measured by weighted k-NN on TEST (the Intel Robotic Welding
Multimodal Dataset layout).

reader.py: the layout (manifest.csv + per-run files), its constants, the Dataset
datamodule.py: the val split carved from TRAIN, class-balanced batches, loaders
transforms.py: batch augmentation
model.py: the four-encoder fusion network
metrics.py: the TEST k-NN report (all modalities and each alone) and its eval files, which the
    task's test hooks produce (below the task)
task.py: WeldingTask (SupCon training, k-NN validation, the TEST embeddings)
evaluate.py: `sensorium eval knn`
report.py: the report's k-NN, modality and embedding sections
demo.py: `sensorium demo welding`
synth.py: `sensorium synth welding` (synthetic runs in the real layout)
configs/: demo.yaml, paper.yaml
"""
