"""Why a tactile demo's frozen-feature k-NN is weak or strong on one dataset: the trained and the
untrained encoder's features of every window, read several ways.

    python benchmarks/tactile_knn_diagnosis.py DEMO_OUT [DEMO_OUT ...] [--json OUT] [--threads 1]

DEMO_OUT is a `sensorium demo tactile --out` directory (its data/ and runs/tactile/demo/). For each,
on the trained (best.ckpt) and the untrained encoder (the same config and training seed), it prints:

- the dataset: windows per split, the class and sensor mix of each split, the share of static
  (pressed in place) recordings;
- k-NN accuracy on VAL (bank: train) and on TEST (bank: train + val) for every pooling
  (mean / cls / max of the patch tokens / mean of the contact tokens: the patches whose frame
  differs most from the frame's median, see `contact_pool`) / mean or cls minus the same pooling of
  the recording's first frame, before contact (`-ref`: the recording's own gel, lighting and markers
  taken out in feature space) / the change of each patch token from the reference frame's, pooled
  keeping the layout (`grid2-ref`, `grid4-ref`: 2 x 2 or 4 x 4 cells of token means), weighted by
  how much each token changed (`weighted-ref`: the mean of frame t's tokens with those weights) or
  over the 16 most changed tokens only (`changed-ref`) / no encoder at all: the frame's pixels at 16 x 16 (`pixels`), and
  minus the reference frame's (`pixels-ref`), the same for both encoders) x standardisation
  (none / bank / sensor)
  x k (5, 10, 20, 50), and which protocol val picks (the test column is printed beside it, never
  chosen on);
- the geometry under the configured protocol: the effective rank of the features (participation
  ratio of the covariance's eigenvalues), the share of variance in the first 1 / 5 principal
  components, how much of that variance the sensor and the class explain (between-group share),
  the share of a query's 20 nearest bank windows from its own sensor and of its own class, and
  TEST k-NN per sensor.

Numbers only; nothing here trains or changes the recipe.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

POOLS = ("mean", "cls", "max", "contact", "mean-ref", "cls-ref", "grid2-ref", "grid4-ref", "weighted-ref",
         "changed-ref", "pixels", "pixels-ref")
PROTOCOLS = ("none", "bank", "sensor")
KS = (5, 10, 20, 50)


def contact_pool(tokens: torch.Tensor, frames: torch.Tensor, patch: int, share: float = 0.25) -> torch.Tensor:
    """Mean of the patch tokens (B, L, D) at the `share` of patches whose pixels differ most from the
    frame's per-channel median: where the indenter presses (the gel elsewhere is flat background)."""
    median = frames.flatten(2).median(dim=2).values[..., None, None]  # (B, C, 1, 1)
    deviation = (frames - median).abs().mean(1)  # (B, H, W)
    per_patch = torch.nn.functional.avg_pool2d(deviation[:, None], patch).flatten(1)  # (B, L)
    keep = max(1, round(share * per_patch.shape[1]))
    top = per_patch.topk(keep, dim=1).indices  # (B, keep)
    return tokens.gather(1, top[..., None].expand(-1, -1, tokens.shape[-1])).mean(1)


def change_pools(tokens: torch.Tensor, reference: torch.Tensor, grid: tuple[int, int], top: int = 16
                 ) -> dict[str, torch.Tensor]:
    """Poolings of the patch tokens' change from the reference frame's (B, L, D) each: layout-keeping
    grids of cell means, a change-weighted mean of frame t's tokens and the mean change of the `top`
    most changed tokens (where the indenter presses)."""
    change = tokens - reference  # (B, L, D)
    cells = change.transpose(1, 2).reshape(change.shape[0], change.shape[2], *grid)  # (B, D, h, w)
    weight = change.norm(dim=-1, keepdim=True)  # (B, L, 1)
    most = weight[..., 0].topk(min(top, change.shape[1]), dim=1).indices  # (B, top)
    return {"grid2-ref": torch.nn.functional.adaptive_avg_pool2d(cells, 2).flatten(1),
            "grid4-ref": torch.nn.functional.adaptive_avg_pool2d(cells, 4).flatten(1),
            "weighted-ref": (weight * tokens).sum(1) / weight.sum(1).clamp_min(1e-6),
            "changed-ref": change.gather(1, most[..., None].expand(-1, -1, change.shape[-1])).mean(1)}


