#!/usr/bin/env python3
"""Turns benches/compare.sh's JSON lines into the Markdown tables of
docs/BENCHMARKS.md: medians per scenario and system, and machat/Redis ratios;
bursts (loadgen --burst) get a table of their own, printed only when the
results hold some; runs over TLS ("tls": true) are rows of their own
(machat TCP+TLS, machat WSS) and get a table against plaintext. Runs of
server variants (compare.sh's VARIANTS: "variant": NAME) are rows of their
own (machat TCP [NAME]) and get a table against the first variant, with the
ratios taken within each round as well as of the medians;
runs of a
two-node cluster ("build": "cluster", from `compare.sh cluster`) are rows
of their own and get tables of their own: CPU split into nodes and Redis,
ratios against one node, and Redis publishes per loop turn.

    python3 benches/summarize.py target/bench/results.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict


def system(run):
    if run["proto"] == "redis":
        return "Redis"
    name = "machat WS" if run["transport"] == "ws" else "machat TCP"
    if run.get("build") == "cluster":
        return "machat TCP, 2-node cluster"
    if run.get("tls"):
        name = "machat WSS" if run["transport"] == "ws" else "machat TCP+TLS"
    if run.get("variant") is not None:
        name += f" [{run['variant']}]"
    return name + " (baseline)" if run.get("build") == "baseline" else name


def median(runs, key):
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value, scale=1.0, digits=0):
    return "–" if value is None else f"{value / scale:,.{digits}f}"


def variants_table(runs):
    """Each variant against the first (in the order they first appear),
    per scenario and transport: medians, the ratio of medians, and the
    ratio within each round (a variant's run ÷ the first variant's run of
    the same round, which ran minutes apart at most)."""
    variants = []
    for run in runs:
        if run.get("variant") is not None and run["variant"] not in variants:
            variants.append(run["variant"])
    if len(variants) < 2:
        return
    reference = variants[0]
    by = defaultdict(list)
    for run in runs:
        if run.get("variant") is not None:
            by[(run["label"], run["transport"], run["variant"])].append(run)
    keys = sorted({(label, transport) for label, transport, _ in by}, key=lambda k: (len(k[0]), k))
    print(f"\n### Variants against \"{reference}\" (medians; ratios ÷ \"{reference}\": of the medians, "
          "then the median of the per-round ratios with each round's in brackets)\n")
    print("| scenario | transport | variant | runs | deliveries/s | server CPU per delivery | "
          "deliveries/s ratio | CPU per delivery ratio | history lines persisted / recorded (dropped) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, transport in keys:
        base = by.get((label, transport, reference), [])
        base_by_round = {run.get("round"): run for run in base}
        for variant in variants:
            mine = by.get((label, transport, variant))
            if not mine:
                continue

            def ratios(key):
                if variant == reference:
                    return "–"
                top, bottom = median(mine, key), median(base, key)
                of_medians = "–" if not top or not bottom else f"{top / bottom:.2f}"
                per_round = [run[key] / base_by_round[run.get("round")][key] for run in mine
                             if run.get(key) and base_by_round.get(run.get("round"), {}).get(key)]
                if not per_round:
                    return of_medians
                rounds = ", ".join(f"{ratio:.2f}" for ratio in per_round)
                return f"{of_medians}; **{statistics.median(per_round):.2f}** ({rounds})"

            metrics = [run.get("server_metrics") or {} for run in mine]
            recorded = sum(m.get("history_lines_recorded_total", 0) for m in metrics)
            persisted = sum(m.get("history_lines_persisted_total", 0) for m in metrics)
            dropped = sum(m.get("history_lines_dropped_total", 0) for m in metrics)
            history = "–" if not recorded else (
                f"{persisted:,} / {recorded:,} ({dropped:,})" if persisted or dropped else f"– / {recorded:,}")
            print(f"| {label} | {transport.upper()} | {variant} | {len(mine)} "
                  f"| {fmt(median(mine, 'deliveries_per_s'), 1e6, 2)} M "
                  f"| {fmt(median(mine, 'server_ns_per_delivery'), 1, 1)} ns "
                  f"| {ratios('deliveries_per_s')} | {ratios('server_ns_per_delivery')} | {history} |")


def main(path):
    groups = defaultdict(list)
    all_runs = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            run = json.loads(line)
            all_runs.append(run)
            groups[(run["label"], system(run))].append(run)
    labels = sorted({label for label, _ in groups}, key=lambda l: (l.split("-")[0], len(l), l))
    systems = ["machat TCP (baseline)", "machat TCP", "machat TCP, 2-node cluster", "machat TCP+TLS", "machat WS (baseline)", "machat WS",
               "machat WSS", "Redis"]
    for run in all_runs:
        if run.get("variant") is not None and system(run) not in systems:
            systems.append(system(run))
    bursts = {label for (label, _), runs in groups.items() if any(run.get("mode") == "burst" for run in runs)}
    loads = [label for label in labels if label not in bursts]

    print("### Fan-out and latency (medians)\n")
    print("| scenario | server | runs | deliveries/s | server CPU per delivery | generator CPU | "
          "latency p50 / p99 / p999 | loss, dups, reorders |")
    print("|---|---|---|---|---|---|---|---|")
    for label in loads:
        if label.startswith("idle"):
            continue
        for name in systems:
            runs = groups.get((label, name))
            if not runs:
                continue
            errors = sum(run.get("loss", 0) + run.get("dups", 0) + run.get("reorders", 0) for run in runs)
            print(f"| {label} | {name} | {len(runs)} | {fmt(median(runs, 'deliveries_per_s'), 1e6, 2)} M "
                  f"| {fmt(median(runs, 'server_ns_per_delivery'), 1, 0)} ns "
                  f"| {fmt(median(runs, 'gen_cpu_pct'), 1, 0)} % ({fmt(median(runs, 'gen_ns_per_delivery'))} ns/delivery) "
                  f"| {fmt(median(runs, 'lat_p50_us'), 1e3, 1)} / {fmt(median(runs, 'lat_p99_us'), 1e3, 1)} / "
                  f"{fmt(median(runs, 'lat_p999_us'), 1e3, 1)} ms | {errors} |")

    print_redis(loads, groups)
    print_rest(labels, systems, groups, bursts)
    variants_table(all_runs)


def print_redis(loads, groups):
    if not any(groups.get((label, "machat TCP")) and not label.startswith("idle") for label in loads):
        return  # nothing to compare (variants only, say)
    print("\n### machat against Redis (ratio of medians)\n")
    print("| scenario | deliveries/s, machat TCP ÷ Redis | server CPU per delivery, machat TCP ÷ Redis | "
          "p99 latency, machat TCP ÷ Redis | deliveries/s, machat WS ÷ machat TCP |")
    print("|---|---|---|---|---|")
    for label in loads:
        tcp, ws, redis = (groups.get((label, name)) for name in ("machat TCP", "machat WS", "Redis"))
        if not tcp or label.startswith("idle"):
            continue

        def ratio(a, b, key):
            if not a or not b:
                return "–"
            top, bottom = median(a, key), median(b, key)
            return "–" if not top or not bottom else f"{top / bottom:.2f}"

        print(f"| {label} | {ratio(tcp, redis, 'deliveries_per_s')} | {ratio(tcp, redis, 'server_ns_per_delivery')} "
              f"| {ratio(tcp, redis, 'lat_p99_us')} | {ratio(ws, tcp, 'deliveries_per_s')} |")


def print_rest(labels, systems, groups, bursts):
    if any(label.startswith("idle") for label in labels):
        print("\n### Idle joined connections (medians)\n")
        print("| scenario | server | runs | server RSS per connection | RSS before → after |")
        print("|---|---|---|---|---|")
    for label in labels:
        if not label.startswith("idle"):
            continue
        for name in systems:
            runs = groups.get((label, name))
            if runs:
                print(f"| {label} | {name} | {len(runs)} | {fmt(median(runs, 'server_bytes_per_conn'))} bytes "
                      f"| {fmt(median(runs, 'server_rss_before_kb'))} → {fmt(median(runs, 'server_rss_after_kb'))} KiB |")

    if bursts:
        print("\n### Bursts (medians; \"n not all\": runs where some bytes were never sent, or some member still connected missed messages)\n")
        print("| scenario | server | runs | sent | send time | delivered to all still connected | "
              "messages lost | connections the server closed | longest sender stall | error lines |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label in labels:
            if label not in bursts:
                continue
            for name in systems:
                runs = groups.get((label, name))
                if not runs:
                    continue
                unsent = sum(1 for run in runs if not run.get("burst_send_complete"))
                undelivered = sum(1 for run in runs if run.get("burst_delivered_s") is None)
                print(f"| {label} | {name} | {len(runs)} | {fmt(median(runs, 'burst_bytes_sent'), 1e6, 1)} MB "
                      f"| {fmt(median(runs, 'burst_send_s'), 1, 3)} s{f' ({unsent} not all)' if unsent else ''} "
                      f"| {fmt(median(runs, 'burst_delivered_s'), 1, 3)} s"
                      f"{f' ({undelivered} not all)' if undelivered else ''} "
                      f"| {fmt(median(runs, 'loss'))} | {fmt(median(runs, 'burst_server_closed'))} "
                      f"| {fmt(median(runs, 'burst_sender_stall_max_ms'), 1, 1)} ms "
                      f"| {sum(run.get('burst_server_errors', 0) for run in runs)} |")
    if any(name in ("machat TCP+TLS", "machat WSS") for _, name in groups):
        print("\n### TLS against plaintext (ratio of medians, TLS ÷ plaintext)\n")
        print("| scenario | transport | deliveries/s | server CPU per delivery | p99 latency | "
              "server RSS per idle connection |")
        print("|---|---|---|---|---|---|")
        for label in labels:
            for plain, secure in (("machat TCP", "machat TCP+TLS"), ("machat WS", "machat WSS")):
                clear, tls = groups.get((label, plain)), groups.get((label, secure))
                if not clear or not tls:
                    continue

                def ratio(key):
                    top, bottom = median(tls, key), median(clear, key)
                    return "–" if not top or not bottom else f"{top / bottom:.2f}"

                print(f"| {label} | {secure} ÷ {plain} | {ratio('deliveries_per_s')} "
                      f"| {ratio('server_ns_per_delivery')} | {ratio('lat_p99_us')} "
                      f"| {ratio('server_bytes_per_conn')} |")
    if any(name.endswith("(baseline)") for _, name in groups):
        print("\n### This build against the baseline (ratio of medians, this ÷ baseline)\n")
        print("| scenario | transport | deliveries/s | server CPU per delivery | p99 latency | "
              "server RSS per idle connection |")
        print("|---|---|---|---|---|---|")
        for label in labels:
            for transport in ("machat TCP", "machat WS"):
                now, before = groups.get((label, transport)), groups.get((label, transport + " (baseline)"))
                if not now or not before:
                    continue

                def ratio(key):
                    top, bottom = median(now, key), median(before, key)
                    return "–" if not top or not bottom else f"{top / bottom:.3f}"

                print(f"| {label} | {transport} | {ratio('deliveries_per_s')} | {ratio('server_ns_per_delivery')} "
                      f"| {ratio('lat_p99_us')} | {ratio('server_bytes_per_conn')} |")
    if any(name == "machat TCP, 2-node cluster" for _, name in groups):
        cluster_tables(groups, labels)


def cluster_tables(groups, labels):
    single_name, cluster_name = "machat TCP", "machat TCP, 2-node cluster"
    labels = [label for label in labels if groups.get((label, cluster_name))]

    def ns(runs, key):
        return f"{fmt(median(runs, key))} ns"

    print("\n### Cluster: two nodes over Redis, one node, Redis alone (medians)\n")
    print("| scenario | system | runs | deliveries/s | CPU per delivery: machat nodes | Redis | total "
          "| p99 latency | loss, dups, reorders | load average (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label in labels:
        for name in (single_name, cluster_name, "Redis"):
            runs = groups.get((label, name))
            if not runs:
                continue
            errors = sum(run.get("loss", 0) + run.get("dups", 0) + run.get("reorders", 0) for run in runs)
            for run in runs:
                machat = run.get("server_ns_per_delivery") if name != "Redis" else None
                redis = run.get("backend_ns_per_delivery") if name == cluster_name else (
                    run.get("server_ns_per_delivery") if name == "Redis" else None)
                run["_total_ns"] = (machat or 0) + (redis or 0)
            loads = [run["loadavg_1m"] for run in runs if run.get("loadavg_1m") is not None]
            machat = ns(runs, "server_ns_per_delivery") if name != "Redis" else "–"
            redis = (ns(runs, "backend_ns_per_delivery") if name == cluster_name
                     else ns(runs, "server_ns_per_delivery") if name == "Redis" else "–")
            print(f"| {label} | {name} | {len(runs)} | {fmt(median(runs, 'deliveries_per_s'), 1e6, 2)} M "
                  f"| {machat} | {redis} | {ns(runs, '_total_ns')} "
                  f"| {fmt(median(runs, 'lat_p99_us'), 1e3, 1)} ms | {errors} "
                  f"| {min(loads):.1f}–{max(loads):.1f} |")

    print("\n### Cluster ÷ one node (ratio of medians; in brackets, each round's own ratio)\n")
    print("| scenario | deliveries/s | CPU per delivery, nodes | CPU per delivery, nodes + Redis | p99 latency |")
    print("|---|---|---|---|---|")
    for label in labels:
        single, cluster = groups.get((label, single_name)), groups.get((label, cluster_name))
        if not single:
            continue

        def ratio(key, top_key=None):
            top, bottom = median(cluster, top_key or key), median(single, key)
            rounds = [c.get(top_key or key) / s[key] for s, c in zip(single, cluster)
                      if s.get(key) and c.get(top_key or key) is not None]
            each = ", ".join(f"{r:.2f}" for r in rounds)
            return "–" if not top or not bottom else f"**{top / bottom:.2f}** ({each})"

        print(f"| {label} | {ratio('deliveries_per_s')} | {ratio('server_ns_per_delivery')} "
              f"| {ratio('server_ns_per_delivery', '_total_ns')} | {ratio('lat_p99_us')} |")

    print("\n### Cluster: Redis publishes (whole run: connect, barrier, warm-up, timed phase, drain; "
          "each run, both nodes)\n")
    # machat_messages_received_total counts every line a node delivers,
    # its own members' and the other node's: in a cluster each node counts
    # every line of the room, and each line is published once, by its own
    # node.
    print("| scenario | round | rooms | lines in the rooms | publishes sent (a + b) "
          "| Redis PUBLISH calls | publishes dropped | loop turns (a + b) | publishes per turn, a / b "
          "| lines per publish | payloads delivered from the other node (a + b) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label in labels:
        for i, run in enumerate(groups[(label, cluster_name)], 1):
            cluster = run.get("cluster")
            if not cluster:
                continue
            a, b = cluster["nodes"]
            lines = max(a["messages_received"], b["messages_received"])
            sent = a["publishes_sent"] + b["publishes_sent"]
            per_turn = " / ".join(f"{n['publishes_sent'] / n['loop_turns']:.2f}" if n["loop_turns"] else "–"
                                  for n in (a, b))
            print(f"| {label} | {i} | {run['rooms']} | {lines:,} "
                  f"| {a['publishes_sent']:,} + {b['publishes_sent']:,} | {cluster['redis_publish_calls']:,} "
                  f"| {a['publishes_dropped'] + b['publishes_dropped']} "
                  f"| {a['loop_turns']:,} + {b['loop_turns']:,} | {per_turn} "
                  f"| {lines / sent if sent else 0:.1f} "
                  f"| {a['payloads_delivered']:,} + {b['payloads_delivered']:,} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/bench/results.jsonl")
