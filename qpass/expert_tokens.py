"""Calibration coverage of mixture-of-experts layers: routed tokens per expert, counted during calibration from the
grouped matmul's offsets, and the report lines naming experts that saw too few of them."""
from __future__ import annotations

import torch

from .analysis import analyze

# Calibration coverage: an expert that saw fewer routed tokens than this has statistics from too few samples.
MIN_EXPERT_TOKENS = 16


class ExpertTokens:
    """Routed rows per expert, from the grouped matmul's cumulative offsets (offs[e] = end row of expert e)."""

    def __init__(self, num_experts: int):
        self.counts = torch.zeros(num_experts, dtype=torch.int64)

    def update(self, offs: torch.Tensor) -> None:
        ends = offs.detach().to("cpu", torch.int64)
        self.counts += torch.diff(ends, prepend=ends.new_zeros(1))


def insert_token_counters(cap, counters: dict[str, ExpertTokens]) -> None:
    """Graph transform (calibration): count each experts module's routed rows, once per shared `offs`."""
    seen = set()
    for site in analyze(cap).experts:
        if site.offs in seen:
            continue
        seen.add(site.offs)
        module = cap.module_path(site.node) or site.name.rsplit(".", 1)[0]
        counter = counters.setdefault(module, ExpertTokens(site.num_experts))
        with cap.graph.inserting_after(site.node):
            cap.graph.call_function(counter.update, (site.offs,))


def token_report(tokens: dict[str, ExpertTokens], min_tokens: int) -> list[str]:
    """One line per experts module with an expert below `min_tokens` routed calibration tokens."""
    lines = []
    for module, counter in sorted(tokens.items()):
        low = [(e, int(c)) for e, c in enumerate(counter.counts.tolist()) if c < min_tokens]
        if low:
            shown = ", ".join(f"expert {e}: {c}" for e, c in low)
            lines.append(f"LOW CALIBRATION {module}: {len(low)} of {len(counter.counts)} experts saw fewer than "
                         f"{min_tokens} routed tokens ({shown}); their statistics rest on few samples")
    if tokens and not lines:
        lines.append(f"expert calibration: every expert saw at least {min_tokens} routed tokens")
    return lines
