import pytest
import torch
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding

from monai_diff3m.networks import Diff3MUNet, EHRTokenizer, PooledEHRAttention, split_prediction

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


def _outputs(net: Diff3MUNet, *args, **kwargs):
    """(ε̂, x̃_t or None, EHR attention or None) of one forward pass."""
    prediction = net(*args, **kwargs, with_reconstruction=True)
    return (*split_prediction(prediction, args[0].shape[1]), net.ehr_attention)


@pytest.mark.parametrize("mode", ["pooled", "spatial", "none"])
@pytest.mark.parametrize("use_pcm", [False, True])
def test_output_shapes_for_every_mode(mode, use_pcm):
    net = Diff3MUNet(ieca_mode=mode, use_pcm=use_pcm, **SMALL)
    _randomise_zero_initialised(net)
    x, t, ehr, missing = _inputs()
    noise = net(x, t, ehr, missing, x0=x)
    assert isinstance(noise, torch.Tensor) and noise.shape == x.shape  # ε̂ alone, as MONAI's networks return
    stacked = net(x, t, ehr, missing, x0=x, with_reconstruction=True)
    assert stacked.shape == (2, 2 if use_pcm else 1, 16, 16)
    torch.testing.assert_close(stacked[:, :1], noise, rtol=0, atol=0)
    if mode == "none":
        assert net.ehr_attention is None
    else:
        assert net.ehr_attention.shape == (2, 10) and not net.ehr_attention.requires_grad
        assert torch.all(net.ehr_attention >= 0)


def test_pooled_attention_sums_to_one_per_group():
    net = Diff3MUNet(ieca_mode="pooled", **SMALL)
    x, t, ehr, missing = _inputs()
    net(x, t, ehr, missing, x0=x)
    weights = net.ehr_attention
    torch.testing.assert_close(weights[:, :5].sum(dim=1), torch.ones(2))
    torch.testing.assert_close(weights[:, 5:].sum(dim=1), torch.ones(2))


def test_ehr_changes_the_prediction():
    x, t, ehr, missing = _inputs()
    for mode in ("pooled", "spatial"):
        net = Diff3MUNet(ieca_mode=mode, **SMALL)
        _randomise_zero_initialised(net)
        assert not torch.allclose(net(x, t, ehr, missing, x0=x), net(x, t, -ehr, missing, x0=x))


def test_image_only_baseline_equals_monai_unet_forward():
    net = Diff3MUNet(ieca_mode="none", **SMALL)
    _randomise_zero_initialised(net)
    x, t, _, _ = _inputs()
    torch.testing.assert_close(net(x, t), net.unet(x, t))


@pytest.mark.parametrize("mode", ["pooled", "spatial"])
def test_image_alone_means_timestep_zero_no_ehr_known_and_x0_the_image(mode):
    """What the Model Zoo's ``verify_net_in_out`` and ``ckpt_export`` feed: ``net(image)``."""
    net = Diff3MUNet(ieca_mode=mode, **SMALL).eval()
    _randomise_zero_initialised(net)
    x, _, ehr, _ = _inputs()
    expected = net(x, torch.zeros(2, dtype=torch.long), torch.zeros(2, 10), torch.ones(2, 10), x0=x)
    torch.testing.assert_close(net(x), expected, rtol=0, atol=0)
    assert not torch.allclose(net(x), net(x, torch.zeros(2, dtype=torch.long), ehr, torch.zeros(2, 10), x0=x))


def test_wrong_inputs_give_clear_errors():
    x, t, ehr, missing = _inputs()
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
    recon = _outputs(net, x, t)[1]
    with torch.no_grad():
        for p in net.pcm_encoders[0].parameters():
            p.add_(0.5)
    changed = (_outputs(net, x, t)[1] - recon).abs() > 1e-6
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


