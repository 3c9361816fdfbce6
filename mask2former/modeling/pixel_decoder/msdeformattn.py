"""The MSDeformAttn pixel decoder (Sec. 4.1 "Pixel decoder"; Deformable DETR's encoder).

6 deformable-attention encoder layers over res3-res5 (1/8, 1/16, 1/32), FFN width 1024, a
learnable level embedding per scale, then one lateral FPN step to 1/4 for the mask features.
Shapes: B images, C = conv_dim channels, S = sum over levels of H_l * W_l tokens.
"""

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from fvcore.nn import weight_init
from torch import nn

from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from .fpn import add_fpn_convs, pixel_decoder_config
from .ops import MSDeformAttn


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Deformable self-attention -> add & norm -> FFN (ReLU) -> add & norm (post-norm)."""

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src,
        pos,
        reference_points,
        spatial_shapes,
        level_start_index,
        padding_mask=None,
        *,
        shapes: list[tuple[int, int]] | None = None,
    ):
        """src, pos: (B, S, C); reference_points: (B, S, L, 2) -> (B, S, C). `shapes`: the
        (H_l, W_l) of `spatial_shapes` as Python ints, if known."""
        src2 = self.self_attn(
            src + pos,
            reference_points,
            src,
            spatial_shapes,
            level_start_index,
            padding_mask,
            input_shapes=shapes,
        )
        src = self.norm1(src + self.dropout1(src2))
        # In place: the (B, S, 4C) hidden is the largest tensor of the layer (R50: 20 M values).
        src2 = self.linear2(self.dropout2(F.relu(self.linear1(src), inplace=True)))
        return self.norm2(src + self.dropout3(src2))


class MSDeformAttnTransformerEncoder(nn.Module):
    def __init__(self, encoder_layer_factory: Callable[[], nn.Module], num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(encoder_layer_factory() for _ in range(num_layers))
        self.num_layers = num_layers

    @staticmethod
    def get_reference_points(
        spatial_shapes: list[tuple[int, int]], batch: int, device
    ) -> torch.Tensor:
        """Pixel centres ((j + 0.5) / W_l, (i + 0.5) / H_l) of every level, shared by all levels
        (no padding: valid ratios are 1). Returns (B, S, L, 2)."""
        reference_points_list = []
        for H_, W_ in spatial_shapes:
            # arange + 0.5 is exactly linspace(0.5, H_ - 0.5, H_) (whole numbers + 0.5 are exact
            # in float32) and keeps H_ symbolic under torch.export, where linspace fixes it.
            ref_y, ref_x = torch.meshgrid(
                torch.arange(H_, dtype=torch.float32, device=device) + 0.5,
                torch.arange(W_, dtype=torch.float32, device=device) + 0.5,
                indexing="ij",
            )
            ref = torch.stack((ref_x.reshape(-1) / W_, ref_y.reshape(-1) / H_), -1)  # (H_*W_, 2)
            reference_points_list.append(ref)
        reference_points = torch.cat(reference_points_list, 0)  # (S, 2)
        L = len(spatial_shapes)
        return reference_points[None, :, None, :].expand(batch, -1, L, -1)

    def forward(
        self,
        src,
        spatial_shapes,
        level_start_index,
        pos,
        padding_mask=None,
        *,
        shapes: list[tuple[int, int]] | None = None,
    ):
        """src, pos: (B, S, C) -> (B, S, C). `shapes`: the (H_l, W_l) of `spatial_shapes` as
        Python ints, if known (they are symbolic under `torch.export`, which cannot read a
        tensor back)."""
        if shapes is None:
            shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
        reference_points = self.get_reference_points(shapes, src.shape[0], src.device)
        output = src
        for layer in self.layers:
            output = layer(
                output,
                pos,
                reference_points,
                spatial_shapes,
                level_start_index,
                padding_mask,
                shapes=shapes,
            )
        return output


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Flattens the levels, adds sine + level embeddings, runs the deformable encoder."""

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.encoder = MSDeformAttnTransformerEncoder(
            lambda: MSDeformAttnTransformerEncoderLayer(
                d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points
            ),
            num_encoder_layers,
        )
        # A plain Parameter (not nn.Embedding), as in the published checkpoints.
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor]):
        """srcs, pos_embeds: L maps (B, C, H_l, W_l). Returns memory (B, S, C), spatial shapes
        (L, 2) int64 and level start indices (L,) int64."""
        src_flatten, lvl_pos_embed_flatten, spatial_shapes = [], [], []
        for lvl, (src, pos_embed) in enumerate(zip(srcs, pos_embeds)):
            _, _, h, w = src.shape
            spatial_shapes.append((h, w))
            src_flatten.append(src.flatten(2).transpose(1, 2))  # (B, H_l*W_l, C)
            lvl_pos_embed = pos_embed.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(
                1, 1, -1
            )
            lvl_pos_embed_flatten.append(lvl_pos_embed)
        src_flatten = torch.cat(src_flatten, 1)
        lvl_pos_embed_flatten = torch.cat(lvl_pos_embed_flatten, 1)
        shapes = spatial_shapes
        # torch.tensor, not torch.as_tensor: the latter fixes symbolic sizes under torch.export.
        spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=src_flatten.device)
        level_start_index = torch.cat(
            (spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1])
        )
        memory = self.encoder(
            src_flatten, spatial_shapes, level_start_index, lvl_pos_embed_flatten, shapes=shapes
        )
        return memory, spatial_shapes, level_start_index


