"""The sweep report: figures, tables and a Markdown (or HTML) page beside a sweep's results.

`write_report` writes report.md (report.html), knowledge_by_phase.csv, trials.csv,
schedule.yaml and the figures into one folder; `end_of_sweep` is what a finished sweep prints.
The command line over it is `python -m kdray.analyze`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from kdray.analysis.methods import knowledge_by_method, method_path, methods_table
from kdray.analysis.phases import (
    export_schedule,
    knowledge_by_phase,
    policy_reward_by_phase,
    teacher_by_phase,
)
from kdray.analysis.replay import replay_command, write_replay
from kdray.analysis.tables import (
    DEFAULT_BUCKETS,
    AnalysisError,
    Sweep,
    describe_statuses,
    leaderboard,
    load_sweep,
    param_importance,
)
from kdray.base.errors import KdrayError
from kdray.base.io import atomic_path, atomic_write_text, is_uri
from kdray.base.results import knowledge_types

log = logging.getLogger(__name__)


def _figure(width: float = 6.0, height: float = 4.0, columns: int = 0) -> tuple[Any, Any]:
    """A figure with one axis, or a row of `columns` axes sharing y (as a 1 × n array)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if columns:
        return plt.subplots(1, columns, figsize=(width, height), dpi=120, sharey=True,
                            squeeze=False)  # fmt: skip
    return plt.subplots(figsize=(width, height), dpi=120)


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."))
    plt.close(fig)
    return path.name


def plot_heatmap(table: pd.DataFrame, path: Path) -> str:
    """The knowledge × phase effect heatmap (* where the CI excludes 0), as a PNG at `path`."""
    effect = table.pivot(index="knowledge", columns="bucket", values="effect")
    sig = table.pivot(index="knowledge", columns="bucket", values="significant")
    order = list(dict.fromkeys(table["bucket"]))
    effect, sig = effect[order], sig[order]
    fig, ax = _figure(1.6 + 1.2 * len(order), 1.2 + 0.5 * len(effect))
    limit = float(abs(effect).max().max()) or 1.0
    image = ax.imshow(effect.to_numpy(float), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(order)), order)
    ax.set_yticks(range(len(effect)), effect.index)
    for i in range(len(effect)):
        for j in range(len(order)):
            v = effect.iat[i, j]
            text = "" if not math.isfinite(v) else f"{v:.3g}{' *' if sig.iat[i, j] else ''}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_xlabel("training progress")
    probe = "estimator" in table and (table["estimator"] == "probe").all()
    ax.set_title("probe effect: extra reward-split loss drop over hard labels alone"
                 if probe else "effect on reward-split loss drop (observational fit)")  # fmt: skip
    ax.set_xlabel("training progress t/T (* CI excludes 0)")
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def plot_trajectories(sweep: Sweep, top_ids: list[str], path: Path) -> str:
    """The knowledge weights over training of the top trials, as a PNG at `path`."""
    phases = sweep.phases[sweep.phases["trial_id"].isin(top_ids) & sweep.phases["final"]]
    types = knowledge_types(phases)
    fig, axes = _figure(3.0 * len(types), 3.0, columns=len(types))
    for ax, k in zip(axes[0], types, strict=True):
        for tid, rows in phases.groupby("trial_id"):
            ax.plot(rows["progress"], rows[f"w_{k}"], marker=".", label=str(tid))
        ax.set_title(k)
        ax.set_xlabel("progress")
    axes[0][0].set_ylabel("weight")
    axes[0][-1].legend(fontsize=6)
    return _save(fig, path)


def plot_teacher_weights(table: pd.DataFrame, path: Path) -> str:
    """Each teacher's mean weight per bucket (teacher_by_phase), one colour per teacher: the
    top trials solid, the bottom ones dashed, so a teacher the best trials used more (or
    earlier) shows as a gap between its two lines."""
    order = list(dict.fromkeys(table["bucket"]))
    fig, ax = _figure(2.0 + 1.2 * len(order), 3.5)
    for i, (teacher, rows) in enumerate(table.groupby("teacher", sort=False)):
        x = [order.index(b) for b in rows["bucket"]]
        ax.plot(x, rows["top_weight"], color=f"C{i}", marker="o", label=f"{teacher} (top)")
        ax.plot(x, rows["bottom_weight"], color=f"C{i}", marker=".", linestyle="--",
                label=f"{teacher} (bottom)")  # fmt: skip
    ax.set_xticks(range(len(order)), order)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training progress")
    ax.set_ylabel("mean teacher weight")
    ax.set_title("teacher weights: top trials solid, bottom dashed")
    ax.legend(fontsize=6)
    return _save(fig, path)


