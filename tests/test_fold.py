"""Classify runs the network with its batch norms folded into the convolutions: same answers, fewer passes."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torchvision.models.resnet import BasicBlock

from tl_app.features import StagePool
from tl_app.models import ModelSpec, create_model, fold_batchnorm


def _trained_like(net):
    """Batch norms with running statistics and weights as training leaves them (not the identity)."""
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return net.eval()


def test_a_folded_resnet_answers_as_before_and_its_stages_still_report():
    torch.manual_seed(0)
    spec = ModelSpec(arch="resnet18", vocab=list("abcde"), size=64)
    net = _trained_like(create_model(spec, pretrained=False))  # the app's model: body and fastai head
    body = net[0]
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode(), StagePool(body) as hooks:
        logits, feats = net(x), (body(x), hooks.take())[1]
    net, folded = fold_batchnorm(net, spec)
    assert folded == 20 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    with torch.inference_mode(), StagePool(body) as hooks:
        assert torch.allclose(net(x), logits, atol=1e-4)
        body(x)
        assert torch.allclose(hooks.take(), feats, atol=1e-4)  # the none-of-these features: same layers, same rows


class _SkipsItsFirstNorm(BasicBlock):
    """A block whose forward does not run bn1 after conv1: folding it would change the answers."""

    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.conv1(x)))) + x)


def test_a_network_that_does_not_run_its_pairs_in_turn_is_left_as_it_is():
    torch.manual_seed(0)
    net = _trained_like(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), _SkipsItsFirstNorm(8, 8)))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        before = net(x)
    net, folded = fold_batchnorm(net, SimpleNamespace(size=32))
    assert folded == 0 and sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 2
    with torch.inference_mode():
        assert torch.equal(net(x), before)


def test_quick_features_come_from_a_folded_copy_and_the_body_a_run_records_keeps_its_norms():
    import numpy as np

    from tl_app import config
    from tl_app.models import create_body
    from tl_app.quick import compute_features

    torch.manual_seed(0)
    body = _trained_like(create_body("resnet18", pretrained=False))
    before = {k: v.clone() for k, v in body.state_dict().items()}
    pixels = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    feats, staged, _ = compute_features(body, pixels, stages=True)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules()) == 20  # what store_body writes
    assert all(torch.equal(v, before[k]) for k, v in body.state_dict().items())
    mean = torch.tensor(config.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(config.IMAGENET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.inference_mode(), StagePool(body) as hooks:  # the unfolded body's own features
        fm = body(x)
        want = torch.cat([fm.amax((2, 3)), fm.mean((2, 3))], 1).numpy()
        want_staged = hooks.take().numpy()
    assert np.allclose(feats, want, rtol=1e-3, atol=1e-4)
    assert np.allclose(staged.astype(np.float32), want_staged, atol=2e-3)  # staged rows are float16
