"""Frozen features computed once (`data.feature_cache`): with tiny random pretrained backbones, the
loaders read tokens instead of decoding video, photos and audio, and give the embeddings (and the
training) the encoders give; a raw-input augmentation of a cached modality is refused; trainable
encoders are never cached; a store is rebuilt when its modality's preprocessing or files change."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch

from sensorium.errors import ConfigError
from sensorium.recipes.welding import reader
from sensorium.recipes.welding.datamodule import WeldingDataModule
from sensorium.recipes.welding.task import WeldingTask

PREPROCESS = {"num_frames": 4, "frame_size": 32, "num_images": 2, "image_size": 32, "n_mels": 16,
              "audio_frames": 32, "sensor_length": 64}


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> dict[str, str]:
    """Tiny random V-JEPA 2, DINOv2 and AST for PREPROCESS's shapes, in local directories."""
    from transformers import ASTConfig, ASTModel, Dinov2Config, Dinov2Model, VJEPA2Config, VJEPA2Model

    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    models = {
        "video": VJEPA2Model(VJEPA2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, crop_size=32,
                                          patch_size=16, frames_per_clip=4, tubelet_size=2, pred_hidden_size=32,
                                          pred_num_attention_heads=2, pred_num_hidden_layers=1)),
        "images": Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=64, image_size=32, patch_size=16)),
        "audio": ASTModel(ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    max_length=32, num_mel_bins=16)),
    }
    for modality, model in models.items():
        model.save_pretrained(root / modality)
    return {m: str(root / m) for m in models}


def _net(backbones, **changes) -> dict:
    net = {m: {"pretrained": path, "freeze": True} for m, path in backbones.items()}
    return {**net, "sensor": {"width": 16, "depth": 1, "heads": 2, "patch": 8}, "image_views": "mean",
            "fusion_dim": 32, "fusion_tokens": 2, "fusion_heads": 2, "embed_dim": 32, **changes}


def _task(backbones, seed: int = 0, **kwargs) -> WeldingTask:
    torch.manual_seed(seed)
    return WeldingTask(net=_net(backbones, **kwargs.pop("net", {})), optim={"lr": 1e-3}, **kwargs)


def _data(root, cache=None, **kwargs) -> WeldingDataModule:
    args = {"preprocess": PREPROCESS, "classes_per_batch": 3, "samples_per_class": 2, "val_fraction": 0.1,
            "eval_batch_size": 16, "num_workers": 0, "feature_cache": str(cache) if cache else None, **kwargs}
    return WeldingDataModule(str(root), **args)


def _embeddings(task: WeldingTask, datamodule: WeldingDataModule) -> torch.Tensor:
    """Every training sample's embedding (the k-NN bank's loader), outside a Trainer."""
    datamodule.setup("fit")
    datamodule.attach_frozen_encoders(task.frozen_encoders())
    task.eval()
    with torch.no_grad():
        return torch.cat([task(batch) for batch in datamodule.val_dataloader()[0]])


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(**{"max_epochs": 1, "accelerator": "cpu", "precision": "32-true", "logger": False,
                        "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                        "num_sanity_val_steps": 0, **kwargs})


@pytest.mark.parametrize(("image_views", "dtype", "atol"), [
    ("mean", "float32", 1e-5), ("tokens", "float32", 1e-5), ("concat", "float32", 1e-5), ("mean", "float16", 2e-3),
])
def test_cached_tokens_give_the_embeddings_the_encoders_give(tiny_data, backbones, tmp_path, image_views, dtype,
                                                             atol):
    net = {"image_views": image_views, "image_angles": 2}
    task = _task(backbones, net=net)
    raw = _embeddings(task, _data(tiny_data))
    cached_data = _data(tiny_data, tmp_path / "features", feature_dtype=dtype)
    cached = _embeddings(task, cached_data)
    assert cached.shape == raw.shape == (len(cached_data.datasets["train"]), 32)
    torch.testing.assert_close(cached, raw, atol=atol, rtol=0)
    batch = next(iter(cached_data.val_dataloader()[1]))
    assert {"video", "images", "audio"}.isdisjoint(batch) and "sensor" in batch  # the sensor is always raw
    assert batch["images_tokens"].shape[1:3] == (2, 5)  # per angle: (B, N, 2 x 2 patches + cls, D)
    assert batch["video_tokens"].dtype == getattr(torch, dtype)
    stores = cached_data.feature_stores()
    assert sorted(stores) == ["audio", "images", "video"]
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "features").iterdir()) == ["audio", "images", "video"]


