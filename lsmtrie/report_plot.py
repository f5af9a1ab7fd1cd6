"""The figures of `lsmtrie report` (matplotlib, Agg: no display needed), drawn from its results
(lsmtrie/report.py). Each engine keeps one colour in every figure."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)
import numpy as np  # noqa: E402

COLOURS = {"lsmtrie": "#1f77b4", "lsmtrie-bulk": "#17becf", "lsmtrie-load": "#2ca02c",
           "leveldb": "#d62728", "rocksdb": "#ff7f0e"}
MARKERS = {"lsmtrie": "o", "lsmtrie-bulk": "s", "lsmtrie-load": "^", "leveldb": "D",
           "rocksdb": "v"}
DPI = 110


def _label(n: int) -> str:
    return f"{n / 1e6:g} M items" if n >= 1e6 else f"{n:,} items"


def _runs(res: dict) -> dict:
    return {(r["engine"], r["items"]): r for r in res["runs"]}


def _sizes(res: dict) -> list:
    done = {r["items"] for r in res["runs"]}
    return [n for n in res["workload"]["sizes"] if n in done]


def _save(fig, out: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=DPI)
    plt.close(fig)
    return name


def wa_vs_size(res: dict, out: str) -> str:
    """Write amplification against items, log x, one line per engine; a panel per way of
    counting the bytes."""
    runs, sizes = _runs(res), _sizes(res)
    ways = [("wa_os", "the process (/proc/self/io)"), ("wa_engine", "the engine's counters"),
            ("wa_device", "the block device")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6), sharey=True)
    for ax, (key, title) in zip(axes, ways):
        for e in res["engines"]:
            pts = [(n, runs[(e, n)]["load"][key]) for n in sizes
                   if (e, n) in runs and runs[(e, n)]["load"][key] is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker=MARKERS[e], color=COLOURS[e], label=e)
        ax.set_xscale("log")
        ax.set_xlabel("data size (items, log scale)")
        ax.set_title(f"bytes counted by {title}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("write amplification (bytes written / user bytes)")
    axes[0].set_ylim(bottom=0)
    axes[-1].legend(loc="best")
    k, v = res["workload"]["key_size"], res["workload"]["value_size"]
    fig.suptitle(f"Write amplification against data size ({k}-byte keys, {v}-byte values)")
    return _save(fig, out, "wa_vs_size.png")


def _chunk_rates(load: dict, points: int = 60) -> tuple[list, list]:
    """(user GB written, million items/s) over windows of whole chunks, each at least 1/points
    of the load's time (and 0.5 s): every chunk's end is timed, so a window's rate is exact,
    where per-second samples jump with the chunks that happen to end within each second."""
    ends, per = load["chunk_seconds"], load["chunk_items"]
    window = max(0.5, ends[-1] / points) if ends else 0
    item_bytes = load["user_bytes"] / load["items"]
    xs, ys, t0, i0 = [], [], 0.0, 0
    for c, t in enumerate(ends, 1):
        items = min(c * per, load["items"])
        if t - t0 >= window or c == len(ends):
            if t > t0:
                xs.append(items * item_bytes / 1e9)
                ys.append((items - i0) / (t - t0) / 1e6)
            t0, i0 = t, items
    return xs, ys


def throughput_vs_written(res: dict, out: str) -> str:
    """Items/s over groups of chunks against the user data written so far; a panel per size.
    The dashed line is each engine's overall rate, until settled."""
    runs, sizes = _runs(res), _sizes(res)
    fig, axes = _stacked(len(sizes), 3.6)
    for ax, n in zip(axes, sizes):
        for e in res["engines"]:
            if (e, n) not in runs:
                continue
            load = runs[(e, n)]["load"]
            overall = load["items_per_s"] / 1e6
            if e == "lsmtrie-load":  # it takes every item first, then writes: its overall rate
                ax.axhline(overall, color=COLOURS[e], linestyle="--", linewidth=1.5, label=e)
                continue
            xs, ys = _chunk_rates(load)
            ax.plot(xs, ys, color=COLOURS[e], marker=MARKERS[e] if len(xs) < 12 else None,
                    markersize=4, label=e)
            ax.axhline(overall, color=COLOURS[e], linestyle="--", linewidth=1)
        ax.set_xlabel("user data written so far (GB of keys and values)")
        ax.set_ylabel("load throughput (million items/s)")
        ax.set_title(f"{_label(n)} (dashed: overall, until settled)")
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
        ax.grid(True, alpha=0.3)
    fig.suptitle("Load throughput against data written (the loader takes every item before "
                 "it writes: its overall rate only)")
    return _save_with_legend(fig, axes, out, "throughput_vs_written.png")


def _stacked(panels: int, height: float):
    """A figure of `panels` panels one above the other (a panel per size), 10 inches wide, so
    that it reads at the width of a page."""
    fig, axes = plt.subplots(panels, 1, figsize=(10, 1.2 + height * panels), squeeze=False)
    return fig, list(axes[:, 0])


def _save_with_legend(fig, axes, out: str, name: str) -> str:
    """One legend for every panel, above them (where it covers no data)."""
    seen = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    top = 1 - 0.9 / fig.get_figheight()  # room for the title and the legend, in inches
    fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=len(seen),
               bbox_to_anchor=(0.5, top))
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(os.path.join(out, name), dpi=DPI)
    plt.close(fig)
    return name


KIND_ORDER = ["log", "wal", "wal (computed)", "flush", "load", "clusters", "gc", "manifest"]


