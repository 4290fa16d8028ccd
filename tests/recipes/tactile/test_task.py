"""The tactile task's rules (balancing, alternating schedule), its loss terms per mode, the
gradient cosine between its two tasks and the reading rules it declares to the doctor, and the
evaluation's reference points (copy-frame-3, pixel round trip)."""

from types import SimpleNamespace

import pytest
import torch

from sensorium.engine.doctor import Band
from sensorium.errors import ConfigError
from sensorium.layers.patch_embed import patchify
from sensorium.losses import mae_loss
from sensorium.recipes.tactile.metrics import evaluate_batch, from_target_space, ratio_by_motion, summarize
from sensorium.recipes.tactile.model import contact_space, from_contact_space, target_space
from sensorium.recipes.tactile.reader import STATIC_FRAME
from sensorium.recipes.tactile.task import (
    LossBalancer,
    TactileTask,
    alternating_schedule,
    balance_weights,
    gradient_cosine,
)

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16,
        "decoder_depth": 1, "decoder_num_heads": 2}


# --- balancing ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("static,dynamic,share", [(1.0, 1.0, 0.5), (0.3, 0.9, 0.5), (2.0, 0.1, 0.5),
                                                  (0.4, 0.7, 0.3), (5.0, 5e-3, 0.8)])
def test_balanced_weights_give_each_task_its_target_share(static, dynamic, share):
    alpha, beta = balance_weights(static, dynamic, share)
    assert alpha + beta == pytest.approx(1.0)
    assert alpha > 0 and beta > 0
    assert alpha * static / (alpha * static + beta * dynamic) == pytest.approx(share)


def test_the_larger_loss_gets_the_smaller_weight_and_equal_losses_keep_the_share():
    alpha, beta = balance_weights(0.3, 0.6)
    assert alpha > beta  # the note's case: loss_dynamic ~ 2 x loss_static
    assert balance_weights(0.7, 0.7, 0.3) == pytest.approx((0.3, 0.7))
    assert balance_weights(0.0, 0.5) == (0.5, 0.5)  # nothing measured yet
    with pytest.raises(ValueError, match="target_share"):
        balance_weights(1.0, 1.0, 1.0)


def test_balancer_running_average_is_unbiased_and_follows_a_change():
    balancer = LossBalancer(target_share=0.5, momentum=0.9)
    # constant losses: bias correction makes the first step's weights already exact
    assert balancer.update(torch.tensor(0.2), torch.tensor(0.6)) == pytest.approx(balance_weights(0.2, 0.6))
    for _ in range(200):
        alpha, beta = balancer.update(torch.tensor(0.6), torch.tensor(0.2))
    assert (alpha, beta) == pytest.approx(balance_weights(0.6, 0.2), abs=1e-6)
    assert "average" in balancer.state_dict() and "steps" in balancer.state_dict()  # resumed runs continue


# --- alternating schedule -------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_batches,ratio", [(10, 0.5), (37, 0.5), (100, 0.3), (7, 0.0), (7, 1.0), (18, 0.75)])
def test_alternating_schedule_holds_the_exact_ratio(num_batches, ratio):
    schedule = alternating_schedule(num_batches, ratio, seed=3)
    assert schedule.shape == (num_batches,) and schedule.dtype == torch.bool
    assert int(schedule.sum()) == round(ratio * num_batches)


def test_alternating_schedule_is_a_seeded_shuffle_not_a_fixed_pattern():
    a, b = alternating_schedule(64, 0.5, seed=0), alternating_schedule(64, 0.5, seed=1)
    assert torch.equal(a, alternating_schedule(64, 0.5, seed=0))  # same seed: every rank agrees
    assert not torch.equal(a, b)
    assert not torch.equal(a, torch.arange(64) < 32) and not torch.equal(a, torch.arange(64) % 2 == 0)
    with pytest.raises(ValueError):
        alternating_schedule(10, 1.5)


# --- the task's loss terms --------------------------------------------------------------------------------------
def _batch(B=4, size=32):
    torch.manual_seed(0)
    return {"frames": torch.rand(B, 4, 3, size, size), "sensor": torch.tensor([0, 1, 2, 0][:B]),
            "label": torch.zeros(B, dtype=torch.long)}


