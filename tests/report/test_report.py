import json

import pytest

from sensorium.report.compare import final_values, write_comparison
from sensorium.report.curves import read_metrics
from sensorium.report.report import write_report


def _fake_run(root, name, loss_scale, accuracy):
    run = root / "toy" / name
    (run / "eval").mkdir(parents=True)
    lines = ["epoch,step,train/loss_step,train/loss_epoch,val/knn_accuracy"]
    for step in range(6):
        lines.append(f"0,{step},{loss_scale * (2 - step / 6):.4f},,")
    lines.append(f"0,5,,{loss_scale * 1.2:.4f},{accuracy}")
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    (run / "eval" / "probe.json").write_text(json.dumps({"accuracy": accuracy, "nested": {"mse": 0.5}, "note": "x"}))
    return run


def test_read_metrics_skips_empty_cells(tmp_path):
    run = _fake_run(tmp_path, "a", 1.0, 0.7)
    metrics = read_metrics(run / "metrics.csv")
    steps, values = metrics["train/loss_step"]
    assert len(steps) == 6 and values[0] == 2.0
    assert metrics["val/knn_accuracy"][1].tolist() == [0.7]


def test_final_values_and_comparison_page(tmp_path):
    a, b = _fake_run(tmp_path, "joint", 1.0, 0.8), _fake_run(tmp_path, "alternating", 2.0, 0.6)
    values = final_values(a)
    assert values["train/loss_epoch"] == 1.2 and values["probe/accuracy"] == 0.8 and values["probe/nested.mse"] == 0.5
    assert "probe/note" not in values
    html = write_comparison([a, b], tmp_path / "compare.html").read_text()
    assert "joint" in html and "alternating" in html and "2.4" in html  # b's final epoch loss
    assert html.count("data:image/png;base64,") >= 2  # loss and accuracy curves overlaid


def test_report_of_a_run_without_recipe_sections(tmp_path):
    run = _fake_run(tmp_path, "version_0", 1.0, 0.9)
    html = write_report(run).read_text()
    assert "Training curves" in html and "val/knn_accuracy" in html


def test_plots_hold_one_quantity_per_axis_and_at_most_six_curves():
    import numpy as np

    from sensorium.report.curves import MAX_CURVES, curves_png, curves_pngs, small_multiples_pngs
    from sensorium.report.report import training_curve_keys

    steps = np.arange(5.0)
    metrics = {k: (steps, steps + 1) for k in
               ["train/loss_step", "train/point_step", "train/set_step", "share/point_step", "share/set_step",
                "train/masked_negatives_step", "train/alpha_step", "val/psnr", "val/ratio"]}
    loss, other = training_curve_keys(metrics)
    # The weighted terms the shares name sit with the loss; a count and a weight do not.
    assert loss == ["train/loss_step", "train/point_step", "train/set_step"]
    assert other == ["train/alpha_step", "train/masked_negatives_step"]
    many = {f"val/iou/s{i}": (steps, steps) for i in range(11)}
    with pytest.raises(ValueError, match="use curves_pngs"):
        curves_png(many, list(many), "too many")
    assert len(curves_pngs(many, list(many), "IoU")) == 2 == -(-11 // MAX_CURVES)
    assert len(small_multiples_pngs(many, list(many), "each on its own axis")) == 2
