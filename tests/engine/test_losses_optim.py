"""Losses (build_loss, median frequency weights), optimizers and schedules."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.engine.losses import LOSSES, build_loss, class_frequencies, median_frequency_weights
from zoo.engine.optim import ScheduleChangeError, build_optimizer, build_scheduler, restore_scheduler
from zoo.hub.formats import flatten_state, unflatten_state

K = 3


def _data(seed=0, n=2, h=6, w=7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, K, h, w, generator=g)
    target = torch.randint(0, K, (n, h, w), generator=g)
    target[:, :2, :3] = 255
    return logits, target


def test_ce_matches_functional_with_ignore_and_weights():
    logits, target = _data()
    ref = F.cross_entropy(logits, target, ignore_index=255)
    assert build_loss("ce", num_classes=K)(logits, target) == ref
    w = torch.tensor([0.5, 2.0, 1.0])
    ref_w = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    torch.testing.assert_close(build_loss("ce", num_classes=K, class_weights=w.tolist())(logits, target),
                               ref_w, rtol=0, atol=0)


def test_aux_is_resized_and_weighted():
    logits, target = _data()
    aux = torch.randn(2, K, 3, 4)
    loss = build_loss("ce", num_classes=K, aux_weight=0.4)
    aux_up = F.interpolate(aux, size=target.shape[-2:], mode="bilinear", align_corners=False)
    expected = F.cross_entropy(logits, target, ignore_index=255) \
        + 0.4 * F.cross_entropy(aux_up, target, ignore_index=255)
    torch.testing.assert_close(loss(logits, target, aux_logits=aux), expected)
    assert loss(logits, target) == loss(logits, target, aux_logits=None) == F.cross_entropy(
        logits, target, ignore_index=255)


@pytest.mark.parametrize("name", ["dice", "lovasz", "focal", "ce+dice", "ce+lovasz"])
def test_smp_losses_finite_with_gradients_and_ignore(name):
    logits, target = _data()
    logits.requires_grad_(True)
    loss = build_loss(name, num_classes=K, aux_weight=0.4)(logits, target, aux_logits=logits * 0.5)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grad = logits.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert (grad[:, :, :2, :3] == 0).all()            # ignored pixels give no gradient


@pytest.mark.parametrize("name", [*LOSSES.names(), "ce+lovasz", "+".join(LOSSES.names())])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_batch_without_labels_adds_zero_with_zero_gradients(name, weighted):
    """A crop of an unlabelled region: loss 0 on every term, main and aux, and a zero
    gradient (not NaN, not None) on every parameter, so DDP's all-reduce goes on."""
    import zoo
    if weighted and name == "lovasz":
        pytest.skip("lovasz takes no class weights")
    model = zoo.create("pspnet", encoder="test_resnet", encoder_weights=None, num_classes=K,
                       head_channels=8, aux_channels=8)
    criterion = build_loss(name, num_classes=K, aux_weight=0.4,
                           class_weights=[0.5, 2.0, 1.0] if weighted else None)
    logits, aux = model(torch.randn(2, 3, 32, 32), aux=True)
    loss = criterion(logits, torch.full((2, 32, 32), 255), aux)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.equal(p.grad, torch.zeros_like(p)), pname
    # One labelled pixel is a batch like any other.
    one = torch.full((2, 32, 32), 255)
    one[0, 5, 5] = 1
    assert criterion(logits.detach(), one, aux.detach()).item() > 0


def test_sum_is_the_sum_of_terms():
    logits, target = _data()
    ce, dice = build_loss("ce", num_classes=K), build_loss("dice", num_classes=K)
    both = build_loss("ce+dice", num_classes=K)
    torch.testing.assert_close(both(logits, target), ce(logits, target) + dice(logits, target))


def test_loss_errors():
    with pytest.raises(ValueError, match=r"unknown loss 'bce'; did you mean ce, dice\?; "
                                         r"valid: ce, dice, focal, lovasz, or a '\+'"):
        build_loss("bce", num_classes=K)
    with pytest.raises(ValueError, match=r"unknown loss 'dcie'; did you mean dice.*; valid: .* \(in 'ce\+dcie'\)"):
        build_loss("ce+dcie", num_classes=K)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("ce+ce", num_classes=K)
    with pytest.raises(ValueError, match="2 class weights for 3 classes"):
        build_loss("ce", num_classes=K, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="lovasz"):
        build_loss("lovasz", num_classes=K, class_weights=[1.0, 2.0, 3.0])


class _Masks:
    def __init__(self, masks):
        self.masks = masks

    def __len__(self):
        return len(self.masks)

    def load(self, i):
        m = np.array(self.masks[i], dtype=np.uint8)
        return np.zeros(m.shape + (3,), np.uint8), m, f"im{i}"


def test_median_frequency_weights_by_hand():
    # image A: 3 px of class 0, 1 of class 1 (4 labelled); image B: 1 of class 0, 2 of class 2, 1 ignored
    data = _Masks([[[0, 0], [0, 1]], [[0, 2], [2, 255]]])
    counts, totals = class_frequencies(data, num_classes=4)
    assert counts.tolist() == [4, 1, 2, 0]
    assert totals.tolist() == [7, 4, 3, 0]
    # freq = 4/7, 1/4, 2/3; median 4/7; class 3 never seen -> 1
    w = median_frequency_weights(counts, totals)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, torch.tensor([1.0, 16 / 7, 6 / 7, 1.0]), rtol=1e-7, atol=0)
    # even number of classes: median is the mean of the middle two (0.2 + 0.25) / 2
    w = median_frequency_weights(torch.tensor([1, 1, 1, 1]), torch.tensor([10, 5, 4, 2]))
    torch.testing.assert_close(w, torch.tensor([2.25, 1.125, 0.9, 0.45]), rtol=1e-7, atol=0)
    # max_images picks images spread over the set: 0 and 2 of 4
    counts, _ = class_frequencies(_Masks([[[0]], [[1]], [[2]], [[1]]]), num_classes=3, max_images=2)
    assert counts.tolist() == [1, 0, 1]


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, K, 1)
        self.frozen = nn.Parameter(torch.zeros(2, 2), requires_grad=False)


