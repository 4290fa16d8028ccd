"""The welding field metrics (good-vs-defect AUROC, binary F1, ECE, challenge score) against
hand-computed values and their defining properties, and their way into knn.json and the report."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sensorium.recipes.welding.metrics import (
    GOOD,
    field_metrics,
    knn_test_report,
    reliability_bins,
    write_test_eval,
)
from sensorium.recipes.welding.reader import MODALITIES, WELDING_LABELS

C = len(WELDING_LABELS)
FIELD_KEYS = {"auroc", "auroc_mean", "binary_f1", "binary_f1_always_defect", "ece", "challenge_score", "reliability"}


def _one_hot_shares(classes: torch.Tensor) -> torch.Tensor:
    return F.one_hot(classes, C).float()


def _challenge(m: dict, f1_macro: float) -> float:
    return 0.6 * m["binary_f1"] + 0.4 * f1_macro - 0.05 * m["ece"]


def test_perfect_and_reversed_scorers():
    labels = torch.arange(C).repeat(3)  # every class, three times
    perfect = field_metrics(labels, labels, _one_hot_shares(labels), f1_macro=1.0)
    assert set(perfect) == FIELD_KEYS
    assert set(perfect["auroc"]) == set(WELDING_LABELS) - {"Good"}
    assert all(a == 1.0 for a in perfect["auroc"].values()) and perfect["auroc_mean"] == 1.0
    assert perfect["binary_f1"] == 1.0 and perfect["ece"] == pytest.approx(0.0, abs=1e-7)
    assert perfect["challenge_score"] == pytest.approx(1.0)
    # Every defect voted Good and every Good voted a defect: each defect ranks below Good.
    swapped = torch.where(labels == GOOD, 1, GOOD)
    reversed_ = field_metrics(labels, swapped, _one_hot_shares(swapped), f1_macro=0.0)
    assert all(a == 0.0 for a in reversed_["auroc"].values()) and reversed_["auroc_mean"] == 0.0
    assert reversed_["binary_f1"] == 0.0
    assert reversed_["ece"] == pytest.approx(1.0)  # confidence 1, never right
    assert reversed_["challenge_score"] == pytest.approx(-0.05)


def test_random_scorer_has_auroc_near_half():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # Dirichlet samples from the global generator
    n = 24000
    labels = torch.randint(0, C, (n,), generator=g)
    shares = torch.distributions.Dirichlet(torch.ones(C)).sample((n,))  # unrelated to the labels
    m = field_metrics(labels, shares.argmax(dim=1), shares, f1_macro=0.0)
    assert m["auroc_mean"] == pytest.approx(0.5, abs=0.01)
    assert all(a == pytest.approx(0.5, abs=0.04) for a in m["auroc"].values())


def test_auroc_binary_f1_ece_and_challenge_score_by_hand():
    labels = torch.tensor([0, 0, 2, 2, 5])  # Good, Good, Undercut, Undercut, Porosity
    shares = torch.zeros(5, C)
    # P(Good) 0.9 and 0.64 for the Good samples: defect scores 0.1 and 0.36.
    shares[0, 0], shares[0, 1] = 0.9, 0.1
    shares[1, 0], shares[1, 2] = 0.64, 0.36
    # Undercut: defect scores 0.32 and 0.82. The first puts its non-Good vote on Porosity, so
    # share(Undercut) would score it 0 and rank it last; 1 - P(Good) scores it 0.32.
    shares[2, 0], shares[2, 5] = 0.68, 0.32
    shares[3, 0], shares[3, 2] = 0.18, 0.82
    shares[4, 0], shares[4, 5] = 0.72, 0.28  # Porosity: defect score 0.28
    prediction = shares.argmax(dim=1)  # Good, Good, Good, Undercut, Good
    m = field_metrics(labels, prediction, shares, f1_macro=0.3)
    # Undercut: (defect, good) pairs ranked right: 0.32 > 0.1, 0.82 > 0.1, 0.82 > 0.36; not 0.32 > 0.36.
    assert m["auroc"]["Undercut"] == pytest.approx(3 / 4)
    assert m["auroc"]["Porosity"] == pytest.approx(1 / 2)  # 0.28 > 0.1, not > 0.36
    assert set(m["auroc"]) == {"Undercut", "Porosity"}  # defects without TEST samples have none
    assert m["auroc_mean"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    # Binary: 3 true defects, 1 predicted and right: precision 1, recall 1/3, F1 0.5.
    assert m["binary_f1"] == pytest.approx(0.5)
    assert m["binary_f1_always_defect"] == pytest.approx(2 * 0.6 / 1.6)  # precision 3/5, recall 1
    # ECE: confidences 0.9 (right), 0.64 (right), 0.68 (wrong), 0.82 (right), 0.72 (wrong) in bins
    # of width 1/15: 0.68 and 0.72 share [10/15, 11/15) with accuracy 0; the others are alone.
    # (With 10 bins 0.64 and 0.68 would share one instead: 0.264, not 0.408.)
    ece = (abs(1 - 0.9) + abs(1 - 0.64) + 2 * abs(0 - (0.68 + 0.72) / 2) + abs(1 - 0.82)) / 5
    assert m["ece"] == pytest.approx(ece, abs=1e-6)
    assert m["challenge_score"] == pytest.approx(0.6 * 0.5 + 0.4 * 0.3 - 0.05 * ece, abs=1e-6)


def test_no_good_in_test_gives_no_auroc():
    labels = torch.tensor([1, 2, 3])
    m = field_metrics(labels, labels, _one_hot_shares(labels), f1_macro=1.0)
    assert m["auroc"] == {} and m["auroc_mean"] is None
    assert m["binary_f1"] == 1.0


def test_calibrated_shares_have_small_ece_and_overconfident_ones_do_not():
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)  # Dirichlet samples from the global generator
    n = 30000
    shares = torch.distributions.Dirichlet(torch.full((C,), 0.3)).sample((n,))
    labels = torch.multinomial(shares, 1, generator=g)[:, 0]  # drawn from the shares: calibrated by construction
    m = field_metrics(labels, shares.argmax(dim=1), shares, f1_macro=0.5)
    assert m["ece"] < 0.02
    assert m["challenge_score"] == pytest.approx(_challenge(m, 0.5))
    # Confidence 0.9 on class 1, labels uniform: accuracy 1/12 in the one filled bin.
    over = torch.full((n, C), 0.1 / (C - 1))
    over[:, 1] = 0.9
    uniform = torch.randint(0, C, (n,), generator=g)
    m = field_metrics(uniform, torch.ones(n, dtype=torch.long), over, f1_macro=0.0)
    accuracy = float((uniform == 1).float().mean())
    assert m["ece"] == pytest.approx(0.9 - accuracy, abs=1e-3)  # torchmetrics sums 30,000 confidences in float32


def test_reliability_bins_add_up_to_torchmetrics_ece():
    from torchmetrics.functional.classification import multiclass_calibration_error

    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)  # Dirichlet samples from the global generator
    n = 500
    shares = torch.distributions.Dirichlet(torch.full((C,), 0.2)).sample((n,))
    shares[:100] = _one_hot_shares(torch.randint(0, C, (100,), generator=g))  # unanimous votes: confidence 1
    labels = torch.randint(0, C, (n,), generator=g)
    bins = reliability_bins(shares, labels, 15)
    assert len(bins["count"]) == 16 and sum(bins["count"]) == n
    assert bins["count"][-1] == 100 and (bins["lower"][-1], bins["upper"][-1]) == (1.0, 1.0)
    assert np.allclose(bins["lower"][:15], np.arange(15) / 15) and np.allclose(bins["upper"][:15], np.arange(1, 16) / 15)
    count, acc, conf = (np.asarray(bins[k]) for k in ("count", "accuracy", "confidence"))
    ece = float((count / n * np.abs(acc - conf)).sum())
    expected = float(multiclass_calibration_error(shares, labels, C, n_bins=15, norm="l1"))
    assert ece == pytest.approx(expected, abs=1e-6)
    filled = count > 0
    assert all(lo <= c <= hi for lo, c, hi in zip(np.asarray(bins["lower"])[filled], conf[filled],
                                                  np.asarray(bins["upper"])[filled]))


def _bank_and_test(n_bank: int = 120, n_test: int = 48):
    """Embeddings near one centre per class: every class in both sets."""
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(C, 16, generator=g)

    def part(n):
        label = torch.arange(n) % C
        embedding = F.normalize(centres[label] + 0.9 * torch.randn(n, 16, generator=g), dim=1)
        out = {f"embedding/{m}": embedding for m in ("all", *MODALITIES)}
        return {**out, "label": label, "present": torch.ones(n, 4, dtype=torch.bool),
                "modality_weights": torch.full((n, 4), 0.25)}
    return part(n_bank), part(n_test)


def test_knn_report_carries_the_field_metrics_of_its_vote_shares(tmp_path):
    from sensorium.eval.knn import knn_votes_ks
    from sensorium.recipes.welding import report as welding_report

    bank, test = _bank_and_test()
    report = knn_test_report(bank, test, k=10, temperature=0.07, ks=[3])
    assert FIELD_KEYS <= set(report)
    votes = knn_votes_ks(bank["embedding/all"], bank["label"], test["embedding/all"], [10], 0.07, C)[10]
    assert report["accuracy"] == pytest.approx(float((votes.prediction == test["label"]).float().mean()))
    expected = field_metrics(test["label"], votes.prediction, votes.shares, report["f1_macro"])
    assert report["auroc"] == pytest.approx(expected["auroc"]) and report["ece"] == pytest.approx(expected["ece"])
    assert report["challenge_score"] == pytest.approx(_challenge(report, report["f1_macro"]))
    assert 0.5 < report["auroc_mean"] <= 1.0  # the classes are separable: better than chance

    run = tmp_path / "run"
    write_test_eval(run / "eval", report, test)
    written = json.loads((run / "eval" / "knn.json").read_text())
    assert FIELD_KEYS <= set(written) and written["auroc_mean"] == pytest.approx(report["auroc_mean"])
    sections = welding_report.sections(run)
    field = [s for s in sections if s.title.startswith("Field metrics")]
    assert len(field) == 1
    text = "".join(field[0].parts)
    assert 'alt="reliability diagram"' in text and "data:image/png;base64," in text
    assert "challenge score" in text and "Undercut" in text
