"""Figures, table rows and growth ratios of ``bench/scale.py`` (one size at a time)."""

from __future__ import annotations

from typing import Any

from _common import log

HEADERS = ["assets", "generate s", "generate peak MB", "open s", "RSS after open MB", "tick ms (median)", "tick ms (p95)",
           "per-prim staleness s", "serve start s", "hello s", "snapshot s", "hello KB", "msg/s", "RSS serving MB", "close s", "GLB s", "GLB MB", "RSS after GLB MB",
           "peak RSS to close MB", "KB/asset", "recording MB", "growth/linear open/tick/RSS", "broke"]


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k" if n >= 1000 else str(n)


def _per_asset_kb(res: dict[str, Any], n: int) -> float:
    """Peak RSS above the process's start per asset: the twin's peak up to close (the GLB built after it excluded)."""
    return (res.get("peak_rss_close_mb", res["peak_rss_mb"]) - res["rss_start_mb"]) * 1024 / n


def add_size(rep: Any, rows: list[list], n: int, gen: dict | None, res: dict | None, prev: tuple | None, args: Any) -> tuple[tuple | None, bool]:
    """Record one size's figures and row; returns (the baseline for the next size's growth, stop?)."""
    label = _label(n)
    broke = ""
    if gen is not None:
        for k in ("generate_s", "peak_rss_mb", "rss_start_mb", "broke", "broke_rss_mb", "broke_mem_available_mb", "failed"):
            if k in gen:
                rep.figure(f"scale_{label}_generate_{k.removeprefix('generate_')}", gen[k])
        if "generate_s" in gen:
            rep.figure(f"scale_{label}_generate_kb_per_asset", _per_asset_kb(gen, n))
        if "broke" in gen or "failed" in gen:
            broke = f"generate: {gen.get('broke') or gen.get('failed')}"
    res = res or {}
    for k, v in res.items():
        rep.figure(f"scale_{label}_{k}", v)
    if "broke" in res or "failed" in res:
        broke = res.get("broke") or f"failed ({res.get('failed')})"
    if broke:
        at = res if res else gen or {}
        rep.note(f"{label} assets: {broke}" + (f" (RSS {at['broke_rss_mb']:.0f} MB, {at['broke_mem_available_mb']:.0f} MB available)"
                                               if "broke_rss_mb" in at else ""))
        log(args, f"scale: {label}: {broke}")
    if isinstance(res.get("serve_glb"), str):
        rep.note(f"{label} assets: scene GLB {res['serve_glb']}")
    growth = "-"
    done = "close_s" in res
    if done:
        per = {"open_us_per_asset": res["open_s"] / n * 1e6, "tick_us_per_asset": res["tick_median_ms"] / n * 1e3, "rss_kb_per_asset": _per_asset_kb(res, n)}
        for k, v in per.items():
            rep.figure(f"scale_{label}_{k}", v)
        if prev is not None:
            f = n / prev[0]
            p = prev[1]
            g = [res["open_s"] / p["open_s"] / f, res["tick_median_ms"] / p["tick_median_ms"] / f,
                 _per_asset_kb(res, n) / _per_asset_kb(p, prev[0])]
            for k, v in zip(("open", "tick", "rss"), g):
                rep.figure(f"scale_{label}_{k}_growth_over_linear_ratio", v)
            growth = " / ".join(f"{v:.2f}" for v in g)
    get = lambda k: res.get(k, "-")  # noqa: E731
    rows.append([label, (gen or {}).get("generate_s", "cached"), (gen or {}).get("peak_rss_mb", "-"), get("open_s"), get("rss_open_mb"),
                 get("tick_median_ms"), get("tick_p95_ms"), get("per_prim_max_staleness_s"), get("serve_start_s"), get("serve_hello_s"),
                 get("serve_snapshot_s"), res["serve_hello_bytes"] / 1024 if "serve_hello_bytes" in res else "-", get("serve_msgs_per_s"),
                 get("serve_rss_mb"), get("close_s"), get("serve_glb_s"), res["serve_glb_bytes"] / 1e6 if "serve_glb_bytes" in res else "-",
                 get("serve_glb_rss_mb"), res.get("peak_rss_close_mb", "-"), _per_asset_kb(res, n) if done else "-", get("recording_mb"), growth,
                 broke or "-"])
    return ((n, res) if done else prev), bool(broke)


def finish(rep: Any, rows: list[list], args: Any) -> int:
    rep.table(f"Scale: {args.ticks} ticks at 60 Hz with per-prim writes, columnar state and a chunked recording, then served to one client "
              f"({args.messages} state messages); one process per size, memory floor {args.min_free_gb} GB", HEADERS, rows)
    rep.note("growth/linear: (figure at N / figure at the previous size) / (N / previous N); 1.0 = linear")
    rep.note("phase peaks (sampled every 0.5 s) are in the JSON figures scale_<size>_phase_peak_rss_mb")
    return rep.finish()
