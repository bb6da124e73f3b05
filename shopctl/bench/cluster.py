"""``shopctl bench --cluster``: saturation and steady on the local Redis Cluster
(3 masters, 3 replicas), beside one server, in the same invocation, with the
same partitions (12: 4 per master) and one process of each kind.

On one machine the cluster is not expected to be faster: its six servers
share the cores with everything else. What it shows is where the work goes:
Redis's CPU and commands per order, node by node, split across the masters,
while the Python side's CPU per order (API and workers) stays near one
server's. From those figures: what more masters would settle, given a core
each (``projection``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shopctl.cluster import free_base

if TYPE_CHECKING:
    from shopctl.bench.run import Bench

MASTERS = 3
PARTITIONS = 4 * MASTERS
PYTHON = ("api", "payment", "inventory", "projector")
# Steady runs at this share of the first server's settled/s, on both systems:
# below either's saturation, where the processes do not fight for the cores
# and CPU per order is the code's, not the crowd's (at saturation on two cores,
# six servers inflate every process's CPU per order, the load generator's too).
STEADY_SHARE = 0.25


async def compare(bench: Bench, rounds: int = 2) -> dict[str, Any]:
    """Both systems, their phases, and the summary (``results["cluster"]``).
    The systems take turns, ``rounds`` times (one server, cluster, one server,
    ...), so that a machine whose speed drifts during the run weighs on both;
    the summary is of the sums of every round's CPU and orders. Steady runs at
    0.4 of the first server's settled/s on both, so that neither is saturated."""
    o = bench.options
    systems: dict[str, list[dict[str, Any]]] = {"one server": [], "cluster": []}
    rate = o.rate
    for turn in range(rounds):
        for label in systems:
            base = free_base() if label == "cluster" else None
            bench.say(f"{label}, {PARTITIONS} partitions, round {turn + 1} of {rounds}:")
            with bench.system("--partitions", str(PARTITIONS), cluster_port=base) as (
                    api_url, redis_url, launcher, data_dir):
                r, host, port = await bench.open(api_url, redis_url, launcher, data_dir)
                settled = await bench.saturation(host, port, r)
                rate = rate or settled * STEADY_SHARE
                await bench.steady(host, port, r, rate)
                await r.aclose()  # type: ignore[attr-defined]
            systems[label].append(
                {phase: bench.results[phase] for phase in ("saturation", "steady")})
    # Nodes are named by port, new each round: the cluster's by role and order.
    named = {label: [renamed(run) for run in runs] for label, runs in systems.items()}
    bench.results["cluster"] = {
        "rounds": named,
        "summary": summarize({label: merged(runs) for label, runs in named.items()}),
    }
    return bench.results


def renamed(run: dict[str, Any]) -> dict[str, Any]:
    """A cluster run's nodes as master-1.. and replica-1.. (ports change with
    each round; the masters have the first ports, no failover happening in a
    benchmark); a server's run as it is."""
    nodes = sorted(n for n in run["saturation"]["cpu_ms_per_order"] if n.startswith("redis-"))
    names = {n: (f"master-{i + 1}" if i < MASTERS else f"replica-{i - MASTERS + 1}")
             for i, n in enumerate(nodes)}
    by_port = {f"127.0.0.1:{n.removeprefix('redis-')}": names[n] for n in nodes}
    found = {}
    for phase in ("saturation", "steady"):
        values = run[phase]
        found[phase] = values | {
            "cpu_ms_per_order": {names.get(n, n): ms
                                 for n, ms in values["cpu_ms_per_order"].items()},
            "redis_calls_per_order_by_master": {
                by_port.get(n, n): c
                for n, c in values.get("redis_calls_per_order_by_master", {}).items()},
        }
    return found


def merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one system as one: each figure averaged over the rounds."""
    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 3)

    def averaged(phase: str) -> dict[str, Any]:
        got = [r[phase] for r in runs]
        names = {n for g in got for n in g["cpu_ms_per_order"]}
        masters = {n for g in got for n in g.get("redis_calls_per_order_by_master", {})}
        return {
            "cpu_ms_per_order": {n: mean([g["cpu_ms_per_order"].get(n, 0) for g in got])
                                 for n in sorted(names)},
            "redis_calls_per_order": mean([sum(g["redis_calls_per_order"].values())
                                           for g in got]),
            "redis_calls_per_order_by_master": {
                n: mean([g["redis_calls_per_order_by_master"].get(n, 0) for g in got])
                for n in sorted(masters)},
        }

    steadies = [r["steady"] for r in runs]
    return {
        "saturation": averaged("saturation") | {
            "settled_per_s": round(mean([r["saturation"]["settled_per_s"] for r in runs]))},
        "steady": averaged("steady") | {
            "rate_per_s": steadies[0]["rate_per_s"],
            "post_to_final_ms": {q: mean([s["post_to_final_ms"][q] for s in steadies])
                                 for q in ("p50", "p99")}},
    }


def python_ms(cpu: dict[str, float]) -> float:
    """CPU ms per order of the Python processes: the API and the workers."""
    return round(sum(ms for name, ms in cpu.items() if name.startswith(PYTHON)), 3)


def summarize(systems: dict[str, Any]) -> dict[str, Any]:
    """Throughput at saturation; where the work goes, per order, in the steady
    phase (and at saturation, for the record)."""
    one, many = systems["one server"], systems["cluster"]

    def split(cpu: dict[str, Any]) -> dict[str, Any]:
        return {"python": python_ms(cpu),
                "masters": {n: ms for n, ms in cpu.items() if n.startswith("master-")},
                "replicas": {n: ms for n, ms in cpu.items() if n.startswith("replica-")},
                "one server": cpu.get("redis")}

    steady_one = split(one["steady"]["cpu_ms_per_order"])
    steady_many = split(many["steady"]["cpu_ms_per_order"])
    sat_one = split(one["saturation"]["cpu_ms_per_order"])
    sat_many = split(many["saturation"]["cpu_ms_per_order"])
    return {
        "settled_per_s": {"one server": one["saturation"]["settled_per_s"],
                          "cluster": many["saturation"]["settled_per_s"]},
        "steady_rate_per_s": one["steady"]["rate_per_s"],
        "steady_post_to_final_ms": {"one server": one["steady"]["post_to_final_ms"],
                                    "cluster": many["steady"]["post_to_final_ms"]},
        "python_cpu_ms_per_order": {"one server": steady_one["python"],
                                    "cluster": steady_many["python"]},
        "python_ratio": round(steady_many["python"] / steady_one["python"], 3),
        "redis_cpu_ms_per_order": {"one server": steady_one["one server"],
                                   "masters": steady_many["masters"],
                                   "replicas": steady_many["replicas"]},
        "commands_per_order": {"one server": one["steady"]["redis_calls_per_order"],
                               "masters": many["steady"]["redis_calls_per_order_by_master"]},
        "at_saturation": {
            "python_cpu_ms_per_order": {"one server": sat_one["python"],
                                        "cluster": sat_many["python"]},
            "load_generator_cpu_ms_per_order": {
                label: systems[label]["saturation"]["cpu_ms_per_order"].get(
                    "bench (load generator)") for label in systems},
            "redis_cpu_ms_per_order": {"one server": sat_one["one server"],
                                       "masters": sat_many["masters"],
                                       "replicas": sat_many["replicas"]},
        },
        # Capacity is what the masters do when they are the bottleneck: their work
        # per order at saturation (batched as it is under load).
        "projection": projection(sat_many["masters"], sat_many["python"],
                                 sum(sat_many["replicas"].values())),
    }


def projection(masters: dict[str, float], python: float, replicas_ms: float) -> dict[str, Any]:
    """Orders/s that 3, 6 and 12 masters could settle, a core each, from the
    masters' CPU ms per order measured here. Assumes: the orders' work splits
    over M masters as it split over these three (each partition's streams and
    records on one master, 4 partitions each; the shared keys, tokens in
    partition 0's slot and each product in a slot of its own, as unevenly as
    here: the busiest master sets the pace); a master saturates one core; the
    API, the workers and the replicas run on cores of their own, scaled out
    (they share nothing); the network between machines adds latency, not CPU."""
    if not masters:
        return {}
    total = sum(masters.values())
    evenness = (total / len(masters)) / max(masters.values())  # 1: perfectly even
    found: dict[str, Any] = {"evenness": round(evenness, 2)}
    for m in (3, 6, 12):
        rate = 1000 * m / total * evenness
        cores = (total + python + replicas_ms) * rate / 1000
        found[f"{m} masters"] = {"orders_per_s": round(rate), "cores": round(cores, 1)}
    return found


def table(results: dict[str, Any]) -> str:
    """The comparison as the terminal shows it."""
    summary = results["cluster"]["summary"]
    rounds = results["cluster"]["rounds"]
    lines = [f"one server vs a local cluster (3 masters + 3 replicas), {PARTITIONS} partitions "
             f"each, {len(rounds['cluster'])} rounds taking turns, same run:"]
    for turn in range(len(rounds["cluster"])):
        for label in rounds:
            run = rounds[label][turn]
            lines.append(
                f"  round {turn + 1} {label:<10} settled/s {run['saturation']['settled_per_s']:>5}"
                f"; steady: Python CPU {python_ms(run['steady']['cpu_ms_per_order'])} ms/order")
    redis_cpu = summary["redis_cpu_ms_per_order"]
    latency = summary["steady_post_to_final_ms"]
    sat = summary["at_saturation"]
    ratio = sat["python_cpu_ms_per_order"]["cluster"] / sat["python_cpu_ms_per_order"]["one server"]
    control = (sat["load_generator_cpu_ms_per_order"]["cluster"]
               / sat["load_generator_cpu_ms_per_order"]["one server"])
    lines += [
        "every round together (CPU and commands per order in the steady phase):",
        "  settled/s: " + ", ".join(f"{k} {v}" for k, v in summary["settled_per_s"].items()),
        f"  steady at {summary['steady_rate_per_s']:g}/s, POST→final p50 / p99 ms: "
        + ", ".join(f"{k} {v['p50']} / {v['p99']}" for k, v in latency.items()),
        "  Python CPU ms per order (API + workers): " + ", ".join(
            f"{k} {v}" for k, v in summary["python_cpu_ms_per_order"].items())
        + f"; cluster ÷ one server = {summary['python_ratio']}",
        f"  Redis CPU ms per order: one server {redis_cpu['one server']}; cluster masters "
        + ", ".join(f"{n} {ms}" for n, ms in redis_cpu["masters"].items())
        + f" (together {sum(redis_cpu['masters'].values()):.3f}); replicas "
        + ", ".join(f"{n} {ms}" for n, ms in redis_cpu["replicas"].items()),
        f"  commands per order: one server {summary['commands_per_order']['one server']}; "
        "cluster masters " + ", ".join(
            f"{n} {c}" for n, c in summary["commands_per_order"]["masters"].items()),
        "  at saturation, where six servers crowd two cores: Python CPU ms per order "
        + ", ".join(f"{k} {v}" for k, v in sat["python_cpu_ms_per_order"].items())
        + f" (÷ {ratio:.2f}); the load generator's, the same code on both, ÷ {control:.2f}",
        "  projection from the masters' work at saturation, a core per master, the Python side "
        "and the replicas on cores of their "
        f"own (the masters' work as even as here, {summary['projection'].get('evenness')} of "
        "perfectly even): " + ", ".join(
            f"{label} ≈ {p['orders_per_s']} orders/s on {p['cores']} cores"
            for label, p in summary["projection"].items() if label != "evenness"),
    ]
    return "\n".join(lines)
