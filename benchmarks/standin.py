"""A tiny stand-in with the interface the harness relies on, for tests and for `--standin`.

It is NOT Mask2Former: it only has the same shape of interface as the project's `MaskFormer`
(detectron2 list[dict] inputs, a loss dict in training, per-image `sem_seg` / `panoptic_seg` /
`instances` in inference) and the same attribute names the harness hooks into:

    model.backbone(x) -> {"res2".."res5"}           model.sem_seg_head(features) -> outputs dict
    model.sem_seg_head.pixel_decoder                 model.sem_seg_head.predictor
    predictor.transformer_{cross,self}_attention_layers, predictor.transformer_ffn_layers

so that the harness can be exercised on the CPU in seconds while the real model is elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn


class _Backbone(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        chans = [width, width * 2, width * 4, width * 8]
        self.stem = nn.Conv2d(3, chans[0], 3, stride=4, padding=1)
        self.stages = nn.ModuleList(
            [
                nn.Conv2d(chans[max(i - 1, 0)], c, 3, stride=1 if i == 0 else 2, padding=1)
                for i, c in enumerate(chans)
            ]
        )
        self.channels = chans

    def forward(self, x):
        x = F.relu(self.stem(x))
        out = {}
        for i, stage in enumerate(self.stages):
            x = F.relu(stage(x))
            out[f"res{i + 2}"] = x
        return out


class _PixelDecoder(nn.Module):
    def __init__(self, in_channels, dim):
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, dim, 1) for c in in_channels])

    def forward(self, feats):
        names = sorted(feats)  # res2..res5
        maps = [lat(feats[n]) for lat, n in zip(self.lateral, names)]
        mask_features = maps[0]
        for m in maps[1:]:
            mask_features = mask_features + F.interpolate(
                m, size=mask_features.shape[-2:], mode="nearest"
            )
        return mask_features, maps[1:][::-1]  # 1/4 map, then 1/32, 1/16, 1/8


class _CrossAttention(nn.Module):
    """Masked cross-attention; `attn_impl` = "mha" (nn.MultiheadAttention) or "sdpa"."""

    def __init__(self, dim, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.heads = heads
        self.attn_impl = "mha"

    def forward(self, q, mem, mask):  # mask: (B*heads, Q, S) bool, True = not allowed
        if self.attn_impl == "sdpa":
            B, Q, C = q.shape
            w, b = self.attn.in_proj_weight, self.attn.in_proj_bias
            qq, kk, vv = (
                F.linear(q, w[:C], b[:C]),
                F.linear(mem, w[C : 2 * C], b[C : 2 * C]),
                F.linear(mem, w[2 * C :], b[2 * C :]),
            )
            split = lambda t: t.view(B, -1, self.heads, C // self.heads).transpose(1, 2)  # noqa: E731
            o = F.scaled_dot_product_attention(
                split(qq), split(kk), split(vv), attn_mask=~mask.view(B, self.heads, Q, -1)
            )
            o = self.attn.out_proj(o.transpose(1, 2).reshape(B, Q, C))
        else:
            o = self.attn(q, mem, mem, attn_mask=mask, need_weights=False)[0]
        return self.norm(q + o)


class _SelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, q):
        return self.norm(q + self.attn(q, q, q, need_weights=False)[0])


class _FFN(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * 4), nn.ReLU(), nn.Linear(dim * 4, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, q):
        return self.norm(q + self.net(q))


class _Predictor(nn.Module):
    def __init__(self, dim, num_queries, num_classes, heads=4, layers=3):
        super().__init__()
        self.heads = heads
        self.query_feat = nn.Embedding(num_queries, dim)
        self.transformer_cross_attention_layers = nn.ModuleList(
            [_CrossAttention(dim, heads) for _ in range(layers)]
        )
        self.transformer_self_attention_layers = nn.ModuleList(
            [_SelfAttention(dim, heads) for _ in range(layers)]
        )
        self.transformer_ffn_layers = nn.ModuleList([_FFN(dim) for _ in range(layers)])
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = nn.Linear(dim, dim)

    def _heads(self, q, mask_features, size):
        logits = self.class_embed(q)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(q), mask_features)
        m = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        attn = (m.sigmoid().flatten(2) < 0.5).unsqueeze(1).repeat(1, self.heads, 1, 1).flatten(0, 1)
        attn[attn.all(-1)] = False  # a query whose mask is empty attends everywhere
        return logits, masks, attn.detach()

    def forward(self, multi_scale, mask_features):
        B = mask_features.shape[0]
        q = self.query_feat.weight.unsqueeze(0).repeat(B, 1, 1)
        aux = []
        logits, masks, attn = self._heads(q, mask_features, multi_scale[0].shape[-2:])
        for i, (ca, sa, ffn) in enumerate(
            zip(
                self.transformer_cross_attention_layers,
                self.transformer_self_attention_layers,
                self.transformer_ffn_layers,
            )
        ):
            mem = multi_scale[i % len(multi_scale)].flatten(2).transpose(1, 2)
            q = ffn(sa(ca(q, mem, attn)))
            aux.append({"pred_logits": logits, "pred_masks": masks})
            nxt = multi_scale[(i + 1) % len(multi_scale)].shape[-2:]
            logits, masks, attn = self._heads(q, mask_features, nxt)
        return {"pred_logits": logits, "pred_masks": masks, "aux_outputs": aux}


class _Head(nn.Module):
    def __init__(self, in_channels, dim, num_queries, num_classes):
        super().__init__()
        self.pixel_decoder = _PixelDecoder(in_channels, dim)
        self.predictor = _Predictor(dim, num_queries, num_classes)

    def forward(self, features, mask=None):
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.predictor(multi_scale, mask_features)


class StandInMaskFormer(nn.Module):
    def __init__(
        self,
        num_classes=8,
        num_queries=16,
        dim=32,
        point_sampled=True,
        num_points=256,
        semantic_on=True,
        panoptic_on=True,
        instance_on=True,
    ):
        super().__init__()
        self.backbone = _Backbone()
        self.sem_seg_head = _Head(self.backbone.channels, dim, num_queries, num_classes)
        self.register_buffer(
            "pixel_mean", torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1), False
        )
        self.register_buffer(
            "pixel_std", torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1), False
        )
        self.size_divisibility = 32
        self.num_classes = num_classes
        self.point_sampled = point_sampled
        self.num_points = num_points
        self.semantic_on, self.panoptic_on, self.instance_on = semantic_on, panoptic_on, instance_on

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs):
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        images = ImageList.from_tensors(images, self.size_divisibility)
        outputs = self.sem_seg_head(self.backbone(images.tensor))
        if self.training:
            return self._losses(outputs, batched_inputs, images.tensor.shape[-2:])
        return self._inference(outputs, batched_inputs, images)

    def _losses(self, outputs, batched_inputs, padded_hw):
        losses = {}
        preds = [outputs] + outputs["aux_outputs"]
        for i, out in enumerate(preds):
            loss_ce, loss_mask = 0.0, 0.0
            for b, x in enumerate(batched_inputs):
                inst = x["instances"].to(self.device)
                n = len(inst)
                tgt = torch.full(
                    (out["pred_logits"].shape[1],), self.num_classes, device=self.device
                )
                tgt[:n] = inst.gt_classes
                loss_ce = loss_ce + F.cross_entropy(out["pred_logits"][b], tgt)
                gt = torch.zeros((n, *padded_hw), device=self.device)
                gt[:, : inst.gt_masks.shape[1], : inst.gt_masks.shape[2]] = inst.gt_masks.float()
                pred = out["pred_masks"][b, :n, None]
                if self.point_sampled:  # uniform points (the real criterion samples by uncertainty)
                    pts = torch.rand(n, self.num_points, 1, 2, device=self.device) * 2 - 1
                    p = F.grid_sample(pred, pts, align_corners=False).flatten(1)
                    g = F.grid_sample(gt[:, None], pts, align_corners=False).flatten(1)
                else:  # full-mask: predictions upsampled to the target size
                    p = F.interpolate(
                        pred, size=padded_hw, mode="bilinear", align_corners=False
                    ).flatten(1)
                    g = gt.flatten(1)
                loss_mask = loss_mask + F.binary_cross_entropy_with_logits(p, g)
            suffix = "" if i == 0 else f"_{i - 1}"
            losses["loss_ce" + suffix] = loss_ce / len(batched_inputs)
            losses["loss_mask" + suffix] = loss_mask / len(batched_inputs)
        return losses

    def _inference(self, outputs, batched_inputs, images):
        results = []
        masks_all = F.interpolate(
            outputs["pred_masks"],
            size=images.tensor.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
        for b, x in enumerate(batched_inputs):
            h, w = images.image_sizes[b]
            H, W = x.get("height", h), x.get("width", w)
            masks = F.interpolate(
                masks_all[b : b + 1, :, :h, :w], size=(H, W), mode="bilinear", align_corners=False
            )[0]
            probs = outputs["pred_logits"][b].float().softmax(-1)
            masks = masks.float().sigmoid()
            res = {}
            if self.semantic_on:
                res["sem_seg"] = torch.einsum("qc,qhw->chw", probs[:, :-1], masks)
            if self.panoptic_on:
                scores, labels = probs.max(-1)
                keep = labels.ne(self.num_classes) & (scores > 0.0)
                seg = torch.zeros((H, W), dtype=torch.int32, device=self.device)
                info = []
                if keep.any():
                    ids = (scores[keep, None, None] * masks[keep]).argmax(0)
                    for k, lab in enumerate(labels[keep].tolist()):
                        area = ids == k
                        if area.any():
                            seg[area] = len(info) + 1
                            info.append({"id": len(info) + 1, "category_id": lab, "isthing": True})
                res["panoptic_seg"] = (seg, info)
            if self.instance_on:
                scores = probs[:, :-1].flatten()
                top, idx = scores.topk(min(10, scores.numel()))
                q = idx // self.num_classes
                inst = Instances((H, W))
                inst.pred_masks = masks[q] > 0.5
                inst.scores = top
                inst.pred_classes = idx % self.num_classes
                inst.pred_boxes = Boxes(torch.zeros(len(q), 4, device=self.device))
                res["instances"] = inst
            results.append(res)
        return results


def build_standin(device: str, point_sampled: bool = True) -> StandInMaskFormer:
    return StandInMaskFormer(point_sampled=point_sampled).to(device)
