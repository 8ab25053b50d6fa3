"""Diff3M: MONAI's DiffusionModelUNet with Image-EHR Cross-Attention and checkerboard-masked branches."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, cast

import torch
from monai.networks.blocks.crossattention import CrossAttentionBlock
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock, get_timestep_embedding
from torch import nn
from torch.utils.checkpoint import checkpoint

from monai_diff3m.networks.checkerboard import checkerboard_masks, soften_mask
from monai_diff3m.networks.ehr_tokens import EHRTokenizer, PooledEHRAttention

IECA_MODES = ("pooled", "spatial", "none")
#: How the two checkerboard branches are recombined into x̃_t, see ``Diff3MUNet``.
PCM_RECOMBINATIONS = ("hard", "soft")


class Diff3MUNet(nn.Module):
    """ε-prediction diffusion UNet conditioned on EHR tokens, with optional pixel-level checkerboard masking.

    The backbone is MONAI's ``DiffusionModelUNet`` (``self.unet``). The EHR path depends on ``ieca_mode``:

    - ``"pooled"`` (the authors' only mode): an image encoder with the UNet encoder's layout reads the clean image
      x₀, its max-pooled features give one query over the EHR tokens, and LayerNorm(time + demographics +
      measurements) replaces the timestep embedding in the middle block and the decoder; the encoder keeps the
      plain timestep.
    - ``"spatial"``: the tokens are the ``context`` of the UNet's cross-attention transformer blocks.
    - ``"none"``: no EHR path at all: the image-only diffusion baseline on the same backbone.

    ``forward`` returns ε̂ as one tensor, like MONAI's networks, so stock inferers, ``verify_net_in_out`` and
    ``ckpt_export`` call it directly; the checkerboard reconstruction comes with ``with_reconstruction=True``, and
    the attention over the EHR tokens of the last forward pass is kept in ``ehr_attention``.

    With ``use_pcm`` two more encoders (copies of the main encoder) read x_t under the complementary soft
    checkerboards m' = m·(1 − t/T) + t/T and share one middle block, decoder and 1-channel head (initialised as
    copies of the main ones); each branch fills in the pixels it could not see:

    - ``pcm_recombination="hard"``: x̃_t = out₁·m₂ + out₂·m₁, every pixel from exactly one branch;
    - ``pcm_recombination="soft"`` (the authors' code): x̃_t = out₁·m₂' + out₂·m₁', so the weights of a pixel sum to
      1 + t/T and the branch that saw it still contributes t/T of its output there.

    Args:
        spatial_dims: 2 for chest X-rays.
        in_channels: image channels (1).
        out_channels: ε channels (1).
        channels: output channels of each UNet level.
        attention_levels: which levels have (cross-)attention.
        num_res_blocks: residual blocks per level.
        num_head_channels: channels per attention head (per level or one for all).
        norm_num_groups: GroupNorm groups; every entry of ``channels`` must be a multiple.
        ieca_mode: one of ``IECA_MODES``.
        ehr_group_sizes: tokens per EHR group (``monai_diff3m.transforms.ehr_group_sizes``); ignored for ``none``.
        token_dim: EHR token width; defaults to the timestep-embedding width 4·channels[0].
        token_norm: ``"shared"`` or ``"per_group"`` LayerNorm of the EHR tokens (``EHRTokenizer``).
        token_init: ``"small"`` or ``"normal"`` initialisation of the EHR token vectors (``EHRTokenizer``).
        query_time_bias: in ``pooled`` mode the x₀ encoder's residual blocks get a zero timestep embedding, which
            still adds each block's learned projection bias; ``False`` removes those biases, so the encoder has no
            timestep term at all, like the authors' encoder (whose blocks skip the embedding).
        use_pcm: add the checkerboard reconstruction branches.
        pcm_recombination: one of ``PCM_RECOMBINATIONS``.
        num_train_timesteps: T, to soften the masks by t/T.
        use_flash_attention: PyTorch scaled-dot-product attention in MONAI's blocks (no spatial attribution then).
        activation_checkpointing: while gradients are on, keep only each UNet block's inputs for backward and
            recompute its activations there (``torch.utils.checkpoint``, non-reentrant): about a third more
            compute for a fraction of the activation memory, so that large batches of 256x256 films fit on one
            GPU. A training switch, not part of the architecture: it changes no output and no gradient.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 64, 64),
        attention_levels: Sequence[bool] = (False, False, True),
        num_res_blocks: Sequence[int] | int = 1,
        num_head_channels: Sequence[int] | int = 32,
        norm_num_groups: int = 32,
        ieca_mode: str = "spatial",
        ehr_group_sizes: Sequence[int] = (5, 5),
        token_dim: int | None = None,
        token_norm: str = "shared",
        token_init: str = "small",
        query_time_bias: bool = True,
        use_pcm: bool = False,
        pcm_recombination: str = "hard",
        num_train_timesteps: int = 1000,
        use_flash_attention: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if ieca_mode not in IECA_MODES:
            raise ValueError(f"ieca_mode must be one of {IECA_MODES}, got {ieca_mode!r}")
        if pcm_recombination not in PCM_RECOMBINATIONS:
            raise ValueError(f"pcm_recombination must be one of {PCM_RECOMBINATIONS}, got {pcm_recombination!r}")
        time_embed_dim = channels[0] * 4
        self.ieca_mode = ieca_mode
        self.use_pcm = use_pcm
        self.pcm_recombination = pcm_recombination
        self.num_train_timesteps = num_train_timesteps
        self.activation_checkpointing = activation_checkpointing
        self.ehr_group_sizes = [] if ieca_mode == "none" else list(ehr_group_sizes)
        token_dim = token_dim or time_embed_dim
        unet_kwargs: dict[str, Any] = dict(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            attention_levels=attention_levels,
            num_res_blocks=num_res_blocks,
            num_head_channels=num_head_channels,
            norm_num_groups=norm_num_groups,
            with_conditioning=ieca_mode == "spatial",
            cross_attention_dim=token_dim if ieca_mode == "spatial" else None,
            use_flash_attention=use_flash_attention,
        )
        self.unet = DiffusionModelUNet(**unet_kwargs)

        if ieca_mode != "none":
            self.ehr_tokenizer = EHRTokenizer(
                sum(self.ehr_group_sizes), token_dim, self.ehr_group_sizes, token_norm, token_init
            )
        if ieca_mode == "pooled":
            query_donor = DiffusionModelUNet(**unet_kwargs)
            self.image_encoder = nn.ModuleDict({"conv_in": query_donor.conv_in, "down_blocks": query_donor.down_blocks})
            if not query_time_bias:
                for block in self.image_encoder.modules():
                    if isinstance(block, DiffusionUNetResnetBlock):
                        block.time_emb_proj.register_parameter("bias", None)
            self.image_query = nn.Sequential(nn.Linear(channels[-1], token_dim), nn.LayerNorm(token_dim))
            self.pooled_attention = PooledEHRAttention(self.ehr_group_sizes, token_dim)
            self.condition_projection = (
                nn.Identity() if token_dim == time_embed_dim else nn.Linear(token_dim, time_embed_dim)
            )
            self.condition_norm = nn.LayerNorm(time_embed_dim)
        if use_pcm:
            if out_channels != in_channels:
                raise ValueError(
                    "use_pcm reconstructs x_t with the main head's layout: "
                    f"out_channels ({out_channels}) must equal in_channels ({in_channels})"
                )
            self.pcm_encoders = nn.ModuleList(
                nn.ModuleDict(
                    {"conv_in": copy.deepcopy(self.unet.conv_in), "down_blocks": copy.deepcopy(self.unet.down_blocks)}
                )
                for _ in range(2)
            )
            self.pcm_decoder = nn.ModuleDict(
                {part: copy.deepcopy(getattr(self.unet, part)) for part in ("middle_block", "up_blocks", "out")}
            )
        #: attention weight of each EHR token in the last forward pass, (N, S), detached; None without EHR. In
        #: ``pooled`` mode the weights sum to 1 within each group; in ``spatial`` mode they are averaged over heads,
        #: positions and attention layers (as MONAI's ``CrossAttentionBlock`` keeps ``att_mat``).
        self.ehr_attention: torch.Tensor | None = None
        # Blocks whose attention over the EHR tokens is read back for attribution (SDPA does not expose the weights).
        self._attribution_blocks: list[CrossAttentionBlock] = []
        if ieca_mode == "spatial" and not use_flash_attention:
            self._attribution_blocks = [
                module for module in self.unet.modules() if isinstance(module, CrossAttentionBlock)
            ]
            for block in self._attribution_blocks:
                block.save_attn = True

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        ehr: torch.Tensor | None = None,
        ehr_missing: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
        with_reconstruction: bool = False,
    ) -> torch.Tensor:
        """Predict ε for the noisy image ``x`` at ``timesteps``; with ``with_reconstruction`` and PCM also x̃_t.

        The defaults describe a clean image with no EHR known, which is what the Model Zoo's ``verify_net_in_out``
        and ``ckpt_export`` feed (``net(image)``): timestep 0, every EHR slot flagged missing (the learned "missing"
        tokens), and x₀ = x for the image query.

        Args:
            x: noisy image x_t, (N, C, H, W).
            timesteps: (N,) integer timesteps; zeros when omitted.
            ehr: encoded EHR slots (N, S); every slot missing when omitted.
            ehr_missing: (N, S) 1 where a slot is missing.
            x0: the clean image, (N, C, H, W), which the image query of ``pooled`` mode reads; ``x`` when omitted.
            with_reconstruction: also return x̃_t from the checkerboard branches, stacked after ε̂ on the channel axis
                (N, 2C, H, W); ignored by a network without PCM, which returns ε̂ alone.

        Returns:
            ε̂, (N, C, H, W), or ε̂ and x̃_t stacked, (N, 2C, H, W).
        """
        if timesteps is None:
            timesteps = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        time_embedding = self.unet.time_embed(
            get_timestep_embedding(timesteps, self.unet.block_out_channels[0]).to(x.dtype)
        )
        decoder_embedding, context, attention = time_embedding, None, None
        if self.ieca_mode != "none":
            if ehr is None:
                ehr = torch.zeros(x.shape[0], sum(self.ehr_group_sizes), dtype=x.dtype, device=x.device)
                ehr_missing = torch.ones_like(ehr)
            tokens = self.ehr_tokenizer(ehr.to(x.dtype), ehr_missing)
            if self.ieca_mode == "pooled":
                condition, attention = self.pooled_attention(self._image_query(x if x0 is None else x0), tokens)
                decoder_embedding = self.condition_norm(time_embedding + self.condition_projection(condition))
            else:
                context = tokens

        unet = self.unet
        noise = _unet_pass(
            x,
            unet.conv_in,
            unet.down_blocks,
            unet.middle_block,
            unet.up_blocks,
            unet.out,
            time_embedding,
            decoder_embedding,
            context,
            self._checkpointing(),
        )
        if self._attribution_blocks:
            attention = torch.stack([block.att_mat.mean(dim=(1, 2)) for block in self._attribution_blocks]).mean(dim=0)
        self.ehr_attention = None if attention is None else attention.detach()

        if not (with_reconstruction and self.use_pcm):
            return noise
        reconstruction = self._checkerboard_reconstruction(x, timesteps, time_embedding, decoder_embedding, context)
        return torch.cat([noise, reconstruction], dim=1)

    def _image_query(self, x0: torch.Tensor) -> torch.Tensor:
        """Max-pooled features of x₀ from a timestep-free encoder (a zero embedding leaves only the projection biases,
        and nothing with ``query_time_bias=False``)."""
        zero_embedding = torch.zeros(x0.shape[0], self.unet.block_out_channels[0] * 4, device=x0.device, dtype=x0.dtype)
        features, _ = _encode(
            x0,
            self.image_encoder["conv_in"],
            cast(nn.ModuleList, self.image_encoder["down_blocks"]),
            zero_embedding,
            None,
            self._checkpointing(),
        )
        return self.image_query(features.amax(dim=(2, 3)))

    def _checkpointing(self) -> bool:
        """Checkpoint the blocks only when a backward pass will follow; scoring runs without gradients."""
        return self.activation_checkpointing and torch.is_grad_enabled()

    def _checkerboard_reconstruction(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        time_embedding: torch.Tensor,
        decoder_embedding: torch.Tensor,
        context: torch.Tensor | None,
    ) -> torch.Tensor:
        """Both masked branches: each encoder reads its masked x_t, then one batch of 2N goes through the shared
        decoder (every layer of the decoder treats samples independently, so this equals two decoder passes and
        launches half the kernels)."""
        hard = checkerboard_masks((x.shape[-2], x.shape[-1]), device=x.device, dtype=x.dtype)
        soft = [soften_mask(mask, timesteps, self.num_train_timesteps) for mask in hard]
        checkpointing = self._checkpointing()
        encoded = [
            _encode(
                x * visible_mask,
                cast(nn.ModuleDict, branch)["conv_in"],
                cast(nn.ModuleList, cast(nn.ModuleDict, branch)["down_blocks"]),
                time_embedding,
                context,
                checkpointing,
            )
            for branch, visible_mask in zip(self.pcm_encoders, soft)
        ]
        (h1, skips1), (h2, skips2) = encoded
        decoded = _decode(
            torch.cat([h1, h2]),
            [torch.cat(pair) for pair in zip(skips1, skips2)],
            self.pcm_decoder["middle_block"],
            cast(nn.ModuleList, self.pcm_decoder["up_blocks"]),
            self.pcm_decoder["out"],
            torch.cat([decoder_embedding, decoder_embedding]),
            None if context is None else torch.cat([context, context]),
            checkpointing,
        )
        out1, out2 = decoded.chunk(2)
        return recombine_checkerboard(out1, out2, *(soft if self.pcm_recombination == "soft" else hard))

    def start_pcm_stage(self) -> None:
        """Stage 2 (as the authors' code): copy the trained main encoder into both PCM encoders, freeze stage 1's work.

        Frozen: the main encoder (``conv_in``, ``down_blocks``), the timestep embedding and the x₀ image encoder.
        The main middle block and decoder keep training with the ε part of the mixed loss.
        """
        if not self.use_pcm:
            raise ValueError("start_pcm_stage needs a Diff3MUNet built with use_pcm=True")
        for encoder in self.pcm_encoders:
            cast(nn.ModuleDict, encoder)["conv_in"].load_state_dict(self.unet.conv_in.state_dict())
            cast(nn.ModuleDict, encoder)["down_blocks"].load_state_dict(self.unet.down_blocks.state_dict())
        frozen = [self.unet.conv_in, self.unet.down_blocks, self.unet.time_embed]
        if self.ieca_mode == "pooled":
            frozen += [self.image_encoder, self.image_query]
        for module in frozen:
            module.requires_grad_(False)


