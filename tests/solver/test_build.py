"""Optimiser param groups, full-model clipping and LR schedules (mask2former/solver)."""

import math

import pytest
import timm
import torch
from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config
from timm import layers as timm_layers
from torch import nn

from mask2former import add_maskformer2_config
from mask2former.solver import (
    build_lr_scheduler,
    build_optimizer,
    maybe_add_full_model_gradient_clipping,
)
from mask2former.solver.build import NORM_MODULE_TYPES, get_param_groups


class FakeSwinBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros(5, 2))
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4))
        self.proj = nn.Linear(4, 4)


class FakeModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), FakeSwinBlock())
        self.backbone.add_module("ln", nn.LayerNorm(4))
        self.head = nn.Linear(4, 4)
        self.head_norm = nn.GroupNorm(2, 4)
        self.query_feat = nn.Embedding(3, 4)
        self.level_embed = nn.Parameter(torch.zeros(3, 4))  # raw Parameter: decayed
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.tied = self.head  # shared module: its params must appear once


def make_cfg(**solver):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def lr_and_decay(optimizer):
    out = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            assert id(p) not in out, "parameter in two groups"
            out[id(p)] = (g["lr"], g["weight_decay"])
    return out


def test_param_groups_have_the_intended_lr_and_decay():
    model = FakeModel()
    opt = build_optimizer(make_cfg(), model)
    assert isinstance(opt, torch.optim.AdamW)
    got = lr_and_decay(opt)
    expected = {
        "backbone.0.weight": (1e-5, 0.05),
        "backbone.0.bias": (1e-5, 0.05),
        "backbone.1.weight": (1e-5, 0.0),  # norm
        "backbone.2.relative_position_bias_table": (1e-5, 0.0),  # Swin table
        "backbone.2.absolute_pos_embed": (1e-5, 0.0),
        "backbone.2.proj.weight": (1e-5, 0.05),
        "backbone.ln.weight": (1e-5, 0.0),
        "head.weight": (1e-4, 0.05),
        "head_norm.bias": (1e-4, 0.0),
        "query_feat.weight": (1e-4, 0.0),  # embedding
        "level_embed": (1e-4, 0.05),
    }
    params = dict(model.named_parameters())
    for name, (lr, wd) in expected.items():
        assert got[id(params[name])] == pytest.approx((lr, wd)), name
    assert id(model.frozen.weight) not in got
    n_trainable = len({id(p) for p in model.parameters() if p.requires_grad})
    assert len(got) == n_trainable


def test_embed_and_norm_decay_follow_the_config():
    model = FakeModel()
    cfg = make_cfg(WEIGHT_DECAY_NORM=0.3, WEIGHT_DECAY_EMBED=0.2)
    got = lr_and_decay(build_optimizer(cfg, model))
    assert got[id(model.query_feat.weight)][1] == pytest.approx(0.2)
    assert got[id(model.head_norm.weight)][1] == pytest.approx(0.3)


def test_sgd_and_unknown_optimizer():
    opt = build_optimizer(make_cfg(OPTIMIZER="SGD", MOMENTUM=0.9), FakeModel())
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError) as info:
        build_optimizer(make_cfg(OPTIMIZER="LAMB"), FakeModel())
    msg = "SOLVER.OPTIMIZER: unknown optimizer 'LAMB'; valid: ('ADAMW', 'SGD')"
    assert str(info.value) == msg


def test_full_model_clipping_clips_the_global_norm():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))
    cls = maybe_add_full_model_gradient_clipping(torch.optim.SGD, clip_value=0.01)
    opt = cls([{"params": [a]}, {"params": [b], "lr": 2.0}], lr=1.0)
    a.grad = torch.tensor([3.0, 0.0, 0.0])
    b.grad = torch.tensor([0.0, 4.0, 0.0, 0.0])  # global norm 5, each group's alone < 5
    opt.step()
    # Clipped to global norm 0.01: grads scaled by 0.01 / 5; SGD applies -lr * grad.
    assert a.grad.tolist() == pytest.approx([0.006, 0, 0], rel=1e-4)
    assert b.grad.tolist() == pytest.approx([0, 0.008, 0, 0], rel=1e-4)
    global_norm = torch.linalg.vector_norm(torch.cat([a.grad, b.grad])).item()
    assert global_norm == pytest.approx(0.01, rel=1e-4)
    assert a.tolist() == pytest.approx([-0.006, 0, 0], rel=1e-4)
    assert b.tolist() == pytest.approx([0, -0.016, 0, 0], rel=1e-4)


