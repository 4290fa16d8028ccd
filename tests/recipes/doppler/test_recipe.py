"""The doppler recipe end to end at tiny scale through the CLI: each packaged YAML fits (the paper
ones with a tiny random DINOv2 from a local directory), both fits choose on VAL only and TEST stays
out of them, the latents and their statistics round trip, `sensorium sample doppler` writes the ID_k
layout that the reader reads back, the evaluation reports on TEST (with TRTS and the gain per user)
and the report runs, and every checkpoint mismatch is an error naming the file."""

import json

import pytest
import torch

from sensorium.cli import main
from sensorium.errors import DataError
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
    """3 users x 8 recordings (per user 4 train, 2 val, 2 test); the demo VAE and DiT at tiny sizes,
    one epoch each, with early stopping on."""
    root = tmp_path_factory.mktemp("doppler")
    generate(root / "raw", users=3, per_user=8, seed=0)
    prepare(root / "raw", root / "prep", val_ratio=0.25, test_ratio=0.25)
    runs = root / "runs"
    assert main(["fit", "--config", "doppler/demo", "--data.root", str(root / "prep"),
                 "--run.root", str(runs), "--run.version", "vae", "--run.early_stopping_patience", "5",
                 *COMMON, *TINY_VAE]) == 0
    vae = runs / "doppler" / "vae" / "checkpoints" / "best.ckpt"
    assert main(["extract", "doppler", "--vae", str(vae), "--data", str(root / "prep"),
                 "--out", str(root / "lat")]) == 0
    # in this process: the extraction's no_grad must not outlive it (later tests train in this process)
    assert torch.is_grad_enabled()
    assert main(["fit", "--config", "doppler/dit_demo", "--data.root", str(root / "lat"),
                 "--run.root", str(runs), "--run.version", "dit", "--run.early_stopping_patience", "5",
                 *COMMON, *TINY_DIT]) == 0
    return {"root": root, "vae": vae, "dit": runs / "doppler" / "dit" / "checkpoints" / "last.ckpt",
            "vae_run": runs / "doppler" / "vae", "dit_run": runs / "doppler" / "dit"}


def test_the_loaders_serve_disjoint_val_and_test_recordings(trained):
    from sensorium.recipes.doppler.datamodule import DopplerImageDataModule, DopplerLatentDataModule
    from sensorium.recipes.doppler.reader import read_split_csv

    recording = {(trained["root"] / "raw" / path).resolve(): (user, rec)
                 for path, user, rec, _ in read_split_csv(trained["root"] / "prep" / "split.csv")}
    images = DopplerImageDataModule(str(trained["root"] / "prep"), eval_batch_size=4)
    images.setup("fit")
    real = images.real
    recordings = {split: {recording[p.resolve()] for p in real.paths[split]}
                  for split in ("train", "val", "test")}
    assert all(len(r) == 6 for s, r in recordings.items() if s != "train")  # 2 per user
    assert not recordings["val"] & recordings["test"]
    assert not recordings["train"] & (recordings["val"] | recordings["test"])
    for split, loader in (("val", images.val_dataloader()), ("test", images.test_dataloader())):
        served = torch.cat([batch["index"] for batch in loader])
        assert served.tolist() == list(range(len(real.paths[split])))
        pixels = torch.cat([batch["image"] for batch in loader])
        torch.testing.assert_close(pixels, real.pixels[split].float() / 255)
    latents = DopplerLatentDataModule(str(trained["root"] / "lat"), eval_batch_size=4)
    latents.setup("fit")
    assert latents.split_sizes() == {"train": 12, "val": 6, "test": 6}
    val_labels = torch.cat([b["label"] for b in latents.val_dataloader()])
    assert torch.equal(val_labels, real.labels["val"])


