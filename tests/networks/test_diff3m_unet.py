import pytest
import torch

from monai_diff3m.networks import Diff3MUNet, EHRTokenizer, PooledEHRAttention

SMALL = dict(
    channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8, ehr_group_sizes=(5, 5)
)


def _randomise_zero_initialised(net: torch.nn.Module) -> None:
    """MONAI zero-initialises residual outputs, which hides any conditioning at init; undo that for the tests."""
    for parameter in net.parameters():
        if not parameter.detach().any():
            torch.nn.init.normal_(parameter, std=0.1)


def _inputs(batch: int = 2, size: int = 16):
    torch.manual_seed(0)
    return (
        torch.randn(batch, 1, size, size),
        torch.randint(0, 1000, (batch,)),
        torch.randn(batch, 10),
        torch.zeros(batch, 10),
    )


@pytest.mark.parametrize("mode", ["pooled", "spatial", "none"])
@pytest.mark.parametrize("use_pcm", [False, True])
def test_output_shapes_for_every_mode(mode, use_pcm):
    net = Diff3MUNet(ieca_mode=mode, use_pcm=use_pcm, **SMALL)
    x, t, ehr, missing = _inputs()
    out = net(x, t, ehr, missing, x0=x)
    assert out.noise.shape == x.shape
    assert (out.reconstruction is not None) == use_pcm
    if use_pcm:
        assert out.reconstruction.shape == x.shape
    if mode == "none":
        assert out.ehr_attention is None
    else:
        assert out.ehr_attention.shape == (2, 10)
        assert torch.all(out.ehr_attention >= 0)


def test_pooled_attention_sums_to_one_per_group():
    net = Diff3MUNet(ieca_mode="pooled", **SMALL)
    x, t, ehr, missing = _inputs()
    weights = net(x, t, ehr, missing, x0=x).ehr_attention
    torch.testing.assert_close(weights[:, :5].sum(dim=1), torch.ones(2))
    torch.testing.assert_close(weights[:, 5:].sum(dim=1), torch.ones(2))


def test_ehr_changes_the_prediction():
    x, t, ehr, missing = _inputs()
    for mode in ("pooled", "spatial"):
        net = Diff3MUNet(ieca_mode=mode, **SMALL)
        _randomise_zero_initialised(net)
        assert not torch.allclose(net(x, t, ehr, missing, x0=x).noise, net(x, t, -ehr, missing, x0=x).noise)


def test_image_only_baseline_equals_monai_unet_forward():
    net = Diff3MUNet(ieca_mode="none", **SMALL)
    _randomise_zero_initialised(net)
    x, t, _, _ = _inputs()
    torch.testing.assert_close(net(x, t).noise, net.unet(x, t))


def test_missing_inputs_give_clear_errors():
    x, t, ehr, missing = _inputs()
    with pytest.raises(ValueError, match="needs `ehr`"):
        Diff3MUNet(ieca_mode="pooled", **SMALL)(x, t)
    with pytest.raises(ValueError, match="needs the clean image"):
        Diff3MUNet(ieca_mode="pooled", **SMALL)(x, t, ehr, missing)
    with pytest.raises(ValueError, match="shape"):
        Diff3MUNet(ieca_mode="spatial", **SMALL)(x, t, ehr[:, :4], missing[:, :4])
    with pytest.raises(ValueError, match="ieca_mode"):
        Diff3MUNet(ieca_mode="concat", **SMALL)


def test_start_pcm_stage_copies_encoder_and_freezes():
    net = Diff3MUNet(ieca_mode="pooled", use_pcm=True, **SMALL)
    net.start_pcm_stage()
    for encoder in net.pcm_encoders:
        for (name, copied), original in zip(
            encoder["down_blocks"].state_dict().items(), net.unet.down_blocks.state_dict().values()
        ):
            torch.testing.assert_close(copied, original, msg=name)
        assert all(p.requires_grad for p in encoder.parameters())
    frozen = [net.unet.conv_in, net.unet.down_blocks, net.unet.time_embed, net.image_encoder, net.image_query]
    assert not any(p.requires_grad for module in frozen for p in module.parameters())
    assert all(p.requires_grad for p in net.unet.up_blocks.parameters())
    assert all(p.requires_grad for p in net.pcm_decoder.parameters())


def test_pcm_branches_fill_the_pixels_they_could_not_see():
    """x̃_t takes branch 1 (which saw m1 pixels) on m2 pixels and branch 2 on m1 pixels."""
    net = Diff3MUNet(ieca_mode="none", use_pcm=True, **SMALL).eval()
    for p in net.pcm_decoder["out"].parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, t, _, _ = _inputs()
    net.pcm_encoders[1].requires_grad_(False)
    recon = net(x, t).reconstruction
    with torch.no_grad():
        for p in net.pcm_encoders[0].parameters():
            p.add_(0.5)
    changed = (net(x, t).reconstruction - recon).abs() > 1e-6
    m1 = (torch.arange(16).view(16, 1) + torch.arange(16).view(1, 16)) % 2 == 1
    assert changed[..., ~m1].all() and not changed[..., m1].any()


def test_tokenizer_uses_missing_embedding_and_bias_for_zero_slots():
    tokenizer = EHRTokenizer(num_slots=3, token_dim=4)
    tokenizer.norm = torch.nn.Identity()
    values = torch.tensor([[2.0, 0.0, 5.0]])
    tokens = tokenizer(values, torch.tensor([[0.0, 0.0, 1.0]]))
    torch.testing.assert_close(tokens[0, 0], 2.0 * tokenizer.weight[0] + tokenizer.bias[0])
    torch.testing.assert_close(tokens[0, 1], tokenizer.bias[1])
    torch.testing.assert_close(tokens[0, 2], tokenizer.missing_embedding[2])


def test_pooled_attention_weights_follow_the_query():
    attention = PooledEHRAttention(group_sizes=(2, 1), token_dim=4)
    tokens = torch.tensor([[[10.0, 0.0, 0, 0], [0.0, 10.0, 0, 0], [1.0, 1.0, 0, 0]]])
    condition, weights = attention(torch.tensor([[10.0, 0.0, 0, 0]]), tokens)
    assert weights[0, 0] > 0.99 and weights[0, 2] == 1.0
    torch.testing.assert_close(
        condition[0], weights[0, 0] * tokens[0, 0] + weights[0, 1] * tokens[0, 1] + tokens[0, 2], atol=1e-5, rtol=0
    )
