#!/usr/bin/env python3
"""Draws docs/fanout.png from benches/compare.sh's results: deliveries/s and
server CPU per delivery against room size, machat and Redis (medians).

    python3 benches/plot.py target/bench/results.jsonl docs/fanout.png

Needs matplotlib; benches/plot.sh installs it into target/ and runs this.
"""
import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(results, picture):
    points = defaultdict(lambda: defaultdict(list))
    for line in open(results):
        if not line.startswith("{"):
            continue
        run = json.loads(line)
        if not run["label"].startswith("room-size-"):
            continue
        size = int(run["label"].rsplit("-", 1)[1])
        name = "Redis 7" if run["proto"] == "redis" else f"machat ({run['transport'].upper()})"
        points[name][size].append(run)

    figure, (rate, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, by_size in sorted(points.items()):
        sizes = sorted(by_size)
        rate.plot(sizes, [statistics.median(r["deliveries_per_s"] for r in by_size[s]) / 1e6 for s in sizes],
                  marker="o", label=name)
        cpu.plot(sizes, [statistics.median(r["server_ns_per_delivery"] for r in by_size[s]) for s in sizes],
                 marker="o", label=name)
    for axes in (rate, cpu):
        axes.set_xscale("log")
        axes.set_xlabel("members per room (10 senders, closed loop, 64-byte messages)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    rate.set_ylabel("deliveries per second (millions)")
    rate.set_title("Fan-out throughput")
    cpu.set_ylabel("server CPU per delivery (ns)")
    cpu.set_yscale("log")
    cpu.set_title("Server CPU per delivery")
    figure.tight_layout()
    figure.savefig(picture, dpi=110)
    print(f"wrote {picture}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
