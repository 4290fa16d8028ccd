from dataclasses import replace

import pytest
import torch
import yaml

from sensorium.config import as_config
from sensorium.errors import ConfigError
from sensorium.models.encoders import EncoderConfig, PretrainedEncoder
from sensorium.recipes import resolve_config
from sensorium.recipes.welding.model import WeldingNet, WeldingNetConfig, with_run_relative
from sensorium.recipes.welding.reader import MODALITIES
from sensorium.recipes.welding.task import drop_modalities


def _batch(B=4, T=4, N=2, S=32, mels=16, frames=32, L=64, C=6):
    g = torch.Generator().manual_seed(0)
    return {"video": torch.rand(B, T, 3, S, S, generator=g), "images": torch.rand(B, N, 3, S, S, generator=g),
            "audio": torch.randn(B, 1, mels, frames, generator=g), "sensor": torch.randn(B, L, C, generator=g),
            "present": torch.ones(B, 4, dtype=torch.bool)}


def _tiny() -> WeldingNetConfig:
    small = EncoderConfig(width=16, depth=2, heads=2)
    return WeldingNetConfig(video=small, images=small, audio=small, sensor=EncoderConfig(width=16, depth=1, heads=2),
                            fusion_dim=32, fusion_tokens=2, fusion_heads=2, embed_dim=24)


def _demo() -> WeldingNetConfig:
    """The demo YAML's network (the YAML is the one source of its sizes)."""
    config = yaml.safe_load(resolve_config("welding/demo").read_text())
    return as_config(WeldingNetConfig, config["model"]["init_args"]["net"])


@pytest.mark.parametrize("config", [_tiny(), _demo()], ids=["tiny", "demo"])
def test_embedding_shape_norm_and_finiteness(config):
    net = WeldingNet(config).eval()
    out = net(_batch())
    assert out.embedding.shape == (4, config.embed_dim)
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.isfinite(out.features).all()
    assert out.modality_weights.shape == (4, config.fusion_tokens, 4)
    assert torch.allclose(out.modality_weights.sum(-1), torch.ones(4, config.fusion_tokens))


def test_missing_modality_is_masked_out():
    torch.manual_seed(0)
    net = WeldingNet(_tiny()).eval()
    batch = _batch()
    batch["present"][:, MODALITIES.index("audio")] = False
    out = net(batch)
    other = dict(batch, audio=torch.randn_like(batch["audio"]) * 10)  # whatever the missing input holds
    assert torch.allclose(out.embedding, net(other).embedding, atol=1e-6)
    assert (out.modality_weights[..., MODALITIES.index("audio")] == 0).all()
    assert not torch.allclose(out.embedding, net(_batch()).embedding)  # and it does matter when present


def test_no_modality_present_stays_finite():
    net = WeldingNet(_tiny()).eval()
    batch = _batch()
    batch["present"][:] = False
    out = net(batch)
    assert torch.isfinite(out.embedding).all() and (out.modality_weights == 0).all()


def test_modality_dropout_keeps_at_least_one_present_modality():
    torch.manual_seed(0)
    present = torch.rand(1000, 4) > 0.3
    present[0] = False  # a sample with nothing stays with nothing
    kept = drop_modalities(present, p=0.9)
    assert not (kept & ~present).any()  # never switches a missing modality on
    assert kept[present.any(1)].any(1).all()
    assert not kept[0].any()
    assert 0.05 < kept.float().sum() / present.float().sum() < 0.4  # most are dropped at p=0.9
    assert torch.equal(drop_modalities(present, 0.0), present)


def test_gradients_reach_every_encoder():
    net = WeldingNet(_tiny())
    net(_batch()).embedding.sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []


def _save_tiny_backbones(root):
    from transformers import ASTConfig, ASTModel, Dinov2Config, Dinov2Model, VJEPA2Config, VJEPA2Model

    VJEPA2Model(VJEPA2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, crop_size=32, patch_size=16,
                             frames_per_clip=4, tubelet_size=2, pred_hidden_size=32, pred_num_attention_heads=2,
                             pred_num_hidden_layers=1)).save_pretrained(root / "vjepa2")
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=32, patch_size=16)).save_pretrained(root / "dinov2")
    ASTModel(ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       max_length=32, num_mel_bins=16)).save_pretrained(root / "ast")