@pytest.mark.parametrize("stage, monitor", [("vae", "val/psnr"), ("dit", "val/velocity_mse")])
def test_checkpoints_and_early_stopping_choose_on_val_only(trained, stage, monitor):
    """What each fit's best.ckpt and early stopping watched, read back from the checkpoint, is a
    VAL metric, and best.ckpt's score is that metric's logged value (the val loader's images)."""
    import csv

    run = trained[f"{stage}_run"]
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
    watched = {key: state for key, state in checkpoint["callbacks"].items() if "monitor" in key}
    kinds = {key.split("{")[0] for key in watched}
    assert {"ModelCheckpoint", "EarlyStopping"} <= kinds
    monitors = {key.split("'monitor': ")[1].split(",")[0].strip("'") for key in watched}
    assert monitors - {"None"} == {monitor}
    best = next(s for k, s in watched.items() if k.startswith("ModelCheckpoint") and monitor in k)
    with open(run / "metrics.csv", newline="") as f:
        logged = [float(r[monitor]) for r in csv.DictReader(f) if r.get(monitor)]
    assert logged and float(best["best_model_score"]) == pytest.approx(logged[-1], rel=1e-5)
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "test/" not in header  # a fit never evaluates on TEST


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
    assert result["splits"] == {"train": 12, "val": 6, "test": 6} and result["classifier"]["test_images"] == 6
    assert 0 <= result["cond_fidelity"] <= 1 and 0 <= result["cas"] <= 1 and result["fd"] >= 0
    assert 0 <= result["trts"] <= 1 and 0 <= result["trtr"] <= 1
    assert set(result["trts_per_user"]) == {"1", "2", "3"}
    assert set(result["aug_gain"]) == {"generated", "classic", "both"}
    assert len(result["aug"]["accuracy"]["real"]) == 2 and result["baseline"]["fd"] >= 0
    # The gain per user: each seed's overall gain is the per-user gains weighted by TEST images.
    aug, users = result["aug"], ["1", "2", "3"]
    assert set(result["aug_gain_per_user"]) == set(users)
    count = aug["test_images_per_user"]
    for kind in ("generated", "classic", "both"):
        per_user = aug["gain_per_user"][kind]
        for seed, overall in enumerate(aug["gain"][kind]["values"]):
            weighted = sum(count[u] * per_user[u]["values"][seed] for u in users) / sum(count.values())
            assert weighted == pytest.approx(overall, abs=1e-6)
    assert result["aug_gain_per_user"] == {u: v["mean"] for u, v in aug["gain_per_user"]["generated"].items()}
    assert result["physical"]["real_cycle_mae_hz"] < 0.1  # the estimator on real spectrograms
    assert [s["cfg_scale"] for s in result["cfg_sweep"]] == [1.0, 3.0] and "fd_val" in result["cfg_sweep"][0]
    for name in ("samples_grid.png", "cfg_sweep.png", "gain_per_user.png"):
        assert (eval_dir / name).is_file()
    assert main(["report", str(trained["dit_run"])]) == 0 and main(["report", str(trained["vae_run"])]) == 0
    html = (trained["dit_run"] / "report.html").read_text()
    assert "Augmentation gain" in html and "conditioning fidelity" in html and "Per user (TEST)" in html
    assert "TRTS" in html and "gain: generated" in html
    assert "data:image/png;base64," in html
    assert "VAE reconstructions" in (trained["vae_run"] / "report.html").read_text()


def test_nothing_the_evaluation_reports_reads_val(trained, tmp_path):
    """Without the CFG sweep (the one part that chooses), the evaluation runs with VAL gone: every
    number it reports comes from TRAIN (training) and TEST (measuring)."""
    from sensorium.recipes.doppler.classifier import ClassifierConfig
    from sensorium.recipes.doppler.evaluate import EvalConfig, evaluate
    from sensorium.recipes.doppler.reader import RealSpectrograms
    from sensorium.recipes.doppler.sample import Generator

    generator = Generator.from_checkpoints(trained["dit"])
    real = RealSpectrograms(trained["root"] / "prep", 64, 1)
    del real.pixels["val"], real.paths["val"]  # any read of a VAL image fails
    real.labels["val"] = torch.zeros(0, dtype=torch.long)
    tiny = ClassifierConfig(steps=3)
    config = EvalConfig(generated_per_user=4, low_data_per_user=2, seeds=1, evaluator=tiny, classifier=tiny,
                        aug_steps=2, cfg_sweep=(), baseline_per_user=2)
    result = evaluate(generator, real, tmp_path, config, steps=2)
    assert result["splits"]["test"] == 6 and result["cfg_sweep"] == [] and 0 <= result["trts"] <= 1
    with pytest.raises(DataError, match="no val images"):  # the sweep needs VAL, and says so
        evaluate(generator, real, tmp_path, EvalConfig(**{**config.__dict__, "cfg_sweep": (1.0,)}), steps=2)


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