def plot_cost(sweep: Sweep, path: Path) -> str:
    """Each trial's metric against its wall time, as a PNG at `path`."""
    fig, ax = _figure()
    t = sweep.trials
    for status, rows in t.groupby("status"):
        ax.scatter(rows["wall_s"], rows[sweep.metric], label=str(status))
    ax.set_xlabel("trial cost (s)")
    ax.set_ylabel(f"validation {sweep.metric}")
    ax.legend()
    return _save(fig, path)


def plot_leaderboard(board: pd.DataFrame, metric: str, path: Path) -> str:
    """The best trials' metric as bars, as a PNG at `path`."""
    fig, ax = _figure(6.0, 0.6 + 0.3 * len(board))
    ax.barh(range(len(board)), board[metric][::-1])
    labels = [t if s == "finished" else f"{t} ({s})"
              for t, s in zip(board["trial_id"], board["status"], strict=True)]  # fmt: skip
    ax.set_yticks(range(len(board)), labels[::-1])
    ax.set_xlabel(f"validation {metric}")
    low, high = float(board[metric].min()), float(board[metric].max())
    ax.set_xlim(low - 0.02 * max(1.0, abs(low)), high + 0.01 * max(1.0, abs(high)))
    return _save(fig, path)


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


PROBE_TEXT = (
    "Estimator: **counterfactual probes**. Effect: the extra drop of the reward-split loss over "
    "a probe's K steps when the knowledge type is added to hard labels, against hard labels "
    "alone, from the same student, batches and dropout masks (> 0: it helped there). Mean over "
    "runs (each run's probes in the bucket averaged first); 95% CI from a two-stage bootstrap "
    "(runs, then probes within runs). Weights: what the trials' own selectors used.\n"
)
OBSERVATIONAL_TEXT = (
    "Estimator: **observational** (the sweep has no probes; set probe.every for the paired "
    "estimate). Effect: change of the phase's reward-split loss drop per unit weight, "
    "controlling for the other weights (OLS per bucket, 95% bootstrap CI over trials): a "
    "correlation across what the trials happened to do.\n"
)


def print_knowledge(table: pd.DataFrame) -> None:
    """The knowledge × phase table as a grid of effects with their CIs, and how many cells
    have a CI excluding 0."""
    sig = int(table["significant"].sum())
    print(f"\nknowledge x phase ({table['estimator'].iloc[0]} estimator): effect [95% CI], "
          f"{sig} of {len(table)} cells with a CI excluding 0 (*)")  # fmt: skip
    print(knowledge_grid(table).to_string())


def end_of_sweep(experiment: str) -> None:
    """After a sweep: its report in EXPERIMENT/analysis (a local sweep) and the knowledge ×
    phase table printed. A report that cannot be made is logged, never a failure of the
    finished sweep."""
    try:
        sweep = load_sweep(experiment)
        if is_uri(sweep.path):
            return  # a report needs a local folder: `python -m kdray.analyze URI --out DIR`
        out = Path(sweep.path) / "analysis"
        summary = write_report(sweep, out, list(DEFAULT_BUCKETS), "md")
    except (KdrayError, OSError, ValueError) as exc:
        log.warning("no report of %s: %s", experiment, exc)
        return
    if summary["table"] is None:
        print(f"\nknowledge x phase: not available ({summary['missing']})")
    else:
        print_knowledge(summary["table"])
        print(f"heatmap: {out / 'heatmap.png'}")
    print(f"report: {out / 'report.md'}")
    if summary["replay"] is not None:
        print(f"replay the schedule: {replay_command(summary['replay'])}")


def knowledge_grid(table: pd.DataFrame) -> pd.DataFrame:
    """knowledge × bucket cells "effect [ci_low, ci_high]" (* where the CI excludes 0)."""

    def cell(r: pd.Series) -> str:
        if pd.isna(r["effect"]):
            return "-"
        ci = "" if pd.isna(r["ci_low"]) else f" [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        return f"{r['effect']:+.4f}{ci}{' *' if r['significant'] else ''}"

    cells = table.assign(cell=table.apply(cell, axis=1))
    grid = cells.pivot(index="knowledge", columns="bucket", values="cell")
    return grid[list(dict.fromkeys(table["bucket"]))].loc[list(dict.fromkeys(table["knowledge"]))]


