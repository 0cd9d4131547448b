"""What a pass works on: the model copy being quantized, the recipe, the analysed sites, calibration
statistics, and the plan it fills in."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..analysis import GraphAnalysis, LinearSite
from ..calibrate import ChannelObserver
from ..plan import SitePlan
from ..recipe import Recipe


@dataclass
class PassContext:
    model: torch.nn.Module  # a copy: passes may edit its parameters (never the user's model)
    recipe: Recipe
    analysis: GraphAnalysis
    sites: dict[str, LinearSite]  # the sites selected for quantization
    observers: dict[str, ChannelObserver] = field(default_factory=dict)
    plan: dict[str, SitePlan] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # notes for the report
    progress: bool = True  # show progress bars on long passes
    calib: list[torch.Tensor] | None = None  # the user's calibration token ids [B, T] (passes that run the model)

    def weight(self, site: LinearSite) -> torch.Tensor:
        """The site's weight in the canonical [out, in] layout (a view for Conv1D-style [in, out] weights)."""
        w = self.model.get_parameter(site.weight)
        return w.t() if site.transposed else w

    def site_plan(self, site: LinearSite) -> SitePlan:
        if site.name not in self.plan:
            self.plan[site.name] = SitePlan(site.name, site.weight, self.model.get_parameter(site.weight).dtype)
        return self.plan[site.name]
