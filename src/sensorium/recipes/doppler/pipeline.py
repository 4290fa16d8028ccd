"""`sensorium pipeline doppler --data DIR --out WORK [--skip STAGE ...] [--force STAGE ...]`: every stage
from a dataset in the `ID_k` layout to the evaluation (the doppler note's `complete_pipeline.py`).

    prepare  -> WORK/prepared/{split.csv, prepare.json}   (train / val / test per user, by recording)
    vae      -> WORK/runs/doppler/vae/           (sensorium fit --config doppler/demo)
    extract  -> WORK/latents/{latents.safetensors, latents.json}
    dit      -> WORK/runs/doppler/dit/           (sensorium fit --config doppler/dit_demo)
    sample   -> WORK/generated/ID_k/gen_XXXX.png
    eval     -> WORK/runs/doppler/dit/eval/doppler.json (+ PNGs), every reported number on TEST

Val chooses (the VAE's best.ckpt by val/psnr; the evaluation's CFG sweep); test reports; nothing
chooses on test.

Each finished stage writes WORK/stages/<stage>.json with a digest of its inputs (the dataset's file
listing, the configs and overrides, the checkpoints and files it reads, its own options). On the
next run a stage is reused when that digest is unchanged and its outputs exist; otherwise it runs
again, and so does everything after it, whose inputs then differ. `--force STAGE` reruns a stage
regardless; `--skip STAGE` does not run it (its outputs must already exist for the stages after it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sensorium.engine.checkpoint import atomic_write_json
from sensorium.errors import ConfigError
from sensorium.recipes import resolve_config
from sensorium.recipes.doppler.latents import file_digest
from sensorium.recipes.doppler.reader import RealSpectrograms, user_folders

STAGES = ("prepare", "vae", "extract", "dit", "sample", "eval")


def _hash(*parts) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(),
                           digest_size=16).hexdigest()


def listing_digest(root: Path) -> str:
    """Digest of a dataset's user folders: every file's relative path, size and modification time."""
    entries = []
    for _, folder in user_folders(root).items():
        for path in sorted(folder.iterdir()):
            stat = path.stat()
            entries.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return _hash(entries)


def file_hash(path: Path) -> str:
    return file_digest(path) if path.is_file() else "missing"


@dataclass
class PipelineConfig:
    data: Path
    out: Path
    vae_config: str = "doppler/demo"
    dit_config: str = "doppler/dit_demo"
    val_ratio: float = 0.2
    test_ratio: float = 0.2
    """Shares of each user's recordings in VAL and TEST (`prepare.split_users`); an INPUT/split.csv wins."""
    seed: int = 0
    vae_overrides: list[str] = field(default_factory=list)
    dit_overrides: list[str] = field(default_factory=list)
    sample_per_user: int = 8
    eval_options: dict = field(default_factory=dict)
    """Keyword arguments of EvalConfig (generated_per_user, low_data_per_user, seeds, ...)."""
    baseline: bool = True
    """Score the untrained generator in the evaluation too."""
    skip: tuple[str, ...] = ()
    force: tuple[str, ...] = ()

    @property
    def prepared(self) -> Path:
        return self.out / "prepared"

    @property
    def latents(self) -> Path:
        return self.out / "latents"

    @property
    def generated(self) -> Path:
        return self.out / "generated"

    def run_dir(self, stage: str) -> Path:
        return self.out / "runs" / "doppler" / stage

    @property
    def vae_ckpt(self) -> Path:
        return self.run_dir("vae") / "checkpoints" / "best.ckpt"

    @property
    def dit_ckpt(self) -> Path:
        # The last weights (their EMA), not best.ckpt: the DiT's monitored value is a flow loss at
        # fixed times, not a measure of its samples.
        return self.run_dir("dit") / "checkpoints" / "last.ckpt"