def test_built_optimizer_clips_and_small_grads_pass_unchanged():
    model = nn.Linear(2, 1, bias=False)
    cfg = make_cfg(BASE_LR=1.0, WEIGHT_DECAY=0.0, OPTIMIZER="SGD", MOMENTUM=0.0)
    opt = build_optimizer(cfg, model)
    model.weight.grad = torch.tensor([[0.003, 0.004]])  # norm 0.005 < 0.01: untouched
    before = model.weight.detach().clone()
    opt.step()
    assert (before - model.weight.detach())[0].tolist() == pytest.approx([0.003, 0.004], rel=1e-5)
    model.weight.grad = torch.tensor([[30.0, 40.0]])
    opt.step()
    assert model.weight.grad.norm().item() == pytest.approx(0.01, rel=1e-4)


def test_clipping_disabled_returns_the_plain_class():
    plain = maybe_add_full_model_gradient_clipping(torch.optim.AdamW, 0.01, enabled=False)
    assert plain is torch.optim.AdamW
    assert type(build_optimizer(make_cfg(), FakeModel())).__name__.startswith("FullModelGradient")
    cfg = make_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    assert type(build_optimizer(cfg, FakeModel())) is torch.optim.AdamW


def test_poly_lr_values():
    cfg = make_cfg(
        LR_SCHEDULER_NAME="WarmupPolyLR",
        MAX_ITER=100,
        WARMUP_ITERS=0,
        BASE_LR=1e-4,
        POLY_LR_POWER=0.9,
    )
    model = FakeModel()
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(100):
        lrs.append(sorted({g["lr"] for g in opt.param_groups}))
        opt.step()
        sched.step()
    for it in (0, 1, 50, 99):
        expected = 1e-4 * (1 - it / 100) ** 0.9
        assert lrs[it] == pytest.approx([expected * 0.1, expected]), it


def test_step_lr_with_warmup():
    cfg = make_cfg(
        LR_SCHEDULER_NAME="WarmupMultiStepLR",
        MAX_ITER=20,
        STEPS=(10, 15),
        GAMMA=0.1,
        WARMUP_ITERS=2,
        WARMUP_FACTOR=1.0,
        BASE_LR=1.0,
        BACKBONE_MULTIPLIER=1.0,
    )
    model = nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1.0) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(0.1) and lrs[15] == pytest.approx(0.01)
    assert not any(math.isnan(x) for x in lrs)


def test_poly_lr_resume_follows_the_config(caplog):
    """Resuming with a larger MAX_ITER continues on the new schedule (detectron2's version kept
    the checkpoint's MAX_ITER and crashed past it)."""
    cfg = make_cfg(
        LR_SCHEDULER_NAME="WarmupPolyLR",
        MAX_ITER=100,
        WARMUP_ITERS=0,
        BASE_LR=1.0,
        BACKBONE_MULTIPLIER=1.0,
        POLY_LR_POWER=0.9,
    )
    model = nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(100):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert state["max_iters"] == 100 and state["last_epoch"] == 100

    cfg.SOLVER.MAX_ITER = 200
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    with caplog.at_level("WARNING"):
        sched.load_state_dict(state)
    assert "max_iters 100 -> 200" in caplog.text
    lrs = []
    for _ in range(50):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert sched.last_epoch == 150
    assert lrs[-1] == pytest.approx((1 - 150 / 200) ** 0.9)
    assert all(math.isfinite(x) and x > 0 for x in lrs)


