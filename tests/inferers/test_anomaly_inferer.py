import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from monai_diff3m.inferers import SCORE_NAMES, Diff3MAnomalyInferer, ddim_steps, ddim_timesteps, image_noise, predict_x0
from monai_diff3m.networks import Diff3MUNet

SMALL = dict(
    channels=(8, 16), attention_levels=(False, True), num_head_channels=8, norm_num_groups=8, ehr_group_sizes=(5, 5)
)


def _network(mode: str = "pooled", use_pcm: bool = False) -> Diff3MUNet:
    torch.manual_seed(0)
    net = Diff3MUNet(ieca_mode=mode, use_pcm=use_pcm, **SMALL).eval()
    for parameter in net.parameters():
        if not parameter.detach().any():
            torch.nn.init.normal_(parameter, std=0.05)
    return net


def _images(batch: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(batch, 1, size, size, generator=generator) * 1.6 - 0.8, torch.randn(
        batch, 10, generator=generator
    )


def test_timesteps_cover_zero_to_noise_level():
    assert ddim_timesteps(400, 4) == [0, 100, 200, 300, 400]
    assert ddim_timesteps(3, None) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="num_steps"):
        ddim_timesteps(10, 20)


def test_inversion_then_denoising_reproduces_the_input_at_small_noise_level():
    image, ehr = _images()
    inferer = Diff3MAnomalyInferer(
        DDPMScheduler(1000), noise_level=10, num_steps=10, noising="ddim_inversion", smoothing_sigma=0
    )
    result = inferer(image, _network(), ehr)
    assert (result["twin"] - image).abs().max() < 0.02
    far = Diff3MAnomalyInferer(
        DDPMScheduler(1000), noise_level=600, num_steps=5, noising="ddim_inversion", smoothing_sigma=0
    )(image, _network(), ehr)
    assert (far["twin"] - image).abs().mean() > 10 * (result["twin"] - image).abs().mean()


@pytest.mark.parametrize("noising", ["ddim_inversion", "stochastic"])
def test_inferer_is_deterministic_and_returns_every_score(noising):
    image, ehr = _images()
    inferer = Diff3MAnomalyInferer(DDPMScheduler(1000), noise_level=200, num_steps=4, noising=noising, use_pcm=True)
    first = inferer(image, _network(use_pcm=True), ehr)
    second = inferer(image, _network(use_pcm=True), ehr)
    torch.testing.assert_close(first["twin"], second["twin"], rtol=0, atol=0)
    assert set(first["scores"]) == set(SCORE_NAMES)
    assert all(values.shape == (3,) for values in first["scores"].values())
    assert first["anomaly_map"].shape == image.shape and first["ehr_attention"].shape == (3, 10)


def test_noise_level_must_be_below_T():
    with pytest.raises(ValueError, match="noise_level"):
        Diff3MAnomalyInferer(DDPMScheduler(100), noise_level=100)


class _ConstantNetwork(torch.nn.Module):
    """ε̂ = 1 and x̃_t = 1.6 everywhere, no EHR attention; records the timesteps it is evaluated at."""

    def __init__(self) -> None:
        super().__init__()
        self.timesteps: list[int] = []
        self.ehr_attention = None

    def forward(self, x, timesteps, ehr=None, ehr_missing=None, x0=None, with_reconstruction=False):
        self.timesteps.append(int(timesteps[0]))
        if not with_reconstruction:
            return torch.ones_like(x)
        return torch.cat([torch.ones_like(x), torch.full_like(x, 1.6)], dim=1)


def _schedule(alphas_cumprod: torch.Tensor) -> DDPMScheduler:
    """A MONAI scheduler with hand-picked ᾱ_t, so that steps can be checked by hand."""
    scheduler = DDPMScheduler(len(alphas_cumprod))
    scheduler.alphas_cumprod = alphas_cumprod
    return scheduler


#: ᾱ_0 = 0.64 and ᾱ_1 = 0.36: √ᾱ and √(1 − ᾱ) are 0.8, 0.6 and 0.6, 0.8.
_TWO_STEP_SCHEDULE = _schedule(torch.tensor([0.64, 0.36] + [0.1] * 8))


