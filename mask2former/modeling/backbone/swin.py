"""Swin Transformer backbone (Liu et al. 2021) as a detectron2 `Backbone`: `D2SwinTransformer`.

The module tree and parameter names are those of the official Swin release and the published
Mask2Former checkpoints (`patch_embed.proj`, `layers.{i}.blocks.{j}.attn.qkv`,
`attn.relative_position_bias_table`, `layers.{i}.downsample.reduction`, per-output `norm{i}`).
The blocks (window attention, shifted-window block, stage, patch merging / embedding) are in
`swin_blocks.py`.

Shapes: B images, C = embed_dim channels of the first stage.
"""

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from timm.layers import to_2tuple, trunc_normal_
from torch import nn

from .swin_blocks import BasicLayer, PatchEmbed, PatchMerging


class SwinTransformer(nn.Module):
    """Hierarchical Swin Transformer returning the normalised output of every stage."""

    def __init__(
        self,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        norm_layer=nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: tuple[int, ...] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.pretrain_img_size = pretrain_img_size
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages

        self.patch_embed = PatchEmbed(
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=norm_layer if self.patch_norm else None,
        )
        if self.ape:  # absolute position embedding at the pre-training resolution
            pretrain_img_size = to_2tuple(pretrain_img_size)
            patch_size = to_2tuple(patch_size)
            patches_resolution = [
                pretrain_img_size[0] // patch_size[0],
                pretrain_img_size[1] // patch_size[1],
            ]
            self.absolute_pos_embed = nn.Parameter(
                torch.zeros(1, embed_dim, patches_resolution[0], patches_resolution[1])
            )
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        # Stochastic depth rising linearly over all blocks (computed in Python: meta-safe).
        total = sum(depths)
        dpr = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]

        self.layers = nn.ModuleList()
        for i_layer in range(self.num_layers):
            self.layers.append(
                BasicLayer(
                    dim=int(embed_dim * 2**i_layer),
                    depth=depths[i_layer],
                    num_heads=num_heads[i_layer],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[sum(depths[:i_layer]) : sum(depths[: i_layer + 1])],
                    norm_layer=norm_layer,
                    downsample=PatchMerging if (i_layer < self.num_layers - 1) else None,
                    use_checkpoint=use_checkpoint,
                )
            )
        self.num_features = [int(embed_dim * 2**i) for i in range(self.num_layers)]
        # One LayerNorm per returned stage (norm0..norm3).
        for i_layer in out_indices:
            self.add_module(f"norm{i_layer}", norm_layer(self.num_features[i_layer]))

        self.apply(self._init_weights)
        self._freeze_stages()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            for param in self.patch_embed.parameters():
                param.requires_grad = False
        if self.frozen_stages >= 1 and self.ape:
            self.absolute_pos_embed.requires_grad = False
        if self.frozen_stages >= 2:
            self.pos_drop.eval()
            for i in range(0, self.frozen_stages - 1):
                m = self.layers[i]
                m.eval()
                for param in m.parameters():
                    param.requires_grad = False

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {"res2": (B, C, H/4, W/4), ..., "res5": (B, 8C, H/32, W/32)}."""
        x = self.patch_embed(x)
        Wh, Ww = x.size(2), x.size(3)
        if self.ape:
            absolute_pos_embed = F.interpolate(
                self.absolute_pos_embed, size=(Wh, Ww), mode="bicubic"
            )
            x = x + absolute_pos_embed
        x = self.pos_drop(x.flatten(2).transpose(1, 2))  # (B, Wh*Ww, C)

        outs = {}
        for i in range(self.num_layers):
            x_out, H, W, x, Wh, Ww = self.layers[i](x, Wh, Ww)
            if i in self.out_indices:
                x_out = getattr(self, f"norm{i}")(x_out)
                outs[f"res{i + 2}"] = (
                    x_out.view(-1, H, W, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
                )
        return outs

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(SwinTransformer, Backbone):
    """Swin built from `MODEL.SWIN.*`; outputs res2..res5 at strides 4, 8, 16, 32."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        s = cfg.MODEL.SWIN
        super().__init__(
            pretrain_img_size=s.PRETRAIN_IMG_SIZE,
            patch_size=s.PATCH_SIZE,
            in_chans=3,
            embed_dim=s.EMBED_DIM,
            depths=tuple(s.DEPTHS),
            num_heads=tuple(s.NUM_HEADS),
            window_size=s.WINDOW_SIZE,
            mlp_ratio=s.MLP_RATIO,
            qkv_bias=s.QKV_BIAS,
            qk_scale=s.QK_SCALE,
            drop_rate=s.DROP_RATE,
            attn_drop_rate=s.ATTN_DROP_RATE,
            drop_path_rate=s.DROP_PATH_RATE,
            norm_layer=nn.LayerNorm,
            ape=s.APE,
            patch_norm=s.PATCH_NORM,
            use_checkpoint=s.USE_CHECKPOINT,
        )
        known = {"res2", "res3", "res4", "res5"}
        if not set(s.OUT_FEATURES) <= known:
            raise ValueError(
                f"MODEL.SWIN.OUT_FEATURES={s.OUT_FEATURES}: choose from {sorted(known)}"
            )
        self._out_features = list(s.OUT_FEATURES)
        self._out_feature_strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
        self._out_feature_channels = {f"res{i + 2}": c for i, c in enumerate(self.num_features)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(
                f"SwinTransformer takes (B, C, H, W) inputs, got shape {tuple(x.shape)}"
            )
        y = super().forward(x)
        return {k: v for k, v in y.items() if k in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32