def split_prediction(prediction: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(ε̂, x̃_t) from what ``Diff3MUNet(..., with_reconstruction=True)`` returned for an image of ``channels``
    channels; x̃_t is None when the network has no PCM branches (the prediction is ε̂ alone)."""
    if prediction.shape[1] == channels:
        return prediction, None
    if prediction.shape[1] != 2 * channels:
        raise ValueError(
            f"a prediction for {channels}-channel images has {channels} or {2 * channels} channels, "
            f"got {prediction.shape[1]}"
        )
    return prediction[:, :channels], prediction[:, channels:]


def recombine_checkerboard(out1: torch.Tensor, out2: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    """x̃_t = out₁·m₂ + out₂·m₁: branch 1 saw the m₁ pixels, so it supplies the m₂ pixels, and the reverse.

    With the hard masks every pixel comes from one branch; with the softened masks (authors) both contribute.
    """
    return out1 * m2 + out2 * m1


def _unet_pass(
    x: torch.Tensor,
    conv_in: nn.Module,
    down_blocks: nn.ModuleList,
    middle_block: nn.Module,
    up_blocks: nn.ModuleList,
    out: nn.Module,
    encoder_embedding: torch.Tensor,
    decoder_embedding: torch.Tensor,
    context: torch.Tensor | None,
    checkpointing: bool = False,
) -> torch.Tensor:
    """``DiffusionModelUNet.forward`` steps 3–7 with separate encoder and decoder embeddings.

    ``_unet_pass``, ``_encode`` and ``_decode`` are the one place that walks MONAI's UNet internals: IECA conditions
    only the middle block and decoder, and the PCM branches pair their own encoders with a shared decoder, neither of
    which MONAI's forward allows.
    """
    h, skips = _encode(x, conv_in, down_blocks, encoder_embedding, context, checkpointing)
    return _decode(h, skips, middle_block, up_blocks, out, decoder_embedding, context, checkpointing)


def _encode(
    x: torch.Tensor,
    conv_in: nn.Module,
    down_blocks: nn.ModuleList,
    embedding: torch.Tensor,
    context: torch.Tensor | None,
    checkpointing: bool,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The encoder's output and the skip connections the decoder reads, in order."""
    h = conv_in(x)
    skips = [h]
    for block in down_blocks:
        h, residuals = _run_block(block, checkpointing, hidden_states=h, temb=embedding, context=context)
        skips.extend(residuals)
    return h, skips


def _decode(
    h: torch.Tensor,
    skips: list[torch.Tensor],
    middle_block: nn.Module,
    up_blocks: nn.ModuleList,
    out: nn.Module,
    embedding: torch.Tensor,
    context: torch.Tensor | None,
    checkpointing: bool,
) -> torch.Tensor:
    """The middle block, the decoder (consuming ``skips`` from the end) and the output head."""
    h = _run_block(middle_block, checkpointing, hidden_states=h, temb=embedding, context=context)
    for block in up_blocks:
        count = len(cast(nn.ModuleList, block.resnets))
        h = _run_block(
            block,
            checkpointing,
            hidden_states=h,
            res_hidden_states_list=skips[-count:],
            temb=embedding,
            context=context,
        )
        skips = skips[:-count]
    return cast(torch.Tensor, out(h))


def _run_block(block: nn.Module, checkpointing: bool, **inputs: Any) -> Any:
    """Call a UNet block; with ``checkpointing``, through non-reentrant ``torch.utils.checkpoint``, the variant that
    takes keyword inputs (MONAI's ``CheckpointWrapper`` passes one tensor, these blocks also take ``temb`` and
    ``context``) and tensors inside lists (the decoder's skips)."""
    if checkpointing:
        return checkpoint(block, use_reentrant=False, **inputs)
    return block(**inputs)
