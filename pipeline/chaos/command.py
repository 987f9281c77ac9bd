"""``pipeline chaos``: run the fault scenarios (and the MQTT fuzzer) end to end on local brokers
of its own and print what was sent, what arrived, what was duplicated and what was lost."""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Each scenario pushes a fixed stream of N track events (unique ids) through the edge's real
outbox + MQTT publisher, Mosquitto, `pipeline bridge`, Kafka (Tansu), `pipeline cloud` and back
to an MQTT alert subscriber, and injects one fault mid-stream:

  mosquitto-crash     Mosquitto SIGKILLed and restarted (persistence on)
  link-down           the edge's broker stopped for a while, then back (outbox drains in order)
  edge-crash          the edge process SIGKILLed while its outbox holds events, then restarted
  bridge-crash        `pipeline bridge` SIGKILLed and restarted
  bridge-pair         two bridges on one shared subscription, one SIGKILLed for good
  kafka-restart       the (memory-only) Kafka broker killed and restarted under the bridge
  worker-crash        one of two Faust workers SIGKILLed (rebalance)
  model-server-crash  the model server SIGKILLed and restarted (circuit breaker)
  flaky-link          edge <-> broker through a TCP proxy: delay, half-open link, connection reset
  packet-loss         the edge in its own network namespace: 15 % packet loss, then a blackhole
                      (nftables; needs root, `ip` and `nft`, else skipped)
  fuzz                >= 10,000 mutated CONNECT/PUBLISH/SUBSCRIBE packets at Mosquitto + bridge
                      (boofuzz when installed, `.[dev]`; else our own seeded fuzzer, --fuzzer own)

Expected alert ids are computed from the stream (presence rule, escalation never), so the table
shows alerts expected vs received; lost must be 0. Exit code 0 only if every scenario passed.