def test_joint_fixed_weights_give_the_weighted_terms():
    task = TactileTask(model=TINY, loss={"mode": "joint", "alpha": 0.75, "beta": 0.25})
    batch = _batch()
    torch.manual_seed(1)
    terms = task.training_losses(batch)
    assert set(terms) == {"static", "dynamic"}
    torch.manual_seed(1)  # the same masks again
    static = task.net.forward_static(batch["frames"][:, STATIC_FRAME], batch["sensor"])
    dynamic = task.net.forward_dynamic(batch["frames"], batch["sensor"])
    loss_static = mae_loss(static.pred, static.target, static.mask)
    loss_dynamic = (mae_loss(dynamic.recon_pred, dynamic.recon_target, dynamic.recon_mask)
                    + mae_loss(dynamic.predict_future(True), dynamic.future_target, dynamic.future_mask))
    torch.testing.assert_close(terms["static"], 0.75 * loss_static)
    torch.testing.assert_close(terms["dynamic"], 0.25 * loss_dynamic)


def test_static_norm_pix_off_scores_the_static_task_in_pixels_and_leaves_the_dynamic_task_as_it_was():
    task = TactileTask(model=TINY, loss={"mode": "joint", "alpha": 0.5, "beta": 0.5, "static_norm_pix": False})
    assert task.loss_config.static_space is False and task.loss_config.norm_pix is True
    assert TactileTask(model=TINY).loss_config.static_space is True  # None follows norm_pix
    batch = _batch()
    torch.manual_seed(1)
    terms = task.training_losses(batch)
    torch.manual_seed(1)
    static = task.net.forward_static(batch["frames"][:, STATIC_FRAME], batch["sensor"])
    dynamic = task.net.forward_dynamic(batch["frames"], batch["sensor"])
    torch.testing.assert_close(terms["static"], 0.5 * mae_loss(static.pred, static.target, static.mask, False))
    assert not torch.allclose(terms["static"], 0.5 * mae_loss(static.pred, static.target, static.mask, True))
    loss_dynamic = (mae_loss(dynamic.recon_pred, dynamic.recon_target, dynamic.recon_mask, True)
                    + mae_loss(dynamic.predict_future(True), dynamic.future_target, dynamic.future_mask, True))
    torch.testing.assert_close(terms["dynamic"], 0.5 * loss_dynamic)


def test_the_contact_target_is_frame_t_minus_its_reference_standardised_over_the_image():
    task = TactileTask(model=TINY, loss={"mode": "joint", "alpha": 0.5, "beta": 0.5, "static_target": "contact"})
    batch = _batch() | {"reference": torch.rand(4, 3, 32, 32)}
    torch.manual_seed(1)
    terms = task.training_losses(batch)
    torch.manual_seed(1)
    static = task.net.forward_static(batch["frames"][:, STATIC_FRAME], batch["sensor"])
    change = static.target - patchify(batch["reference"], 8)  # (B, L, P)
    flat = change.flatten(1)
    contact = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(change)
    loss_contact = mae_loss(static.contact_pred, contact, static.mask, False)
    torch.testing.assert_close(terms["static"], 0.5 * loss_contact, atol=1e-5, rtol=1e-5)
    assert task.doctor_values == {}  # no frame reconstruction: nothing for the note's loss_ratio band
    # Both: the mean of the frame's loss (norm_pix, the shared head) and the contact's (its own head).
    task.loss_config.static_target = "both"
    torch.manual_seed(1)
    terms = task.training_losses(batch)
    loss_frame = mae_loss(static.pred, static.target, static.mask, True)
    torch.testing.assert_close(terms["static"], 0.25 * (loss_frame + loss_contact), atol=1e-5, rtol=1e-5)
    dynamic = 2 * terms["dynamic"].detach()  # beta 0.5
    torch.testing.assert_close(task.doctor_values["loss_ratio"], loss_frame.detach() / dynamic)  # like with like