def write_report(sweep: Sweep, out: Path, buckets: list[float], fmt: str) -> dict[str, Any]:
    """Every table, figure and the schedule in `out`; returns what the summary prints."""
    out.mkdir(parents=True, exist_ok=True)
    board = leaderboard(sweep)
    with atomic_path(out / "trials.csv") as tmp:
        sweep.trials.to_csv(tmp, index=False)
    parts = [f"# kdray sweep report\n\n`{sweep.path}`: {describe_statuses(sweep.trials)}\n",
             "## Leaderboard\n", "Finished trials first, then the others (pruned: stopped "
             "by the scheduler before the end), each by the validation metric.\n"]  # fmt: skip
    if board.empty:
        parts.append("No trial reported a validation metric.\n")
    else:
        lead = plot_leaderboard(board, sweep.metric, out / "leaderboard.png")
        parts += [_md(board), f"\n![leaderboard]({lead})",
                  f"\n![metric against cost]({plot_cost(sweep, out / 'cost.png')})\n"]  # fmt: skip
    parts += methods_section(sweep, out, buckets)
    table, missing = None, None
    try:
        table = knowledge_by_phase(sweep, buckets)
    except AnalysisError as exc:  # no phase logs or rewards: the report still has the rest
        missing = str(exc)
        parts += ["## Knowledge by phase\n", f"Not available: {missing}\n"]
    if table is not None:
        with atomic_path(out / "knowledge_by_phase.csv") as tmp:
            table.to_csv(tmp, index=False)
        probe = bool((table["estimator"] == "probe").all())
        export_schedule(table, out / "schedule.yaml", source="effect" if probe else "top_weight")
        shown = table[["knowledge", "bucket", "mean_weight", "top_weight", "bottom_weight",
                       "effect", "ci_low", "ci_high", "significant", "n_trials", "n_phases",
                       "n_probes"]]  # fmt: skip
        top_ids = list(board["trial_id"].head(3))
        parts += ["## Knowledge by phase\n", (PROBE_TEXT if probe else OBSERVATIONAL_TEXT),
                  f"{int(table['significant'].sum())} of {len(table)} cells have a CI "
                  f"excluding 0.\n", _md(shown),
                  f"\n![effect heatmap]({plot_heatmap(table, out / 'heatmap.png')})",
                  f"\n![weights of the top trials]"
                  f"({plot_trajectories(sweep, top_ids, out / 'trajectories.png')})\n",
                  ("Replay the knowledge that helped (hard labels, and per bucket each type "
                   "with a positive effect, weighted by it)" if probe else
                   "Replay the top trials' weights") + " without RL: `selector: {kind: "
                  f"schedule, schedule_file: {out / 'schedule.yaml'}}}` (the command at the "
                  "end of this report trains one such student).\n"]  # fmt: skip
    teachers = teacher_by_phase(sweep, buckets)
    if teachers["n_phases"].sum():  # multi-teacher runs only: a single teacher has no tw_ column
        with atomic_path(out / "teacher_by_phase.csv") as tmp:
            teachers.to_csv(tmp, index=False)
        shown = teachers.drop(columns=["start", "end"])
        figure = plot_teacher_weights(teachers, out / "teacher_weights.png")
        parts += ["## Teachers by phase\n",
                  "Mean weight each teacher of the pool got over a phase's examples (final "
                  "segment), per progress bucket: over all trials, and over the top / bottom "
                  f"quarter of the trials by {sweep.metric}.\n", _md(shown),
                  f"\n![teacher weights]({figure})\n"]  # fmt: skip
        policy = policy_reward_by_phase(sweep, buckets)
        if len(policy):
            parts += ["The rl teacher policy: mean REINFORCE reward of a phase's update and "
                      "the EMA baseline after it (a reward above the baseline: the policy still "
                      "finds better teacher mixes there).\n",
                      _md(policy.drop(columns=["start", "end"]))]  # fmt: skip
    importance = param_importance(sweep)
    parts.append("## Hyperparameter importance\n")
    if len(importance):
        parts.append(_md(importance.rename_axis("parameter").reset_index(name="importance")))
    else:
        parts.append("Not enough finished trials with searched knobs.\n")
    if sweep.skipped:
        parts += ["## Files that could not be read\n", *[f"- {s}" for s in sweep.skipped]]
    replay = write_replay(sweep, out) if table is not None else None
    if replay is not None:
        parts += ["## Replay the schedule\n",
                  f"The sweep's trial with `selector: schedule` reading {out / 'schedule.yaml'} "
                  f"and no probes ({replay}); add `--set trainer.seed=N` for other seeds:\n",
                  f"```\n{replay_command(replay)}\n```"]  # fmt: skip
    text = "\n".join(parts) + "\n"
    atomic_write_text(out / "report.md", text)
    if fmt == "html":
        atomic_write_text(out / "report.html", _html(text, out))
    return {"board": board, "table": table, "missing": missing, "importance": importance,
            "replay": replay}  # fmt: skip


