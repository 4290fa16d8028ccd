"""`model.init_args.init_from`: the doppler VAE starts from a released LDM AutoencoderKL / VA-VAE
checkpoint. A tiny autoencoder in the released layout stands for LightningDiT's f16d32 tokenizer (the
same module and parameter names, other sizes): each file format loads, the user-conditioned model
then reconstructs bit for bit as the released one, a file that does not fit is one error naming it
and its first mismatching keys, and a doppler fine-tune from it runs end to end through the CLI."""

import pytest
import torch

from sensorium.cli import main
from sensorium.errors import ConfigError, DataError
from sensorium.models.vae import ConditionalVAE
from sensorium.recipes.doppler.datamodule import DopplerImageSpec
from sensorium.recipes.doppler.reader import from_signed, to_signed
from sensorium.recipes.doppler.task import DopplerVAETask

# The released layout at tiny sizes: two levels (f2), attention after each block of the lower one,
# quant convs; 3 channels as the released RGB tokenizer.
NET = {"widths": (8, 16), "z_channels": 4, "num_res_blocks": 1, "attn_levels": (1,), "quant_conv": True,
       "mid_attention": True}
NET_FLAGS = ["--model.init_args.net.widths", "[8, 16]", "--model.init_args.net.z_channels", "4",
             "--model.init_args.net.num_res_blocks", "1", "--model.init_args.net.attn_levels", "[1]",
             "--model.init_args.net.quant_conv", "true", "--model.init_args.net.cond_dim", "8"]
# What an LDM / VA-VAE training checkpoint holds beside the autoencoder, left out on loading.
TRAINING_ONLY = {"loss.logvar": torch.zeros(()), "loss.discriminator.main.0.weight": torch.ones(4, 3, 4, 4),
                 "foundation_model.model.cls_token": torch.ones(1, 1, 8),
                 "linear_proj.weight": torch.ones(8, 4, 1, 1)}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A random unconditioned autoencoder in the released layout, and its weights saved as LDM
    (.pt: {"state_dict"} with the loss's tensors), Lightning (.ckpt: "model."-prefixed keys) and
    safetensors files."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = ConditionalVAE(in_channels=3, **NET).eval()
    for p in model.parameters():  # away from PyTorch's init, so a tensor left unloaded would show
        p.data.add_(torch.randn_like(p) * 0.1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    root = tmp_path_factory.mktemp("released")
    torch.save({"state_dict": {**state, **TRAINING_ONLY}}, root / "vavae.pt")
    lightning = {"state_dict": {f"model.{k}": v for k, v in state.items()}, "global_step": 3}
    torch.save(lightning, root / "vavae.ckpt")
    save_file(state, str(root / "vavae.safetensors"))
    return {"model": model, "state": state, "root": root}


def _task(path, users=(1, 2, 3), size=16):
    task = DopplerVAETask(net={**NET, "cond_dim": 8}, vf={"weight": 0.0}, init_from=str(path))
    task.configure_data(DopplerImageSpec(users=users, image_size=size, channels=3, root="data"))
    return task.eval()


@pytest.mark.parametrize("name", ["vavae.pt", "vavae.ckpt", "vavae.safetensors"])
def test_the_conditioned_vae_starts_as_the_released_one_bit_for_bit(released, name):
    task = _task(released["root"] / name)
    images, labels = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 1])
    x = to_signed(images)
    with torch.no_grad():
        expected = from_signed(released["model"](x, sample=False)[0]).clamp(0, 1)
        assert torch.equal(task.reconstruct(images, labels), expected)
        assert torch.equal(task.vae.encode(x, labels).mean, released["model"].encode(x).mean)
    assert task.vae.num_classes == 3 and task.hparams["init_from"] == str(released["root"] / name)


def test_a_restored_task_does_not_read_init_from_again(released, tmp_path):
    """A checkpoint of the fine-tune rebuilds from its hyperparameters; the released file may be gone."""
    task = _task(released["root"] / "vavae.pt")
    hparams = {**dict(task.hparams), "init_from": str(tmp_path / "moved.pt")}
    restored = DopplerVAETask(**hparams)
    restored.configure_data(DopplerImageSpec(users=(1, 2, 3), image_size=16, channels=3, root="data"))
    assert restored.vae is not None  # built from the hyperparameters, no file read