def test_contact_space_keeps_a_patch_without_contact_near_zero_and_round_trips():
    reference = torch.rand(2, 16, 12)
    patches = reference + 1e-3 * torch.randn(2, 16, 12)  # sensor noise everywhere ...
    patches[:, 5] += 0.8  # ... and one patch pressed
    target = contact_space(patches, reference)
    # The pressed patch stands out; an untouched one is nearly flat (per-patch standardisation: std 1).
    assert target[:, 5].abs().mean() > 3.0 and target[:, 0].std(-1).max() < 0.05
    torch.testing.assert_close(from_contact_space(target, patches, reference), patches, atol=1e-5, rtol=1e-5)


def test_a_contact_target_gets_its_own_head_and_leaves_every_other_initial_weight_as_it_was():
    torch.manual_seed(3)
    frame = TactileTask(model=TINY).net
    torch.manual_seed(3)
    contact = TactileTask(model=TINY, loss={"static_target": "contact"}).net
    assert frame.contact_pred is None and contact.contact_pred is not None
    shared = frame.state_dict()
    assert set(contact.state_dict()) - set(shared) == {"contact_pred.weight", "contact_pred.bias"}
    for name, value in shared.items():  # the untrained baseline is the same network
        torch.testing.assert_close(contact.state_dict()[name], value)
    torch.manual_seed(5)
    frame.initialize_weights()
    torch.manual_seed(5)
    contact.initialize_weights()  # and so is a re-initialised one
    for name, value in frame.state_dict().items():
        torch.testing.assert_close(contact.state_dict()[name], value)
    with torch.no_grad():
        contact.contact_pred.weight.zero_()
        contact.contact_pred.bias.fill_(0.5)
    out = contact.forward_static(torch.rand(2, 3, 32, 32))
    assert torch.all(out.contact_pred == 0.5) and not torch.all(out.pred == 0.5)  # the frame keeps the shared head


def test_the_contact_target_without_reference_frames_in_the_batch_is_a_config_error():
    task = TactileTask(model=TINY, loss={"static_target": "contact"})
    with pytest.raises(ConfigError, match="training_references"):
        task.training_losses(_batch())


def test_a_reference_frame_gets_its_windows_augmentation_draw():
    """Crop, flip and jitter are drawn once per window: a reference equal to frame t stays equal to it."""
    task = TactileTask(model=TINY, augment={"enabled": True, "crop_scale": [0.5, 0.9], "jitter_p": 1.0})
    task._trainer = SimpleNamespace(training=True)  # the hook augments only while a trainer trains
    frames = torch.rand(3, 4, 3, 32, 32)
    batch = task.on_after_batch_transfer({"frames": frames.clone(), "reference": frames[:, STATIC_FRAME].clone()}, 0)
    torch.testing.assert_close(batch["reference"], batch["frames"][:, STATIC_FRAME])
    assert not torch.allclose(batch["frames"], task.augment.normalize(frames))  # augmented, not just normalised


def test_the_evaluation_reconstructs_frame_t_as_reference_plus_predicted_contact(mae_tiny):
    model = mae_tiny(contact_head=True).eval()
    frames, reference = torch.rand(2, 4, 3, 32, 32), torch.rand(2, 3, 32, 32)

    def stats(reference_patches) -> dict:
        return evaluate_batch(model, frames, None, True, lambda p: p, torch.Generator().manual_seed(0),
                              features=False, static_reference=reference_patches)

    base = patchify(reference, 8)
    plain, relative = stats(None), stats(base)
    torch.testing.assert_close(relative["se_pred"], plain["se_pred"])  # frame 4 does not read it
    static = model.forward_static(frames[:, -1], noise=torch.rand(2, 16, generator=torch.Generator().manual_seed(0)))
    mask = static.mask[..., None]
    recon = from_contact_space(static.contact_pred, static.target, base).clamp(0, 1)
    torch.testing.assert_close(relative["se_recon"], ((recon - static.target) * mask).pow(2).flatten(1).sum(1))
    assert not torch.allclose(relative["se_recon"], plain["se_recon"])


