"""HTML evaluation report: training curves, metrics per model with 95% intervals, the cold-start slice.

``write_html_report(results, path)`` takes ``recsys.model.evaluate.run_protocol`` output (or
``{"runs": {name: run_protocol output}, ...extra JSON}``) and writes one self-contained HTML file
(plots embedded as PNG). Called through ``recsys.model.evaluate.write_report``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figure(width: float = 8.0, height: float = 3.5) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def training_curves_plot(runs: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Loss per epoch of every model that reports ``info.loss``; base64 PNG or None."""
    curves = {
        f"{run} / {name}": entry["info"]["loss"]
        for run, result in runs.items()
        for name, entry in result.get("models", {}).items()
        if entry.get("info", {}).get("loss")
    }
    if not curves:
        return None
    fig, ax = _figure()
    for label, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.set_title("Training curves (final refit on train + validation)")
    out = _png(fig)
    _close(fig)
    return out


def metrics_plot(models: Mapping[str, Any], section: str, k: int, title: str) -> str | None:
    """Grouped bars of recall/ndcg/mrr@k per model with 95% interval error bars; base64 PNG or None."""
    names = [n for n, e in models.items() if section in e]
    if not names:
        return None
    metrics = [f"recall@{k}", f"ndcg@{k}", f"mrr@{k}"]
    fig, ax = _figure(max(6.0, 1.2 * len(names) + 2), 3.8)
    width = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        means = [models[n][section][metric]["mean"] for n in names]
        lows = [models[n][section][metric]["mean"] - models[n][section][metric]["lo"] for n in names]
        highs = [models[n][section][metric]["hi"] - models[n][section][metric]["mean"] for n in names]
        xs = [i + (j - 1) * width for i in range(len(names))]
        ax.bar(xs, means, width, yerr=[lows, highs], capsize=3, label=metric)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.legend(fontsize=8)
    ax.set_title(title)
    out = _png(fig)
    _close(fig)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, Mapping) and {"mean", "lo", "hi"} <= set(value):
        return f"{value['mean']:.4f} [{value['lo']:.4f}, {value['hi']:.4f}]"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def _table(models: Mapping[str, Any], section: str, k: int) -> str:
    cols = [f"recall@{k}", f"ndcg@{k}", f"mrr@{k}", "coverage", "users"]
    head = "".join(f"<th>{c}</th>" for c in ["model", *cols, "params", "fit s"])
    rows = [
        "<tr>"
        + f"<td>{html.escape(name)}</td>"
        + "".join(f"<td>{_fmt(entry[section].get(c))}</td>" for c in cols)
        + f"<td><code>{html.escape(json.dumps(entry.get('params', {})))}</code></td>"
        + f"<td>{entry.get('seconds', 0.0):.1f}</td></tr>"
        for name, entry in models.items()
        if section in entry
    ]
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _ratios(ratios: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in ratios.items())
    return f"<table><tr><th>ratio</th><th>mean [95% interval]</th></tr>{rows}</table>"


def _img(b64: str | None, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{b64}"/>' if b64 else ""


def _run_section(name: str, result: Mapping[str, Any]) -> str:
    k = int(result.get("k", 10))
    models = result.get("models", {})
    cold = result.get("cold_start", {})
    parts = [
        f"<h2>{html.escape(name)}</h2>",
        f"<p>split: <code>{html.escape(json.dumps(result.get('split', {})))}</code></p>",
        "<h3>Test (whole catalog, fit items excluded)</h3>",
        _img(metrics_plot(models, "test", k, f"{name}: test metrics, 95% bootstrap intervals"), "test metrics"),
        _table(models, "test", k),
        _ratios(result.get("ratios", {})),
        f"<h3>Cold start ({cold.get('items', 0)} cold items, {cold.get('users', 0)} users)</h3>",
        _img(metrics_plot(models, "cold_start", k, f"{name}: cold items only"), "cold start"),
        _table(models, "cold_start", k),
        _ratios(cold.get("ratios", {})),
    ]
    return "\n".join(parts)


def write_html_report(results: Mapping[str, Any], path: Path) -> Path:
    """Write the report; returns ``path``. Extra top-level keys are listed as JSON at the end."""
    runs = results.get("runs", {"evaluation": results})
    extra = {k: v for k, v in results.items() if k != "runs"} if "runs" in results else {}
    body = [
        "<h1>Recommender evaluation</h1>",
        "<h2>Training curves</h2>",
        _img(training_curves_plot(runs), "training curves") or "<p>no training curves</p>",
        *(_run_section(name, result) for name, result in runs.items()),
    ]
    if extra:
        body.append(f"<h2>Other figures</h2><pre>{html.escape(json.dumps(extra, indent=2, default=str))}</pre>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{border:1px solid #ccc;padding:3px 6px}"
    page = "<!doctype html><html><head><meta charset='utf-8'><title>Recommender evaluation</title>"
    page += f"<style>{style} table{{border-collapse:collapse;margin:8px 0}}</style></head><body>"
    page += "\n".join(body) + "</body></html>"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