def _fails(path, state=None, net=None):
    if state is not None:
        torch.save({"state_dict": state}, path)
    task = DopplerVAETask(net={**NET, "cond_dim": 8, **(net or {})}, vf={"weight": 0.0}, init_from=str(path))
    with pytest.raises((ConfigError, DataError)) as error:
        task.configure_data(DopplerImageSpec(users=(1, 2), image_size=16, channels=3, root="data"))
    return str(error.value)


def test_a_file_that_does_not_fit_is_one_error_naming_it_and_its_first_mismatching_keys(released, tmp_path):
    state = released["state"]
    path = tmp_path / "missing.pt"
    message = _fails(path, {k: v for k, v in state.items() if k != "decoder.conv_out.bias"})
    assert message.startswith(f"{path}: weights do not fit the VAE that model.init_args.net describes")
    assert "missing ['decoder.conv_out.bias']" in message
    path = tmp_path / "shape.pt"
    message = _fails(path, {**state, "quant_conv.weight": torch.zeros(4, 8, 1, 1)})
    assert message.startswith(f"{path}: ")
    assert "quant_conv.weight (4, 8, 1, 1) (the network's: (8, 8, 1, 1))" in message
    # The right file, the wrong net settings: the released layout has attention the net leaves out.
    message = _fails(released["root"] / "vavae.safetensors", net={"attn_levels": ()})
    assert "unexpected ['decoder.up.1.attn.0.k.bias'" in message
    message = _fails(tmp_path / "absent.pt")
    assert message == f"{tmp_path / 'absent.pt'}: no such checkpoint (model.init_args.init_from)"
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    assert _fails(tmp_path / "garbage.safetensors").startswith(
        f"{tmp_path / 'garbage.safetensors'}: cannot read as a checkpoint")


def test_a_doppler_fine_tune_from_the_released_vae_runs_end_to_end(released, tmp_path):
    """synth -> prepare -> fit doppler/demo from the released file (2 steps) -> extract: the fine-tune
    starts at the released weights (after 2 small steps it is still next to them) and adds the users."""
    from safetensors.torch import load_file

    from sensorium.recipes.doppler.prepare import prepare
    from sensorium.recipes.doppler.synth import generate

    generate(tmp_path / "raw", users=3, per_user=8, seed=0)
    prepare(tmp_path / "raw", tmp_path / "prep", val_ratio=0.25)
    runs = tmp_path / "runs"
    assert main(["fit", "--config", "doppler/demo", "--data.root", str(tmp_path / "prep"),
                 "--run.root", str(runs), "--run.version", "vae",
                 "--model.init_args.init_from", str(released["root"] / "vavae.ckpt"), *NET_FLAGS,
                 "--model.init_args.vf.random_widths", "[8, 8]", "--data.init_args.channels", "3",
                 "--data.init_args.image_size", "32", "--data.init_args.batch_size", "8",
                 "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                 "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
                 "--trainer.enable_model_summary", "false",
                 "--run.loggers", "[csv]", "--data.init_args.num_workers", "0"]) == 0
    checkpoint = torch.load(runs / "doppler" / "vae" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["init_from"] == str(released["root"] / "vavae.ckpt")
    state = checkpoint["state_dict"]
    moved = max((state[f"vae.{k}"] - v).abs().max().item() for k, v in released["state"].items())
    assert 0 < moved < 0.02  # trained, from the released weights (lr 2e-3, two steps)
    assert "vae.class_embed.weight" in state and "vae.decoder.up.0.block.0.cond.weight" in state
    assert main(["extract", "doppler", "--vae", str(runs / "doppler" / "vae" / "checkpoints" / "last.ckpt"),
                 "--data", str(tmp_path / "prep"), "--out", str(tmp_path / "lat")]) == 0
    assert load_file(str(tmp_path / "lat" / "latents.safetensors"))["train_mean"].shape[1:] == (4, 16, 16)