# ----------------------------------------------------------------------------------------------
# Solver settings that must each decide something (mask2former/solver/build.py): every value
# below differs from the published default, so a setting read from the wrong key, or hard-coded,
# fails.


def _cfg(**solver):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    for k, v in solver.items():
        node, key = cfg.SOLVER, k
        if "." in k:
            sub, key = k.split(".")
            node = getattr(cfg.SOLVER, sub)
        setattr(node, key, v)
    return cfg


def _lrs(cfg, iters):
    model = nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(iters):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("power", [0.5, 2.0])
def test_poly_power_warmup_and_constant_ending(power):
    """lr(it) = base * warmup(it) * max((1 - it / MAX_ITER) ** power, constant_ending), with a
    linear warm-up from WARMUP_FACTOR to 1 over WARMUP_ITERS."""
    base, max_iter, warm, factor, ending = 2.0, 50, 10, 0.2, 0.05
    cfg = _cfg(
        LR_SCHEDULER_NAME="WarmupPolyLR",
        BASE_LR=base,
        MAX_ITER=max_iter,
        WARMUP_ITERS=warm,
        WARMUP_FACTOR=factor,
        WARMUP_METHOD="linear",
        POLY_LR_POWER=power,
        POLY_LR_CONSTANT_ENDING=ending,
    )
    lrs = _lrs(cfg, max_iter)
    for it in range(max_iter):
        alpha = it / warm
        w = factor * (1 - alpha) + alpha if it < warm else 1.0
        poly = (1 - it / max_iter) ** power
        expected = base * w * (ending if poly < ending else poly)
        assert lrs[it] == pytest.approx(expected, rel=1e-9), it
    if power == 2.0:  # (1 / 50) ** 2 < 0.05: the constant ending is reached
        assert lrs[-1] == pytest.approx(base * ending)


def test_constant_warmup_method():
    cfg = _cfg(
        LR_SCHEDULER_NAME="WarmupPolyLR",
        BASE_LR=1.0,
        MAX_ITER=20,
        WARMUP_ITERS=5,
        WARMUP_FACTOR=0.3,
        WARMUP_METHOD="constant",
        POLY_LR_POWER=1.0,
        POLY_LR_CONSTANT_ENDING=0.0,
    )
    lrs = _lrs(cfg, 20)
    assert lrs[:5] == pytest.approx([0.3 * (1 - it / 20) for it in range(5)])
    assert lrs[5:] == pytest.approx([1 - it / 20 for it in range(5, 20)])


def test_multistep_schedule_uses_its_gamma_and_steps():
    cfg = _cfg(
        LR_SCHEDULER_NAME="WarmupMultiStepLR",
        BASE_LR=1.0,
        MAX_ITER=12,
        STEPS=(4, 8),
        GAMMA=0.5,
        WARMUP_ITERS=0,
    )
    assert _lrs(cfg, 12) == pytest.approx([1.0] * 4 + [0.5] * 4 + [0.25] * 4)


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        self.backbone.relative_position_bias_table = nn.Parameter(torch.zeros(3))
        self.head = nn.Linear(2, 2)
        self.norm = nn.GroupNorm(1, 2)
        self.embed = nn.Embedding(3, 2)


def test_param_groups_with_distinct_values_for_every_rule():
    m = _Model()
    groups = get_param_groups(
        m,
        base_lr=1.0,
        weight_decay=0.3,
        weight_decay_norm=0.2,
        weight_decay_embed=0.1,
        backbone_multiplier=0.5,
    )
    of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert of[id(m.backbone[0].weight)] == (0.5, 0.3)
    assert of[id(m.backbone[1].weight)] == (0.5, 0.2)  # backbone norm
    assert of[id(m.backbone.relative_position_bias_table)] == (0.5, 0.0)
    assert of[id(m.head.weight)] == (1.0, 0.3) and of[id(m.head.bias)] == (1.0, 0.3)
    assert of[id(m.norm.weight)] == (1.0, 0.2) and of[id(m.norm.bias)] == (1.0, 0.2)
    assert of[id(m.embed.weight)] == (1.0, 0.1)
    assert len(of) == sum(1 for _ in m.parameters())
    assert len(groups) == 6  # one group per distinct (lr, weight decay)


