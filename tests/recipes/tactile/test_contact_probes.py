"""The force / contact-centre / slip probes of frozen features (`metrics.contact_probes`) against
hand-computed and library values on small cases."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from sensorium.recipes.tactile.metrics import RIDGE_ALPHAS, contact_error_mm, contact_probes


def _split(x, force=None, contact=None, slip=None):
    n = len(x)
    return {"x": np.asarray(x, np.float64),
            "force": np.full(n, np.nan) if force is None else np.asarray(force, np.float64),
            "contact_mm": np.full((n, 2), np.nan) if contact is None else np.asarray(contact, np.float64),
            "slip": np.full(n, -1) if slip is None else np.asarray(slip)}


def _linear_data(n: int, seed: int, noise: float = 0.0):
    """Features (n, 4) with force, contact centre and slip linear in them (plus label noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    force = 5 + 2 * x[:, 0] - x[:, 1] + noise * rng.normal(size=n)
    contact = np.stack([8 + 3 * x[:, 2], 6 - 2 * x[:, 3]], axis=1) + noise * rng.normal(size=(n, 2))
    slip = (x[:, 0] + x[:, 2] > 0).astype(int)
    return _split(x, force, contact, slip)


def test_contact_error_is_the_mean_euclidean_distance():
    pred = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    truth = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0]])
    assert contact_error_mm(pred, truth) == pytest.approx((0 + 5 + 1) / 3)


def test_features_that_hold_the_labels_linearly_give_a_perfect_probe():
    report = contact_probes(_linear_data(200, 0), _linear_data(60, 1), _linear_data(80, 2))
    assert report["skipped"] == {}
    assert report["force_r2"] == pytest.approx(1.0, abs=1e-3) and report["force_rmse"] < 0.1
    assert report["contact_mm"] < 0.1
    assert report["slip_f1"] > 0.95
    assert report["sizes"] == {"force": [200, 60, 80], "contact_mm": [200, 60, 80], "slip": [200, 60, 80]}


def test_features_without_the_labels_score_like_the_constant_predictor():
    rng = np.random.default_rng(0)
    data = [_linear_data(n, seed) for n, seed in ((300, 0), (100, 1), (200, 2))]
    for split in data:  # features that no longer carry anything of the labels
        split["x"] = rng.normal(size=split["x"].shape)
    report = contact_probes(*data)
    test, fitted = data[2]["force"], np.concatenate([data[0]["force"], data[1]["force"]])
    # R^2 of the train + val mean on test, by hand: 1 - SS_res / SS_tot
    hand = 1 - ((test - fitted.mean()) ** 2).sum() / ((test - test.mean()) ** 2).sum()
    assert report["force_r2_constant"] == pytest.approx(hand)
    assert report["force_r2_constant"] <= 0.0 and report["force_r2"] < 0.05
    assert report["force_rmse"] == pytest.approx(report["force_rmse_constant"], rel=0.1)
    assert report["contact_mm"] == pytest.approx(report["contact_mm_constant"], rel=0.1)


def test_slip_f1_matches_the_library_on_a_hand_case():
    # One feature that separates sliding (1) from static (0) except one mislabelled test row.
    train = _split([[-2.0], [-1.5], [-1.0], [1.0], [1.5], [2.0]] * 5, slip=[0, 0, 0, 1, 1, 1] * 5)
    val = _split([[-1.2], [1.2]], slip=[0, 1])
    test_slip = np.array([0, 0, 1, 1, 1, 0])
    test = _split([[-2.0], [-1.0], [1.0], [2.0], [1.5], [1.8]], slip=test_slip)
    report = contact_probes(train, val, test)
    predicted = np.array([0, 0, 1, 1, 1, 1])  # the last row is static but lies on the sliding side
    assert report["slip_f1"] == pytest.approx(f1_score(test_slip, predicted)) == pytest.approx(6 / 7)
    assert report["slip_f1_constant"] == pytest.approx(2 * 0.5 / 1.5)  # "always sliding" at 3 of 6 sliding
    assert report["skipped"] == {"force": "too few labelled windows (train 0, val 0, test 0)",
                                 "contact_mm": "too few labelled windows (train 0, val 0, test 0)"}


def test_contact_rows_only_and_unknown_rows_left_out():
    train, val, test = _linear_data(120, 0), _linear_data(40, 1), _linear_data(40, 2)
    test["contact_mm"][:10] = np.nan  # frames without contact: no centre to score
    test["x"][:10] = 1e6  # whatever their features, they do not enter the contact error
    report = contact_probes(train, val, test)
    assert report["sizes"]["contact_mm"] == [120, 40, 30]
    assert report["contact_mm"] < 0.1


def test_the_regularisation_is_chosen_on_val_never_on_test():
    train, val, test = _linear_data(40, 0, noise=1.0), _linear_data(30, 1, noise=1.0), _linear_data(30, 2, noise=1.0)
    chosen = contact_probes(train, val, test)
    assert chosen["force_alpha"] in RIDGE_ALPHAS and chosen["contact_alpha"] in RIDGE_ALPHAS
    scrambled = dict(test, force=test["force"][::-1].copy(), contact_mm=test["contact_mm"][::-1].copy(),
                     slip=test["slip"][::-1].copy())
    again = contact_probes(train, val, scrambled)  # other test labels: other scores, the same choices
    assert (again["force_alpha"], again["contact_alpha"], again["slip_c"]) == \
        (chosen["force_alpha"], chosen["contact_alpha"], chosen["slip_c"])
    assert again["force_r2"] != chosen["force_r2"]


def test_a_probe_without_enough_rows_or_classes_is_skipped_with_the_reason():
    train = _linear_data(50, 0)
    train["slip"][:] = 1  # every training contact slides
    val, test = _linear_data(20, 1), _linear_data(20, 2)
    val["force"][:] = np.nan
    report = contact_probes(train, val, test)
    assert report["skipped"] == {"force": "too few labelled windows (val 0)",
                                 "slip": "the train windows hold one slip class only"}
    assert "force_r2" not in report and "slip_f1" not in report and "contact_mm" in report
