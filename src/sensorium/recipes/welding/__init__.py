"""welding: a fused embedding of process video, post-weld photos, audio and sensor traces, trained
with supervised contrastive loss and measured by weighted k-NN on TEST (the Intel Robotic Welding
Multimodal Dataset layout).

reader.py (manifest + files), transforms.py (batch augmentation), datamodule.py, synth.py, model.py
(the four-encoder fusion net), task.py, evaluate.py (`sensorium eval knn`), report.py, demo.py,
configs/{demo,paper}.yaml.
"""