@SEM_SEG_HEADS_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: str | Callable | None = None,
        transformer_in_features: list[str],
        common_stride: int,
    ):
        """
        Args:
            input_shape: shapes of the backbone features the decoder reads (res2..res5).
            transformer_*: deformable encoder settings (the FFN width is 1024 in all configs).
            conv_dim: channels of the encoder and of the FPN step.
            mask_dim: channels of the per-pixel mask embeddings.
            norm: normalisation of the FPN convs ("GN" in all configs).
            transformer_in_features: backbone features fed to the encoder (res3, res4, res5).
            common_stride: stride of the mask features (4).
        """
        super().__init__()
        transformer_input_shape = {
            k: v for k, v in input_shape.items() if k in transformer_in_features
        }
        input_shape = sorted(input_shape.items(), key=lambda x: x[1].stride)
        self.in_features = [k for k, v in input_shape]  # "res2" .. "res5"
        self.feature_strides = [v.stride for k, v in input_shape]
        self.feature_channels = [v.channels for k, v in input_shape]

        transformer_input_shape = sorted(transformer_input_shape.items(), key=lambda x: x[1].stride)
        self.transformer_in_features = [k for k, v in transformer_input_shape]  # "res3" .. "res5"
        transformer_in_channels = [v.channels for k, v in transformer_input_shape]
        self.transformer_feature_strides = [v.stride for k, v in transformer_input_shape]
        self.transformer_num_feature_levels = len(self.transformer_in_features)

        # 1x1 conv + GN per encoder level, from low to high resolution (res5 first).
        self.input_proj = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim)
            )
            for in_channels in transformer_in_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        self.maskformer_num_feature_levels = 3  # always 3 scales for the transformer decoder
        self.common_stride = common_stride

        # FPN levels between the encoder's finest level and common_stride (1 level: 1/8 -> 1/4).
        stride = min(self.transformer_feature_strides)
        self.num_fpn_levels = int(np.log2(stride) - np.log2(self.common_stride))
        self.lateral_convs, self.output_convs = add_fpn_convs(
            self, self.feature_channels[: self.num_fpn_levels], conv_dim, norm
        )

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        return {
            **pixel_decoder_config(cfg, input_shape),
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "transformer_dim_feedforward": 1024,  # hard-coded in the published implementation
            "transformer_enc_layers": cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "common_stride": cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE,
        }

    def forward_features(self, features: dict[str, torch.Tensor]):
        """Runs `_forward_features` in float32 (autocast off, as published), except under
        bfloat16 autocast: then the projections, encoder layers and convolutions run in bf16 and
        only the deformable sampling locations and attention weights stay float32 (`MSDeformAttn`;
        the op samples bf16 values with float32 accumulation). bf16 has float32's exponent range,
        so the overflow that keeps fp16 out of this region does not apply."""
        device_type = next(iter(features.values())).device.type
        bf16 = (
            torch.is_autocast_enabled(device_type)
            and torch.get_autocast_dtype(device_type) == torch.bfloat16
        )
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            return self._forward_features(features)

    def _forward_features(self, features: dict[str, torch.Tensor]):
        """features: backbone maps {"res2": (B, C2, H/4, W/4), ..., "res5": (B, C5, H/32, W/32)}.

        Returns mask features (B, mask_dim, H/4, W/4), the encoder output at the coarsest level
        (B, C, H/32, W/32) and the 3 maps for the transformer decoder [1/32, 1/16, 1/8].
        Runs in float32, or in bf16 autocast (see `forward_features`).
        """
        dtype = self.mask_features.weight.dtype  # float32 (float64 for a float64 reference run)
        srcs, pos = [], []
        for idx, f in enumerate(self.transformer_in_features[::-1]):  # low to high resolution
            x = features[f].to(dtype)
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))

        y, _, _ = self.transformer(srcs, pos)  # (B, S, C)
        bs = y.shape[0]
        shapes = [src.shape[-2:] for src in srcs]  # (H_l, W_l), not read back from a tensor
        out = [
            z.transpose(1, 2).reshape(bs, -1, h, w)  # (B, C, H_l, W_l)
            for z, (h, w) in zip(torch.split(y, [h * w for h, w in shapes], dim=1), shapes)
        ]

        # Extra FPN levels down to common_stride (lateral 1x1 + bilinear upsampling + 3x3).
        for idx, f in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
            x = features[f].to(dtype)
            cur_fpn = self.lateral_convs[idx](x)
            # .contiguous(): the encoder's maps are channels-last views of (B, S, C), which the
            # CPU upsampling kernel turns into a strided copy 3x slower than the resize itself.
            y = cur_fpn + F.interpolate(
                out[-1].contiguous(), size=cur_fpn.shape[-2:], mode="bilinear", align_corners=False
            )
            out.append(self.output_convs[idx](y))

        multi_scale_features = out[: self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale_features

    def forward(self, features):
        raise NotImplementedError("pixel decoders are called through forward_features(features)")
