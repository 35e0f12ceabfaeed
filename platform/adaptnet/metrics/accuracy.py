import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k predictions, for each k (k capped at #classes)."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hits = top.eq(target[:, None])
    return [int(hits[:, : min(k, k_max)].any(dim=1).sum()) for k in ks]
