"""Why an rgbpc student's features help or fail the action head: the student against the aligned
teacher, point by point, on the demo's data, for train, val and test episodes.

    python benchmarks/rgbpc_student_diagnosis.py --data DEMO_OUT/data \
        --teacher DEMO_OUT/runs/rgbpc/align/checkpoints/best.ckpt \
        --student DEMO_OUT/runs/rgbpc/distil/export [--student OTHER/export ...] [--json OUT] [--threads 1]

Reads every step of every episode with the evaluation's settings (128 points a step, the same points
as `sensorium eval rgbpc`), computes (a) the point features, (b) the aligned fused RGB features, (c)
raw RGB (untrained adapters, seed 0) and each student's features there, and prints:

- the student's per-point cosine to (b) on the test points: mean, 5 / 25 / 50 / 75 / 95% quantiles,
  the same after removing each frame's mean (what tells a frame's points apart), the cosine per
  surface part and each part's share of the points, and the cosine on train / val / test (does the
  student fit its training frames better than new ones?);
- each source's spread within a frame (mean squared distance of its unit features to the frame's mean);
- linear readouts fitted on train points, scored on test points: depth (ridge R^2) and surface part
  (ridge on one-hot parts, accuracy and balanced accuracy);
- the action head (the evaluation's, 500 steps, `--head-seeds` seeds, 2 as in the demo) fitted on
  every training step of each source and its error on train, val and test steps (1 = predicting the
  mean), per seed and averaged, and the share of the raw RGB -> point-cloud gap each other source
  closes with each seed's heads (`gap_closed`: how much one draw of the head moves it).

The surface part of a point is decoded from its synthetic point features (`synth.teacher_features`
mixes a one-hot part code by a fixed orthogonal matrix), so the part readouts need data from
`sensorium synth rgbpc`. Val numbers are what a choice between students may look at; test numbers
are reported, never chosen on.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def collect(data_root: Path, teacher_ckpt: Path, students: list[Path]) -> dict:
    """{split: {source: (N, K, D) features, action, task, depth, pc}} for train, val and test steps."""
    from torch.utils.data import DataLoader, default_collate

    from sensorium.recipes.rgbpc.datamodule import RgbpcDataModule
    from sensorium.recipes.rgbpc.model import AlignNet, load_student
    from sensorium.recipes.rgbpc.task import load_align_net

    dm = RgbpcDataModule(root=str(data_root), action_points=128, action_train_episodes=None)
    dm.setup(None)
    teacher = load_align_net(teacher_ckpt).eval()
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the evaluation's raw_seed
        raw = AlignNet(teacher.config).eval()
    nets = {f"student:{p}": load_student(p).eval() for p in students}
    data = {}
    for split, shuffle in (("train", False), ("val", True), ("test", True)):
        parts: dict[str, list] = {}
        loader = DataLoader(dm._eval_steps(dm.splits[split], 128, shuffle), batch_size=32, collate_fn=default_collate)
        with torch.inference_mode():
            for batch in loader:
                out = {"pc": batch["pc_feat"].float(),
                       "rgb_aligned": F.normalize(teacher.patch_features(batch).fused.float(), dim=-1),
                       "rgb_raw": F.normalize(raw.patch_features(batch).fused.float(), dim=-1),
                       **{k: net.at_points(batch["image"], batch["uv"]).float() for k, net in nets.items()},
                       **{k: batch[k] for k in ("action", "task", "depth")}}
                for k, v in out.items():
                    parts.setdefault(k, []).append(v)
        data[split] = {k: torch.cat(v) for k, v in parts.items()}
    return data


def surface_parts(pc: torch.Tensor) -> torch.Tensor:
    """(..., 32) synthetic point features -> (...,) surface-part index (see the module docstring)."""
    from sensorium.recipes.rgbpc.synth import _teacher_matrices

    codes, mix = (torch.as_tensor(m, dtype=torch.float32) for m in _teacher_matrices())
    return ((pc @ mix)[..., 13:] @ codes.T).argmax(-1)


def ridge(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    from sensorium.recipes.rgbpc.metrics import _standardise

    x_train, x_test = _standardise(x_train.double(), x_test.double())
    x1 = torch.cat([x_train, torch.ones(len(x_train), 1, dtype=x_train.dtype)], 1)
    w = torch.linalg.solve(x1.T @ x1 + alpha * torch.eye(x1.shape[1], dtype=x1.dtype), x1.T @ y_train.double())
    return torch.cat([x_test, torch.ones(len(x_test), 1, dtype=x_test.dtype)], 1) @ w


def diagnose(data: dict, sources: list[str], head_steps: int = 500, head_seeds: int = 2) -> dict:
    from sensorium.recipes.rgbpc.metrics import _standardise, depth_probe, feature_agreement, fit_action_head
    from sensorium.recipes.rgbpc.synth import PARTS

    train, test = data["train"], data["test"]
    for split in data.values():
        split["part"] = surface_parts(split["pc"])
    report: dict = {"points": {k: int(v["pc"].shape[0] * v["pc"].shape[1]) for k, v in data.items()},
                    "part_share": {PARTS[p]: float((test["part"] == p).float().mean()) for p in range(len(PARTS))}}
    for name in sources:
        entry: dict = {}
        if name.startswith("student"):
            entry["agreement"] = feature_agreement(test[name], test["rgb_aligned"])
            cosine = F.cosine_similarity(test[name], test["rgb_aligned"], dim=-1)
            entry["cosine_by_part"] = {PARTS[p]: float(cosine[test["part"] == p].mean()) for p in range(len(PARTS))
                                       if (test["part"] == p).any()}
            entry["cosine_by_split"] = {}
            for split, d in data.items():
                c = F.cosine_similarity(d[name], d["rgb_aligned"], dim=-1)
                entry["cosine_by_split"][split] = {"all": float(c.mean()), "objects": float(c[d["part"] != 0].mean())}
        unit = F.normalize(test[name], dim=-1)
        entry["within_frame_spread"] = float((unit - unit.mean(1, keepdim=True)).pow(2).sum(-1).mean())
        entry["depth_r2"] = depth_probe(train[name].flatten(0, 1), train["depth"].flatten(),
                                        test[name].flatten(0, 1), test["depth"].flatten())["r2"]
        truth = test["part"].flatten()
        pred = ridge(train[name].flatten(0, 1), F.one_hot(train["part"].flatten(), len(PARTS)),
                     test[name].flatten(0, 1)).argmax(-1)
        entry["part_accuracy"] = float((pred == truth).double().mean())
        entry["part_balanced_accuracy"] = float(np.mean([float((pred[truth == p] == p).double().mean())
                                                         for p in range(len(PARTS)) if (truth == p).any()]))
        # the head: fitted on every training step, scored on its own steps, val and test
        mean, scale = train["action"].mean(0), train["action"].std(0).norm()
        targets = {k: (d["action"] - mean) / scale for k, d in data.items()}
        inputs = dict(zip(data, _standardise(*(d[name] for d in data.values()))))
        errors: dict[str, list] = {k: [] for k in data}
        for seed in range(head_seeds):
            head = fit_action_head(inputs["train"], train["task"], targets["train"], 3, seed, head_steps, 1e-3)
            with torch.no_grad():
                for k, d in data.items():
                    y = targets[k]
                    errors[k].append(float((head(inputs[k], d["task"]) - y).pow(2).sum(1).mean()
                                           / (y - y.mean(0)).pow(2).sum(1).mean()))
        entry["head_error"] = {k: float(np.mean(v)) for k, v in errors.items()}
        entry["head_error_per_seed"] = errors
        report[name] = entry
    report["gap_closed"] = gap_closed_per_seed(report)
    return report


def gap_closed_per_seed(report: dict) -> dict:
    """For each split and each source beside pc and raw RGB: the share of the raw RGB -> point-cloud gap
    it closes with each head seed (the same seed's head for every source), their mean and spread: how
    much of a 40% target one draw of the head decides."""
    from sensorium.recipes.rgbpc.metrics import gap_closed_per_head

    if not {"pc", "rgb_raw"} <= set(report):
        return {}
    out: dict = {}
    for name, entry in report.items():
        if not isinstance(entry, dict) or "head_error_per_seed" not in entry or name in ("pc", "rgb_raw"):
            continue
        for split in entry["head_error_per_seed"]:
            detail = {source: {"errors": report[source]["head_error_per_seed"][split]}
                      for source in ("pc", "rgb_raw", name)}
            closed = gap_closed_per_head(detail, name)
            if closed is not None:
                out.setdefault(name, {})[split] = {"per_seed": closed["per_head"], "mean": closed["mean"],
                                                   "std": closed["std"]}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="DEMO_OUT/data")
    parser.add_argument("--teacher", type=Path, required=True, help="the alignment run's best.ckpt")
    parser.add_argument("--student", type=Path, action="append", default=[], help="a distillation run's export")
    parser.add_argument("--sources", nargs="*", default=None, help="default: pc rgb_aligned rgb_raw and the students")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--head-seeds", type=int, default=2, help="action heads fitted per source (default 2, "
                                                                   "the demo's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = collect(args.data, args.teacher, args.student)
    sources = args.sources or ["pc", "rgb_aligned", "rgb_raw", *(f"student:{p}" for p in args.student)]
    report = diagnose(data, sources, head_seeds=args.head_seeds)
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