def test_balanced_mode_moves_the_weights_towards_the_target_share():
    task = TactileTask(model=TINY, loss={"mode": "joint", "balance": True, "balance_momentum": 0.5})
    batch = _batch()
    for _ in range(6):
        terms = task.training_losses(batch)
    static, dynamic = float(terms["static"].detach()), float(terms["dynamic"].detach())
    assert static / (static + dynamic) == pytest.approx(0.5, abs=0.1)


def test_alternating_mode_runs_one_task_per_batch_following_the_schedule():
    task = TactileTask(model=TINY, loss={"mode": "alternating", "static_ratio": 0.5})
    task._schedule = torch.tensor([True, False, False, True])
    seen = []
    for batch_idx in range(4):
        task._batch_idx = batch_idx
        seen.append(set(task.training_losses(_batch())))
    assert seen == [{"static"}, {"dynamic"}, {"dynamic"}, {"static"}]


# --- the two tasks' gradients and the reading rules ------------------------------------------------------------
def test_gradient_cosine_of_identical_opposite_and_disjoint_losses():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    params = list(net.parameters())
    loss = net(torch.randn(8, 5)).pow(2).mean()
    assert float(gradient_cosine(loss, 3 * loss, params)) == pytest.approx(1.0, abs=1e-6)
    assert float(gradient_cosine(loss, -loss, params)) == pytest.approx(-1.0, abs=1e-6)
    # losses that reach disjoint parameters: orthogonal (an unreached parameter counts as zero)
    a, b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    x = torch.randn(4, 3)
    assert float(gradient_cosine(a(x).sum(), b(x).sum(), [*a.parameters(), *b.parameters()])) == 0.0
    assert gradient_cosine(a(x).sum() * 0, b(x).sum(), list(a.parameters())).isnan()  # a zero gradient


def test_gradient_cosine_on_the_tasks_encoder_matches_the_flattened_gradients_and_keeps_the_graph():
    task = TactileTask(model=TINY, loss={"mode": "joint"})
    batch = _batch()
    static = task.net.forward_static(batch["frames"][:, STATIC_FRAME], batch["sensor"])
    dynamic = task.net.forward_dynamic(batch["frames"], batch["sensor"])
    loss_static = mae_loss(static.pred, static.target, static.mask)
    loss_dynamic = mae_loss(dynamic.recon_pred, dynamic.recon_target, dynamic.recon_mask)
    shared = list(task.net.encoder.parameters())
    cosine = gradient_cosine(loss_static, loss_dynamic, shared)
    assert float(gradient_cosine(loss_static, loss_static * 2, shared)) == pytest.approx(1.0, abs=1e-5)
    assert float(gradient_cosine(loss_static, -loss_static, shared)) == pytest.approx(-1.0, abs=1e-5)
    flat = [torch.cat([g.flatten() for g in torch.autograd.grad(loss, shared, retain_graph=True)])
            for loss in (loss_static, loss_dynamic)]
    assert float(cosine) == pytest.approx(float(torch.nn.functional.cosine_similarity(*flat, dim=0)), abs=1e-5)
    (loss_static + loss_dynamic).backward()  # the training backward still runs on the kept graph
    assert all(p.grad is not None for p in shared)


def test_joint_runs_declare_the_notes_reading_rules_and_alternating_runs_none():
    rules = TactileTask(model=TINY, loss={"mode": "joint"}).reading_rules
    assert (rules.loss_jump, rules.jump_window, rules.no_progress_epochs) == (2.0, 5, 20)
    assert rules.ranges["loss_ratio"][:2] == (0.5, 1.5) and rules.share_range[:2] == (0.35, 0.65)
    assert isinstance(rules.share_range, Band) and "PhysioTouch" in rules.source
    custom = TactileTask(model=TINY, loss={"mode": "joint"},
                         reading={"loss_ratio": [0.4, 2.0], "contribution": [0.2, 0.8], "loss_jump": 3.0}).reading_rules
    assert custom.ranges["loss_ratio"][:2] == (0.4, 2.0) and custom.share_range[:2] == (0.2, 0.8)
    assert custom.loss_jump == 3.0
    assert TactileTask(model=TINY, loss={"mode": "alternating"}).reading_rules is None
    assert TactileTask(model=TINY, loss={"mode": "joint"}, reading={"rules": False}).reading_rules is None
    task = TactileTask(model=TINY, loss={"mode": "joint"})
    task.training_losses(_batch())  # the value the loss_ratio band watches, every step
    assert set(task.doctor_values) == {"loss_ratio"} and task.doctor_values["loss_ratio"].dim() == 0