def test_soft_recombination_on_a_hand_computed_case():
    """At t/T = 0.4 the softened masks are 1 on a branch's own pixels and 0.4 on the others (authors' x̃_t)."""
    from monai_diff3m.networks import checkerboard_masks, soften_mask
    from monai_diff3m.networks.diff3m_unet import recombine_checkerboard

    m1, m2 = checkerboard_masks((2, 2))  # m1 = [[0, 1], [1, 0]]
    t = torch.tensor([400])
    out1, out2 = torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), 3.0)
    soft = recombine_checkerboard(out1, out2, soften_mask(m1, t, 1000), soften_mask(m2, t, 1000))
    # m2 pixels (0,0),(1,1): 2·1 + 3·0.4 = 3.2; m1 pixels (0,1),(1,0): 2·0.4 + 3·1 = 3.8
    torch.testing.assert_close(soft, torch.tensor([[[[3.2, 3.8], [3.8, 3.2]]]]))
    hard = recombine_checkerboard(out1, out2, m1, m2)
    torch.testing.assert_close(hard, torch.tensor([[[[2.0, 3.0], [3.0, 2.0]]]]))


@pytest.mark.parametrize("recombination", ["hard", "soft"])
def test_network_recombines_with_the_chosen_masks(recombination, monkeypatch):
    from monai_diff3m.networks import diff3m_unet

    seen = []

    def recording(out1, out2, m1, m2):
        seen.append((m1, m2))
        return out1 * m2 + out2 * m1

    monkeypatch.setattr(diff3m_unet, "recombine_checkerboard", recording)
    net = Diff3MUNet(ieca_mode="none", use_pcm=True, pcm_recombination=recombination, **SMALL)
    x = torch.zeros(2, 1, 16, 16)
    net(x, torch.tensor([0, 500]), with_reconstruction=True)
    m1 = seen[0][0]
    assert m1.shape == ((2, 1, 16, 16) if recombination == "soft" else (1, 1, 16, 16))
    expected_hidden = 0.5 if recombination == "soft" else 0.0  # value of m1 on a pixel m1 hides, at t = 500
    assert m1[-1, 0, 0, 0].item() == expected_hidden and m1[0, 0, 0, 0].item() == 0.0
    with pytest.raises(ValueError, match="pcm_recombination"):
        Diff3MUNet(use_pcm=True, pcm_recombination="mean", **SMALL)


def test_pcm_decoder_starts_as_a_copy_of_the_main_decoder():
    net = Diff3MUNet(ieca_mode="pooled", use_pcm=True, **SMALL)
    main = {
        f"{part}.{k}": v
        for part in ("middle_block", "up_blocks", "out")
        for k, v in getattr(net.unet, part).state_dict().items()
    }
    assert main.keys() == net.pcm_decoder.state_dict().keys()
    assert all(torch.equal(main[key], value) for key, value in net.pcm_decoder.state_dict().items())


