"""The building blocks of the Swin Transformer (Liu et al. 2021): window (shifted-window)
multi-head self-attention with a relative-position bias, the transformer block, a stage of blocks
with its patch merging, and the patch embedding. `swin.py` assembles them into the backbone.

The attribute names are those of the official Swin release and the published Mask2Former
checkpoints (`attn.qkv`, `attn.relative_position_bias_table`, `downsample.reduction`, ...).
Generic layers (DropPath, Mlp, trunc_normal_) come from timm; window attention runs through
`F.scaled_dot_product_attention` with the relative-position bias (+ shift mask) as an additive
mask, the same computation as the explicit softmax(q k^T * scale + bias) v.

Shapes: B images, (H, W) token grid of a stage, C channels, N = window_size**2 tokens a window.
"""

import functools

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from timm.layers import DropPath, Mlp, to_2tuple, trunc_normal_
from torch import nn


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * num_windows, window_size, window_size, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """(B * num_windows, window_size, window_size, C) -> (B, H, W, C)."""
    B = int(windows.shape[0] / (H * W / window_size / window_size))
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


@functools.cache
def relative_position_index(wh: int, ww: int) -> torch.Tensor:
    """Index into the (2Wh-1)(2Ww-1) bias table for every pair of tokens of a window, (N, N).

    Built on the CPU (also when the model is constructed on the meta device) and cached.
    """
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(wh, device="cpu"), torch.arange(ww, device="cpu"), indexing="ij"
        )
    ).flatten(1)  # (2, N)
    relative_coords = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    relative_coords[:, :, 0] += wh - 1
    relative_coords[:, :, 1] += ww - 1
    relative_coords[:, :, 0] *= 2 * ww - 1
    return relative_coords.sum(-1)


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a learned relative-position bias."""

    def __init__(
        self,
        dim: int,
        window_size: tuple[int, int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.window_size = window_size  # (Wh, Ww)
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5

        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads)
        )
        self.register_buffer(
            "relative_position_index", relative_position_index(*window_size).clone()
        )

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nW, N, C); mask: (nW, N, N) additive (0 or -100) or None -> (B * nW, N, C)."""
        B_, N, C = x.shape
        h = self.num_heads
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)  # (1, h, N, N)
        qkv = self.qkv(x)  # (B_, N, 3C)
        if mask is None:
            qkv = qkv.reshape(B_, N, 3, h, C // h).permute(2, 0, 3, 1, 4)  # (3, B_, h, N, C/h)
        else:
            # Windows of one image share the shift mask: (B, nW, h, N, C/h) against (nW, 1, N, N).
            nW = mask.shape[0]
            qkv = qkv.reshape(B_ // nW, nW, N, 3, h, C // h).permute(3, 0, 1, 4, 2, 5)
            bias = bias + mask.unsqueeze(1)  # (nW, h, N, N)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = bias.to(q.dtype)
        dropout_p = self.attn_drop if self.training else 0.0
        if mask is not None and torch.compiler.is_exporting():
            # ONNX's attention takes 4-D inputs: the windows of all images as one batch.
            q, k, v = (t.reshape(B_, h, N, C // h) for t in (q, k, v))
            bias = bias.expand(B_ // bias.shape[0], -1, -1, -1, -1).reshape(B_, h, N, N)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=self.scale
        )
        x = x.reshape(B_, self.num_heads, N, -1).transpose(1, 2)  # (B_, N, h, C/h)
        if torch.compiler.is_exporting():
            # The traced reshape becomes a view valid for the fused kernel's output layout only;
            # the ONNX exporter decomposes SDPA into ops with another layout. A copy keeps it valid.
            x = x.clone(memory_format=torch.contiguous_format)
        x = x.reshape(B_, N, C)
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    """(Shifted) window attention and an MLP, each pre-norm with a residual and drop-path."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer=nn.GELU,
        norm_layer=nn.LayerNorm,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size), got {shift_size}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim,
            window_size=to_2tuple(window_size),
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(
            in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop
        )
        self.H = None
        self.W = None

    def forward(self, x: torch.Tensor, mask_matrix: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H*W, C) with self.H, self.W set by the caller -> (B, H*W, C)."""
        B, L, C = x.shape
        H, W = self.H, self.W
        if L != H * W:
            raise ValueError(f"input has {L} tokens, expected H*W = {H}*{W}")
        ws = self.window_size

        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        # Pad the map to multiples of the window size (right/bottom).
        pad_r = (ws - W % ws) % ws
        pad_b = (ws - H % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, Hp, Wp, _ = x.shape

        if self.shift_size > 0:
            shifted_x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            attn_mask = mask_matrix
        else:
            shifted_x = x
            attn_mask = None

        x_windows = window_partition(shifted_x, ws).view(-1, ws * ws, C)  # (B*nW, N, C)
        attn_windows = self.attn(x_windows, mask=attn_mask).view(-1, ws, ws, C)
        shifted_x = window_reverse(attn_windows, ws, Hp, Wp)  # (B, Hp, Wp, C)

        if self.shift_size > 0:
            x = torch.roll(shifted_x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        else:
            x = shifted_x
        if pad_r > 0 or pad_b > 0:
            x = x[:, :H, :W, :].contiguous()
        x = x.view(B, H * W, C)

        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated (4C), LayerNorm, linear to 2C: halves H and W."""

    def __init__(self, dim: int, norm_layer=nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """(B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C)."""
        B, L, C = x.shape
        x = x.view(B, H, W, C)
        if H % 2 == 1 or W % 2 == 1:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x0 = x[:, 0::2, 0::2, :]
        x1 = x[:, 1::2, 0::2, :]
        x2 = x[:, 0::2, 1::2, :]
        x3 = x[:, 1::2, 1::2, :]
        x = torch.cat([x0, x1, x2, x3], -1).view(B, -1, 4 * C)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One Swin stage: `depth` blocks alternating regular and shifted windows, then merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float | list[float] = 0.0,
        norm_layer=nn.LayerNorm,
        downsample=None,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if (i % 2 == 0) else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i] if isinstance(drop_path, list) else drop_path,
                norm_layer=norm_layer,
            )
            for i in range(depth)
        )
        self.downsample = (
            downsample(dim=dim, norm_layer=norm_layer) if downsample is not None else None
        )

    def _shift_attention_mask(self, H: int, W: int, device, dtype) -> torch.Tensor:
        """Additive mask (nW, N, N) that keeps shifted windows from mixing distant regions."""
        ws, ss = self.window_size, self.shift_size
        Hp = -(-H // ws) * ws
        Wp = -(-W // ws) * ws
        img_mask = torch.zeros((1, Hp, Wp, 1), device=device)
        slices = (slice(0, -ws), slice(-ws, -ss), slice(-ss, None))
        cnt = 0
        for h in slices:
            for w in slices:
                img_mask[:, h, w, :] = cnt
                cnt += 1
        mask_windows = window_partition(img_mask, ws).view(-1, ws * ws)  # (nW, N)
        attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
        attn_mask = attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)
        return attn_mask.to(dtype)

    def forward(self, x: torch.Tensor, H: int, W: int):
        """x: (B, H*W, C). Returns (out, H, W, down, H', W') with down = merged tokens."""
        attn_mask = self._shift_attention_mask(H, W, x.device, x.dtype)
        for blk in self.blocks:
            blk.H, blk.W = H, W
            if self.use_checkpoint and self.training:
                x = checkpoint.checkpoint(blk, x, attn_mask, use_reentrant=False)
            else:
                x = blk(x, attn_mask)
        if self.downsample is not None:
            x_down = self.downsample(x, H, W)
            return x, H, W, x_down, (H + 1) // 2, (W + 1) // 2
        return x, H, W, x, H, W


class PatchEmbed(nn.Module):
    """Non-overlapping patch_size x patch_size patches -> embed_dim (pads right/bottom)."""

    def __init__(
        self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, norm_layer=None
    ):
        super().__init__()
        self.patch_size = to_2tuple(patch_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, embed_dim, ceil(H/p), ceil(W/p))."""
        _, _, H, W = x.size()
        if W % self.patch_size[1] != 0:
            x = F.pad(x, (0, self.patch_size[1] - W % self.patch_size[1]))
        if H % self.patch_size[0] != 0:
            x = F.pad(x, (0, 0, 0, self.patch_size[0] - H % self.patch_size[0]))
        x = self.proj(x)
        if self.norm is not None:
            Wh, Ww = x.size(2), x.size(3)
            x = self.norm(x.flatten(2).transpose(1, 2))
            x = x.transpose(1, 2).view(-1, self.embed_dim, Wh, Ww)
        return x