def test_pretrained_backbones_load_from_local_directories_and_stay_frozen(tmp_path):
    _save_tiny_backbones(tmp_path)
    config = _tiny()
    config.video = EncoderConfig(pretrained=str(tmp_path / "vjepa2"))
    config.images = EncoderConfig(pretrained=str(tmp_path / "dinov2"))
    config.audio = EncoderConfig(pretrained=str(tmp_path / "ast"))
    net = WeldingNet(config).train()
    assert all(isinstance(net.encoders[m], PretrainedEncoder) for m in ("video", "images", "audio"))
    assert not net.encoders["video"].backbone.training  # frozen backbones stay in eval mode
    out = net(_batch())
    assert out.embedding.shape == (4, config.embed_dim) and torch.isfinite(out.embedding).all()
    out.embedding.sum().backward()
    for m in ("video", "images", "audio"):
        assert all(p.grad is None and not p.requires_grad for p in net.encoders[m].parameters())
    assert all(p.grad is not None for p in net.fusion.parameters())


def test_pretrained_path_must_be_a_local_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="not a local transformers checkpoint"):
        PretrainedEncoder(tmp_path / "facebook" / "dinov2-base", "images")


def test_unimodal_terms_train_each_encoder_and_skip_samples_lacking_the_modality():
    from sensorium.recipes.welding.task import WeldingTask

    torch.manual_seed(0)
    task = WeldingTask(net=_tiny(), loss={"unimodal_weight": 0.5, "temperature": 0.1, "base_temperature": 0.1})
    batch = dict(_batch(B=6), label=torch.tensor([0, 0, 1, 1, 2, 2]))
    terms = task.training_losses(batch)
    assert set(terms) == {"supcon", "unimodal"} and torch.isfinite(terms["unimodal"])
    terms["unimodal"].backward()
    for modality in MODALITIES:  # the auxiliary term alone reaches every encoder and its head
        assert task.net.encoders[modality].out_dim and any(
            p.grad is not None and p.grad.abs().sum() > 0 for p in task.net.encoders[modality].parameters())
        assert task.unimodal_heads[modality].weight.grad.abs().sum() > 0
    # A modality missing from every sample contributes 0 and changes nothing else.
    tokens = task.net.encode(batch)
    present = batch["present"].clone()
    present[:, MODALITIES.index("audio")] = False
    with_audio = task.unimodal_loss(tokens, batch["present"], batch["label"])
    without = task.unimodal_loss(tokens, present, batch["label"])
    assert torch.isfinite(without) and not torch.isclose(with_audio, without)
    assert WeldingTask(net=_tiny()).unimodal_heads is None  # off by default


def test_modality_dropout_ramps_up_from_zero_over_training():
    from types import SimpleNamespace

    from sensorium.recipes.welding.task import WeldingTask

    task = WeldingTask(net=_tiny(), modality_dropout=0.2)
    assert task.current_modality_dropout() == 0.2  # outside a Trainer: the configured value
    for step, expected in ((0, 0.0), (50, 0.1), (100, 0.2), (150, 0.2)):
        task._trainer = SimpleNamespace(estimated_stepping_batches=100, global_step=step)
        assert task.current_modality_dropout() == pytest.approx(expected)
    task._trainer = SimpleNamespace(estimated_stepping_batches=float("inf"), global_step=10)
    assert task.current_modality_dropout() == 0.2  # open-ended training: the configured value


def test_run_relative_sensor_channels_ignore_each_runs_level():
    # The same current profile welded at two set-points: the TRAIN-standardised half differs, the
    # run-relative half does not (that is what lets a step be told from a level).
    g = torch.Generator().manual_seed(0)
    profile = torch.rand(1, 64, 6, generator=g) + 1.0
    runs = torch.cat([profile * 110.0, profile * 190.0 + 5.0])  # (2, 64, 6)
    out = with_run_relative(runs)
    assert out.shape == (2, 64, 12)
    assert not torch.allclose(out[0, :, :6], out[1, :, :6])
    assert torch.allclose(out[0, :, 6:], out[1, :, 6:], atol=1e-4)
    assert torch.equal(with_run_relative(torch.zeros(1, 8, 6))[..., 6:], torch.zeros(1, 8, 6))  # missing stays 0