# --- evaluation reference points -----------------------------------------------------------------------------
def test_an_untrained_residual_model_is_exactly_the_copy_predictor(mae_tiny):
    model = mae_tiny().eval()
    frames = torch.rand(3, 4, 3, 32, 32)
    out = model.forward_dynamic(frames, mask_ratio=0.0)
    assert (out.future_pred == 0).all()  # zero-initialised change head
    torch.testing.assert_close(out.predict_future(True), target_space(patchify(frames[:, 2], 8), True))
    stats = summarize(evaluate_batch(model, frames, None, True, lambda p: p, torch.Generator().manual_seed(0)))
    assert stats["pred_mse_ratio"] == pytest.approx(1.0) and stats["pixel_pred_mse_ratio"] == pytest.approx(1.0)


def test_pixel_mapping_inverts_the_target_space_with_the_reference_patch():
    patches = torch.rand(2, 16, 192) * 3 + 1
    for norm_pix in (True, False):
        back = from_target_space(target_space(patches, norm_pix), patches, norm_pix)
        torch.testing.assert_close(back, patches, rtol=1e-4, atol=1e-4)


def test_task_to_pixels_undoes_the_input_normalisation():
    task = TactileTask(model=TINY, augment={"enabled": False})
    frames = torch.rand(2, 4, 3, 32, 32)
    normalised = task.augment.eval()(frames)
    torch.testing.assert_close(task.to_pixels(patchify(normalised, 8)), patchify(frames, 8), rtol=1e-5, atol=1e-5)


def test_a_perfect_predictor_scores_zero_and_copy_scores_its_own_error(mae_tiny):
    """Frame 4 = frame 3 makes the copy predictor perfect: its error is 0 and PSNR is finite."""
    model = mae_tiny().eval()
    frames = torch.rand(2, 4, 3, 32, 32)
    frames[:, 3] = frames[:, 2]
    stats = summarize(evaluate_batch(model, frames, None, False, lambda p: p, torch.Generator().manual_seed(0)))
    assert stats["copy_mse"] == 0.0 and stats["pred_mse"] == 0.0
    assert stats["psnr_masked"] > 0 and stats["num_samples"] == 2


def test_the_evaluation_reads_the_static_task_in_its_own_space_and_frame_4_in_norm_pix(mae_tiny):
    model = mae_tiny().eval()
    frames = torch.rand(2, 4, 3, 32, 32)

    def stats(norm_pix: bool, static_norm_pix: bool | None = None) -> dict:
        return evaluate_batch(model, frames, None, norm_pix, lambda p: p, torch.Generator().manual_seed(0),
                              features=False, static_norm_pix=static_norm_pix)

    mixed, both_norm, both_pixels = stats(True, False), stats(True), stats(False)
    torch.testing.assert_close(mixed["se_pred"], both_norm["se_pred"])  # frame 4 keeps norm_pix
    torch.testing.assert_close(mixed["se_recon"], both_pixels["se_recon"])  # the static task: pixels
    assert not torch.allclose(mixed["se_recon"], both_norm["se_recon"])


# --- the probes' protocol ----------------------------------------------------------------------------------
def test_reference_features_are_each_poolings_difference_to_the_reference_frame(mae_tiny):
    from sensorium.recipes.tactile.metrics import encode

    model = mae_tiny().eval()
    frames, reference = torch.rand(3, 4, 3, 32, 32), torch.rand(3, 3, 32, 32)
    plain, relative = encode(model, frames, None), encode(model, frames, None, reference)
    assert set(plain) == {"feature_mean", "feature_cls"}
    for pool in ("mean", "cls"):
        torch.testing.assert_close(relative[f"feature_{pool}_ref"],
                                   plain[f"feature_{pool}"] - model.encode_features(reference, None, pool))
    # a frame against itself: nothing left
    same = encode(model, frames, None, frames[:, -1])
    assert same["feature_mean_ref"].abs().max() == 0 and same["feature_cls_ref"].abs().max() == 0