def methods_section(sweep: Sweep, out: Path, buckets: list[float]) -> list[str]:
    """The report's comparison of the sweep's methods (recipes, selectors or teacher
    policies searched side by side), with methods.csv and knowledge_by_method.csv; nothing
    when the sweep searches no method."""
    table = methods_table(sweep)
    if table.empty:
        return []
    path = method_path(sweep)
    with atomic_path(out / "methods.csv") as tmp:
        table.to_csv(tmp, index=False)
    parts = [f"## Methods compared ({path})\n",
             f"Finished trials of each `{path}`: validation and test (GLUE dev) metric, mean and "
             "std over trials; `test_diff`: the mean per-seed test difference against the "
             "reference (the best by validation) on the seeds both finished (`paired_seeds`; "
             "`seeds_ahead`: seeds where the method scored higher); `ci_low`, `ci_high`: its "
             "95% interval, resampling seeds and then dev examples with the same draws for "
             "both methods (`covers`: examples only where one seed was paired), "
             "`n_examples` dev examples; `verdict`: the interval's reading.\n",
             _md(table)]  # fmt: skip
    by_method = knowledge_by_method(sweep, buckets)
    if not by_method.empty:
        with atomic_path(out / "knowledge_by_method.csv") as tmp:
            by_method.to_csv(tmp, index=False)
        cells = [
            "" if not math.isfinite(w) else
            f"{w:.2g}" + (f" ({e:+.2g}{'*' if sig else ''})" if math.isfinite(e) else "")
            for w, e, sig in zip(by_method["mean_weight"], by_method["effect"],
                                 by_method["significant"], strict=True)
        ]  # fmt: skip
        effect = by_method.assign(cell=cells).pivot_table(
            index=["method", "knowledge"], columns="bucket", values="cell", aggfunc="first",
            sort=False,
        )  # fmt: skip
        parts += ["Which knowledge each method used when, and what it did: the mean weight "
                  "per progress bucket, and in brackets the knowledge-by-phase effect of that "
                  "method's trials where their weights varied enough to fit one (`*`: the "
                  "95% CI excludes 0; fixed-weight recipes have none).\n",
                  _md(effect.reset_index())]  # fmt: skip
    return parts


#: The report page's style: readable tables, figures no wider than the page.
_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
    "img{max-width:100%;display:block;margin:1em 0}code{background:#f3f3f3;padding:0 3px}"
)


def _inline(text: str) -> str:
    """Escaped text with `code` spans and **bold**."""
    import html
    import re

    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _html(markdown: str, folder: Path) -> str:
    """The report as one self-contained HTML page: tables as <table>, each figure embedded as
    a data URI, so the page shows everything wherever it is moved or copied, alone or with
    its folder."""
    import base64
    import html
    import re

    body: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, rows = table[0], [r for r in table[1:] if not set("".join(r)) <= set("-: ")]
            body.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head)
                        + "</tr>" + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r)
                                            + "</tr>" for r in rows) + "</table>")  # fmt: skip
            table.clear()

    code: list[str] | None = None  # the lines of an open ``` block
    for line in markdown.splitlines():
        if line.startswith("```"):
            flush()
            if code is not None:
                block = html.escape("\n".join(code))
                body.append(f"<pre><code>{block}</code></pre>")
            code = [] if code is None else None
            continue
        if code is not None:
            code.append(line)
            continue
        if line.startswith("|"):
            table.append(_cells(line))
            continue
        flush()
        if m := re.match(r"!\[(.*)\]\((.*)\)", line.strip()):
            image = folder / m[2]
            kind = "svg+xml" if image.suffix == ".svg" else image.suffix.lstrip(".")
            data = base64.b64encode(image.read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(m[1])}" src="data:image/{kind};base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line.lstrip('# '))}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>kdray report</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
