"""The coverage report: what was quantized and how, and what stayed in full precision and why."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .analysis import GraphAnalysis
from .plan import SitePlan


@dataclass
class SiteRow:
    name: str
    weight: str
    shape: str  # "in -> out"
    producer: str
    status: str  # quantized | full precision
    scheme: str
    reason: str = ""
    weight_error: float | None = None
    notes: list[str] = field(default_factory=list)
    output_error: float | None = None  # relative output MSE on calibration tokens (data-driven recipes)
    lowering: str = ""  # lowered: the rule's name; "unmatched: why"; "" = not lowered (fake-quant graph)
    bits: int | None = None  # mixed_precision: the width chosen (16: full precision)
    sensitivity: dict[int, float] | None = None  # mixed_precision: the sensitivity measure per candidate width


@dataclass
class Report:
    recipe: str
    rows: list[SiteRow]
    unsupported: list[dict]
    attention_sites: int
    graphs: int  # graphs Dynamo produced for the capture; graphs - 1 = graph breaks
    seconds: float
    log: list[str] = field(default_factory=list)
    attention_lowering: dict[str, str] = field(default_factory=dict)  # attention module -> rule | "unmatched: why"
    blocks: list[dict] = field(default_factory=list)  # block-by-block calibration: time and memory per block

    @property
    def quantized(self) -> list[SiteRow]:
        return [r for r in self.rows if r.status == "quantized"]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = self.summary()
        return d

    def summary(self) -> dict:
        return {
            "linear_sites": len(self.rows),
            "quantized": len(self.quantized),
            "full_precision": len(self.rows) - len(self.quantized),
            "unsupported_ops": len(self.unsupported),
            "attention_sites": self.attention_sites,
            "graph_breaks": max(self.graphs - 1, 0),
            "lowered": sum(1 for r in self.quantized if r.lowering and not r.lowering.startswith("unmatched")),
            "not_lowered": [r.name for r in self.quantized if r.lowering.startswith("unmatched")],
            "attention_lowered": sum(1 for v in self.attention_lowering.values() if not v.startswith("unmatched")),
            "attention_not_lowered": [k for k, v in self.attention_lowering.items() if v.startswith("unmatched")],
        }

    def format(self, max_rows: int | None = None) -> str:
        s = self.summary()
        lines = [
            f"qpass report — recipe {self.recipe!r}: {s['quantized']}/{s['linear_sites']} linear sites quantized, "
            f"{s['full_precision']} in full precision, {s['unsupported_ops']} unsupported ops, "
            f"{s['attention_sites']} attention sites, {s['graph_breaks']} graph breaks ({self.seconds:.1f} s)",
        ]
        head = f"  {'site':<44} {'in -> out':>13}  {'producer':<12} {'scheme':<40} {'w err':>7} {'out mse':>8}"
        lines += [head, "  " + "-" * (len(head) - 2)]
        rows = self.rows if max_rows is None else self.rows[:max_rows]
        for r in rows:
            err = f"{r.weight_error:.4f}" if r.weight_error is not None else ""
            oerr = f"{r.output_error:.2e}" if r.output_error is not None else ""
            scheme = r.scheme if r.status == "quantized" else f"FP: {r.reason}"
            lines.append(f"  {r.name[-44:]:<44} {r.shape:>13}  {r.producer:<12} {scheme[:40]:<40} {err:>7} {oerr:>8}")
            lines += [f"      note: {n}" for n in r.notes]
        if max_rows is not None and len(self.rows) > max_rows:
            lines.append(f"  ... {len(self.rows) - max_rows} more sites (--json for all)")
        for u in self.unsupported:
            lines.append(f"  UNSUPPORTED {u['op']} on {u['tensor']} in {u['name']}: {u['reason']} (left in full precision)")
        for r in self.quantized:
            if r.lowering.startswith("unmatched"):
                lines.append(f"  NOT LOWERED {r.name} ({r.scheme}): {r.lowering[len('unmatched: '):]} (runs the fake-quant graph)")
        if any(r.lowering for r in self.rows):
            lines.append(f"  lowered to qpass.kernels: {s['lowered']}/{s['quantized']} quantized sites")
        for name, how in self.attention_lowering.items():
            if how.startswith("unmatched"):
                lines.append(f"  NOT LOWERED attention {name}: {how[len('unmatched: '):]} (runs SDPA)")
        if self.attention_lowering:
            kinds = sorted({v for v in self.attention_lowering.values() if not v.startswith("unmatched")})
            lines.append(f"  attention lowered: {s['attention_lowered']}/{len(self.attention_lowering)} SDPA "
                         f"sites{' (' + ', '.join(kinds) + ')' if kinds else ''}")
        lines += [f"  {entry}" for entry in self.log]
        for b in self.blocks:
            gpu = f", peak GPU {b['peak_gpu_mb']:.0f} MB" if b["peak_gpu_mb"] is not None else ""
            lines.append(f"  calibrated {b['name']}: {b['sites']} sites, {b['seconds']:.1f} s, "
                         f"peak RSS {b['peak_rss_mb']:.0f} MB{gpu}, activations held {b['held_activation_mb']:.1f} MB")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def build_report(
    recipe_name: str,
    analysis: GraphAnalysis,
    plan: dict[str, SitePlan],
    skipped: dict[str, str],
    graphs: int,
    seconds: float,
    log: list[str],
    lowering: dict[str, str] | None = None,
) -> Report:
    rows = []
    allocation = getattr(plan, "allocation", {})
    for site in analysis.linears:
        sp = plan.get(site.name)
        chosen = allocation.get(site.name)
        quantized = sp is not None and (sp.weight is not None or sp.activation is not None)
        rows.append(
            SiteRow(
                name=site.name,
                weight=site.weight,
                shape=f"{site.in_features} -> {site.out_features}",
                producer=site.producer.kind,
                status="quantized" if quantized else "full precision",
                scheme=sp.describe() if quantized else "",
                reason="" if quantized else skipped.get(site.name, "not planned by the recipe"),
                weight_error=sp.weight_error if sp else None,
                notes=list(sp.notes) if sp else [],
                output_error=sp.output_error if sp else None,
                lowering=(lowering or {}).get(site.name, "unmatched: not seen in a compiled graph" if lowering is not None and quantized else ""),
                bits=chosen.bits if chosen else None,
                sensitivity=dict(chosen.sensitivity) if chosen else None,
            )
        )
    experts = getattr(plan, "experts", {})
    for site in {e.name: e for e in getattr(analysis, "experts", [])}.values():  # expert tensors (qpass/experts.py)
        sp = experts.get(site.name)
        quantized = sp is not None and sp.weight is not None
        rows.append(SiteRow(
            name=site.name, weight=site.weight, shape=f"{site.in_features} -> {site.out_features} x{site.num_experts}",
            producer="experts", status="quantized" if quantized else "full precision",
            scheme=sp.describe() if quantized else "",
            reason="" if quantized else skipped.get(site.name, "not planned by the recipe"),
            weight_error=sp.weight_error if sp else None, notes=list(sp.notes) if sp else [],
            lowering=(lowering or {}).get(site.name, "unmatched: not seen in a compiled graph" if lowering is not None and quantized else ""),
        ))
    unsupported = [asdict(u) for u in analysis.unsupported]
    linear = {row.name for row in rows}
    attention = {k: v for k, v in (lowering or {}).items() if k not in linear}  # SDPA rules (e.g. SALE)
    if lowering is not None:  # planned modules the method refused at plan time, with no SDPA node to say so
        for name, ap in getattr(plan, "attention", {}).items():
            if ap.refused:
                attention.setdefault(name, "unmatched: " + ap.refused)
    blocks = [asdict(b) for b in getattr(plan, "blocks", [])]
    return Report(recipe_name, rows, unsupported, len(analysis.attention), graphs, seconds, list(log), attention, blocks)


def plot_errors(report: Report, path: str) -> None:
    """Bar chart of each quantized layer's relative output MSE (log scale), written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report.quantized if r.output_error is not None]
    if not rows:
        raise ValueError("no per-layer output error in this report: use a data-driven recipe (qsm, gptq)")
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.08), 4))
    kinds = sorted({r.name.rsplit(".", 1)[-1] for r in rows})
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(kinds)}
    ax.bar(range(len(rows)), [r.output_error for r in rows], color=[colors[r.name.rsplit(".", 1)[-1]] for r in rows])
    ax.set_yscale("log")
    ax.set_xlabel("layer (graph order)")
    ax.set_ylabel("relative output MSE")
    ax.set_title(f"qpass {report.recipe}: per-layer output error on calibration tokens")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()], labels=kinds, fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_allocation(report: Report, path: str) -> None:
    """mixed_precision: each layer's sensitivity (the pass's measure at 4 bits, or the narrowest width measured; log
    scale) and the width chosen for it, written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report.rows if r.bits is not None]
    if not rows:
        raise ValueError("no bit allocation in this report: use the mixed_precision pass (--target-bits / "
                         "--max-ppl-increase)")
    ref = 4 if all(4 in r.sensitivity for r in rows) else min(b for b in rows[0].sensitivity if b < 16)
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.08), 4))
    ax.bar(range(len(rows)), [max(r.sensitivity[ref], 1e-30) for r in rows], color="tab:blue", alpha=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("layer (graph order)")
    ax.set_ylabel(f"sensitivity at {ref} bits", color="tab:blue")
    bx = ax.twinx()
    bx.step(range(len(rows)), [r.bits for r in rows], where="mid", color="tab:red")
    bx.set_ylabel("bits chosen", color="tab:red")
    bx.set_yticks(sorted({r.bits for r in rows}))
    ax.set_title(f"qpass {report.recipe}: sensitivity and bits per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
