import torch

from monai_diff3m.networks import checkerboard_masks, soften_mask


def test_checkerboard_is_pixel_level_and_complementary():
    m1, m2 = checkerboard_masks((3, 4))
    expected = torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.float32)
    torch.testing.assert_close(m1[0, 0], expected)
    torch.testing.assert_close(m1 + m2, torch.ones(1, 1, 3, 4))


def test_soft_mask_scales_hidden_pixels_by_t_over_T():
    m1, _ = checkerboard_masks((2, 2))
    soft = soften_mask(m1, torch.tensor([0, 250, 1000]), 1000)
    assert soft.shape == (3, 1, 2, 2)
    torch.testing.assert_close(soft[0], m1[0])
    torch.testing.assert_close(soft[1, 0], torch.tensor([[0.25, 1.0], [1.0, 0.25]]))
    torch.testing.assert_close(soft[2], torch.ones(1, 2, 2))
