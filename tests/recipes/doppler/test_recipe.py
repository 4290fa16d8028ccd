"""The doppler recipe end to end at tiny scale through the CLI: each packaged YAML fits (the paper
ones with a tiny random DINOv2 from a local directory), the latents and their statistics round
trip, `sensorium sample doppler` writes the ID_k layout that the reader reads back, the evaluation
and the report run, and every checkpoint mismatch is an error naming the file."""

import json

import pytest
import torch

from sensorium.cli import main
from sensorium.recipes import RECIPES
from sensorium.recipes.doppler.latents import channel_statistics, denormalise, normalise
from sensorium.recipes.doppler.prepare import prepare
from sensorium.recipes.doppler.synth import generate

CONFIGS = {p.stem: p for p in RECIPES["doppler"].configs.glob("*.yaml")}
COMMON = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_epochs", "1",
          "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
          "--trainer.log_every_n_steps", "1", "--run.loggers", "[csv]", "--data.init_args.num_workers", "0"]
TINY_VAE = ["--model.init_args.net.widths", "[8, 8, 8, 8]", "--model.init_args.net.cond_dim", "8",
            "--model.init_args.vf.random_widths", "[8, 8, 8]", "--data.init_args.batch_size", "8"]
TINY_DIT = ["--model.init_args.net.dim", "32", "--model.init_args.net.depth", "1",
            "--model.init_args.net.num_heads", "2", "--data.init_args.batch_size", "8",
            "--trainer.check_val_every_n_epoch", "1"]


def test_doppler_packages_every_stage_config():
    assert {"demo", "paper", "dit_demo", "dit_paper"} <= set(CONFIGS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """3 users x 8 recordings; the demo VAE and DiT at tiny sizes, one epoch each."""
    root = tmp_path_factory.mktemp("doppler")
    generate(root / "raw", users=3, per_user=8, seed=0)
    prepare(root / "raw", root / "prep", val_ratio=0.25)
    runs = root / "runs"
    assert main(["fit", "--config", "doppler/demo", "--data.root", str(root / "prep"),
                 "--run.root", str(runs), "--run.version", "vae", *COMMON, *TINY_VAE]) == 0
    vae = runs / "doppler" / "vae" / "checkpoints" / "best.ckpt"
    assert main(["extract", "doppler", "--vae", str(vae), "--data", str(root / "prep"),
                 "--out", str(root / "lat")]) == 0
    assert main(["fit", "--config", "doppler/dit_demo", "--data.root", str(root / "lat"),
                 "--run.root", str(runs), "--run.version", "dit", *COMMON, *TINY_DIT]) == 0
    return {"root": root, "vae": vae, "dit": runs / "doppler" / "dit" / "checkpoints" / "last.ckpt",
            "vae_run": runs / "doppler" / "vae", "dit_run": runs / "doppler" / "dit"}


def test_latent_statistics_round_trip(trained):
    """The DiT normalises with the TRAIN latents' per-channel statistics and sampling undoes it."""
    from safetensors.torch import load_file

    tensors = load_file(str(trained["root"] / "lat" / "latents.safetensors"))
    mean, std = channel_statistics(tensors["train_mean"])
    torch.testing.assert_close(mean, tensors["channel_mean"])
    z = normalise(tensors["train_mean"], mean, std)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(len(mean)), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(len(mean)), atol=1e-4, rtol=0)
    torch.testing.assert_close(denormalise(z, mean, std), tensors["train_mean"], atol=1e-5, rtol=1e-5)
    state = torch.load(trained["dit"], weights_only=True)["state_dict"]
    torch.testing.assert_close(state["channel_mean"], mean)  # carried into the DiT's checkpoint
    meta = json.loads((trained["root"] / "lat" / "latents.json").read_text())
    assert meta["latent_shape"] == [4, 8, 8] and meta["vae"]["checkpoint"] == str(trained["vae"].resolve())


def test_sample_writes_the_id_k_layout_that_the_reader_reads(trained, tmp_path):
    from sensorium.recipes.doppler.reader import scan

    out = tmp_path / "gen"
    assert main(["sample", "doppler", "--ckpt", str(trained["dit"]), "--users", "1", "3", "--per-user", "2",
                 "--cfg", "2.0", "--steps", "3", "--out", str(out)]) == 0
    found = scan(out)
    assert sorted((r.user, r.path.name) for r in found) == [(1, "gen_0000.png"), (1, "gen_0001.png"),
                                                            (3, "gen_0000.png"), (3, "gen_0001.png")]
    assert json.loads((out / "sample.json").read_text())["sampling"]["cfg_scale"] == 2.0


def test_evaluation_and_report(trained):
    eval_dir = trained["dit_run"] / "eval"
    assert main(["eval", "doppler", "--ckpt", str(trained["dit"]), "--data", str(trained["root"] / "prep"),
                 "--per-user", "4", "--low-data", "2", "--seeds", "2", "--classifier-steps", "5",
                 "--aug-steps", "3", "--cfg-sweep", "1", "3", "--sweep-per-user", "2", "--steps", "2",
                 "--baseline"]) == 0
    result = json.loads((eval_dir / "doppler.json").read_text())
    assert 0 <= result["cond_fidelity"] <= 1 and 0 <= result["cas"] <= 1 and result["fd"] >= 0
    assert set(result["aug_gain"]) == {"generated", "classic", "both"}
    assert len(result["aug"]["accuracy"]["real"]) == 2 and result["baseline"]["fd"] >= 0
    assert result["physical"]["real_cycle_mae_hz"] < 0.1  # the estimator on real spectrograms
    assert [s["cfg_scale"] for s in result["cfg_sweep"]] == [1.0, 3.0]
    assert (eval_dir / "samples_grid.png").is_file() and (eval_dir / "cfg_sweep.png").is_file()
    assert main(["report", str(trained["dit_run"])]) == 0 and main(["report", str(trained["vae_run"])]) == 0
    html = (trained["dit_run"] / "report.html").read_text()
    assert "Augmentation gain" in html and "conditioning fidelity" in html
    assert "data:image/png;base64," in html
    assert "VAE reconstructions" in (trained["vae_run"] / "report.html").read_text()


