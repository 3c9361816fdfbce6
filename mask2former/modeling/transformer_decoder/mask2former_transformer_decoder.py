"""The masked-attention Transformer decoder of Mask2Former (Sec. 3.2, Fig. 2 right).

Shapes: B images, Q queries, C hidden channels, K classes (+1 = "no object"), S = H_l * W_l
memory tokens of level l, (H, W) = the 1/4 mask-feature resolution.

Parameter names follow the published checkpoints (`query_feat`, `query_embed`, `level_embed`,
`transformer_{self,cross}_attention_layers.{i}.{self_attn,multihead_attn}.in_proj_weight`, ...).
The attention layers keep `nn.MultiheadAttention` modules as parameter holders but compute with
`F.scaled_dot_product_attention`, which is numerically the same operation (tested in float64)
and uses the fused kernels where they exist.
"""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from fvcore.nn import weight_init
from torch import nn

from .build import TRANSFORMER_DECODER_REGISTRY
from .position_encoding import PositionEmbeddingSine


def multi_head_attention(
    mha: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """`mha(query, key, value, attn_mask=~allowed)` for batch-first inputs, via SDPA.

    query (B, Lq, C), key/value (B, Lk, C); allowed (B, Lq, Lk) bool, True = may attend
    (the complement of nn.MultiheadAttention's boolean `attn_mask`), shared by all heads.
    Every row of `allowed` must have at least one True. Returns (B, Lq, C).
    """
    B, Lq, C = query.shape
    Lk = key.shape[1]
    h = mha.num_heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None,) * 3
    q = F.linear(query, w_q, b_q).view(B, Lq, h, C // h).transpose(1, 2)  # (B, h, Lq, C/h)
    k = F.linear(key, w_k, b_k).view(B, Lk, h, C // h).transpose(1, 2)  # (B, h, Lk, C/h)
    v = F.linear(value, w_v, b_v).view(B, Lk, h, C // h).transpose(1, 2)
    attn_mask = allowed[:, None] if allowed is not None else None  # (B, 1, Lq, Lk)
    dropout_p = mha.dropout if mha.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    out = out.transpose(1, 2).reshape(B, Lq, C)
    return mha.out_proj(out)


class SelfAttentionLayer(nn.Module):
    """Self-attention among queries, residual, LayerNorm (post-norm; pre-norm if asked)."""

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor | None = None) -> torch.Tensor:
        """tgt (B, Q, C) -> (B, Q, C)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        q = k = _with_pos(x, query_pos)
        out = tgt + self.dropout(multi_head_attention(self.self_attn, q, k, x))
        return out if self.normalize_before else self.norm(out)


class CrossAttentionLayer(nn.Module):
    """Masked cross-attention from queries to one level of image features (Eq. 2)."""

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        allowed: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt (B, Q, C), memory (B, S, C), pos (B, S, C), allowed (B, Q, S) -> (B, Q, C)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        attn = multi_head_attention(
            self.multihead_attn, _with_pos(x, query_pos), _with_pos(memory, pos), memory, allowed
        )
        out = tgt + self.dropout(attn)
        return out if self.normalize_before else self.norm(out)


class FFNLayer(nn.Module):
    """Linear -> ReLU -> Linear, residual, LayerNorm."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        x = self.norm(tgt) if self.normalize_before else tgt
        out = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return out if self.normalize_before else self.norm(out)


class MLP(nn.Module):
    """A plain multi-layer perceptron with ReLU between layers (the mask-embedding head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


def _xavier_init(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Masked cross-attention -> self-attention -> FFN, fed round-robin by 3 feature levels.

    `dec_layers` is the number of Transformer layers (the config's DEC_LAYERS counts predictions,
    i.e. layers + 1). A prediction is made from the learnable query features before the first
    layer (Sec. 3.2.3) and after every layer; the last one is the output, the others are
    `aux_outputs` for deep supervision.
    """

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder only supports mask classification")
        self.mask_classification = mask_classification

        # Sec. 3.2.2: sine positional embedding (C/2 features for y and for x).
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)

        self.num_heads = nheads
        self.num_layers = dec_layers
        # Table 4 / Sec. 3.2.3: no dropout anywhere in the decoder.
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout=0.0, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.num_queries = num_queries
        # Sec. 3.2.3: learnable query features X_0 (and learnable query positions).
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)

        # Sec. 3.2.2: 3 scales (1/32, 1/16, 1/8), each with a learnable level embedding.
        self.num_feature_levels = 3
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                self.input_proj.append(Conv2d(in_channels, hidden_dim, kernel_size=1))
                weight_init.c2_xavier_fill(self.input_proj[-1])
            else:
                self.input_proj.append(nn.Sequential())

        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool):
        if cfg.MODEL.MASK_FORMER.DEC_LAYERS < 1:
            raise ValueError(
                f"MODEL.MASK_FORMER.DEC_LAYERS={cfg.MODEL.MASK_FORMER.DEC_LAYERS}: it counts "
                "predictions (Transformer layers + 1) and must be >= 1; the paper uses 10"
            )
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": cfg.MODEL.MASK_FORMER.HIDDEN_DIM,
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "dim_feedforward": cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD,
            # DEC_LAYERS counts the predictions; one is made before the first layer.
            "dec_layers": cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1,
            "pre_norm": cfg.MODEL.MASK_FORMER.PRE_NORM,
            "enforce_input_project": cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
        }

    def forward(
        self, x: list[torch.Tensor], mask_features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict:
        """x: 3 maps (B, C_in, H_l, W_l) from low to high resolution (1/32, 1/16, 1/8);
        mask_features: (B, D, H, W) per-pixel embeddings at 1/4; `mask` is unused.

        Returns {"pred_logits": (B, Q, K+1) class logits, "pred_masks": (B, Q, H, W) mask logits,
        "aux_outputs": [{"pred_logits", "pred_masks"}] * num_layers, earliest first; in training
        only: at inference the earlier predictions serve only as attention masks, predicted at
        their level's size (`attention_mask`), so "aux_outputs" is []}.
        """
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature maps, got {len(x)}")
        src, pos, size_list = [], [], []
        for i in range(self.num_feature_levels):
            size_list.append(x[i].shape[-2:])
            pos.append(self.pe_layer(x[i]).flatten(2).transpose(1, 2))  # (B, S_i, C)
            proj = self.input_proj[i](x[i]).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(proj.transpose(1, 2))  # (B, S_i, C)

        bs = src[0].shape[0]
        query_embed = self.query_embed.weight.unsqueeze(0).expand(bs, -1, -1)  # (B, Q, C)
        output = self.query_feat.weight.unsqueeze(0).expand(bs, -1, -1)  # (B, Q, C)

        # Inference: mask features resized once per level for the attention masks (see
        # `attention_mask`); training: every prediction at 1/4 for deep supervision.
        level_features = None
        if not self.training and self.num_layers:
            level_features = [
                F.interpolate(mask_features, size=s, mode="bilinear", align_corners=False)
                for s in size_list
            ]
        predictions_class, predictions_mask = [], []

        def predict(output: torch.Tensor, level: int | None) -> torch.Tensor | None:
            """Predict from `output`; return the attention mask at `level` (None: last layer)."""
            if level is not None and level_features is not None:
                return self.attention_mask(output, level_features[level])
            size = None if level is None else size_list[level]
            outputs_class, outputs_mask, allowed = self.forward_prediction_heads(
                output, mask_features, attn_mask_target_size=size
            )
            predictions_class.append(outputs_class)
            predictions_mask.append(outputs_mask)
            return allowed

        # Prediction from the learnable queries before the first layer (gives M_0).
        allowed = predict(output, 0 if self.num_layers else None)
        for i in range(self.num_layers):
            level_index = i % self.num_feature_levels  # Sec. 3.2.2: round robin 1/32, 1/16, 1/8
            # A query whose mask is empty everywhere attends everywhere (else softmax of all -inf).
            allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
            output = self.transformer_cross_attention_layers[i](
                output, src[level_index], allowed, pos=pos[level_index], query_pos=query_embed
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
            output = self.transformer_ffn_layers[i](output)
            last = i == self.num_layers - 1
            allowed = predict(output, None if last else (i + 1) % self.num_feature_levels)

        return {
            "pred_logits": predictions_class[-1],
            "pred_masks": predictions_mask[-1],
            "aux_outputs": self._set_aux_loss(predictions_class, predictions_mask),
        }

    def forward_prediction_heads(
        self, output: torch.Tensor, mask_features: torch.Tensor, attn_mask_target_size=None
    ):
        """output (B, Q, C) -> class logits (B, Q, K+1), mask logits (B, Q, H, W) and the
        attention mask for the next layer (B, Q, H_l*W_l) bool, True = may attend (Eq. 3),
        or None when `attn_mask_target_size` is None."""
        decoder_output = self.decoder_norm(output)
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)  # (B, Q, D)
        outputs_mask = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)

        if attn_mask_target_size is None:
            return outputs_class, outputs_mask, None
        # Eq. (3): M_{l-1} = the previous prediction resized to this level, thresholded at 0.5.
        attn_mask = F.interpolate(
            outputs_mask, size=attn_mask_target_size, mode="bilinear", align_corners=False
        )
        allowed = ~(attn_mask.sigmoid().flatten(2) < 0.5).detach()  # (B, Q, H_l*W_l)
        return outputs_class, outputs_mask, allowed

    def attention_mask(self, output: torch.Tensor, level_features: torch.Tensor) -> torch.Tensor:
        """Inference: output (B, Q, C), level_features (B, D, H_l, W_l) = the mask features
        resized to the next layer's level -> its attention mask (B, Q, H_l*W_l) bool.

        The same mask as `forward_prediction_heads` gives, without the (B, Q, H, W) prediction at
        1/4: bilinear resizing weighs each pixel's neighbours alike in every channel and the mask
        logits are a per-pixel dot product with the mask features, so resizing the features
        first gives the resized logits (up to rounding) at a fraction of the cost (R50, 800x1216:
        100 x 256 x 60,800 multiply-adds per layer at 1/4, at most 100 x 256 x 15,200 here).
        """
        mask_embed = self.mask_embed(self.decoder_norm(output))  # (B, Q, D)
        logits = torch.einsum("bqc,bchw->bqhw", mask_embed, level_features)
        return ~(logits.sigmoid().flatten(2) < 0.5)

    @torch.jit.unused
    def _set_aux_loss(self, outputs_class: list, outputs_seg_masks: list) -> list[dict]:
        return [
            {"pred_logits": a, "pred_masks": b}
            for a, b in zip(outputs_class[:-1], outputs_seg_masks[:-1])
        ]
