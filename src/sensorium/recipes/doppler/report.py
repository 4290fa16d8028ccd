"""Doppler sections of the report.

A VAE run shows its reconstructions (eval/vae_reconstructions.png); a DiT run shows the evaluation
tables (eval/doppler.json, every number on TEST: fidelity, CAS / TSTR and TRTS, Fréchet distances
against their floor and the untrained generator, augmentation gains overall and per user with their
bar plot, physical fidelity), the real-vs-generated grid and the CFG sweep (on VAL: it chooses the
scale), the PNGs `figures.py` drew. The training curves of both come from the shared report.
"""

from __future__ import annotations

import json
from pathlib import Path

from sensorium.report.html import Section


# --- report sections ------------------------------------------------------------------------------------
def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def sections(run_dir: Path) -> list[Section]:
    eval_dir = run_dir / "eval"
    out: list[Section] = []
    recon = eval_dir / "vae_reconstructions.png"
    if recon.is_file():
        out.append(Section("VAE reconstructions (val)").image(recon.read_bytes(), alt="reconstructions"))
    result = _read(eval_dir / "doppler.json")
    export = _read(run_dir / "export" / "config.json") or {}
    if result is None:
        if export.get("stage") == "dit":
            out.append(Section("Generation").text(
                f"no eval/doppler.json yet: run `sensorium eval doppler --ckpt "
                f"{run_dir}/checkpoints/last.ckpt --data PREPARED_DIR`", muted=True))
        return out

    if "trts" not in result:  # an evaluation from before the TEST split
        out.append(Section("Generation").text(
            "eval/doppler.json predates the TEST split (it reported on VAL): prepare the data again "
            "(`sensorium prepare doppler --test-ratio 0.2`) and rerun the pipeline", muted=True))
        return out
    base = result.get("baseline") or {}
    splits = result["splits"]
    table = Section(f"Generation: {len(result['users'])} users (chance {result['chance']:.3f}); reported on "
                    f"TEST ({splits['test']} images; train {splits['train']}, val {splits['val']})")
    rows = [["conditioning fidelity (real-data classifier on generated)", result["cond_fidelity"],
             base.get("cond_fidelity")],
            ["the classifier on real test (ceiling of fidelity)", result["classifier"]["real_test_accuracy"],
             None],
            ["the classifier on VAE reconstructions of test (ceiling through this VAE)",
             result["vae_reconstruction"]["accuracy"], None],
            ["the same, judged by a classifier trained without blur",
             result["sharp_classifier"]["cond_fidelity"],
             None],
            ["CAS / TSTR (trained on generated, tested on real test)", result["cas"], None],
            ["TRTS (the same classifier trained on real train, tested on generated)", result["trts"], None],
            ["TRTR (that classifier on real test: TRTS's reference)", result["trtr"], None],
            ["Fréchet distance (classifier features)", result["fd"], base.get("fd")],
            ["Fréchet distance, real vs real (floor)", result["fd_floor"], base.get("fd_floor")]]
    table.table(["metric", "trained generator", "untrained generator"],
                [[r[0], _fmt(r[1]), _fmt(r[2])] for r in rows])
    table.text(f"FD on {result['fd_samples']} samples per side; VAE reconstruction PSNR "
               f"{result['vae_reconstruction']['psnr']:.2f} dB; sampling {result['sampling']}", muted=True)
    out.append(table)

    aug = result["aug"]
    gains = Section(f"Augmentation gain ({aug['low_data_per_user']} real recordings per user, "
                    f"{len(aug['seeds'])} seeds)")
    def per_seed(name: str) -> str:
        return ", ".join(f"{v:.3f}" for v in aug["accuracy"][name])

    def gain(name: str) -> str:
        return "" if name == "real" else f"{aug['gain'][name]['mean']:+.3f} ± {aug['gain'][name]['std']:.3f}"

    gains.table(["training data", "test accuracy (mean)", "per seed", "gain over real only"],
                [[name, _fmt(aug["accuracy_mean"][name]), per_seed(name), gain(name)]
                 for name in ("real", "classic", "generated", "both")])
    out.append(gains)

    per_user = Section("Per user (TEST)")
    kinds = ("generated", "classic", "both")
    header = ["user", "test images", *(f"gain: {k}" for k in kinds), "fidelity", "CAS (TSTR)", "TRTS", "FD",
              "FD floor"]
    rows = []
    for user in result["users"]:
        u = str(user)
        fd = result["fd_per_user"].get(u, {})
        user_gains = [aug["gain_per_user"][k].get(u) for k in kinds]
        rows.append([f"ID_{user}", str(aug["test_images_per_user"].get(u, 0)),
                     *("n/a" if g is None else f"{round(g['mean'], 3) + 0.0:+.3f} ± {g['std']:.3f}"
                       for g in user_gains),  # + 0.0: no "-0.000"
                     _fmt(result["cond_fidelity_per_user"].get(u)), _fmt(result["cas_per_user"].get(u)),
                     _fmt(result["trts_per_user"].get(u)), _fmt(fd.get("fd")), _fmt(fd.get("fd_floor"))])
    per_user.table(header, rows)
    per_user.text("gain: accuracy on the user's TEST images of the augmented low-data classifier minus the "
                  "real-only one, mean ± std over seeds (the overall gain is their mean weighted by test "
                  "images)", muted=True)
    if (eval_dir / "gain_per_user.png").is_file():
        per_user.image((eval_dir / "gain_per_user.png").read_bytes(), alt="augmentation gain per user")
    out.append(per_user)

    physical = result.get("physical")
    if physical:
        section = Section("Physical fidelity (synthetic data: measured from spectrograms vs users.csv)")
        section.table(["quantity", "real test: MAE", "real test: corr", "generated: MAE", "generated: corr"],
                      [["torso Doppler (Hz)", _fmt(physical["real_torso_mae_hz"]),
                        _fmt(physical["real_torso_corr"]),
                        _fmt(physical["generated_torso_mae_hz"]), _fmt(physical["generated_torso_corr"])],
                       ["gait-cycle frequency (Hz)", _fmt(physical["real_cycle_mae_hz"]),
                        _fmt(physical["real_cycle_corr"]), _fmt(physical["generated_cycle_mae_hz"]),
                        _fmt(physical["generated_cycle_corr"])]])
        out.append(section)

    sweep = Section("CFG scale sweep (on VAL: it chooses the scale)")
    sweep.table(["cfg scale", "fidelity", "FD (val)", "FD floor (val)"],
                [[s["cfg_scale"], _fmt(s["cond_fidelity"]), _fmt(s["fd_val"]), _fmt(s["fd_floor_val"])]
                 for s in result["cfg_sweep"]])
    for name in ("cfg_sweep.png", "samples_grid.png"):
        if (eval_dir / name).is_file():
            sweep.image((eval_dir / name).read_bytes(), alt=name)
    out.append(sweep)
    return out