def test_per_group_token_norm_and_normal_init():
    tokenizer = EHRTokenizer(num_slots=3, token_dim=512, group_sizes=(2, 1), norm="per_group", init="normal")
    assert abs(tokenizer.weight.std().item() - 1.0) < 0.1 and abs(tokenizer.bias.std().item() - 1.0) < 0.1
    small = EHRTokenizer(num_slots=3, token_dim=512)
    assert abs(small.weight.std().item() - 0.02) < 0.005 and not small.bias.any()
    with torch.no_grad():
        tokenizer.group_norms[0].weight.fill_(2.0)
        tokenizer.group_norms[1].bias.fill_(5.0)
    values = torch.tensor([[1.0, 0.0, 3.0]])
    tokens = tokenizer(values)
    raw = values.unsqueeze(-1) * tokenizer.weight + tokenizer.bias
    standardised = (raw - raw.mean(-1, keepdim=True)) / (raw.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    torch.testing.assert_close(tokens[:, :2], 2.0 * standardised[:, :2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tokens[:, 2:], standardised[:, 2:] + 5.0, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="add up"):
        EHRTokenizer(num_slots=3, token_dim=4, group_sizes=(1, 1), norm="per_group")


def test_network_builds_per_group_tokens_and_a_query_encoder_without_timestep_bias():
    net = Diff3MUNet(ieca_mode="pooled", token_norm="per_group", token_init="normal", query_time_bias=False, **SMALL)
    assert len(net.ehr_tokenizer.group_norms) == 2
    assert not any("image_encoder" in key and "time_emb_proj.bias" in key for key in net.state_dict())
    assert any("unet.down_blocks" in key and "time_emb_proj.bias" in key for key in net.state_dict())
    x, t, ehr, missing = _inputs()
    _randomise_zero_initialised(net)
    first = net._image_query(x)
    with torch.no_grad():  # the query encoder ignores the timestep projection entirely: its input is zero
        for name, parameter in net.image_encoder.named_parameters():
            if "time_emb_proj" in name:
                parameter.add_(1.0)
    torch.testing.assert_close(net._image_query(x), first)


@pytest.mark.parametrize("mode", ["pooled", "spatial"])
def test_activation_checkpointing_gives_the_same_outputs_and_gradients(mode):
    torch.manual_seed(0)
    plain = Diff3MUNet(ieca_mode=mode, use_pcm=True, **SMALL)
    _randomise_zero_initialised(plain)
    checkpointed = Diff3MUNet(ieca_mode=mode, use_pcm=True, activation_checkpointing=True, **SMALL)
    checkpointed.load_state_dict(plain.state_dict())
    x, t, ehr, missing = _inputs()
    results = []
    for net in (plain, checkpointed):
        out = _outputs(net, x, t, ehr, missing, x0=x)
        (out[0].square().mean() + out[1].square().mean()).backward()
        results.append((out, {name: p.grad for name, p in net.named_parameters()}))
    (out_plain, grads_plain), (out_checkpointed, grads_checkpointed) = results
    for checkpointed_output, plain_output in zip(out_checkpointed, out_plain):  # ε̂, x̃_t, EHR attention
        torch.testing.assert_close(checkpointed_output, plain_output, rtol=0, atol=0)
    assert grads_plain.keys() == grads_checkpointed.keys()
    assert all(grads_plain[name] is not None for name in grads_plain if not name.startswith("image_encoder"))
    for name, grad in grads_plain.items():
        if grad is None:
            assert grads_checkpointed[name] is None, name
        else:
            torch.testing.assert_close(grads_checkpointed[name], grad, rtol=1e-6, atol=1e-7, msg=name)


def test_activation_checkpointing_saves_fewer_tensors_for_backward():
    def saved_bytes(net: Diff3MUNet) -> int:
        sizes: list[int] = []

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            sizes.append(tensor.numel() * tensor.element_size())
            return tensor

        x, t, ehr, missing = _inputs(size=32)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            net(x, t, ehr, missing, x0=x)
        return sum(sizes)

    torch.manual_seed(0)
    plain = Diff3MUNet(ieca_mode="spatial", **SMALL)
    checkpointed = Diff3MUNet(ieca_mode="spatial", activation_checkpointing=True, **SMALL)
    assert saved_bytes(checkpointed) < 0.5 * saved_bytes(plain)


def test_pcm_branches_batched_through_the_shared_decoder_equal_two_separate_passes():
    from monai_diff3m.networks.checkerboard import checkerboard_masks, soften_mask
    from monai_diff3m.networks.diff3m_unet import _unet_pass, recombine_checkerboard

    torch.manual_seed(0)
    net = Diff3MUNet(ieca_mode="spatial", use_pcm=True, pcm_recombination="soft", **SMALL)
    _randomise_zero_initialised(net)
    x, t, ehr, missing = _inputs(batch=3)
    with torch.no_grad():
        batched = _outputs(net, x, t, ehr, missing)[1]
        embedding = net.unet.time_embed(get_timestep_embedding(t, net.unet.block_out_channels[0]).to(x.dtype))
        context = net.ehr_tokenizer(ehr, missing)
        soft = [soften_mask(mask, t, 1000) for mask in checkerboard_masks((16, 16))]
        separate = [
            _unet_pass(
                x * mask,
                encoder["conv_in"],
                encoder["down_blocks"],
                net.pcm_decoder["middle_block"],
                net.pcm_decoder["up_blocks"],
                net.pcm_decoder["out"],
                embedding,
                embedding,
                context,
            )
            for encoder, mask in zip(net.pcm_encoders, soft)
        ]
    torch.testing.assert_close(batched, recombine_checkerboard(*separate, *soft), rtol=1e-5, atol=1e-6)