--soak SECONDS runs a soak instead: a steady stream from --cams scripted cameras through the whole
stack (--workers Faust workers, --bridges bridges on one shared subscription, the model server on
the path) while a seeded fault schedule runs for SECONDS: SIGKILLs of a worker or a bridge,
Mosquitto SIGKILLed and restarted on its data dir, model-server outages, the edge's link held and
cut; gaps 1-25 s, a quarter of the faults followed by another 0.3-4 s after the restart (a kill
during the rebalance). The same --seed gives the same schedule. Progress every 15 s; at the end
faults by kind with outage p50/p95, events and alerts expected/received/lost/duplicated, and how
many faults each event lived through. Exit code 0 only if nothing was lost. docs/faults.md has a
long run: `pipeline chaos --soak 1200 --seed 7 --min-worker-kills 50 --min-bridge-kills 20`.
"""


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "chaos",
        help="Run fault scenarios and an MQTT fuzzer on local brokers; print a table (lost must be 0).",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", type=int, default=150, help="Events per scenario (default 150).")
    p.add_argument("--only", default="", help="Comma-separated scenario names (default: all).")
    p.add_argument("--skip", default="", help="Comma-separated scenario names to leave out.")
    p.add_argument("--fuzz-cases", type=int, default=10_000, help="MQTT fuzz cases (default 10000).")
    p.add_argument(
        "--fuzzer",
        choices=("boofuzz", "own"),
        default=None,
        help="MQTT fuzzer: boofuzz (default when installed: the dev extra) or our own seeded raw-socket fuzzer.",
    )
    p.add_argument("--fuzz-seed", type=int, default=1, help="Seed of --fuzzer own (same seed, same packets).")
    p.add_argument("--keep", action="store_true", help="Keep the work directory (logs) afterwards.")
    soak = p.add_argument_group("soak (see above)")
    soak.add_argument("--soak", type=float, metavar="SECONDS", help="Run a soak of SECONDS of faults instead.")
    soak.add_argument("--seed", type=int, default=1, help="Soak schedule seed (default 1).")
    soak.add_argument("--workers", type=int, default=3, help="Faust workers in the group (default 3).")
    soak.add_argument("--bridges", type=int, default=2, help="Bridges on the shared subscription (default 2).")
    soak.add_argument("--cams", type=int, default=4, help="Scripted cameras (default 4).")
    soak.add_argument("--rate", type=float, default=6.0, help="Events per second, all cameras (default 6).")
    soak.add_argument("--min-worker-kills", type=int, default=0,
                      help="Go on past SECONDS (same schedule) until this many worker kills.")  # fmt: skip
    soak.add_argument("--min-bridge-kills", type=int, default=0,
                      help="Go on past SECONDS (same schedule) until this many bridge kills.")  # fmt: skip
    soak.add_argument("--no-model-server", action="store_true",
                      help="Leave the heavy model out (escalation never, no model-server outages).")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.soak is not None:
        return run_soak_command(args, settings)
    from pipeline.chaos.boofuzz_mqtt import boofuzz_available
    from pipeline.chaos.fuzz_run import boofuzz_table, fuzz_mqtt, fuzz_mqtt_boofuzz, fuzz_table
    from pipeline.chaos.netns import NetnsUnavailable
    from pipeline.chaos.rig import ChaosEnv
    from pipeline.chaos.scenario_steps import ScenarioResult
    from pipeline.chaos.scenarios import SCENARIOS, format_table

    names = [*SCENARIOS, "fuzz"]
    only = [n for n in args.only.split(",") if n]
    skip = {n for n in args.skip.split(",") if n}
    unknown = [n for n in [*only, *skip] if n not in names]
    if unknown:
        print(f"error: unknown scenario(s) {unknown}; known: {', '.join(names)}")
        return 2
    chosen = [n for n in (only or names) if n not in skip]
    fuzzer = args.fuzzer or ("boofuzz" if boofuzz_available() else "own")
    if "fuzz" in chosen and fuzzer == "boofuzz" and not boofuzz_available():
        print("error: --fuzzer boofuzz needs boofuzz: pip install -e '.[dev]'")
        return 2
    work = (Path(settings.local.run_dir) / "chaos").resolve()
    shutil.rmtree(work, ignore_errors=True)
    results: list[ScenarioResult] = []
    fuzz_ok = True
    began = time.monotonic()
    with ChaosEnv(work) as env:
        for name in chosen:
            print(f">> {name}", flush=True)
            t0 = time.monotonic()
            try:
                if name == "fuzz" and fuzzer == "boofuzz":
                    outcome = fuzz_mqtt_boofuzz(env, args.fuzz_cases, progress=lambda line: print(line, flush=True))
                    print(boofuzz_table(outcome), flush=True)
                    fuzz_ok = outcome.ok
                    continue
                if name == "fuzz":
                    report = fuzz_mqtt(env, args.fuzz_cases, seed=args.fuzz_seed)
                    print(fuzz_table(report), flush=True)
                    fuzz_ok = report.ok
                    continue
                result = SCENARIOS[name](env, args.events)
            except NetnsUnavailable as exc:  # not root / no ip, nft: not a failure of the pipeline
                print(f"   {name}: skipped ({exc})")
                continue
            except Exception as exc:  # one broken scenario must not hide the others' results
                log.exception("scenario %s failed", name)
                print(f"   {name}: ERROR {exc!r:.300}")
                fuzz_ok = fuzz_ok and name != "fuzz"
                results.append(_errored(name, args.events, exc))
                continue
            results.append(result)
            print(f"   {name}: {'ok' if result.ok else 'FAILED'} in {time.monotonic() - t0:.0f} s", flush=True)
    print()
    print(format_table(results))
    print(f"\nwall time {time.monotonic() - began:.0f} s; work dir {work}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.ok for r in results) and fuzz_ok else 1


def _errored(name: str, n: int, exc: BaseException) -> Any:
    from pipeline.chaos.scenario_steps import ScenarioResult

    return ScenarioResult(name, n, 0, n, None, None, 0, 0, 0, None, notes=[f"ERROR {exc!r:.200}"])


def run_soak_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.chaos.rig import ChaosEnv
    from pipeline.chaos.soak import format_report, run_soak
    from pipeline.chaos.soak_schedule import FaultKind, SoakPlan, count_by_kind, make_schedule

    kills: dict[FaultKind, int] = {"worker": args.min_worker_kills, "bridge": args.min_bridge_kills}
    plan = SoakPlan(args.soak, seed=args.seed, workers=args.workers, bridges=args.bridges, cams=args.cams,
                    rate_per_s=args.rate, model_server=not args.no_model_server,
                    min_kills={k: n for k, n in kills.items() if n > 0})  # fmt: skip
    logging.getLogger("kafka").setLevel(logging.WARNING)  # connection chatter buries the progress lines
    print(f"soak schedule (seed {plan.seed}): {count_by_kind(make_schedule(plan))} faults planned", flush=True)
    work = (Path(settings.local.run_dir) / "chaos-soak").resolve()
    shutil.rmtree(work, ignore_errors=True)
    with ChaosEnv(work) as env:
        result = run_soak(env, plan, progress=lambda line: print(line, flush=True))
    print()
    print(format_report(result), flush=True)
    print(f"\nwork dir {work}")
    if not args.keep and result.ok:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if result.ok else 1
