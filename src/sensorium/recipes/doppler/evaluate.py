"""`sensorium eval doppler --ckpt DIT.ckpt --data PREPARED_DIR [--out RUN/eval]`: is the generated data
each user's, and does it help a user-identification classifier? Writes eval/doppler.json and PNGs.

Splits: every classifier trains on real TRAIN (and generated samples); every reported number is
measured on real TEST; VAL serves only the CFG sweep, which is there to choose the sampler's scale.
The DiT checkpoint is the last one, the VAE's was chosen on VAL (`val/psnr`); nothing chooses on TEST.

1. **Conditioning fidelity**: a classifier (`classifier.py`) trained on the real TRAIN split labels
   generated samples of each user; the share labelled as the user they were generated for (chance:
   1 / users). Its accuracy on real TEST is reported next to it: the ceiling of this measure. This
   judge is trained with random blur (`transforms.random_blur`): one trained on sharp images only
   mistakes a generator's smoothness for another identity (on the demo data it labels real images
   blurred by 1 px correctly 39% of the time). That sharp classifier's fidelity is reported too
   (`sharp_classifier`).
2. **Augmentation gain** in a low-data setting: `low_data_per_user` TRAIN recordings per user; the
   same classifier and steps trained on real only, real + classic augmentation (`transforms.py`),
   real + generated, and real + both, each tested on real TEST, over `seeds` seeds (the subset and the
   classifier's initialisation change with the seed); gains are accuracy differences to real only,
   with their mean and standard deviation over seeds, overall and per user (`metrics.gain_per_user`:
   the difference of the accuracies on each user's TEST images; `aug_gain_per_user` is the
   generated augmentation's). The generator itself was trained on all of TRAIN, so "generated"
   brings in what it learnt from more recordings than the subset holds.
3. **TSTR and TRTS**, one classifier recipe (the augmentation's steps) with the data swapped:
   the classification accuracy score (CAS, TSTR) trains on generated samples only and tests on real
   TEST; TRTS trains on real TRAIN and tests on the same generated samples (`trtr`: that classifier
   on real TEST, TRTS's reference).
4. **Fréchet distance** in the real-data classifier's feature space, per user and overall: TEST is
   split per user into two disjoint halves A and B; fd = FD(A, generated), fd_floor = FD(A, B), with
   as many generated samples per user as A holds.
5. **Physical fidelity** (synthetic data, with users.csv): torso Doppler and gait-cycle frequency
   measured from spectrograms (`physics.py`), per user, for real TEST and generated images, against
   the simulation's true values.
6. A grid of real TEST and generated spectrograms per user; the augmentation gain per user (bars); a
   sweep over the CFG scale (fidelity, and FD against VAL, per scale, and a grid): the sweep chooses,
   so it reads VAL only.
`baseline`: fidelity and FD of the untrained generator (the same DiT freshly initialised, decoded by
the trained VAE: `sample.Generator.untrained`), when asked for (`--baseline`).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from sensorium.engine.checkpoint import atomic_write_json
from sensorium.eval.generation import class_accuracy, frechet_distance
from sensorium.recipes.doppler.classifier import ClassifierConfig, predict, train_classifier
from sensorium.recipes.doppler.extract import encode
from sensorium.recipes.doppler.figures import write_cfg_sweep_png, write_gain_per_user_png, write_samples_png
from sensorium.recipes.doppler.metrics import gain_per_user, psnr
from sensorium.recipes.doppler.physics import correlation, gait_per_user, spectrogram_axes
from sensorium.recipes.doppler.reader import RealSpectrograms, to_unit
from sensorium.recipes.doppler.sample import Generator
from sensorium.recipes.doppler.synth import read_users_csv
from sensorium.recipes.doppler.transforms import ClassicAugmentConfig


@dataclass
class EvalConfig:
    generated_per_user: int = 32
    """Generated samples per user for fidelity, CAS and augmentation."""
    low_data_per_user: int = 10
    seeds: int = 3
    evaluator: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(blur_sigma=2.0))
    """The classifier that judges generated samples (fidelity, FD, the VAE's ceiling): trained on all
    of real TRAIN, with random blur so that it identifies users by gait, not by sharpness."""
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    """The classifier under test in the augmentation gain and CAS (no blur); also trained on all of
    TRAIN as a second judge, whose fidelity is reported next to the evaluator's."""
    aug_steps: int = 200
    """Optimiser steps of each low-data, CAS (TSTR) and TRTS classifier (the full-TRAIN judges take
    their config's steps)."""
    baseline_per_user: int = 12
    """Samples per user of the untrained generator (at least half a user's TEST images, for the FD)."""
    augment: ClassicAugmentConfig = field(default_factory=ClassicAugmentConfig)
    cfg_sweep: tuple[float, ...] = (1.0, 2.0, 4.0, 6.0)
    sweep_per_user: int = 6
    grid_users: int = 8


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def halves(labels: torch.Tensor, num_users: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint index sets of equal size per user (the odd one out left over)."""
    generator = torch.Generator().manual_seed(seed)
    a, b = [], []
    for u in range(num_users):
        members = torch.nonzero(labels == u).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n = len(members) // 2
        a.append(members[:n])
        b.append(members[n:2 * n])
    return torch.cat(a), torch.cat(b)


def take_per_user(labels: torch.Tensor, counts: dict[int, int], seed: int = 0) -> torch.Tensor:
    """Indices of `counts[u]` random samples of each user u (as many as exist)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for u, n in counts.items():
        members = torch.nonzero(labels == u).flatten()
        out.append(members[torch.randperm(len(members), generator=generator)[:n]])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def frechet_report(real_features: torch.Tensor, real_labels: torch.Tensor, generated_features: torch.Tensor,
                   generated_labels: torch.Tensor, users: list[int], seed: int = 0) -> dict:
    """fd and fd_floor overall and per user at equal sample counts (see the module docstring)."""
    a, b = halves(real_labels, len(users), seed)
    counts = {u: int((real_labels[a] == u).sum()) for u in range(len(users))}
    g = take_per_user(generated_labels, counts, seed)
    report = {"fd": frechet_distance(real_features[a], generated_features[g]),
              "fd_floor": frechet_distance(real_features[a], real_features[b]),
              "samples": int(len(a)), "per_user": {}}
    for u, user in enumerate(users):
        ra, rb, gu = a[real_labels[a] == u], b[real_labels[b] == u], g[generated_labels[g] == u]
        if min(len(ra), len(rb), len(gu)) >= 2:
            report["per_user"][str(user)] = {
                "fd": frechet_distance(real_features[ra], generated_features[gu]),
                "fd_floor": frechet_distance(real_features[ra], real_features[rb]),
                "samples": int(len(ra))}
    return report


def generator_scores(generator, classifier, real, users: list[int], per_user: int, seed: int = 0,
                     split: str = "test", **sampling) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Fidelity and FD (against real `split`) of `generator`'s samples: (report, generated pixels,
    generated labels)."""
    pixels, labels = generator.generate(users, per_user, seed, **sampling)
    pred, feats = predict(classifier, pixels)
    fidelity = class_accuracy(pred, labels, len(users))
    _, real_feats = predict(classifier, real.pixels[split])
    fd = frechet_report(real_feats, real.labels[split], feats, labels, users, seed)
    report = {"cond_fidelity": fidelity["accuracy"],
              "cond_fidelity_per_user": {str(u): v for u, v in zip(users, fidelity["per_class"])},
              "fd": fd["fd"], "fd_floor": fd["fd_floor"], "fd_samples": fd["samples"],
              "fd_per_user": fd["per_user"], "samples_per_user": per_user}
    return report, pixels, labels


def augmentation_gain(real, generated: tuple[torch.Tensor, torch.Tensor], config: EvalConfig,
                      users: list[int]) -> dict:
    """Accuracies on real TEST of the four low-data training conditions over the seeds, and the gains,
    overall and per user ({kind: {user: {mean, std, values}}}; users without TEST images left out)."""
    conditions = {"real": {}, "classic": {"augment": config.augment},
                  "generated": {"extra": generated}, "both": {"augment": config.augment, "extra": generated}}
    cls = ClassifierConfig(**{**asdict(config.classifier), "steps": config.aug_steps})
    test_x, test_y, num_users = real.pixels["test"], real.labels["test"], len(users)
    accuracy: dict[str, list[float]] = {name: [] for name in conditions}
    per_user: dict[str, list[list[float | None]]] = {name: [] for name in conditions if name != "real"}
    for seed in range(config.seeds):
        counts = {u: config.low_data_per_user for u in range(num_users)}
        subset = take_per_user(real.labels["train"], counts, seed)
        x, y = real.pixels["train"][subset], real.labels["train"][subset]
        preds = {}
        for name, extra in conditions.items():
            model = train_classifier(x, y, num_users, cls, seed=seed, **extra)
            preds[name], _ = predict(model, test_x)
            accuracy[name].append(float((preds[name] == test_y).float().mean()))
        for name, seeds in per_user.items():
            seeds.append(gain_per_user(preds[name], preds["real"], test_y, num_users))
    gains, gains_per_user = {}, {}
    for name in ("generated", "classic", "both"):
        values = [a - r for a, r in zip(accuracy[name], accuracy["real"])]
        gains[name] = {"mean": float(np.mean(values)), "std": _std(values), "values": values}
        gains_per_user[name] = {}
        for u, user in enumerate(users):
            values = [seed_gains[u] for seed_gains in per_user[name] if seed_gains[u] is not None]
            if values:
                gains_per_user[name][str(user)] = {"mean": float(np.mean(values)), "std": _std(values),
                                                   "values": values}
    return {"low_data_per_user": config.low_data_per_user, "seeds": list(range(config.seeds)),
            "steps": cls.steps, "accuracy": accuracy,
            "accuracy_mean": {k: float(np.mean(v)) for k, v in accuracy.items()},
            "gain": gains, "gain_per_user": gains_per_user,
            "test_images_per_user": {str(user): int((test_y == u).sum()) for u, user in enumerate(users)}}


def physical_fidelity(real, generated: tuple[torch.Tensor, torch.Tensor], users: list[int]) -> dict | None:
    """Torso Doppler and cycle frequency, true (users.csv) vs measured on real TEST and generated
    images; None unless the data is synthetic (synth.json and users.csv beside the ID_k folders)."""
    synth_json, users_csv = real.input / "synth.json", real.input / "users.csv"
    if not synth_json.is_file() or not users_csv.is_file() or real.channels != 1:
        return None
    info = json.loads(synth_json.read_text())
    if [real.image_size] * 2 != list(info["image_size"]):
        return None  # resized images: the axes no longer match the simulation's
    axis, frame_s = spectrogram_axes(info)
    truth = read_users_csv(users_csv)
    result: dict = {"users": {}}
    sets = {"real": (real.pixels["test"], real.labels["test"]), "generated": generated}
    dynamic_range_db = info["radar"]["dynamic_range_db"]
    measured = {name: gait_per_user(pixels, labels, len(users), axis, frame_s, dynamic_range_db)
                for name, (pixels, labels) in sets.items()}
    true_torso = np.array([truth[u]["torso_doppler_hz"] for u in users])
    true_cycle = np.array([truth[u]["cycle_hz"] for u in users])
    for name, (torso, cycle) in measured.items():
        result[f"{name}_torso_mae_hz"] = float(np.nanmean(np.abs(torso - true_torso)))
        result[f"{name}_cycle_mae_hz"] = float(np.nanmean(np.abs(cycle - true_cycle)))
        result[f"{name}_torso_corr"] = correlation(torso, true_torso)
        result[f"{name}_cycle_corr"] = correlation(cycle, true_cycle)
    for i, u in enumerate(users):
        entry = {"true_torso_hz": float(true_torso[i]), "true_cycle_hz": float(true_cycle[i])}
        for name, (torso, cycle) in measured.items():
            entry[f"{name}_torso_hz"] = float(torso[i]) if np.isfinite(torso[i]) else None
            entry[f"{name}_cycle_hz"] = float(cycle[i]) if np.isfinite(cycle[i]) else None
        result["users"][str(u)] = entry
    return result


def evaluate(generator, real, out_dir: str | Path, config: EvalConfig | None = None, baseline=None,
             seed: int = 0, **sampling) -> dict:
    """Everything of the module docstring; writes out_dir/doppler.json (+ PNGs) and returns it.
    `generator`, `baseline`: `sensorium.recipes.doppler.sample.Generator`s; `real`: RealSpectrograms."""
    config = config or EvalConfig()
    out_dir = Path(out_dir)
    users = list(real.users)
    if users != generator.users:
        raise ValueError(f"the data's users {users} differ from the generator's {generator.users}")
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 1)
        clock = now

    for split in ("train", "test", *(("val",) if config.cfg_sweep else ())):
        real.require(split)
    train_x, train_y, n = real.pixels["train"], real.labels["train"], len(users)
    test_x, test_y = real.pixels["test"], real.labels["test"]
    evaluator = train_classifier(train_x, train_y, n, config.evaluator, seed)
    test_pred, _ = predict(evaluator, test_x)
    real_test = class_accuracy(test_pred, test_y, n)
    sharp = train_classifier(train_x, train_y, n, config.classifier, seed)
    sharp_test, _ = predict(sharp, test_x)
    lap("classifiers")

    scores, gen_pixels, gen_labels = generator_scores(generator, evaluator, real, users,
                                                      config.generated_per_user, seed, "test", **sampling)
    sharp_pred, _ = predict(sharp, gen_pixels)
    lap("generate")
    # TSTR (CAS) and TRTS: one classifier recipe, the training and test data swapped.
    short = ClassifierConfig(**{**asdict(config.classifier), "steps": config.aug_steps})
    cas_model = train_classifier(gen_pixels, gen_labels, n, short, seed)
    cas = class_accuracy(predict(cas_model, test_x)[0], test_y, n)
    trts_model = train_classifier(train_x, train_y, n, short, seed)
    trts = class_accuracy(predict(trts_model, gen_pixels)[0], gen_labels, n)
    trtr = class_accuracy(predict(trts_model, test_x)[0], test_y, n)
    lap("tstr_trts")
    aug = augmentation_gain(real, (gen_pixels, gen_labels), config, users)
    lap("augmentation")
    physical = physical_fidelity(real, (gen_pixels, gen_labels), users)

    # The sweep chooses the CFG scale: its FD is against VAL, never TEST.
    sweep = []
    for scale in config.cfg_sweep:
        report, pixels, _ = generator_scores(generator, evaluator, real, users, config.sweep_per_user,
                                             seed + 1, "val", **{**sampling, "cfg_scale": scale})
        sweep.append({"cfg_scale": scale, "cond_fidelity": report["cond_fidelity"], "fd_val": report["fd"],
                      "fd_floor_val": report["fd_floor"], "fd_samples": report["fd_samples"],
                      "pixels": pixels})
    lap("cfg_sweep")

    untrained = None
    if baseline is not None:
        untrained, _, _ = generator_scores(baseline, evaluator, real, users, config.baseline_per_user, seed,
                                           "test", **sampling)
        lap("baseline")

    # The VAE's ceiling: the judges on reconstructions of the TEST images (what a perfect DiT, producing
    # exactly the latents of real recordings, would give through this VAE).
    recon = reconstructions(generator, test_x, test_y)
    recon_accuracy = {name: float((predict(model, recon)[0] == test_y).float().mean())
                      for name, model in (("evaluator", evaluator), ("sharp", sharp))}
    recon_psnr = float(psnr(to_unit(recon), to_unit(test_x)).mean())
    lap("reconstructions")

    shown = users[: config.grid_users]
    write_samples_png(out_dir / "samples_grid.png", real, gen_pixels, gen_labels, shown, per_user=4)
    write_gain_per_user_png(out_dir / "gain_per_user.png",
                            {k: {u: {"mean": v["mean"], "std": v["std"]} for u, v in per_user.items()}
                             for k, per_user in aug["gain_per_user"].items()},
                            config.low_data_per_user, config.seeds)
    scales, sweep_pixels = [s["cfg_scale"] for s in sweep], [s.pop("pixels") for s in sweep]
    if sweep:
        write_cfg_sweep_png(out_dir / "cfg_sweep.png", scales, sweep_pixels, config.sweep_per_user, users,
                            shown[:6])
    lap("figures")

    result = {
        "users": users,
        "chance": 1.0 / len(users),
        "splits": {split: len(real.labels[split]) for split in ("train", "val", "test")},
        "classifier": {"real_test_accuracy": real_test["accuracy"], "train_images": len(train_y),
                       "test_images": len(test_y), **asdict(config.evaluator)},
        "sharp_classifier": {"real_test_accuracy": float((sharp_test == test_y).float().mean()),
                             "cond_fidelity": float((sharp_pred == gen_labels).float().mean()),
                             "vae_reconstruction_accuracy": recon_accuracy["sharp"]},
        "vae_reconstruction": {"accuracy": recon_accuracy["evaluator"], "psnr": recon_psnr},
        "sampling": {**{k: v for k, v in asdict(generator.dit.sampling).items()},
                     **{k: v for k, v in sampling.items() if v is not None}},
        **scores,
        "cas": cas["accuracy"],
        "cas_per_user": {str(u): v for u, v in zip(users, cas["per_class"])},
        "trts": trts["accuracy"],
        "trts_per_user": {str(u): v for u, v in zip(users, trts["per_class"])},
        "trtr": trtr["accuracy"],
        "aug": aug,
        "aug_gain": {k: {"mean": v["mean"], "std": v["std"]} for k, v in aug["gain"].items()},
        "aug_gain_per_user": {u: v["mean"] for u, v in aug["gain_per_user"]["generated"].items()},
        "physical": physical,
        "cfg_sweep": sweep,
        "baseline": untrained,
        "config": asdict(config),
        "seconds": seconds,
    }
    atomic_write_json(out_dir / "doppler.json", result)
    return result


@torch.no_grad()
def reconstructions(generator, pixels: torch.Tensor, labels: torch.Tensor,
                    batch_size: int = 256) -> torch.Tensor:
    """uint8 images -> uint8 VAE reconstructions from the posterior mean (given each image's user)."""
    mean, _ = encode(generator.vae, pixels, labels, batch_size)
    return generator.decode(mean, labels, batch_size)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium eval doppler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True, help="the DiT checkpoint")
    parser.add_argument("--vae", type=Path, default=None,
                        help="the VAE checkpoint (default: the one the DiT names)")
    parser.add_argument("--data", type=Path, required=True,
                        help="the prepared real data (split.csv, prepare.json)")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN/eval of the DiT checkpoint")
    parser.add_argument("--cfg", type=float, default=None)
    parser.add_argument("--per-user", type=int, default=EvalConfig.generated_per_user)
    parser.add_argument("--low-data", type=int, default=EvalConfig.low_data_per_user)
    parser.add_argument("--seeds", type=int, default=EvalConfig.seeds)
    parser.add_argument("--classifier-steps", type=int, default=ClassifierConfig.steps,
                        help="steps of the two classifiers trained on all of TRAIN")
    parser.add_argument("--aug-steps", type=int, default=EvalConfig.aug_steps)
    parser.add_argument("--cfg-sweep", type=float, nargs="+", default=list(EvalConfig.cfg_sweep))
    parser.add_argument("--sweep-per-user", type=int, default=EvalConfig.sweep_per_user)
    parser.add_argument("--steps", type=int, default=None,
                        help="sampler steps (default: the DiT's sampling config)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", action="store_true", help="also score the untrained generator")
    args = parser.parse_args(argv)
    generator = Generator.from_checkpoints(args.ckpt, args.vae)
    hp = generator.vae.hparams
    real = RealSpectrograms(args.data, hp["image_size"], hp["channels"])
    out = args.out or args.ckpt.resolve().parent.parent / "eval"
    config = EvalConfig(generated_per_user=args.per_user, low_data_per_user=args.low_data, seeds=args.seeds,
                        evaluator=ClassifierConfig(steps=args.classifier_steps, blur_sigma=2.0),
                        classifier=ClassifierConfig(steps=args.classifier_steps), aug_steps=args.aug_steps,
                        cfg_sweep=tuple(args.cfg_sweep), sweep_per_user=args.sweep_per_user)
    baseline = generator.untrained(args.seed) if args.baseline else None
    result = evaluate(generator, real, out, config, baseline, args.seed, cfg_scale=args.cfg, steps=args.steps)
    print(summary_line(result) + f" -> {out / 'doppler.json'}")
    return 0


def summary_line(result: dict) -> str:
    gain = result["aug_gain"]
    gains = ", ".join(f"{k} {gain[k]['mean']:+.3f}+-{gain[k]['std']:.3f}"
                      for k in ("generated", "classic", "both"))
    text = (f"[eval] doppler (TEST): conditioning fidelity {result['cond_fidelity']:.3f} (real test "
            f"{result['classifier']['real_test_accuracy']:.3f}, chance {result['chance']:.3f}); CAS (TSTR) "
            f"{result['cas']:.3f}, TRTS {result['trts']:.3f}; FD {result['fd']:.2f} (floor "
            f"{result['fd_floor']:.2f}); gain over real only: {gains}")
    base = result.get("baseline")
    if base:
        text += f"; untrained generator: fidelity {base['cond_fidelity']:.3f}, FD {base['fd']:.2f}"
    return text
