"""Render a pytest-benchmark JSON file into plots (images/) and a Markdown table.

Usage::

    python -m pytest benchmarks --benchmark-enable --benchmark-only \\
        --benchmark-json=benchmarks/results/latest.json
    python -m benchmarks.report benchmarks/results/latest.json [more.json ...] [--readme README.md]

With ``--readme`` the table replaces the block between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` in the README.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

IMAGES = Path(__file__).resolve().parent.parent / "images"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v >= 1e6:
            return f"{v / 1e6:.2f} M"
        if v >= 1e4:
            return f"{v / 1e3:.0f} k"
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    return str(v)


def _rate(b: dict[str, Any]) -> float | None:
    info = b.get("extra_info", {})
    for key in ("items_per_s", "per_s", "delivered_per_s", "measurements_per_s", "frames_per_s",
                "packets_per_s", "evaluations_per_s", "messages_per_s", "received_per_s",
                "spectra_per_s", "lag_sets_per_s"):
        if info.get(key):
            return float(info[key])
    n = info.get("items") or info.get("measurements") or info.get("frames") or \
        info.get("packets")
    if n and b["stats"].get("min"):
        return float(n) / b["stats"]["min"]
    return None


def table(data: dict[str, Any]) -> str:
    rows = ["| benchmark | rate (/s) | MB/s | CPU (us/item) | p50 / p99 latency (us) | drops "
            "| min time (s) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        rate = _rate(b)
        lat = (f"{info['p50_us']:.0f} / {info['p99_us']:.0f}" if "p99_us" in info else "")
        keys = ("sink_drops", "queue_drops", "kernel_drops", "drops")
        drops: Any = sum(info[k] for k in keys if isinstance(info.get(k), int)) if any(
            isinstance(info.get(k), int) for k in keys) else ""
        if isinstance(info.get("drops"), dict):  # the WSA chain: drops by component
            drops = (drops or 0) + sum(sum(r.values()) for r in info["drops"].values())
        mb = f"{info['mb_per_s']:.0f}" if info.get("mb_per_s") else ""
        cpu_keys = ("cpu_us_per_measurement", "daemon_cpu_us_per_packet",
                    "daemon_cpu_us_per_frame")
        cpu = next((f"{info[k]:.1f}" for k in cpu_keys if info.get(k)), "")
        module = Path(b["fullname"].split("::")[0]).stem
        rows.append(f"| `{b['fullname'].split('::', 1)[-1]}` ({module}) "
                    f"| {_fmt(rate) if rate else ''} | {mb} | {cpu} | {lat} | {drops} "
                    f"| {b['stats']['min']:.4f} |")
    m = data.get("machine_info", {})
    rows.append("")
    rows.append(f"Machine: {m.get('cpu_model', m.get('cpu', {}).get('brand_raw', '?'))}, "
                f"{m.get('cpu_count', '?')} cores, {m.get('python_implementation', '')} "
                f"{m.get('python_version', '')}; run {data.get('datetime', '')[:19]}.")
    return "\n".join(rows)


def plots(data: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    queue = [(b["param"], _rate(b)) for b in data["benchmarks"]
             if b["name"].startswith("test_queue_1p1c") and _rate(b)]
    if queue:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        names = [q[0] for q in queue]
        ax.barh(names, [q[1] / 1e6 for q in queue], color="#34558b")
        ax.set_xlabel("million items/s, 1 producer / 1 consumer thread")
        ax.set_title("Queue designs")
        fig.tight_layout()
        path = IMAGES / "bench-queues.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(path)
    sweep = [b for b in data["benchmarks"] if b["name"].startswith("test_scalar_sweep")]
    if sweep:
        fig, ax1 = plt.subplots(figsize=(8, 3.5))
        offered = [b["extra_info"]["offered_per_s"] for b in sweep]
        ax1.loglog(offered, [b["extra_info"]["delivered_per_s"] for b in sweep], "o-",
                   label="delivered/s")
        ax1.set_xlabel("offered measurements/s")
        ax1.set_ylabel("delivered/s")
        ax2 = ax1.twinx()
        ax2.loglog(offered, [b["extra_info"].get("p99_us", 1) for b in sweep], "s--",
                   color="#b7791f", label="p99 latency (us)")
        ax2.set_ylabel("p99 latency (us)")
        ax1.set_title("Synthetic scalar stream: device -> queue -> broker -> endpoint")
        fig.tight_layout()
        path = IMAGES / "bench-sweep.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(path)
    linger = [b for b in data["benchmarks"] if b["name"].startswith("test_low_rate_linger")]
    if linger:
        fig, ax1 = plt.subplots(figsize=(8, 3.5))
        ms = [b["extra_info"]["linger_ms"] for b in linger]
        ax1.plot(ms, [b["extra_info"]["cpu_us_per_measurement"] for b in linger], "o-",
                 label="CPU us/measurement (process)")
        ax1.plot(ms, [b["extra_info"].get("broker_endpoint_us_per_measurement", 0)
                      for b in linger], "^-", label="broker + endpoint threads")
        ax1.set_xlabel("broker linger (ms)")
        ax1.set_ylabel("CPU us per measurement")
        ax2 = ax1.twinx()
        ax2.plot(ms, [b["extra_info"].get("p99_us", 0) / 1e3 for b in linger], "s--",
                 color="#b7791f", label="p99 latency (ms)")
        ax2.set_ylabel("p99 latency (ms)")
        ax1.legend(loc="upper right", fontsize=8)
        ax1.set_title("1,000 measurements/s: CPU and latency against the broker's linger")
        fig.tight_layout()
        path = IMAGES / "bench-linger.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(path)
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path, nargs="+",
                    help="pytest-benchmark JSON files; a later file's run of a benchmark "
                    "replaces an earlier one's (re-runs of a few benchmarks)")
    ap.add_argument("--readme", type=Path)
    ap.add_argument("--merged", type=Path, help="also write the merged JSON here (e.g. to "
                    "store it as benchmarks/results/baseline.json)")
    args = ap.parse_args()
    data = json.loads(args.json[0].read_text())
    for extra in args.json[1:]:
        more = json.loads(extra.read_text())["benchmarks"]
        names = {b["fullname"] for b in more}
        data["benchmarks"] = [b for b in data["benchmarks"] if b["fullname"] not in names] + more
    if args.merged:
        args.merged.write_text(json.dumps(data, indent=1))
        print(f"wrote {args.merged}")
    md = table(data)
    for path in plots(data):
        print(f"wrote {path}")
    if args.readme:
        text = args.readme.read_text()
        new = re.sub(r"<!-- bench:start -->.*<!-- bench:end -->",
                     f"<!-- bench:start -->\n{md}\n<!-- bench:end -->", text, flags=re.S)
        args.readme.write_text(new)
        print(f"updated {args.readme}")
    else:
        print(md)


if __name__ == "__main__":
    main()