def test_optimizer_reads_every_solver_key():
    m = _Model()
    cfg = _cfg(
        OPTIMIZER="SGD",
        BASE_LR=0.7,
        MOMENTUM=0.8,
        WEIGHT_DECAY=0.3,
        WEIGHT_DECAY_NORM=0.2,
        WEIGHT_DECAY_EMBED=0.1,
        BACKBONE_MULTIPLIER=0.5,
    )
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    opt = build_optimizer(cfg, m)
    assert isinstance(opt, torch.optim.SGD) and type(opt) is torch.optim.SGD
    assert {g["momentum"] for g in opt.param_groups} == {0.8}
    assert {(g["lr"], g["weight_decay"]) for g in opt.param_groups} == {
        (0.35, 0.3),
        (0.35, 0.2),
        (0.35, 0.0),
        (0.7, 0.3),
        (0.7, 0.2),
        (0.7, 0.1),
    }
    cfg.SOLVER.OPTIMIZER = "adamw"  # case-insensitive
    assert isinstance(build_optimizer(cfg, m), torch.optim.AdamW)


@pytest.mark.parametrize("norm_type,clip", [(1.0, 0.5), (2.0, 0.25)])
def test_full_model_clipping_uses_the_norm_type_and_value(norm_type, clip):
    m = nn.Linear(3, 1, bias=False)
    cfg = _cfg(OPTIMIZER="SGD", BASE_LR=1.0, MOMENTUM=0.0, WEIGHT_DECAY=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = clip
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = norm_type
    opt = build_optimizer(cfg, m)
    with torch.no_grad():
        m.weight.zero_()
    m.weight.grad = torch.tensor([[3.0, -4.0, 0.0]])  # L1 norm 7, L2 norm 5
    opt.step()
    total = 7.0 if norm_type == 1.0 else 5.0
    expected = -torch.tensor([[3.0, -4.0, 0.0]]) * clip / total
    torch.testing.assert_close(m.weight.detach(), expected, rtol=1e-5, atol=1e-6)


def test_per_parameter_value_clipping_when_not_full_model():
    m = nn.Linear(2, 1, bias=False)
    cfg = _cfg(OPTIMIZER="SGD", BASE_LR=1.0, MOMENTUM=0.0, WEIGHT_DECAY=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    opt = build_optimizer(cfg, m)
    with torch.no_grad():
        m.weight.zero_()
    m.weight.grad = torch.tensor([[3.0, -0.2]])
    opt.step()
    torch.testing.assert_close(m.weight.detach(), torch.tensor([[-0.5, 0.2]]))


# ----------------------------------------------------------------------------------------------
# Norm layers, timm's `no_weight_decay()`, `trains_at_base_lr`, and the clipping class cache
# (each rule below was found untested by mutation testing, issue 26).

# timm's norms that do not subclass a torch norm; each must get SOLVER.WEIGHT_DECAY_NORM.
TIMM_OWN_NORMS = (
    "RmsNorm",
    "RmsNorm2d",
    "SimpleNorm",
    "SimpleNorm2d",
    "RmsNormFp32",
    "RmsNorm2dFp32",
    "SimpleNormFp32",
    "SimpleNorm2dFp32",
    "EvoNorm2dB0",
    "EvoNorm2dB1",
    "EvoNorm2dB2",
    "EvoNorm2dS0",
    "EvoNorm2dS0a",
    "EvoNorm2dS1",
    "EvoNorm2dS1a",
    "EvoNorm2dS2",
    "EvoNorm2dS2a",
    "FilterResponseNormAct2d",
    "FilterResponseNormTlu2d",
)


def _decay_of(model, **kw):
    args = dict(base_lr=1.0, weight_decay=0.3, weight_decay_norm=0.2, weight_decay_embed=0.1)
    args.update(backbone_multiplier=0.5, **kw)
    groups = get_param_groups(model, **args)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("name", TIMM_OWN_NORMS)
def test_timm_norm_layers_get_the_norm_weight_decay(name):
    cls = getattr(timm_layers, name, None)
    if cls is None:
        pytest.skip(f"timm {timm.__version__} has no layers.{name}")
    model = nn.Sequential(nn.Linear(4, 4), cls(4))
    got = _decay_of(model)
    assert got["0.weight"] == (1.0, 0.3)
    norm_params = [n for n in got if n.startswith("1.")]
    assert norm_params and all(got[n] == (1.0, 0.2) for n in norm_params), got


def test_every_timm_norm_layer_counts_as_a_norm():
    """Each norm class timm exports is one of NORM_MODULE_TYPES (a new one in a timm upgrade
    fails here until it is listed), except composites that hold a norm and norms without
    trainable parameters."""
    composite = ("Conv", "Mlp", "Head")
    no_params = {"FrozenBatchNormAct2d"}
    missing = [
        n
        for n, c in vars(timm_layers).items()
        if isinstance(c, type) and issubclass(c, nn.Module) and "Norm" in n
        if not any(s in n for s in composite) and n not in no_params
        if not issubclass(c, NORM_MODULE_TYPES)
    ]
    assert missing == []


class _TimmLikeVit(nn.Module):
    """A timm-style backbone: `no_weight_decay()` lists names and fnmatch patterns."""

    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 4))
        self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.blocks[1].rel_pos_h = nn.Parameter(torch.zeros(3, 4))
        self.blocks[1].rel_pos_w = nn.Parameter(torch.zeros(3, 4))

    def no_weight_decay(self):
        return {"cls_token", "blocks.*.rel_pos_*"}


