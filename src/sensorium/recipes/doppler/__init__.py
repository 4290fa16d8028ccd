"""doppler: a user-conditioned VAE and a diffusion transformer generating micro-Doppler gait
spectrograms, measured by whether the samples are classified as their user and by the accuracy a
user classifier gains from them, against classic augmentation (the Kaggle `ID_k` folder layout).

reader.py: the `ID_k` layout, split.csv, the prepared and latents folders, the Datasets, the pixel
    scales (uint8 <-> [0, 1] <-> [-1, 1])
datamodule.py: the image and latent DataModules; DopplerImageSpec, DopplerLatentSpec
transforms.py: the classic augmentation (shift, crop, SpecAugment, mixup) and the evaluator's blur
metrics.py: psnr, the VAE's validation metric (below the task: val/psnr picks best.ckpt); gain_per_user
task.py: DopplerVAETask, stage 1 (the user-conditioned VA-VAE)
dit_task.py: DopplerDiTTask, stage 3 (the class-conditional DiT, rectified flow, EMA)
evaluate.py: the generation metrics and `sensorium eval doppler`
report.py: the report's VAE and generation sections
demo.py: `sensorium demo doppler`
synth.py: `sensorium synth doppler` (simulated walking people in the `ID_k` layout, users.csv)
prepare.py: `sensorium prepare doppler` (checks a dataset, splits it per user into train / val / test)
extract.py: `sensorium extract doppler`, stage 2 (the latents of every prepared image)
sample.py: `sensorium sample doppler` and the Generator (a DiT and the VAE that decodes it)
pipeline.py: `sensorium pipeline doppler` (every stage, finished ones reused)
stages.py: load_stage, either task from its checkpoint (above both task files)
latents.py: the latents' channel statistics and normalisation, file digests (below both tasks)
foundation.py: the frozen encoder of the VAE's VF alignment (DINOv2, or a random conv net)
classifier.py: the evaluation's user classifier and its training
physics.py: gait parameters measured back from spectrograms (the physical fidelity)
figures.py: the image grids (the VAE's reconstructions, real vs generated, the CFG sweep), the gain bars
configs/: demo.yaml, paper.yaml (the VAE), dit_demo.yaml, dit_paper.yaml (the DiT)
"""