class Pipeline:
    def __init__(self, config: PipelineConfig, log: Callable[[str], None] = print):
        unknown = {s for s in (*config.skip, *config.force) if s not in STAGES}
        if unknown:
            raise ConfigError("--skip/--force",
                              f"unknown stage(s) {sorted(unknown)}; stages: {', '.join(STAGES)}")
        self.config, self.log = config, log
        self.seconds: dict[str, float] = {}
        self.reused: list[str] = []
        self.results: dict[str, dict] = {}

    # --- bookkeeping ----------------------------------------------------------------------------------
    def _record(self, stage: str) -> Path:
        return self.config.out / "stages" / f"{stage}.json"

    def _run(self, stage: str, inputs: str, outputs: list[Path], run: Callable[[], dict | None]) -> None:
        c = self.config
        record = self._record(stage)
        previous = json.loads(record.read_text()) if record.is_file() else None
        done = previous is not None and all(p.exists() for p in outputs)
        if stage in c.skip:
            if not all(p.exists() for p in outputs):
                raise ConfigError("--skip", f"stage {stage} is skipped but its outputs are missing: "
                                            f"{[str(p) for p in outputs if not p.exists()]}")
            self.log(f"[pipeline] {stage}: skipped (--skip)")
            self.results[stage] = (previous or {}).get("result") or {}
            return
        if done and previous["inputs"] == inputs and stage not in c.force:
            self.log(f"[pipeline] {stage}: reused (inputs unchanged since {previous['finished']})")
            self.reused.append(stage)
            self.results[stage] = previous.get("result") or {}
            return
        why = "forced" if stage in c.force else "inputs changed" if done else "not run yet"
        self.log(f"[pipeline] {stage}: running ({why})")
        start = time.perf_counter()
        result = run() or {}
        self.seconds[stage] = round(time.perf_counter() - start, 1)
        self.results[stage] = result
        atomic_write_json(record, {"inputs": inputs, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                   "seconds": self.seconds[stage], "outputs": [str(p) for p in outputs],
                                   "result": result})

    # --- the stages -----------------------------------------------------------------------------------
    def run(self, stop_after: str | None = None) -> dict[str, dict]:
        """Run (or reuse) the stages in order, up to and including `stop_after` (default: all)."""
        c = self.config
        if not c.data.is_dir():
            raise ConfigError(c.data,
                              "no such dataset folder (expected ID_1/, ID_2/, ... of spectrogram images)")
        vae_yaml, dit_yaml = resolve_config(c.vae_config), resolve_config(c.dit_config)
        for stage in STAGES:
            if stage == "prepare":
                self._run("prepare", _hash(listing_digest(c.data), file_hash(c.data / "split.csv"),
                                           c.val_ratio, c.test_ratio, c.seed),
                          [c.prepared / "split.csv", c.prepared / "prepare.json"], self._prepare)
            elif stage == "vae":
                self._run("vae", _hash(self._fingerprint(), vae_yaml.read_text(), c.vae_overrides, c.seed),
                          [c.vae_ckpt], lambda: self._fit("vae", vae_yaml, c.prepared, c.vae_overrides))
            elif stage == "extract":
                self._run("extract", _hash(self._fingerprint(), file_hash(c.vae_ckpt)),
                          [c.latents / "latents.safetensors", c.latents / "latents.json"], self._extract)
            elif stage == "dit":
                self._run("dit", _hash(file_hash(c.latents / "latents.safetensors"), dit_yaml.read_text(),
                                       c.dit_overrides, c.seed),
                          [c.dit_ckpt], lambda: self._fit("dit", dit_yaml, c.latents, c.dit_overrides))
            elif stage == "sample":
                self._run("sample", _hash(file_hash(c.dit_ckpt), c.sample_per_user, c.seed),
                          [c.generated / "sample.json"], self._sample)
            else:
                self._run("eval", _hash(file_hash(c.dit_ckpt), self._fingerprint(), c.eval_options,
                                        c.baseline, c.seed),
                          [c.run_dir("dit") / "eval" / "doppler.json"], self._eval)
            if stage == stop_after:
                break
        return self.results

    def _fingerprint(self) -> str:
        return json.loads((self.config.prepared / "prepare.json").read_text())["fingerprint"]

    def _prepare(self) -> dict:
        from sensorium.recipes.doppler.prepare import prepare

        c = self.config
        info = prepare(c.data, c.prepared, c.val_ratio, c.seed, test_ratio=c.test_ratio)
        return {"images": info["images"], "splits": info["splits"], "users": len(info["users"])}

    def _fit(self, stage: str, config: Path, root: Path, overrides: list[str]) -> dict:
        from sensorium.engine.demo import fit

        run_dir = self.config.run_dir(stage)
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a rerun starts clean: no stale checkpoints or appended metrics
        cli = fit(config, self.config.out / "runs", stage, "--data.root", str(root),
                  "--seed_everything", str(self.config.seed), *overrides)
        score = cli.trainer.checkpoint_callback.best_model_score if cli.trainer.checkpoint_callback else None
        return {"global_step": int(cli.trainer.global_step), "epochs": int(cli.trainer.current_epoch),
                "best": float(score) if score is not None else None, "monitor": cli.model.monitor}

    def _extract(self) -> dict:
        from sensorium.recipes.doppler.extract import extract

        meta = extract(self.config.vae_ckpt, self.config.prepared, self.config.latents)
        return {"latent_shape": meta["latent_shape"], "counts": meta["counts"]}

    def _sample(self) -> dict:
        from sensorium.recipes.doppler.sample import Generator, write_pngs

        c = self.config
        if c.generated.exists():
            shutil.rmtree(c.generated)
        generator = Generator.from_checkpoints(c.dit_ckpt)
        pixels, labels = generator.generate(generator.users, c.sample_per_user, c.seed)
        paths = write_pngs(c.generated, pixels, [generator.users[i] for i in labels.tolist()])
        atomic_write_json(c.generated / "sample.json", {"dit": str(c.dit_ckpt), "per_user": c.sample_per_user,
                                                        "seed": c.seed, "images": len(paths)})
        return {"images": len(paths)}

    def _eval(self) -> dict:
        from sensorium.recipes.doppler.evaluate import EvalConfig, evaluate, summary_line
        from sensorium.recipes.doppler.sample import Generator

        c = self.config
        generator = Generator.from_checkpoints(c.dit_ckpt)
        hp = generator.vae.hparams
        real = RealSpectrograms(c.prepared, hp["image_size"], hp["channels"])
        baseline = generator.untrained(c.seed) if c.baseline else None
        result = evaluate(generator, real, c.run_dir("dit") / "eval", EvalConfig(**c.eval_options), baseline,
                          c.seed)
        self.log(summary_line(result))
        return {"eval": str(c.run_dir("dit") / "eval" / "doppler.json")}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensorium pipeline doppler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the dataset: DIR/ID_k/*.png")
    parser.add_argument("--out", type=Path, required=True,
                        help="the work folder (stages, runs, latents, samples)")
    parser.add_argument("--vae-config", default="doppler/demo")
    parser.add_argument("--dit-config", default="doppler/dit_demo")
    parser.add_argument("--val-ratio", type=float, default=0.2, help="val share per user (chooses)")
    parser.add_argument("--test-ratio", type=float, default=0.2, help="test share per user (reports)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-max-time", default=None, help="e.g. 00:00:05:00 (DD:HH:MM:SS)")
    parser.add_argument("--dit-max-time", default=None)
    parser.add_argument("--per-user", type=int, default=8,
                        help="spectrograms the sample stage writes per user")
    parser.add_argument("--skip", nargs="+", default=[], choices=STAGES, metavar="STAGE")
    parser.add_argument("--force", nargs="+", default=[], choices=STAGES, metavar="STAGE")
    parser.add_argument("--no-baseline", action="store_true", help="do not score the untrained generator")
    args = parser.parse_args(argv)
    config = PipelineConfig(
        args.data, args.out, args.vae_config, args.dit_config, val_ratio=args.val_ratio,
        test_ratio=args.test_ratio, seed=args.seed,
        vae_overrides=["--trainer.max_time", args.vae_max_time] if args.vae_max_time else [],
        dit_overrides=["--trainer.max_time", args.dit_max_time] if args.dit_max_time else [],
        sample_per_user=args.per_user, baseline=not args.no_baseline, skip=tuple(args.skip),
        force=tuple(args.force))
    pipeline = Pipeline(config)
    pipeline.run()
    print(f"[pipeline] done; ran {sorted(pipeline.seconds)}, reused {pipeline.reused} -> {args.out}")
    return 0