@pytest.mark.parametrize(
    "use_pcm, clip_range, twin",
    [
        # inversion t=0 -> 1: x̂₀ = clip((1.6 - 0.6)/0.8 = 1.25) = 1, ε = (0.5 - 0.8)/0.6 = -0.5, x₁ = 0.6 - 0.4 = 0.2;
        # denoising 1 -> 0: x̂₀ = clip((1.6 - 0.8)/0.6) = 1, ε = (0.2 - 0.6)/0.8 = -0.5, x₀ = 0.8 - 0.3 = 0.5
        (True, (-1.0, 1.0), 0.5),
        # no clipping: x̂₀ = 1.25, ε = -5/6, x₁ = 1/12; then x̂₀ = 4/3, ε = (1/12 - 0.8)/0.8, x₀ = 0.8·4/3 + 0.6·ε
        (True, (-2.0, 2.0), 0.8 * 4 / 3 + 0.6 * (1 / 12 - 0.8) / 0.8),
        # without x̃: x̂₀ = (0.5 - 0.6)/0.8 = -0.125, ε = 1, x₁ = 0.725; x̂₀ = (0.725 - 0.8)/0.6 = -0.125, back to 0.5
        (False, (-1.0, 1.0), 0.5),
    ],
)
def test_one_inversion_and_one_denoising_step_by_hand(use_pcm, clip_range, twin):
    """Both directions predict x̂₀ from x̃_t (PCM) and clip it, as the authors' ``ddim_reverse_sample`` and sampling."""
    inferer = Diff3MAnomalyInferer(
        _TWO_STEP_SCHEDULE, 1, 1, "ddim_inversion", smoothing_sigma=0, use_pcm=use_pcm, clip_range=clip_range
    )
    network = _ConstantNetwork()
    result = inferer(torch.full((1, 1, 2, 2), 0.5), network)
    torch.testing.assert_close(result["twin"], torch.full((1, 1, 2, 2), twin))
    assert network.timesteps == [0, 1]


def test_authors_indexing_inverts_from_one_to_l_and_denoises_from_l_minus_two_to_the_clean_image():
    assert ddim_steps(4, None, "authors") == ([(1, 2), (2, 3), (3, 4)], [(2, 1), (1, 0), (0, -1)])
    assert ddim_steps(4, 2) == ([(0, 2), (2, 4)], [(4, 2), (2, 0)])
    network = _ConstantNetwork()
    schedule = _schedule(torch.linspace(0.9, 0.5, 10))
    inferer = Diff3MAnomalyInferer(
        schedule,
        4,
        None,
        "ddim_inversion",
        smoothing_sigma=0,
        use_pcm=True,
        indexing="authors",
        image_range=(0.0, 1.0),
        clip_range=(-1.0, 1.0),
    )
    twin = inferer(torch.full((1, 1, 2, 2), 0.5), network)["twin"]
    assert network.timesteps == [1, 2, 3, 2, 1, 0]
    # the last step lands on the clean image (ᾱ = 1), so the twin is that step's x̂₀ = clip((1.6 - √(1-ᾱ₀))/√ᾱ₀)
    alpha = schedule.alphas_cumprod[0]
    expected = float(((1.6 - (1 - alpha).sqrt()) / alpha.sqrt()).clamp(-1, 1))
    torch.testing.assert_close(twin, torch.full((1, 1, 2, 2), expected))
    with pytest.raises(ValueError, match="every timestep"):
        ddim_steps(400, 10, "authors")
    with pytest.raises(ValueError, match="ddim_inversion"):
        Diff3MAnomalyInferer(DDPMScheduler(1000), num_steps=None, noising="stochastic", indexing="authors")


def test_image_range_sets_the_default_clip():
    inferer = Diff3MAnomalyInferer(
        _TWO_STEP_SCHEDULE, 1, 1, "ddim_inversion", smoothing_sigma=0, use_pcm=True, image_range=(0.0, 1.0)
    )
    assert inferer.clip_range == (0.0, 1.0)
    twin = inferer(torch.full((1, 1, 2, 2), 0.5), _ConstantNetwork())["twin"]
    torch.testing.assert_close(twin, torch.full((1, 1, 2, 2), 0.5))


