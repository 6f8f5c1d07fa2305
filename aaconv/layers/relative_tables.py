"""AA's relative position tables at any map size: the one rule every attention path and the weight loader share.

``rW`` / ``rH`` (Bello et al. 2019, arXiv 1904.09925, section 3) are learned (2M-1, dk_h) tables for the offsets
-(M-1) .. M-1, M being the layer's ``max_size``. A map side S reads a (2S-1, dk_h) table for offsets
-(S-1) .. S-1 (``relative_table``):

- S <= M: the 2S-1 central rows, exactly the built table (a slice; bit-equal to reading it directly);
- S > M: offset d reads row clamp(d, -(M-1), M-1): the trained offsets stay as trained and every longer one
  shares the outermost trained row. This is the clipping of Shaw, Uszkoreit, Vaswani, "Self-Attention with
  Relative Position Representations", NAACL 2018 (arXiv 1803.02155), which "enables the model to generalize to
  sequence lengths not seen during training".

The rule keeps offset d at offset d, so it is the same at every S: the table a size reads is the central part of
the table any larger size reads. That lets loading weights into a model built with longer tables
(aaconv.models.pretrained) fill them with ``relative_table(weights, M')`` and give exactly the outputs the
original model computes on the fly, at every size. Rescaling interpolation (MViTv2 / ViTDet's ``get_rel_pos``,
Swin's bicubic resize of its bias table) moves every offset, by a factor that depends on the target size, so it
cannot agree between those two paths, and it would shrink the attention's positional pattern against the conv
branch it is concatenated with, whose kernels keep their pixel scale at any resolution.
"""

from __future__ import annotations

import torch
from torch import Tensor


def relative_table(table: Tensor, size: int) -> Tensor:
    """(2M-1, d) table for offsets -(M-1) .. M-1 -> (2S-1, d) for offsets -(S-1) .. S-1, S = ``size``.

    Row S-1+d of the result is the table's row M-1+clamp(d, -(M-1), M-1): the central rows when S <= M (a view),
    the trained rows padded with copies of the outermost ones when S > M. Gradients of the copies add up on the
    outermost rows."""
    extent = (table.shape[0] + 1) // 2
    if size <= extent:
        return table[extent - size : extent - 1 + size]
    offsets = torch.arange(1 - size, size, device=table.device).clamp(1 - extent, extent - 1)
    return table[offsets + extent - 1]