def _kind_colour(kind: str, levels: int) -> tuple:
    if kind.startswith(("log", "wal")):
        return plt.cm.Blues({"log": 0.45, "wal": 0.65}.get(kind, 0.85))
    if kind == "flush":
        return plt.cm.Oranges(0.5)
    if kind.startswith(("compaction L", "into L")):
        level = int(kind.rsplit("L", 1)[1])
        return plt.cm.Greens(0.3 + 0.6 * level / max(1, levels))
    return {"compaction": plt.cm.Greens(0.6), "load": plt.cm.Oranges(0.8),
            "clusters": plt.cm.Purples(0.6),
            "gc": plt.cm.Reds(0.6), "manifest": plt.cm.Greys(0.5)}.get(kind, plt.cm.Greys(0.3))


def _kinds(res: dict) -> list:
    seen = []
    for r in res["runs"]:
        for k in r["load"]["engine_bytes_by_kind"]:
            if k not in seen:
                seen.append(k)
    levelled = sorted((k for k in seen if "L" in k and k.rsplit("L", 1)[1].isdigit()),
                      key=lambda k: (k.startswith("into"), int(k.rsplit("L", 1)[1])))
    ordered = [k for k in KIND_ORDER if k in seen]
    return ordered[:-3] + levelled + [k for k in ordered[-3:]] + \
        [k for k in seen if k not in ordered and k not in levelled]


def bytes_by_kind(res: dict, out: str) -> str:
    """Stacked bars: each engine's bytes written by kind (its own counters), over the user
    bytes, so that a bar's height is the engine-counted write amplification."""
    runs, sizes, kinds = _runs(res), _sizes(res), _kinds(res)
    levels = max([int(k.rsplit("L", 1)[1]) for k in kinds if k[-1].isdigit()] or [1])
    fig, axes = _stacked(len(sizes), 3.0)
    fig.set_figwidth(12)  # and room for the kinds' legend on the right
    drawn = {}
    for ax, n in zip(axes, sizes):
        engines = [e for e in res["engines"] if (e, n) in runs]
        bottom = np.zeros(len(engines))
        for k in kinds:
            h = np.array([runs[(e, n)]["load"]["engine_bytes_by_kind"].get(k, 0) /
                          runs[(e, n)]["load"]["user_bytes"] for e in engines])
            if h.any():
                drawn[k] = ax.bar(engines, h, bottom=bottom, color=_kind_colour(k, levels),
                                  edgecolor="white", linewidth=0.5)
                bottom += h
        ax.set_title(_label(n))
        ax.set_ylabel("written / user bytes")
        ax.grid(True, axis="y", alpha=0.3)
    fig.legend([drawn[k] for k in kinds if k in drawn], [k for k in kinds if k in drawn],
               loc="center right", fontsize="small", title="kind")
    fig.suptitle("Bytes written by kind, by the engines' own counters, over the user bytes\n"
                 "(LevelDB: by the level written into, its log computed)")
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / fig.get_figwidth(), 1))
    fig.savefig(os.path.join(out, "bytes_by_kind.png"), dpi=DPI)
    plt.close(fig)
    return "bytes_by_kind.png"


def _grouped(ax, groups: list, engines: list, value, hatch_second=None):
    """Bars of value(engine, group) for each group, engines side by side."""
    width = 0.8 / max(1, len(engines))
    x = np.arange(len(groups))
    for i, e in enumerate(engines):
        ys = [value(e, g) for g in groups]
        ax.bar(x + (i - (len(engines) - 1) / 2) * width, [y or 0 for y in ys], width,
               color=COLOURS[e], label=e)
    ax.set_xticks(x, groups)


def space_amp(res: dict, out: str) -> str:
    """The directory at rest after close, and at its peak while loading, over the user bytes."""
    runs, sizes = _runs(res), _sizes(res)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True)
    labels = [_label(n) for n in sizes]
    for ax, key, title in ((axes[0], "space_amp", "at rest, after close"),
                           (axes[1], "peak_space_amp", "peak while loading")):
        _grouped(ax, labels, res["engines"], lambda e, g: (
            runs[(e, sizes[labels.index(g)])]["load"][key]
            if (e, sizes[labels.index(g)]) in runs else None))
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
        ax.set_title(f"directory size {title}")
        ax.set_xlabel("data size")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("space amplification (directory bytes / user bytes)")
    fig.suptitle("Space amplification (dotted: the user bytes)")
    return _save_with_legend(fig, axes, out, "space_amp.png")


GETS = [("get_hit_single_per_s", "hits,\none at a time"),
        ("get_miss_single_per_s", "misses,\none at a time"),
        ("get_hit_batched_per_s", "hits, batches\nof 1,000"),
        ("get_miss_batched_per_s", "misses, batches\nof 1,000")]


def get_rates(res: dict, out: str) -> str:
    """Warm GETs per second by kind, engines side by side, a panel per size (log y)."""
    runs, sizes = _runs(res), _sizes(res)
    fig, axes = _stacked(len(sizes), 3.4)
    labels = [g.replace(",\n", ", ").replace("batches\n", "batches ") for _, g in GETS]
    keys = dict(zip(labels, (k for k, _ in GETS)))
    for ax, n in zip(axes, sizes):
        engines = [e for e in res["engines"] if (e, n) in runs]
        _grouped(ax, labels, engines, lambda e, g: runs[(e, n)]["read"][keys[g]])
        ax.set_yscale("log")
        ax.set_title(f"{_label(n)}, warm, from Python")
        ax.set_ylabel("GETs per second (log)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.suptitle("GET rates (LevelDB's batches are a loop of single GETs)")
    return _save_with_legend(fig, axes, out, "get_rates.png")


def draw_all(res: dict, out: str) -> list:
    """Every figure into out; their file names."""
    if not res["runs"]:
        return []
    return [f(res, out) for f in (wa_vs_size, throughput_vs_written, bytes_by_kind, space_amp,
                                  get_rates)]