def test_param_groups_lr_mult_and_no_decay():
    net = _Net()
    opt = build_optimizer(net, name="sgd", lr=0.01, weight_decay=1e-4, encoder_lr_mult=0.1)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] is False
    groups = {g["name"]: g for g in opt.param_groups}
    ids = {k: [id(p) for p in g["params"]] for k, g in groups.items()}
    assert ids == {
        "encoder": [id(net.encoder[0].weight)],
        "encoder_no_decay": [id(net.encoder[1].weight), id(net.encoder[1].bias)],
        "decoder": [id(net.head.weight)],
        "decoder_no_decay": [id(net.head.bias)],
    }
    assert {k: (g["lr"], g["weight_decay"], g["momentum"]) for k, g in groups.items()} == {
        "encoder": (0.01 * 0.1, 1e-4, 0.9), "encoder_no_decay": (0.01 * 0.1, 0.0, 0.9),
        "decoder": (0.01, 1e-4, 0.9), "decoder_no_decay": (0.01, 0.0, 0.9)}
    adamw = build_optimizer(net, name="adamw", lr=1e-3, betas=(0.8, 0.99))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.99)
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; valid: 'sgd', 'adamw'"):
        build_optimizer(net, name="adam", lr=1e-3)


def _lrs(name, iters, **kw):
    opt = build_optimizer(_Net(), lr=0.01, encoder_lr_mult=0.1)
    sched = build_scheduler(opt, name=name, **kw)
    out = {}
    for it in range(max(iters) + 1):
        if it in iters:
            out[it] = [g["lr"] for g in opt.param_groups]
        opt.step()
        sched.step()
    return out


def test_poly_with_warmup_values():
    lrs = _lrs("poly", [0, 5, 10, 60, 110], total_iters=110, warmup_iters=10, warmup_ratio=0.1)
    expected = {0: 0.1, 5: 0.55, 10: 1.0, 60: 0.5 ** 0.9, 110: 0.0}   # factor of the base lr
    for it, factor in expected.items():
        assert lrs[it] == pytest.approx([0.001 * factor] * 2 + [0.01 * factor] * 2, rel=1e-12, abs=0)


def test_cosine_and_constant_values():
    lrs = _lrs("cosine", [0, 50, 100], total_iters=100, min_lr_ratio=0.1)
    assert [v[-1] for v in lrs.values()] == pytest.approx([0.01, 0.0055, 0.001], rel=1e-12)
    lrs = _lrs("constant", [0, 2, 4, 9], total_iters=10, warmup_iters=4, warmup_ratio=0.2)
    assert [v[-1] for v in lrs.values()] == pytest.approx([0.002, 0.006, 0.01, 0.01], rel=1e-12)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        build_scheduler(build_optimizer(_Net(), lr=0.1), name="step", total_iters=10)


def _stepped(total_iters, steps, **kw):
    opt = build_optimizer(_Net(), lr=0.01, encoder_lr_mult=0.1)
    sched = build_scheduler(opt, name="poly", total_iters=total_iters, warmup_iters=5, **kw)
    for _ in range(steps):
        opt.step()
        sched.step()
    return opt, sched


def _saved(sched) -> dict:
    """The scheduler state as a checkpoint stores it (JSON skeleton + tensors), read back."""
    skeleton, tensors = flatten_state(sched.state_dict())
    return unflatten_state(json.loads(json.dumps(skeleton)), tensors)


def test_scheduler_resumes_bit_for_bit():
    opt, sched = _stepped(50, 17)
    opt2, sched2 = _stepped(50, 0)
    assert restore_scheduler(sched2, _saved(sched)) == {}
    assert sched2.get_last_lr() == sched.get_last_lr()
    for _ in range(3):
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_scheduler_follows_a_longer_run():
    _, ended = _stepped(20, 20)                    # a finished run: lr 0
    opt, longer = _stepped(40, 0)
    assert restore_scheduler(longer, _saved(ended)) == {"total_iters": (20, 40)}
    factor = (1 - (20 - 5) / (40 - 5)) ** 0.9      # poly after warm-up, at iteration 20 of 40
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.001 * factor] * 2 + [0.01 * factor] * 2,
                                                                rel=1e-12)
    assert longer.last_epoch == 20 and longer.lr_lambdas[0].total_iters == 40


@pytest.mark.parametrize("kw, setting", [({"power": 1.0}, "power"), ({"min_lr_ratio": 0.1}, "min_lr_ratio")])
def test_scheduler_refuses_what_it_cannot_follow(kw, setting):
    _, saved = _stepped(20, 10)
    _, other = _stepped(20, 0, **kw)
    with pytest.raises(ScheduleChangeError) as info:
        restore_scheduler(other, _saved(saved))
    assert info.value.setting == setting
    opt = build_optimizer(_Net(), lr=0.02, encoder_lr_mult=0.1)
    with pytest.raises(ScheduleChangeError, match="'base_lrs' changed"):
        restore_scheduler(build_scheduler(opt, name="poly", total_iters=20, warmup_iters=5), _saved(saved))