def thumbnail(frames: torch.Tensor, size: int = 16) -> torch.Tensor:
    """(B, 3 * size * size): the frames' pixels, area-averaged to size x size, as a feature."""
    return torch.nn.functional.adaptive_avg_pool2d(frames.float(), size).flatten(1)


@torch.no_grad()
def features(net, loader, augment) -> dict[str, torch.Tensor]:
    """Pooled features of each window's static frame, and its label, sensor and slip flag."""
    out: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        if "frames" not in batch:
            continue
        frames = augment(batch["frames"])[:, -1]  # (B, C, H, W): the frame the probes read
        sensor = batch["sensor"]
        reference = augment.normalize(batch["reference"])  # the recording's frame 0 (data.reference_frames)
        x, x_ref = net.encode_tokens(frames, sensor).float(), net.encode_tokens(reference, sensor).float()
        tokens = x[:, -net.num_patches:]
        mean, cls = net.pool_tokens(x, "mean"), net.pool_tokens(x, "cls")
        pooled = {"mean": mean, "cls": cls, "max": tokens.amax(1),
                  "contact": contact_pool(tokens, frames, net.patch_size),
                  "mean-ref": mean - net.pool_tokens(x_ref, "mean"), "cls-ref": cls - net.pool_tokens(x_ref, "cls"),
                  "pixels": thumbnail(frames), "pixels-ref": thumbnail(frames) - thumbnail(reference)}
        pooled |= change_pools(tokens, x_ref[:, -net.num_patches:], net.grid)
        for key, value in pooled.items():
            out.setdefault(key, []).append(value)
        for key in ("label", "sensor", "slip"):
            if key in batch:
                out.setdefault(key, []).append(batch[key])
    return {key: torch.cat(value) for key, value in out.items()}


def protocol_features(bank: dict, query: dict, pool: str, protocol: str):
    from sensorium.eval.probes import standardize

    if protocol == "none":
        return bank[pool].float(), query[pool].float()
    if protocol == "bank":
        return standardize(bank[pool], query[pool])
    return standardize(bank[pool], query[pool], bank["sensor"], query["sensor"])


def knn_grid(bank: dict, query: dict, temperature: float) -> dict[str, float]:
    from sensorium.eval.probes import knn_accuracy

    grid = {}
    for pool in POOLS:
        for protocol in PROTOCOLS:
            bank_x, query_x = protocol_features(bank, query, pool, protocol)
            for k in KS:
                grid[f"{pool}/{protocol}/k{k}"] = knn_accuracy(bank_x, bank["label"], query_x, query["label"], k,
                                                               temperature)
    return grid


def geometry(bank: dict, query: dict, pool: str, protocol: str) -> dict:
    """Effective rank, PC shares, between-sensor / between-class variance shares, neighbour purity."""
    import torch.nn.functional as F

    bank_x, query_x = protocol_features(bank, query, pool, protocol)
    centred = bank_x - bank_x.mean(0)
    eig = torch.linalg.eigvalsh(centred.T @ centred / (len(centred) - 1)).flip(0).clamp_min(0)
    total = float(eig.sum())

    def between(groups: torch.Tensor) -> float:
        means = torch.stack([centred[groups == g].mean(0) for g in groups.unique()])
        counts = torch.stack([(groups == g).sum() for g in groups.unique()]).float()
        return float((counts[:, None] * means**2).sum() / (len(centred) - 1) / total)

    sims = F.normalize(query_x, dim=1) @ F.normalize(bank_x, dim=1).T
    top = sims.topk(20, dim=1).indices  # (N_q, 20)
    return {
        "effective_rank": float(total**2 / (eig**2).sum()),
        "pc1_share": float(eig[0] / total), "pc5_share": float(eig[:5].sum() / total),
        "sensor_variance_share": between(bank["sensor"]), "class_variance_share": between(bank["label"]),
        "neighbours_same_sensor": float((bank["sensor"][top] == query["sensor"][:, None]).float().mean()),
        "neighbours_same_class": float((bank["label"][top] == query["label"][:, None]).float().mean()),
    }