def _error(capsys, argv):
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sensorium: error:")]
    assert len(lines) == 1
    return lines[0]


def test_sampling_without_a_checkpoint_or_from_the_wrong_one_is_an_error(trained, tmp_path, capsys):
    out = ["--out", str(tmp_path / "gen")]
    missing = tmp_path / "none.ckpt"
    line = _error(capsys, ["sample", "doppler", "--ckpt", str(missing), *out])
    assert f"{missing}: no such DopplerDiTTask checkpoint" in line
    line = _error(capsys, ["sample", "doppler", "--ckpt", str(trained["vae"]), *out])
    assert f"{trained['vae']}: is a DopplerVAETask checkpoint, not a DopplerDiTTask one" in line
    line = _error(capsys, ["sample", "doppler", "--ckpt", str(trained["dit"]), "--users", "2", "99", *out])
    assert "--users: unknown user id(s) [99]; the model knows [1, 2, 3]" in line
    # Weights that do not fit their network.
    checkpoint = torch.load(trained["dit"], weights_only=True)
    checkpoint["state_dict"]["net.final.linear.weight"] = torch.zeros(3, 3)
    torch.save(checkpoint, tmp_path / "broken.ckpt")
    line = _error(capsys, ["sample", "doppler", "--ckpt", str(tmp_path / "broken.ckpt"), *out])
    assert f"{tmp_path / 'broken.ckpt'}: weights do not fit the DopplerDiTTask" in line
    assert not (tmp_path / "gen").exists()  # nothing was sampled


def test_a_vae_that_does_not_match_the_dit_is_an_error(trained, tmp_path, capsys):
    from sensorium.recipes.doppler.task import DopplerVAETask

    # Another VAE for the same users, with 8 latent channels instead of 4, as a checkpoint.
    hparams = dict(torch.load(trained["vae"], weights_only=True)["hyper_parameters"])
    hparams["net"] = {**hparams["net"], "z_channels": 8}
    other = DopplerVAETask(**hparams)
    path = tmp_path / "other.ckpt"
    torch.save({"hyper_parameters": dict(other.hparams), "state_dict": other.state_dict()}, path)
    line = _error(capsys, ["sample", "doppler", "--ckpt", str(trained["dit"]), "--vae", str(path),
                           "--out", str(tmp_path)])
    assert f"{path}: the VAE's latents are 8x8x8 but the DiT" in line and "was trained on 4x8x8" in line
    # The same architecture but other weights: not the VAE the latents came from.
    checkpoint = torch.load(trained["vae"], weights_only=True)
    checkpoint["state_dict"]["vae.decoder.conv_out.bias"] += 1.0
    torch.save(checkpoint, tmp_path / "retrained.ckpt")
    line = _error(capsys, ["sample", "doppler", "--ckpt", str(trained["dit"]),
                           "--vae", str(tmp_path / "retrained.ckpt"), "--out", str(tmp_path)])
    assert f"{tmp_path / 'retrained.ckpt'}: is not the VAE the DiT" in line


@pytest.fixture
def tiny_dinov2(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    directory = tmp_path / "dinov2-tiny"
    config = Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                          patch_size=4, image_size=16)
    Dinov2Model(config).save_pretrained(directory)
    return directory


def test_the_paper_configs_fit_on_cpu_at_tiny_size(trained, tiny_dinov2, tmp_path):
    """doppler/paper: f16 VAE with DINOv2 alignment (here a tiny random DINOv2 from a local folder,
    16 px input -> the latent's 4x4 grid) and the discriminator from step 0; doppler/dit_paper:
    LightningDiT's options at a tiny width."""
    assert main(["fit", "--config", "doppler/paper", "--data.root", str(trained["root"] / "prep"),
                 "--run.root", str(tmp_path), "--run.version", "vae", *COMMON,
                 "--trainer.precision", "32-true",
                 "--model.init_args.net.widths", "[8, 8, 8, 8, 8]", "--model.init_args.net.z_channels", "4",
                 "--model.init_args.net.cond_dim", "8", "--model.init_args.vf.pretrained", str(tiny_dinov2),
                 "--model.init_args.vf.input_size", "16", "--model.init_args.loss.disc_start", "0",
                 "--model.init_args.loss.disc_width", "8", "--model.init_args.loss.disc_layers", "2",
                 "--data.init_args.image_size", "64", "--data.init_args.batch_size", "8",
                 "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]) == 0
    metrics = (tmp_path / "doppler" / "vae" / "metrics.csv").read_text().splitlines()[0]
    assert "train/vf_step" in metrics and "train/gan_step" in metrics and "train/disc_step" in metrics
    checkpoint = torch.load(tmp_path / "doppler" / "vae" / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(k.startswith("foundation.") for k in checkpoint["state_dict"])  # DINOv2 is not stored
    assert main(["fit", "--config", "doppler/dit_paper", "--data.root", str(trained["root"] / "lat"),
                 "--run.root", str(tmp_path), "--run.version", "dit", *COMMON, *TINY_DIT,
                 "--trainer.precision", "32-true",
                 "--trainer.limit_train_batches", "2"]) == 0
    assert (tmp_path / "doppler" / "dit" / "checkpoints" / "last.ckpt").is_file()
