"""Model definitions: official parameter counts, official state-dict keys, v1 inference norm."""
import numpy as np
import pytest
import torch

from stargan_rt.models import (FAN, DiscriminatorV1, DiscriminatorV2, GeneratorV1, GeneratorV2,
                               MappingNetwork, StyleEncoder)
from stargan_rt.models.fan import heatmaps_to_masks


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("build, expected", [
    (lambda: GeneratorV1(c_dim=5), 8_430_528),
    (lambda: DiscriminatorV1(128, c_dim=5), 44_762_048),
    (lambda: GeneratorV2(256, w_hpf=1), 43_467_395),
    (lambda: GeneratorV2(256, w_hpf=0), 33_892_995),
    (lambda: MappingNetwork(num_domains=2), 2_438_272),
    (lambda: MappingNetwork(num_domains=3), 3_259_072),
    (lambda: StyleEncoder(256, num_domains=2), 20_916_928),
    (lambda: DiscriminatorV2(256, num_domains=2), 20_852_290),
    (lambda: FAN(), 6_333_603),
])
def test_parameter_counts_match_official(build, expected):
    assert count(build()) == expected


def test_official_key_names():
    g1 = GeneratorV1().state_dict()
    assert g1["main.0.weight"].shape == (64, 8, 7, 7)
    assert "main.9.main.0.weight" in g1 and g1["main.15.weight"].shape == (256, 128, 4, 4)
    assert "main.1.running_mean" in g1  # official IN layers track running stats
    g2 = GeneratorV2(256, w_hpf=1).state_dict()
    assert g2["decode.3.norm1.fc.weight"].shape == (1024, 64)
    assert {"from_rgb.weight", "encode.0.conv1.weight", "to_rgb.0.weight", "hpf.filter"} <= set(g2)
    f = MappingNetwork(num_domains=2).state_dict()
    assert "shared.0.weight" in f and "unshared.1.6.weight" in f


def test_v1_uses_instance_statistics_at_inference():
    torch.manual_seed(0)
    g = GeneratorV1(conv_dim=8, c_dim=3, repeat_num=1)
    for name, buf in g.named_buffers():
        if "running_mean" in name:
            buf.fill_(5.0)  # nonsense running stats must not matter
    x, c = torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    g.eval()
    with torch.no_grad():
        out_eval = g(x, c)
        expected = g.train()(x, c)
    torch.testing.assert_close(out_eval, expected)


def test_v2_generator_with_masks_changes_output_and_shapes():
    torch.manual_seed(0)
    g = GeneratorV2(64, style_dim=16, max_conv_dim=64, w_hpf=1, dim_in=16).eval()
    x, s = torch.rand(1, 3, 64, 64) * 2 - 1, torch.randn(1, 16)
    masks = (torch.ones(1, 1, 256, 256), torch.ones(1, 1, 256, 256))
    with torch.no_grad():
        assert g(x, s).shape == (1, 3, 64, 64)
        assert not torch.allclose(g(x, s), g(x, s, masks))


def test_heatmaps_to_masks_range_and_parts():
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    torch.manual_seed(0)
    cx, cy = torch.rand(1, 98, 1, 1) * 200 + 28, torch.rand(1, 98, 1, 1) * 200 + 28
    heat = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 72.0)
    face, inner = heatmaps_to_masks(heat)
    assert face.shape == inner.shape == (1, 1, 256, 256)
    assert 0 <= face.min() and face.max() <= 1 and face.mean() > 0.01
    assert inner.sum() < face.sum()  # the second mask drops chin, lips and eyebrows


def _masks_channel_by_channel(x):
    """The official post-processing written out channel by channel, as StarGAN v2's
    ``preprocess`` does it: the reference for the grouped heatmaps_to_masks."""
    from stargan_rt.models import fan as F_

    n, c, h, w = x.shape
    x = torch.where(x < 0.1, torch.zeros_like(x), x)
    flat = x.reshape(n * c, h * w)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    x = ((flat - low) / (high - low + 1e-6)).reshape(n, c, h, w).clone()

    def up(t, rows):
        return torch.roll(t, shifts=-rows, dims=2)
    for (lo, hi), rows, power in [(F_.CHIN, 0, 3), (F_.EYEBROWS, -7, 2), (F_.NOSTRILS, 8, 4),
                                  (F_.LIP_UPPER, -8, 4), (F_.LIP_LOWER, 8, 4),
                                  (F_.LIP_INNER, -2, 3)]:
        x[:, lo:hi] = up(x[:, lo:hi], rows) ** power
    x[:, F_.ZEROED] = 0
    x[:, F_.NOSE[0] + 1:F_.NOSE[1]] = up(x[:, F_.NOSE[0] + 1:F_.NOSE[1]], 4)
    eyes = x[:, F_.EYES[0]:F_.EYES[1]].clone()
    x[:, F_.EYES[0]:F_.EYES[1]] = up(eyes, -8) ** 3 + up(eyes, -24)
    x2 = x.clone()
    for lo, hi in (F_.CHIN, (76, 96), F_.EYEBROWS):
        x2[:, lo:hi] = 0
    face, inner = x.sum(dim=1, keepdim=True), x2.sum(dim=1, keepdim=True)
    return torch.nan_to_num(face, nan=0.0).clamp(0, 1), inner.clamp(0, 1)


def test_grouped_masks_match_the_channel_by_channel_post_processing():
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    torch.manual_seed(1)
    cx, cy = torch.rand(2, 98, 1, 1) * 200 + 28, torch.rand(2, 98, 1, 1) * 200 + 28
    heat = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 30.0) * (0.5 + 0.5 * torch.rand(2, 98, 1, 1))
    heat = heat + 0.11 * torch.rand(2, 98, 256, 256)  # background above and below the 0.1 cut
    for got, want in zip(heatmaps_to_masks(heat), _masks_channel_by_channel(heat)):
        assert 0.2 < want.mean() < 0.5  # neither mask empty or saturated: a real comparison
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_heatmap_landmarks_find_known_points():
    """FAN heatmaps -> points: Gaussian blobs at known sub-pixel positions of a 64x64 heatmap
    come back at those positions in the pixels of the (here 256 px) image, with their peaks."""
    from stargan_rt.models.fan import heatmap_landmarks

    rng = np.random.default_rng(0)
    centres = rng.uniform(8, 56, size=(2, 98, 2))  # heatmap cells
    yy, xx = np.mgrid[0:64, 0:64]
    maps = np.exp(-((xx[None, None] - centres[..., 0, None, None]) ** 2 +
                    (yy[None, None] - centres[..., 1, None, None]) ** 2) / (2 * 1.5 ** 2))
    maps = maps * 0.8 + rng.uniform(0, 0.05, maps.shape)  # weak background below half the peak
    got = heatmap_landmarks(torch.from_numpy(maps).float(), 256).numpy()
    want = (centres + 0.5) * 4 - 0.5
    assert np.abs(got[..., :2] - want).max() < 0.25 * 4  # within a quarter heatmap cell
    assert np.allclose(got[..., 2], maps.reshape(2, 98, -1).max(-1), atol=1e-5)