def test_sensor_relative_net_feeds_its_encoder_both_copies_of_six_channel_batches():
    torch.manual_seed(0)
    net = WeldingNet(replace(_tiny(), sensor_relative=True)).eval()
    batch = _batch()
    tokens = net.encode(batch)["sensor"]
    assert torch.isfinite(tokens).all()
    # The batch keeps its 6 channels; the encoder sees the series and its run-relative copy.
    assert torch.allclose(tokens, net.encoders["sensor"](with_run_relative(batch["sensor"])))
    with pytest.raises(RuntimeError):  # a 12-channel encoder cannot take the bare 6 channels
        net.encoders["sensor"](batch["sensor"])


def test_image_views_default_keeps_every_angles_tokens_unchanged():
    """The default (`tokens`) is what the network did before the option: the image encoder's own
    output, every angle's tokens one after another, and no new weights (old checkpoints load)."""
    torch.manual_seed(0)
    net = WeldingNet(_tiny()).eval()
    batch = _batch(N=3)
    assert net.config.image_views == "tokens"
    assert torch.equal(net.encode(batch)["images"], net.encoders["images"](batch["images"]))
    assert not any(name.startswith("image_views") for name in net.state_dict())


@pytest.mark.parametrize("mode", ["mean", "max", "concat"])
def test_image_views_pool_the_angles(mode):
    torch.manual_seed(0)
    net = WeldingNet(replace(_tiny(), image_views=mode, image_angles=3)).eval()
    batch = _batch(N=3)
    per_angle = net.encoders["images"](batch["images"]).view(4, 3, -1, 16)  # (B, N, L, D)
    tokens = net.encode(batch)["images"]
    assert tokens.shape == (4, per_angle.shape[2], 16)  # N times fewer tokens than `tokens`
    if mode == "max":
        assert torch.equal(tokens, per_angle.amax(dim=1))
    out = net(batch)
    assert out.embedding.shape == (4, 24) and torch.isfinite(out.embedding).all()


def test_image_views_concat_needs_the_number_of_angles():
    with pytest.raises(ValueError, match="number of views"):
        WeldingNet(replace(_tiny(), image_views="concat"))


def _knn_bank_and_test(n_bank=40, n_test=20, D=8):
    g = torch.Generator().manual_seed(0)
    def part(n):
        embedding = torch.nn.functional.normalize(torch.randn(n, D, generator=g), dim=1)
        out = {f"embedding/{m}": embedding for m in ("all", *MODALITIES)}
        return {**out, "label": torch.randint(0, 7, (n,), generator=g), "present": torch.ones(n, 4, dtype=torch.bool),
                "modality_weights": torch.full((n, 4), 0.25)}
    return part(n_bank), part(n_test)


def test_knn_report_gives_every_k_beside_the_main_one():
    from sensorium.eval.knn import knn_predict
    from sensorium.recipes.welding.metrics import knn_test_report

    bank, test = _knn_bank_and_test()
    plain = knn_test_report(bank, test, k=5, temperature=0.07)
    assert plain["knn"] | {"bank_size": 0} == {"k": 5, "temperature": 0.07, "votes": "weighted", "metric": "cosine",
                                               "ks": [], "bank_size": 0, "bank": "TRAIN (train + val)",
                                               "query": "TEST"}
    assert plain["by_k"] == {"5": {"accuracy": plain["accuracy"], "f1_macro": plain["f1_macro"]}}
    expected = knn_predict(bank["embedding/all"], bank["label"], test["embedding/all"], 5, 0.07, num_classes=7)
    assert plain["accuracy"] == pytest.approx(float((expected == test["label"]).float().mean()))

    report = knn_test_report(bank, test, k=5, temperature=0.07, votes="uniform", metric="euclidean", ks=[1, 10])
    assert list(report["by_k"]) == ["5", "1", "10"]
    for k in (5, 1, 10):
        pred = knn_predict(bank["embedding/all"], bank["label"], test["embedding/all"], k, num_classes=7,
                           votes="uniform", metric="euclidean")
        assert report["by_k"][str(k)]["accuracy"] == pytest.approx(float((pred == test["label"]).float().mean()))
    assert report["accuracy"] == report["by_k"]["5"]["accuracy"]  # the main k stays the headline


def test_knn_config_defaults_are_the_weighted_cosine_vote_at_k20():
    from sensorium.recipes.welding.task import KnnConfig, WeldingTask

    assert KnnConfig() == KnnConfig(k=20, temperature=0.07, votes="weighted", metric="cosine", ks=[])
    task = WeldingTask(net=_tiny(), knn={"k": 5, "votes": "uniform", "ks": [1, 3]})
    assert task.knn == KnnConfig(k=5, votes="uniform", ks=[1, 3])
