"""`load_stage`: a trained stage (the VAE task or the DiT task) rebuilt from its checkpoint through
the engine's one loader (`sensorium.engine.checkpoint.load_task`), for extraction, sampling and the
evaluation. It sits above both task files, which know nothing of each other."""

from __future__ import annotations

from pathlib import Path

from sensorium.engine.checkpoint import load_task
from sensorium.errors import ConfigError
from sensorium.recipes.doppler.dit_task import DopplerDiTTask
from sensorium.recipes.doppler.task import DopplerVAETask

_STAGE_KEYS = {DopplerVAETask: ("image_size", "vae"), DopplerDiTTask: ("latent_shape", "DiT")}


def load_stage(path: str | Path | None, cls: type[DopplerVAETask] | type[DopplerDiTTask]):
    """A trained stage rebuilt from its checkpoint (weights_only), in eval mode. A missing file, a
    checkpoint of the other stage or of another recipe, or weights that do not fit the network its
    hyperparameters describe are errors naming the file: never a network with random weights."""
    key, name = _STAGE_KEYS[cls]
    if path is None:
        raise ConfigError("--ckpt", f"no {name} checkpoint given: train the stage first "
                                    "(`sensorium pipeline doppler`)")

    def built_for_use(hparams: dict) -> dict:
        if hparams.get(key) is None:
            other = "DiT" if "latent_shape" in hparams else "VAE" if "image_size" in hparams else "non-doppler"
            raise ConfigError(path, f"is a {other} checkpoint, not a trained doppler {name} checkpoint")
        if cls is not DopplerVAETask:
            return hparams
        # Extraction and sampling need the autoencoder only: the frozen encoder (maybe a DINOv2 in a
        # directory of the training machine), the VF projection and the discriminator are not built.
        return {**hparams, "vf": {**hparams["vf"], "weight": 0.0}, "loss": {**hparams["loss"], "disc_weight": 0.0}}

    training_only = ("foundation.", "projection.", "discriminator.") if cls is DopplerVAETask else ()
    return load_task(path, cls, built_for_use, training_only)
