"""Lightning plug-ins of the engine: atomic checkpoint I/O and the export of final weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from sensorium.engine.checkpoint import atomic_torch_save, export_model


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file and are renamed over the destination, so an interrupted
    write never leaves a corrupt `last.ckpt` (the welding note lost runs to a full disk)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_torch_save(checkpoint, path)


class ExportFinalWeights(Callback):
    """At the end of fit, write RUN/export/model.safetensors and config.json (rank 0 only)."""

    def __init__(self, export_dir: str | Path):
        super().__init__()
        self.export_dir = Path(export_dir)

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        config = dict(pl_module.export_config())
        config["epoch"] = trainer.current_epoch
        config["global_step"] = trainer.global_step
        path = export_model(pl_module.export_module(), config, self.export_dir)
        print(f"[sensorium] exported final weights to {path}")