class _NotTimm(nn.Module):
    no_weight_decay = ["weight"]  # not a method: not timm's convention, ignored

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4))


class _WithNoDecay(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 4)  # a module without no_weight_decay() comes first
        self.other = _NotTimm()
        self.backbone = _TimmLikeVit()
        self.pos_embed = nn.Parameter(torch.zeros(2, 4))  # the root's own parameter

    def no_weight_decay(self):
        return ["pos_embed"]


def test_no_weight_decay_names_and_patterns_of_every_module():
    got = _decay_of(_WithNoDecay())
    assert got == {
        "head.weight": (1.0, 0.3),
        "head.bias": (1.0, 0.3),
        "other.weight": (1.0, 0.3),
        "backbone.cls_token": (0.5, 0.0),
        "backbone.blocks.0.weight": (0.5, 0.3),
        "backbone.blocks.0.bias": (0.5, 0.3),
        "backbone.blocks.1.weight": (0.5, 0.3),
        "backbone.blocks.1.bias": (0.5, 0.3),
        "backbone.blocks.1.rel_pos_h": (0.5, 0.0),
        "backbone.blocks.1.rel_pos_w": (0.5, 0.0),
        "pos_embed": (1.0, 0.0),
    }


class _Pyramid(nn.Module):
    trains_at_base_lr = True  # new layers inside the backbone (e.g. ViTDet's simple pyramid)

    def __init__(self):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(4, 4))


def test_trains_at_base_lr_covers_the_module_and_its_children_only():
    model = nn.Module()
    model.backbone = nn.Module()
    model.backbone.net = nn.Linear(4, 4)
    model.backbone.fpn = _Pyramid()
    model.backbone.fpn2 = nn.Linear(4, 4)  # shares the name prefix, not the module
    got = _decay_of(model)
    assert got["backbone.net.weight"] == (0.5, 0.3)
    assert got["backbone.fpn.out.0.weight"] == (1.0, 0.3)
    assert got["backbone.fpn.out.0.bias"] == (1.0, 0.3)
    assert got["backbone.fpn2.weight"] == (0.5, 0.3)