def _features(labels: torch.Tensor, informative: str, seed: int) -> dict:
    """Features where only `informative` (a feature key) carries the label: class centres far apart
    in it, noise in every other key."""
    g = torch.Generator().manual_seed(seed)
    n, dim = len(labels), int(labels.max()) + 1
    part = {key: torch.randn(n, dim, generator=g) for key in ("feature_mean", "feature_cls", "feature_mean_ref",
                                                              "feature_cls_ref")}
    part[informative] = part[informative] * 0.1 + torch.eye(dim)[labels] * 3
    return part | {"label": labels, "sensor": torch.randint(0, 3, (n,), generator=g)}


@pytest.mark.parametrize("informative", ["feature_cls", "feature_mean_ref"])
def test_val_chooses_the_protocol_whose_features_carry_the_class(informative):
    task = TactileTask(model=TINY, evaluation={"choose_on_val": True, "candidate_k": [5, 10]})
    labels = torch.arange(120) % 4
    train, val = _features(labels, informative, 0), _features(labels[:60], informative, 1)
    protocol = task._protocol(train, val)
    assert protocol["chosen_on"] == "val" and protocol["val_knn_accuracy"] == 1.0
    assert protocol["pool"] == informative.split("_")[1] and protocol["reference"] == informative.endswith("_ref")
    assert protocol["val_knn_accuracy"] == max(protocol["val_knn"].values())
    assert len(protocol["val_knn"]) == 1 + 2 * 2 * 3 * 2  # the config's, then pool x reference x standardise x k


def test_without_choosing_or_on_a_tie_the_configured_protocol_stays():
    labels = torch.arange(60) % 3
    train, val = _features(labels, "feature_mean", 0), _features(labels[:30], "feature_mean", 1)
    fixed = TactileTask(model=TINY)._protocol(train, val)
    assert fixed == {"pool": "mean", "standardize": "sensor", "reference": False, "k": 20, "chosen_on": "config"}
    # every protocol reading feature_mean is perfect: the configured one wins the tie
    chosen = TactileTask(model=TINY, evaluation={"choose_on_val": True})._protocol(train, val)
    assert (chosen["pool"], chosen["standardize"], chosen["reference"], chosen["k"]) == ("mean", "sensor", False, 20)


def test_asking_for_reference_features_without_reference_frames_is_a_config_error():
    from sensorium.errors import ConfigError

    task = TactileTask(model=TINY, evaluation={"reference": True})
    plain = {"feature_mean": torch.randn(6, 4), "feature_cls": torch.randn(6, 4), "sensor": torch.arange(6) % 3}
    with pytest.raises(ConfigError, match="reference_frames"):
        task._probe_features(plain, plain)


def test_ratio_by_motion_splits_the_frame_4_ratio_by_the_slip_label():
    n = torch.ones(4)
    queries = {"se_pred": torch.tensor([1.0, 3.0, 2.0, 5.0]), "se_copy": torch.tensor([2.0, 2.0, 1.0, 9.0]),
               "n_future": n, "n_recon": n, "slip": torch.tensor([1, 1, 0, -1])}
    for key in ("se_pred_masked", "se_copy_masked", "se_pixel_pred", "se_pixel_copy", "se_recon", "se_recon_flat"):
        queries[key] = n
    out = ratio_by_motion(queries)
    assert out["pred_mse_ratio_sliding"] == pytest.approx(4.0 / 4.0) and out["num_samples_sliding"] == 2
    assert out["pred_mse_ratio_static"] == pytest.approx(2.0 / 1.0) and out["num_samples_static"] == 1
    assert ratio_by_motion({k: v for k, v in queries.items() if k != "slip"}) == {}
    queries["slip"] = torch.tensor([1, 1, 1, -1])  # no static window: no static key
    assert set(ratio_by_motion(queries)) == {"pred_mse_ratio_sliding", "num_samples_sliding"}