@pytest.mark.parametrize("noising", ["stochastic", "ddim_inversion"])
def test_a_score_does_not_depend_on_the_batch_or_the_position_in_it(noising):
    """A score is a function of (image, EHR, checkpoint, settings, seed): the same film scores the same alone, in a
    batch of 16, at another position, and as four copies in one batch (the issue's probe: one seeded noise tensor per
    batch gave four copies four different scores)."""
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(16, 1, 16, 16, generator=generator) * 1.6 - 0.8
    ehr = torch.randn(16, 10, generator=generator)
    images[8:12], ehr[8:12] = images[3], ehr[3]
    inferer = Diff3MAnomalyInferer(DDPMScheduler(1000), noise_level=200, num_steps=4, noising=noising)
    network = _network()
    order = torch.roll(torch.arange(16), 7)  # image 3 moves to position 10

    alone = inferer(images[3:4], network, ehr[3:4])["scores"]
    batch = inferer(images, network, ehr)["scores"]
    moved = inferer(images[order], network, ehr[order])["scores"]

    position = int((order == 3).nonzero())
    for name in SCORE_NAMES:
        expected = alone[name][0].expand(5)
        observed = torch.stack([batch[name][3], *batch[name][8:12]])
        torch.testing.assert_close(observed, expected, rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(moved[name][position], alone[name][0], rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(moved[name][torch.argsort(order)], batch[name], rtol=1e-5, atol=1e-7, msg=name)


def test_stochastic_noise_follows_the_seed_and_the_pixels():
    image, _ = _images(batch=2)
    assert torch.equal(image_noise(image, seed=0), image_noise(image, seed=0))
    assert not torch.equal(image_noise(image, seed=0), image_noise(image, seed=1))
    assert not torch.equal(image_noise(image, seed=0)[0], image_noise(image, seed=0)[1])


def test_bf16_scoring_runs_the_network_in_bf16_on_cpu_and_scores_in_float32():
    """``--amp true`` reaches the inferer, which autocasts the network on the input's device (MONAI's evaluator
    autocasts for "cuda" only). Maps, scores and EHR attention stay float32: a bf16 smoothing convolution once made
    the 99th percentile fail ("quantile() input tensor must be either float or double") on the H200."""
    image, ehr = _images()
    network = _network(mode="spatial")
    convolutions: set[torch.dtype] = set()
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda _module, _inputs, output: convolutions.add(output.dtype))
    schedule = dict(noise_level=20, num_steps=2)
    full = Diff3MAnomalyInferer(DDPMScheduler(1000), **schedule)(image, network, ehr)
    assert convolutions == {torch.float32}
    convolutions.clear()
    half = Diff3MAnomalyInferer(DDPMScheduler(1000), autocast_dtype=torch.bfloat16, **schedule)(image, network, ehr)
    assert convolutions == {torch.bfloat16}
    assert half["smoothed_map"].dtype == half["twin"].dtype == half["ehr_attention"].dtype == torch.float32
    assert all(values.dtype == torch.float32 and values.shape == (3,) for values in half["scores"].values())
    assert not torch.equal(half["twin"], full["twin"])
    torch.testing.assert_close(half["twin"], full["twin"], rtol=0, atol=0.1)


def test_predict_x0_inverts_the_schedulers_add_noise_and_clips():
    """One x̂₀ formula serves every DDIM step and the validation grids: it undoes ``scheduler.add_noise``."""
    scheduler = DDPMScheduler(1000)
    clean, noise = torch.rand(2, 1, 8, 8) * 1.6 - 0.8, torch.randn(2, 1, 8, 8)
    timesteps = torch.tensor([10, 600])
    noisy = scheduler.add_noise(clean, noise, timesteps)
    alpha_bar = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    torch.testing.assert_close(predict_x0(noisy, noise, alpha_bar, (-1.0, 1.0)), clean, rtol=0, atol=1e-4)
    assert predict_x0(noisy, noise, alpha_bar, (0.0, 0.5)).aminmax() == (torch.tensor(0.0), torch.tensor(0.5))


@pytest.mark.parametrize("indexing, noise_level, timestep", [("aligned", 50, 50), ("authors", 6, 0)])
def test_noising_is_the_schedulers_add_noise_with_each_images_own_noise(monkeypatch, indexing, noise_level, timestep):
    """The jump to L (stochastic) and the authors' q(x_0 | image) start are ``scheduler.add_noise`` with
    :func:`image_noise`, bit for bit."""
    image, ehr = _images()
    noising = "stochastic" if indexing == "aligned" else "ddim_inversion"
    inferer = Diff3MAnomalyInferer(
        DDPMScheduler(1000),
        noise_level=noise_level,
        num_steps=5 if indexing == "aligned" else None,
        noising=noising,
        indexing=indexing,
        seed=3,
    )
    starts = []
    ddim = inferer._ddim

    def recording(x, *args):
        starts.append(x)
        return ddim(x, *args)

    monkeypatch.setattr(inferer, "_ddim", recording)
    inferer(image, _network(), ehr)
    expected = DDPMScheduler(1000).add_noise(image, image_noise(image, 3), torch.full((3,), timestep))
    assert torch.equal(starts[0], expected)