def per_sensor_knn(bank: dict, query: dict, pool: str, protocol: str, k: int, temperature: float) -> dict:
    from sensorium.eval.probes import knn_predict

    bank_x, query_x = protocol_features(bank, query, pool, protocol)
    pred = knn_predict(bank_x, bank["label"], query_x, k, temperature, int(bank["label"].max()) + 1)
    return {int(s): float((pred == query["label"])[query["sensor"] == s].float().mean())
            for s in query["sensor"].unique()}


def mix(windows) -> dict:
    from collections import Counter

    return {"windows": len(windows), "objects": len({w.group for w in windows}),
            "classes": dict(sorted(Counter(w.label for w in windows).items())),
            "sensors": dict(sorted(Counter(w.sensor for w in windows).items()))}


def diagnose(demo: Path) -> dict:
    import lightning as L

    from sensorium.recipes.tactile.datamodule import TactileDataModule
    from sensorium.recipes.tactile.task import TactileTask

    run = demo / "runs" / "tactile" / "demo"
    config = yaml.safe_load((run / "config.yaml").read_text())
    data_args = dict(config["data"]["init_args"], root=str(demo / "data"), num_workers=0, reference_frames=True)
    dm = TactileDataModule(**data_args)
    dm.setup("test")
    trained = TactileTask.load_from_checkpoint(run / "checkpoints" / "best.ckpt", map_location="cpu").eval()
    L.seed_everything(int(config.get("seed_everything") or 0), verbose=False)
    untrained = TactileTask(**dict(trained.hparams)).eval()
    e = trained.eval_config
    loaders = {split: dm.eval_loader(dm.datasets[split], split) for split in ("train", "val", "test")}
    result = {"splits": {split: mix(dm.windows[split]) for split in loaders}}
    for name, task in (("trained", trained), ("untrained", untrained)):
        task.augment.train(False)
        feats = {split: features(task.net, loader, task.augment) for split, loader in loaders.items()}
        train_val = {key: torch.cat([feats["train"][key], feats["val"][key]]) for key in feats["train"]}
        val_grid = knn_grid(feats["train"], feats["val"], e.knn_temperature)
        test_grid = knn_grid(train_val, feats["test"], e.knn_temperature)
        chosen = max(val_grid, key=val_grid.get)
        configured = f"{e.pool}/{e.standardize}/k{e.knn_k}"
        result[name] = {
            "val": val_grid, "test": test_grid, "val_choice": chosen, "configured": configured,
            "geometry": geometry(train_val, feats["test"], e.pool, e.standardize),
            "test_per_sensor": per_sensor_knn(train_val, feats["test"], e.pool, e.standardize, e.knn_k,
                                              e.knn_temperature),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demos", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for demo in args.demos:
        start = time.perf_counter()
        r = results[str(demo)] = diagnose(demo)
        print(f"\n== {demo} ({time.perf_counter() - start:.0f} s)")
        for split, m in r["splits"].items():
            print(f"  {split:5s} {m['windows']} windows of {m['objects']} objects; classes {m['classes']}; "
                  f"sensors {m['sensors']}")
        for name in ("trained", "untrained"):
            n = r[name]
            c, v = n["configured"], n["val_choice"]
            print(f"  {name:9s} configured {c}: val {n['val'][c]:.3f} test {n['test'][c]:.3f} | val picks {v}: "
                  f"val {n['val'][v]:.3f} test {n['test'][v]:.3f}")
            g = n["geometry"]
            print("            " + ", ".join(f"{k} {val:.3f}" for k, val in g.items())
                  + f"; test k-NN per sensor {', '.join(f'{s}: {a:.3f}' for s, a in n['test_per_sensor'].items())}")
        print("  protocol                trained val/test   untrained val/test   gain val/test")
        for key in r["trained"]["val"]:
            t, u = r["trained"], r["untrained"]
            print(f"  {key:22s}  {t['val'][key]:.3f} / {t['test'][key]:.3f}      {u['val'][key]:.3f} / {u['test'][key]:.3f}"
                  f"      {t['val'][key] - u['val'][key]:+.3f} / {t['test'][key] - u['test'][key]:+.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
