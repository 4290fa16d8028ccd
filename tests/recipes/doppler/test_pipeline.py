"""`sensorium pipeline doppler`'s bookkeeping: a finished stage is reused while its inputs are
unchanged, rerun when they change or when forced, and a skipped stage needs its outputs."""

import pytest

from sensorium.errors import ConfigError
from sensorium.recipes.doppler.pipeline import Pipeline, PipelineConfig, listing_digest


def _pipeline(tmp_path, **kwargs):
    (tmp_path / "data" / "ID_1").mkdir(parents=True)
    return Pipeline(PipelineConfig(tmp_path / "data", tmp_path / "work", **kwargs), log=lambda line: None)


def test_a_stage_is_reused_until_its_inputs_change_or_it_is_forced(tmp_path):
    pipeline = _pipeline(tmp_path)
    output, runs = tmp_path / "out.txt", []

    def stage():
        runs.append(1)
        output.write_text("done")
        return {"n": len(runs)}

    pipeline._run("extract", "inputs-a", [output], stage)
    pipeline._run("extract", "inputs-a", [output], stage)
    assert len(runs) == 1 and pipeline.reused == ["extract"] and pipeline.results["extract"] == {"n": 1}
    pipeline._run("extract", "inputs-b", [output], stage)
    assert len(runs) == 2
    output.unlink()  # a missing output is not reused either
    pipeline._run("extract", "inputs-b", [output], stage)
    assert len(runs) == 3
    pipeline.config.force = ("extract",)
    pipeline._run("extract", "inputs-b", [output], stage)
    assert len(runs) == 4


def test_a_skipped_stage_needs_its_outputs(tmp_path):
    pipeline = _pipeline(tmp_path, skip=("dit",))
    with pytest.raises(ConfigError, match="stage dit is skipped but its outputs are missing"):
        pipeline._run("dit", "x", [tmp_path / "work" / "last.ckpt"], lambda: None)
    with pytest.raises(ConfigError, match="unknown stage"):
        _pipeline(tmp_path / "other", force=("train",))


def test_the_dataset_listing_changes_with_its_files(tmp_path):
    folder = tmp_path / "data" / "ID_1"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"1")
    before = listing_digest(tmp_path / "data")
    assert listing_digest(tmp_path / "data") == before
    (folder / "b.png").write_bytes(b"2")
    assert listing_digest(tmp_path / "data") != before


def test_prepare_reruns_when_the_test_share_or_the_datas_own_split_changes(tmp_path):
    import numpy as np
    from PIL import Image

    for u in (1, 2):
        for r in range(5):
            path = tmp_path / "data" / f"ID_{u}" / f"rec_{r}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 10 * u + r, dtype=np.uint8)).save(path)
    config = PipelineConfig(tmp_path / "data", tmp_path / "work", test_ratio=0.2)
    pipeline = Pipeline(config, log=lambda line: None)
    assert pipeline.run(stop_after="prepare")["prepare"]["splits"] == {"train": 6, "val": 2, "test": 2}
    pipeline.run(stop_after="prepare")
    assert pipeline.reused == ["prepare"]
    pipeline.config.test_ratio = 0.4
    assert pipeline.run(stop_after="prepare")["prepare"]["splits"] == {"train": 4, "val": 2, "test": 4}
    rows = ["path,split"] + [f"ID_{u}/rec_{r}.png,{'test' if r == 0 else 'train'}"
                             for u in (1, 2) for r in range(5)]
    (tmp_path / "data" / "split.csv").write_text("\n".join(rows) + "\n")
    assert pipeline.run(stop_after="prepare")["prepare"]["splits"] == {"train": 8, "val": 0, "test": 2}