def test_a_cached_loader_reads_tokens_and_never_decodes_video_photos_or_audio(tiny_data, backbones, tmp_path,
                                                                              monkeypatch):
    task, datamodule = _task(backbones), _data(tiny_data, tmp_path / "features")
    _embeddings(task, datamodule)  # builds the cache

    def refuse(*args, **kwargs):
        raise AssertionError("decoded a raw input")

    for name in ("read_video", "read_image", "read_audio"):
        monkeypatch.setattr(reader, name, refuse)
    again = _data(tiny_data, tmp_path / "features")  # a new run: the cache is found, not rebuilt
    again.setup("fit")
    again.attach_frozen_encoders(task.frozen_encoders())
    for loader in (again.train_dataloader(), *again.val_dataloader(), *again.test_dataloader()):
        for batch in loader:
            assert "video_tokens" in batch and "video" not in batch


def test_fitting_on_the_cache_trains_as_the_encoders_do(tiny_data, backbones, tmp_path):
    results = {}
    for cache in (None, tmp_path / "features"):
        task = _task(backbones)
        L.seed_everything(0, verbose=False)
        trainer = _trainer()
        trainer.fit(task, _data(tiny_data, cache, feature_dtype="float32"))
        results[cache is None] = ({k: float(v) for k, v in trainer.callback_metrics.items()},
                                  {k: v.clone() for k, v in task.state_dict().items()})
    assert len(list((tmp_path / "features").glob("*.zarr"))) == 3  # the cached fit read three stores
    (raw_metrics, raw_weights), (cached_metrics, cached_weights) = results[True], results[False]
    assert raw_metrics.keys() == cached_metrics.keys() and "val/knn_accuracy" in raw_metrics
    for key, value in raw_metrics.items():
        assert cached_metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for key, value in raw_weights.items():
        torch.testing.assert_close(cached_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_augmenting_a_cached_modalitys_raw_input_is_refused(tiny_data, backbones, tmp_path):
    task = _task(backbones, augment={"enabled": True})
    with pytest.raises(ConfigError, match=r"model.augment: augments the raw video, images, audio, which "
                                          r"data.feature_cache replaces .* cannot be used with the cache"):
        _trainer().fit(task, _data(tiny_data, tmp_path / "features"))
    assert not (tmp_path / "features").exists()  # refused before anything was computed
    # Only the sensor augmented (its encoder is trained, never cached): allowed.
    sensor_only = {"enabled": True, "flip": 0.0, "image_contrast": 0.0, "spec_time_mask": 0, "spec_freq_mask": 0}
    task = _task(backbones, augment=sensor_only)
    _trainer(limit_train_batches=1, limit_val_batches=1).fit(task, _data(tiny_data, tmp_path / "features"))
    assert task.augment.raw_modalities() == ("sensor",)
    # Without the cache, every augmentation runs as before.
    _trainer(limit_train_batches=1, limit_val_batches=1).fit(_task(backbones, augment={"enabled": True}),
                                                             _data(tiny_data))


def test_trainable_encoders_are_never_cached(tiny_data, backbones, tmp_path):
    trainable = _task(backbones, net={"video": {"pretrained": backbones["video"], "freeze": False}})
    assert sorted(trainable.frozen_encoders()) == ["audio", "images"]
    staged = WeldingTask(net=_net(backbones), optim={"lr": 1e-3, "unfreeze": [{"modules": ["net.encoders.audio"],
                                                                                 "epoch": 1}]})
    assert sorted(staged.frozen_encoders()) == ["images", "video"]  # unfrozen at epoch 1: its outputs change
    datamodule = _data(tiny_data, tmp_path / "features")
    datamodule.setup("fit")
    assert datamodule.attach_frozen_encoders(trainable.frozen_encoders()) == ("images", "audio")
    assert sorted(datamodule.feature_stores()) == ["audio", "images"]
    batch = next(iter(datamodule.train_dataloader()))
    assert "video" in batch and "video_tokens" not in batch and "audio_tokens" in batch
    # From-scratch encoders (the demo's): nothing to cache, the loaders read raw inputs.
    scratch = WeldingTask(net={"video": {"width": 16, "depth": 2}, "images": {"width": 16, "depth": 2},
                               "audio": {"width": 16, "depth": 2}, "sensor": {"width": 16, "depth": 1, "patch": 8},
                               "fusion_dim": 32, "fusion_tokens": 2, "fusion_heads": 2, "embed_dim": 32})
    assert scratch.frozen_encoders() == {}
    assert datamodule.attach_frozen_encoders(scratch.frozen_encoders()) == ()
    assert datamodule.feature_stores() == {} and "video" in next(iter(datamodule.train_dataloader()))


def test_a_store_is_rebuilt_when_its_preprocessing_or_files_change_and_only_that_one(tiny_data, backbones, tmp_path):
    task, cache = _task(backbones), tmp_path / "features"
    first = _data(tiny_data, cache)
    _embeddings(task, first)
    before = {m: (s.path, s.fingerprint) for m, s in first.feature_stores().items()}

    # More video frames: a video store of its own; the photos' and the audio's are reused as they are.
    frames = _data(tiny_data, cache, preprocess={**PREPROCESS, "num_frames": 8})
    _embeddings(task, frames)
    after = {m: (s.path, s.fingerprint) for m, s in frames.feature_stores().items()}
    assert after["video"][0] != before["video"][0] and before["video"][0].is_dir()
    assert after["images"] == before["images"] and after["audio"] == before["audio"]

    # A photo rewritten: the images store is rebuilt in place; video and audio stay.
    photo = first.records["train"][0].images[0]
    photo.write_bytes(photo.read_bytes())
    os.utime(photo, ns=(1, 1))
    touched = _data(tiny_data, cache)
    _embeddings(task, touched)
    now = {m: (s.path, s.fingerprint) for m, s in touched.feature_stores().items()}
    assert now["images"][0] == before["images"][0] and now["images"][1] != before["images"][1]
    assert now["video"] == before["video"] and now["audio"] == before["audio"]


def test_the_feature_dtype_is_checked_when_the_datamodule_is_built(tiny_data):
    with pytest.raises(ConfigError, match="data.feature_dtype: must be one of"):
        _data(tiny_data, feature_dtype="bfloat16")


def test_cached_tokens_skip_their_encoder(backbones):
    """The network consumes `<m>_tokens` as its encoder's output: images per angle, before the view
    aggregation, so every `image_views` works on cached tokens."""
    task = _task(backbones, net={"image_views": "max"}).eval()
    g = torch.Generator().manual_seed(0)
    batch = {"video": torch.rand(2, 4, 3, 32, 32, generator=g), "images": torch.rand(2, 2, 3, 32, 32, generator=g),
             "audio": torch.randn(2, 1, 16, 32, generator=g), "sensor": torch.randn(2, 64, 6, generator=g),
             "present": torch.ones(2, 4, dtype=torch.bool)}
    net = task.net
    with torch.no_grad():
        tokens = {"video_tokens": net.encoders["video"](batch["video"]),
                  "images_tokens": net.encoders["images"](batch["images"]).unflatten(1, (2, -1)),
                  "audio_tokens": net.encoders["audio"](batch["audio"])}
        cached = {k: v for k, v in batch.items() if k not in ("video", "images", "audio")} | tokens
        torch.testing.assert_close(net(cached).embedding, net(batch).embedding, rtol=0, atol=1e-6)