def test_clip_value_zero_or_less_means_no_clipping_and_classes_are_cached():
    assert maybe_add_full_model_gradient_clipping(torch.optim.SGD, 0.0) is torch.optim.SGD
    assert maybe_add_full_model_gradient_clipping(torch.optim.SGD, -1.0) is torch.optim.SGD
    a = maybe_add_full_model_gradient_clipping(torch.optim.SGD, 0.3)
    assert maybe_add_full_model_gradient_clipping(torch.optim.SGD, 0.3) is a
    b = maybe_add_full_model_gradient_clipping(torch.optim.SGD, 0.7)
    for cls, clip in ((a, 0.3), (b, 0.7)):  # each class clips at its own value
        p = nn.Parameter(torch.zeros(2))
        opt = cls([p], lr=1.0)
        p.grad = torch.tensor([3.0, 4.0])
        opt.step()
        assert p.detach().tolist() == pytest.approx([-0.6 * clip, -0.8 * clip], rel=1e-5)


_SCHED_A = dict(MAX_ITER=100, WARMUP_FACTOR=0.5, WARMUP_ITERS=10, WARMUP_METHOD="linear")
_SCHED_A.update(POLY_LR_POWER=0.9, POLY_LR_CONSTANT_ENDING=0.0)
_SCHED_B = dict(MAX_ITER=200, WARMUP_FACTOR=0.2, WARMUP_ITERS=30, WARMUP_METHOD="constant")
_SCHED_B.update(POLY_LR_POWER=2.0, POLY_LR_CONSTANT_ENDING=0.1)


def _poly(**solver):
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupPolyLR", BASE_LR=1.0, **solver)
    opt = build_optimizer(cfg, nn.Linear(2, 2))
    return opt, build_lr_scheduler(cfg, opt)


def _run(opt, sched, iters):
    lrs = []
    for _ in range(iters):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_poly_lr_resume_takes_every_schedule_key_from_the_config(caplog):
    """Each key that shapes the schedule comes from the config on resume: the resumed LRs equal
    those of a fresh run of the new schedule, and the warning lists each changed key."""
    opt, sched = _poly(**_SCHED_A)
    _run(opt, sched, 20)
    state = sched.state_dict()
    opt, sched = _poly(**_SCHED_B)
    with caplog.at_level("WARNING", logger="mask2former.solver.build"):
        sched.load_state_dict(state)
    assert [r.getMessage() for r in caplog.records] == [
        "LR schedule: using the config's values, not the checkpoint's: max_iters 100 -> 200, "
        "warmup_factor 0.5 -> 0.2, warmup_iters 10 -> 30, warmup_method linear -> constant, "
        "power 0.9 -> 2.0, constant_ending 0.0 -> 0.1"
    ]
    ref_opt, ref_sched = _poly(**_SCHED_B)
    expected = _run(ref_opt, ref_sched, 170)[20:]  # lr at iterations 21 .. 170
    got = _run(opt, sched, 150)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[0] == pytest.approx(0.2 * (1 - 21 / 200) ** 2)  # constant warm-up, power 2
    assert got[-1] == pytest.approx(0.1)  # the constant ending


def test_poly_lr_resume_with_the_same_schedule_logs_nothing(caplog):
    opt, sched = _poly(**_SCHED_A)
    _run(opt, sched, 5)
    state = sched.state_dict()
    opt, sched = _poly(**_SCHED_A)
    with caplog.at_level("WARNING", logger="mask2former.solver.build"):
        sched.load_state_dict(state)
    assert caplog.records == [] and sched.last_epoch == 5


def test_frozen_and_shared_parameters_skip_only_themselves():
    model = nn.Module()
    model.a = nn.Linear(2, 2)
    model.a.weight.requires_grad_(False)  # frozen weight, trainable bias
    model.b = nn.Linear(2, 2)
    model.c = nn.Linear(2, 2)
    model.c.weight = model.b.weight  # shared with b: listed once, c's bias still listed
    got = _decay_of(model)
    assert sorted(got) == ["a.bias", "b.bias", "b.weight", "c.bias"]
