"""What a pass works on: the model copy being quantized, the recipe, the analysed sites, calibration
statistics, and the plan it fills in."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
import torch

from ..analysis import GraphAnalysis, LinearSite
from ..calibrate import ChannelObserver
from ..plan import Plan, SitePlan, nonfinite_reason
from ..specs import ActivationSpec, WeightSpec


@dataclass
class PassContext:
    model: torch.nn.Module  # a copy: passes may edit its parameters (never the user's model)
    weights: WeightSpec | None  # the recipe's weight and activation specs (None: that side stays in full precision)
    activations: ActivationSpec | None
    analysis: GraphAnalysis
    sites: dict[str, LinearSite]  # the sites selected for quantization
    plan: Plan = field(default_factory=Plan)  # what the passes decide (site plans, attention plans, skipped, log)
    observers: dict[str, ChannelObserver] = field(default_factory=dict)
    progress: bool = True  # show progress bars on long passes
    calib: list[torch.Tensor] | None = None  # the user's calibration token ids [B, T] (passes that run the model)
    # sites whose input goes through an online Hadamard (rotate) that this context's plan does not hold: block by
    # block, the whole model's rotations live in the model's plan, each block's passes get a fresh one
    rotated_online: frozenset[str] = frozenset()
    pass_names: tuple[str, ...] = ()  # the recipe's passes in order (registry.run_passes sets it: a pass may
    # depend on which others run)

    def reads_online_rotation(self, name: str) -> bool:
        """Whether site `name`'s input is rotated at run time (qpass::hadamard before it)."""
        return name in self.plan.rotations or name in self.rotated_online

    def __post_init__(self):
        self.screen()

    @property
    def log(self) -> list[str]:
        """Notes for the report (the plan's log)."""
        return self.plan.log

    def keep_full_precision(self, name: str, reason: str) -> None:
        """Take site `name` out of quantization (its plan too); the report lists it in full precision with `reason`."""
        self.sites.pop(name, None)
        self.plan.sites.pop(name, None)
        self.plan.skipped[name] = reason

    @torch.no_grad()
    def screen(self) -> list[str]:
        """Before any pass: a selected site whose weight holds NaN/inf, or whose calibration statistics saw
        NaN/inf inputs (or no tokens at all), stays in full precision — reason per site in the report, a line in
        the log and one warning. Passes then never see it (no migration folds its NaN into a shared producer)."""
        dropped = []
        for name, site in list(self.sites.items()):
            reason = nonfinite_reason(self.weight(site))
            obs = self.observers.get(name)
            if reason is None and obs is not None:
                reason = obs.problem()
            elif reason is None and self.observers:
                reason = "no calibration statistics (the site did not run during calibration)"
            if reason is not None:
                self.keep_full_precision(name, reason)
                dropped.append(name)
        if dropped:
            msg = (f"{len(dropped)} linear site(s) kept in full precision because of NaN/inf weights or "
                   f"calibration statistics (or no calibration tokens): {', '.join(dropped[:8])}"
                   f"{' ...' if len(dropped) > 8 else ''}")
            self.log.append(msg)
            warnings.warn(msg, UserWarning, stacklevel=6)  # screen < PassContext < plan_model < qpass.compile < caller
        return dropped

    def weight(self, site: LinearSite) -> torch.Tensor:
        """The site's weight in the canonical [out, in] layout. With calibration statistics it is where they
        live (the CPU, or the block-by-block path's compute device), so a pass's arithmetic never mixes devices;
        without, where the model is. A view of the parameter when no move is needed: passes edit parameters
        through `qpass.migration`, never here."""
        w = self.model.get_parameter(site.weight).detach()
        if self.observers:
            w = w.to(next(iter(self.observers.values())).device)
        return w.t() if site.transposed else w

    def site_plan(self, site: LinearSite) -> SitePlan:
        if site.name not in self.plan:
            self.plan[site.name] = SitePlan(site.name, site.weight, self.model.get_parameter(site.weight).dtype)
        return self.plan[site.name]
