"""What a recipe says about quantization itself: the weight, activation and calibration specs (schema
dataclasses, checked by `qpass.schema.build`). Passes, the plan and the pass context read these; the `Recipe`
that holds them (qpass/recipe.py) also holds the passes' options, so these live apart from it — a pass never
needs the recipe module, and the recipe module can import the pass table without a circle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .schema import Checked, RecipeError, join, opt

SUPPORTED_BITS = (2, 3, 4, 8)


@dataclass
class WeightSpec(Checked):
    schema_name = "weights"  # errors name `weights.<key>`, as in a recipe

    bits: int = opt(4, allowed=SUPPORTED_BITS)
    group_size: int | None = opt(64, range="[1, inf)", desc="a positive integer or null (one scale per row)")
    symmetric: bool = True
    rounding: Literal["rtn", "gptq"] = "rtn"  # round to nearest | GPTQ (needs calibration: Hessian XᵀX)
    clip_ratio: float = opt(1.0, range="(0, 1]")  # scale the range before rounding (1.0 = absmax / min-max)
    # mse: each (row, group) range shrunk by the factor of clip_ratio·(1.0 … 0.5) minimising its ‖W − Q(W)‖²
    # (data-free; RTN and GPTQ's group scales alike)
    clip_search: Literal["none", "mse"] = "none"
    # GPTQ: damping, a fraction of the Hessian's mean diagonal (> 0: with 0 a singular XᵀX cannot be inverted)
    gptq_damp: float = opt(0.01, range="(0, 1)")
    gptq_act_order: bool = False  # GPTQ: quantize columns in order of decreasing Hessian diagonal
    gptq_block: int = opt(128, range="[1, inf)")  # GPTQ: columns per lazy-update block
    gptq_static_groups: bool = False  # GPTQ: group scales from the original weight (the RTN grid), not the updated one
    # each group's step an integer multiple (4-bit: 1-8 with zero points, 1-16 without) of one step per row
    # (QServe's progressive quantization): the int8 GEMMs then accumulate over all of K (docs/qsm.md)
    integer_group_steps: bool = False

    def check_fields(self, path: str) -> None:
        if not self.integer_group_steps:
            return
        if self.bits != 4 or self.group_size is None:
            raise RecipeError(f"{join(path, 'integer_group_steps')}: needs 4-bit weights with a group_size "
                              f"(got bits {self.bits}, group_size {self.group_size})")
        if self.rounding == "gptq" and not (self.gptq_static_groups or self.gptq_act_order):
            raise RecipeError(f"{join(path, 'integer_group_steps')}: with GPTQ it needs gptq_static_groups "
                              "(each row's step is set from all of its groups up front)")


@dataclass
class ActivationSpec(Checked):
    schema_name = "activations"  # errors name `activations.<key>`, as in a recipe

    bits: int = opt(8, allowed=SUPPORTED_BITS)
    granularity: Literal["per_token", "per_channel"] = "per_token"  # per_token is dynamic, per_channel static
    symmetric: bool = True
    observer: Literal["absmax", "minmax", "percentile"] = "absmax"  # static ranges only
    # observer=percentile: per-channel percentile of |x|, averaged over batches
    percentile: float = opt(99.99, range="(0, 100]")
    # static: the calibrated range's fraction kept; per_token: each token's step is clip_ratio · max|x| / qmax, so
    # the largest values saturate (QuaRot clips W4A4 activations at 0.9)
    clip_ratio: float = opt(1.0, range="(0, 1]")
    # per_token, mse: each site's clip (a grid below clip_ratio) chosen on calibration tokens to minimise its output
    # error with its quantized weight (needs calibration data); static steps are searched by the qsm pass
    clip_search: Literal["none", "mse"] = "none"

    def check_fields(self, path: str) -> None:
        if self.clip_search != "none" and self.granularity != "per_token":
            raise RecipeError(f"{join(path, 'clip_search')}: searches dynamic per-token clips; static per_channel "
                              "steps are clipped by the qsm pass (act_clip_grid) or by clip_ratio")
        if self.granularity == "per_token" and self.observer != "absmax":
            raise RecipeError(
                f"{join(path, 'observer')}: per_token activations are dynamic and use no observer; "
                "an observer (minmax, percentile) needs granularity per_channel"
            )


@dataclass
class CalibrationSpec(Checked):
    schema_name = "calibration"  # errors name `calibration.<key>`, as in a recipe

    num_samples: int = opt(32, range="[1, inf)")  # sequences
    seq_len: int = opt(512, range="[2, inf)")
    # leave the first N tokens of each sequence out of the statistics (attention sinks)
    skip_tokens: int = opt(0, range="[0, inf)")
    # GPTQ with skip_tokens: the skipped tokens still enter the Hessian, each weighted like this many ordinary
    # tokens (0: left out; 1: as any token — their huge norm then dominates XᵀX)
    sink_hessian_weight: float = opt(0.0, range="[0, 1]")  # the sink rows down-weighted in H
    # no calibration batches passed: sample num_samples × seq_len tokens from the model itself (qpass/self_calibration.py)
    self_generated: bool = False

    def check_fields(self, path: str) -> None:
        if self.skip_tokens >= self.seq_len:
            raise RecipeError(f"{join(path, 'skip_tokens')}: must be in [0, seq_len) = [0, {self.seq_len}), "
                              f"got {self.skip_tokens}")
        if self.sink_hessian_weight and not self.skip_tokens:
            raise RecipeError(f"{join(path, 'sink_hessian_weight')}: needs {join(path, 'skip_tokens')} ≥ 1 "
                              "(it weights the skipped tokens)")
