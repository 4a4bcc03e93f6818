"""``voipgw bench``: benchmarks that print ratios against baselines measured in the same run."""

from __future__ import annotations

import argparse
import functools
import json
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from voipgw.cli.errors import CliError

Runner = Callable[[argparse.Namespace], int]


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stoppable(run: Runner) -> Runner:
    """SIGTERM stops a benchmark the way Ctrl-C does: its ``finally`` blocks stop every gateway, sipp and forwarder
    process it started (by PID) before it exits 130. Without this, SIGTERM (``kill``, ``timeout``, a CI runner)
    killed the benchmark alone and left its children running."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return run(args)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios against baselines measured in the same run)")
    bsub = p.add_subparsers(dest="bench", metavar="WHAT")
    c = bsub.add_parser("crypto", help="per-frame seal+open and handshake cost against pylibsrtp")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.add_argument("--rounds", type=int, default=41, help="interleaved measurement rounds (median reported)")
    c.set_defaults(func=run_crypto)
    k = bsub.add_parser("call", help="call setup time, SIP messages and CPU per call-second, secure vs plain")
    k.add_argument("--json", action="store_true", help="print one JSON object")
    k.add_argument("--calls", type=int, default=20, help="setup-time calls per mode, interleaved (default 20)")
    k.add_argument("--cpu-seconds", type=float, default=5.0, help="length of each CPU-measurement call (s)")
    k.add_argument("--cpu-rounds", type=int, default=2, help="CPU-measurement calls per mode, interleaved")
    k.add_argument("--workdir", type=Path, help="keep logs and summaries here (default: a removed temp dir)")
    k.add_argument(
        "--transport-rounds",
        type=int,
        default=5,
        metavar="N",
        help="setup-time calls per transport and suite (UDP, TCP, TLS x classical, hybrid); 0 skips them",
    )
    k.set_defaults(func=stoppable(run_call))
    s = bsub.add_parser(
        "soak", help="hold N calls through two gateways for a long time; record loss, latency, memory, fds over time"
    )
    s.add_argument("--json", action="store_true", help="print one JSON object (with every sample)")
    s.add_argument("--mode", choices=("passthrough", "transcode"), default="passthrough")
    s.add_argument("--calls", type=int, default=40, help="concurrent calls to hold (default 40)")
    s.add_argument("--duration", type=float, default=300.0, metavar="S", help="how long to hold them (default 300)")
    s.add_argument("--sample", type=float, default=5.0, metavar="S", help="sample period (default 5 s)")
    s.add_argument("--out", type=Path, metavar="FILE", help="also write the JSON result here")
    s.add_argument("--workdir", type=Path, help="keep the gateways' logs here (default: a removed temp dir)")
    s.set_defaults(func=stoppable(run_soak))
    ch = bsub.add_parser("churn", help="largest sipp call rate (INVITE, media, BYE) one gateway holds beside N calls")
    ch.add_argument("--json", action="store_true", help="print one JSON object (every step)")
    ch.add_argument("--rates", default="0.5,1,1.5,2,2.5,3,4,6,8,10,12,16,20", help="sipp call rates to try (calls/s)")
    ch.add_argument("--hold", type=float, default=10.0, metavar="S", help="each sipp call's length (default 10)")
    ch.add_argument("--step-s", type=float, default=30.0, metavar="S", help="calls are placed this long per rate (30)")
    ch.add_argument("--background", type=int, default=60, metavar="N", help="measured pass-through calls (60)")
    ch.add_argument("--window", type=float, default=2.0, metavar="S", help="background measurement window (2 s)")
    ch.add_argument("--confirm", type=float, default=0.0, metavar="S", help="then run the best rate for S s (e.g. 300)")
    ch.add_argument(
        "--probe-calls",
        type=int,
        default=40,
        metavar="N",
        help="setup probe: N calls with no hold, for CPU per setup (40; 0 skips)",
    )
    ch.add_argument("--out", type=Path, metavar="FILE", help="also write the JSON result here")
    ch.add_argument("--workdir", type=Path, help="keep gateway and sipp logs here (default: a removed temp dir)")
    ch.set_defaults(func=stoppable(run_churn))
    g = bsub.add_parser("gateway", help="gateway capacity, relay cost against a bare uvloop forwarder, latency, memory")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.add_argument("--quick", action="store_true", help="a few calls per mode, 1 s windows (a smoke run, not a figure)")
    g.add_argument("--workdir", type=Path, help="keep the gateways' logs here (default: a removed temp dir)")
    g.set_defaults(func=stoppable(run_gateway))
    so = bsub.add_parser(
        "scaleout", help="capacity of 1 and 2 gateway processes behind Kamailio's dispatcher, with per-process CPU"
    )
    so.add_argument("--json", action="store_true", help="print one JSON object")
    so.add_argument("--quick", action="store_true", help="a few calls per N, 1 s windows (a smoke run, not a figure)")
    so.add_argument("--out", type=Path, metavar="FILE", help="also write the JSON result here")
    so.add_argument("--workdir", type=Path, help="keep Kamailio's and the gateways' logs here (default: a removed dir)")
    so.set_defaults(func=stoppable(run_scaleout))
    q = bsub.add_parser("pq-ratchet", help="in-call post-quantum ratchet: epoch time, bytes and CPU under bursty loss")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--calls", type=int, default=8, help="simulated calls per loss rate (default 8)")
    q.add_argument("--seconds", type=float, default=600.0, metavar="S", help="each call's simulated length (600)")
    q.set_defaults(func=run_pq_ratchet)

    m = bsub.add_parser("memory", help="gateway memory per call at up to 1000 concurrent calls (thin media)")
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.add_argument("--steps", default="100,250,500,1000", help="call counts to hold (default 100,250,500,1000)")
    m.add_argument("--trace", action="store_true", help="tracemalloc in gateway A: where the memory goes, by line")
    m.add_argument("--workdir", type=Path, help="keep the gateways' logs here (default: a removed temp dir)")
    m.set_defaults(func=stoppable(run_memory))
    p.set_defaults(func=lambda a: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


GOALS = {"ratio_default_vs_srtp": 1.0, "ratio_per_frame_rekey_vs_srtp": 2.0}
ROWS = [
    ("srtp_protect_unprotect_us", "pylibsrtp AES_CM_128_HMAC_SHA1_80 protect+unprotect, 60 B (µs)"),
    ("seal_open_us_default", "voipgw seal+open, default settings (µs)"),
    ("seal_open_us_per_frame_rekey", "voipgw seal+open, a fresh AEAD key every frame (µs)"),
    ("seal_open_us_chain_step_per_frame", "voipgw seal+open, KDF_CK step every frame (µs)"),
    ("ratio_default_vs_srtp", "ratio default / SRTP"),
    ("ratio_per_frame_rekey_vs_srtp", "ratio per-frame rekey / SRTP"),
    ("ratio_chain_step_per_frame_vs_srtp", "ratio chain step per frame / SRTP"),
    ("overhead_bytes_default", "steady-state overhead per frame (bytes, 80-bit tag)"),
    ("overhead_bytes_avg_default_call", "average overhead over a 120 s call (bytes)"),
    ("handshake_ms_x25519", "handshake, both sides, x25519 (ms)"),
    ("handshake_ms_hybrid", "handshake, both sides, x25519+ML-KEM-768 (ms)"),
]


def run_crypto(args: argparse.Namespace) -> int:
    from voipgw.bench import crypto

    results = crypto.run(rounds=args.rounds)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    print("voipgw bench crypto (medians of interleaved rounds; ratios per round against SRTP run alongside)")
    for key, label in ROWS:
        goal = GOALS.get(key)
        note = f"   goal <= {goal}" if goal is not None else ""
        print(f"  {label:<66} {results[key]:>9.3f}{note}")
    return 0


CALL_ROWS = [
    ("setup_ms_median_{m}", "INVITE -> 200 OK at the caller, median (ms)"),
    ("setup_ms_p90_{m}", "INVITE -> 200 OK at the caller, p90 (ms)"),
    ("wire_invite_to_200_ms_median_{m}", "INVITE -> 200 OK on the wire (relay), median (ms)"),
    ("setup_messages_{m}", "SIP messages per call setup (INVITE .. ACK)"),
    ("invite_bytes_{m}", "INVITE size on the wire (bytes)"),
    ("ok_bytes_{m}", "200 OK size on the wire (bytes)"),
    ("cpu_ms_per_call_s_caller_{m}", "CPU per call-second, caller (ms/s)"),
    ("cpu_ms_per_call_s_callee_{m}", "CPU per call-second, callee (ms/s)"),
    ("cpu_ms_per_call_s_{m}", "CPU per call-second, both ends (ms/s)"),
]
CALL_DIFFS = [
    ("setup_ms_added_median", "added setup time, median (ms)", "goal_setup_ms_added"),
    ("setup_ms_added_p90", "added setup time, p90 (ms)", None),
    ("wire_ms_added_median", "added INVITE -> 200 OK on the wire, median (ms)", None),
    ("extra_round_trips", "extra round trips", "goal_extra_round_trips"),
    ("handshake_cpu_ms_median_secure", "caller's key-exchange CPU, median (ms)", None),
    ("cpu_ratio_secure_vs_plain", "CPU per call-second, secure / plain", None),
]


INBAND_ROWS = [
    ("setup_ms_median_inband", "in-band (a=voipgw stripped): INVITE -> 200 OK (ms)"),
    ("setup_ms_added_median_inband", "in-band: added setup time vs plain, median (ms)"),
    ("inband_ms_median", "in-band: caller's first offer -> keys, median (ms)"),
    ("inband_ms_p90", "in-band: caller's first offer -> keys, p90 (ms)"),
    ("setup_messages_inband", "in-band: SIP messages per call setup (INVITE .. ACK)"),
]
TRUST_ROWS = [
    ("trust_evaluate_us_cached_known", "contact check on setup: cached known contact (µs)"),
    ("trust_evaluate_us_known_uncached", "contact check on setup: known, not cached (µs)"),
    ("trust_evaluate_us_first_contact", "contact check on setup: first contact, TOFU write (µs)"),
    ("trust_record_call_us", "recording a call in the store, after setup (µs)"),
]


def _progress(args: argparse.Namespace) -> Callable[[str], None]:
    """A long bench's progress lines: on stderr as they come, none with --json (stdout is the JSON then)."""
    import sys

    def progress(line: str) -> None:
        if not args.json:
            print(line, file=sys.stderr, flush=True)

    return progress


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:9.2f}"
    if isinstance(value, list):
        return f"{'/'.join(str(v) for v in value):>9}"
    return f"{value!s:>9}"


def run_call(args: argparse.Namespace) -> int:
    from voipgw.bench import call, transports
    from voipgw.bench.common import BenchError

    try:
        results = call.run(
            calls=args.calls, cpu_call_s=args.cpu_seconds, cpu_rounds=args.cpu_rounds, workdir=args.workdir
        )
        if args.transport_rounds > 0:
            results.update(transports.run(rounds=args.transport_rounds))
    except (BenchError, ValueError) as exc:
        raise CliError(f"bench call: {exc}") from None
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    print(
        f"voipgw bench call ({results['calls_per_mode']} calls per mode, interleaved; CPU over "
        f"{results['cpu_rounds']} call(s) of {results['cpu_call_s_secure']:.1f} s per mode)"
    )
    print(f"  {'':<52} {'secure':>9} {'plain':>9}")
    for key, label in CALL_ROWS:
        print(f"  {label:<52} {_cell(results[key.format(m='secure')])} {_cell(results[key.format(m='plain')])}")
    for key, label, goal_key in CALL_DIFFS:
        goal = f"   goal <= {results[goal_key]}" if goal_key else ""
        print(f"  {label:<52} {_cell(results[key])}{goal}")
    for key, label in INBAND_ROWS:
        if results.get(key) is not None:
            print(f"  {label:<52} {_cell(results[key])}")
    for key, label in TRUST_ROWS:
        print(f"  {label:<52} {_cell(results[key])}")
    by_transport = results.get("setup_by_transport")
    if by_transport:
        print(f"  setup over each SIP transport, secure, fresh connection per call ({results['rounds']} calls each):")
        for combo, row in by_transport.items():
            if row["setup_ms_median"] is None:
                print(f"    {combo:<24} n/a: {row['why']}")
            else:
                print(
                    f"    {combo:<24} {row['setup_ms_median']:>7.2f} ms  {row['ratio_vs_udp_x25519']:.2f}x udp/x25519"
                )
    return 0


GATEWAY_MODE_ROWS = [
    ("max_calls", "max concurrent calls, < 1 % late or lost frames"),
    ("latency_ms_p50", "one-way latency alice -> bob through A and B, p50 (ms)"),
    ("latency_ms_p99", "one-way latency alice -> bob through A and B, p99 (ms)"),
    ("gateway_a_cpu_ms_per_call_s", "gateway A CPU per call-second (ms/s)"),
    ("memory_kb_per_call", "gateway A memory per call, RSS slope over the steps (KB)"),
    ("calls_with_audio_both_ways", "calls that carried audio both ways"),
    ("calls_total", "calls placed"),
]
GATEWAY_ROWS = [
    ("packets_per_cpu_s_gateway", "packets per CPU-second, gateway A (pass-through)"),
    ("packets_per_cpu_s_forwarder", "packets per CPU-second, bare uvloop forwarder"),
    ("ratio_gateway_vs_forwarder", "ratio gateway / forwarder (same calls, same run)"),
    ("packets_per_cpu_s_gateway_event_loop", "packets per CPU-second, gateway A's event loop only"),
    ("ratio_gateway_event_loop_vs_forwarder", "ratio event loop / forwarder (without the SIP thread)"),
    ("gateway_a_sip_thread_cpu_share", "share of gateway A's CPU in its SIP reactor thread"),
    ("added_latency_ms_p50_per_gateway", "added one-way latency per gateway, p50 (ms)"),
    ("added_latency_ms_p99_per_gateway", "added one-way latency per gateway, p99 (ms)"),
    ("passthrough_calls_per_core_projected", "pass-through calls per core, projected from A's CPU"),
]
TRANSCODE_ROWS = [
    ("gateway_a_idle_cpu_ms_per_s", "gateway A CPU with no call up (ms/s)"),
    ("gateway_a_cpu_ms_per_call_s_beyond_idle", "transcoded: A's CPU per call-second beyond idle (ms/s)"),
    ("gateway_a_cpu_ms_per_added_call_s", "transcoded: A's CPU per added call, step slope (ms/s)"),
    ("calls_per_core", "transcoded calls per core at the step measured"),
    ("calls_per_core_projected", "transcoded calls per core, projected (idle + slope)"),
    ("bridge_rate_hz", "PCM rate between a transcoding bridge's legs (Hz)"),
    ("libopus_ms_per_call_s", "libopus CPU per transcoded call-second (ms/s)"),
    ("libopus_share", "libopus share of a transcoded call's CPU beyond idle"),
    ("overhead_beyond_libopus_pct", "transcoding overhead beyond pass-through, libopus (%)"),
]
TRANSCODE_GOALS = {"calls_per_core_projected": "goal >= 60", "overhead_beyond_libopus_pct": "goal <= 30"}


def run_gateway(args: argparse.Namespace) -> int:

    from voipgw.bench import gateway
    from voipgw.bench.common import BenchError

    progress = _progress(args)

    try:
        results = gateway.run(quick=args.quick, workdir=args.workdir, log=progress)
    except BenchError as exc:
        raise CliError(f"bench gateway: {exc}") from None
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    print(
        f"voipgw bench gateway (gateways A and B back to back on loopback, {results['window_s']:.0f} s windows; "
        f"late = {results['late_slack_ms']:.0f} ms past the unloaded median)"
    )
    print(f"  {'':<58} {'pass-thru':>9} {'transcode':>9}")
    for key, label in GATEWAY_MODE_ROWS:
        print(f"  {label:<58} {_cell(results['passthrough'][key])} {_cell(results['transcode'][key])}")
    for key, label in GATEWAY_ROWS:
        goal = f"   goal >= {results['goal_ratio']}" if key == "ratio_gateway_vs_forwarder" else ""
        print(f"  {label:<58} {_cell(results[key])}{goal}")
    for key, label in TRANSCODE_ROWS:
        goal = f"   {TRANSCODE_GOALS[key]}" if key in TRANSCODE_GOALS else ""
        print(f"  {label:<58} {'':>9} {_cell(results['transcode'].get(key))}{goal}")
    print(
        f"  (ratio and added latency measured at {results['ratio_calls']} pass-through calls; run took "
        f"{results['elapsed_s']:.0f} s; load average {results['load_average_1min_at_start']:.1f} at start, "
        f"{results['load_average_1min']:.1f} at end on {results['cpus']} CPUs shared by A, B and the phones)"
    )
    return 0


SCALEOUT_ROWS = [
    ("max_calls", "calls held, < 1 % late or lost frames"),
    ("at_calls", "figures below measured at (calls)"),
    ("late_or_lost_pct", "late or lost frames there (%)"),
    ("calls_per_gateway_b", "calls carried by each B process"),
    ("cpu_share_gateway_b", "CPU share of each B process (of one core)"),
    ("cpu_share_gateway_a", "CPU share of gateway A (one process, shared by all calls)"),
    ("cpu_share_kamailio", "CPU share of Kamailio (all its processes)"),
    ("kamailio_cpu_ms_per_call", "Kamailio CPU per call: INVITE, ACK, BYE, probes (ms)"),
    ("cpu_share_load_generator", "CPU share of the load generator (both phones)"),
    ("cpu_share_all", "CPU share of everything above (of the machine's cores)"),
    ("packets_per_cpu_s_gateway_b", "packets per CPU-second, each B process"),
    ("packets_per_cpu_s_gateway_b_total", "packets per CPU-second, the B processes together"),
    ("calls_per_core_gateway_b", "calls per core, each B process (calls / its CPU share)"),
    ("calls_per_core_gateway_b_total", "calls per core, the B processes together"),
    ("calls_per_core_both_gateway_ends", "calls per core, A and the B processes (both ends)"),
    ("marginal_calls_per_core_gateway_b_total", "calls per core, B processes, from the CPU slope over the steps"),
    ("cpu_share_idle_gateway_b", "CPU share of each B process with no call up"),
    ("latency_ms_p50", "one-way latency alice -> bob, p50 (ms)"),
    ("latency_ms_p99", "one-way latency alice -> bob, p99 (ms)"),
    ("calls_with_audio_both_ways", "calls that carried audio both ways"),
]


def run_scaleout(args: argparse.Namespace) -> int:
    """``voipgw bench scaleout`` (issue 17): N = 1 and N = 2 gateway processes behind Kamailio, side by side."""

    from voipgw.bench import scaleout
    from voipgw.bench.common import BenchError

    try:
        results = scaleout.run(quick=args.quick, workdir=args.workdir, log=_progress(args))
    except BenchError as exc:
        raise CliError(f"bench scaleout: {exc}") from None
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True))
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    by_n = results["processes"]
    ns = list(by_n)
    print(f"voipgw bench scaleout ({results['topology']}; pass-through, late = {results['late_slack_ms']:.0f} ms)")
    print(f"  {'':<62}" + "".join(f"{'N = ' + n:>12}" for n in by_n))
    for key, label in SCALEOUT_ROWS:
        print(f"  {label:<62}" + "".join(f"{_cell(r[key]):>12}" for r in by_n.values()))
    print(
        f"  ratio N={ns[-1]} / N={ns[0]}: calls held {results['ratio_max_calls']}, calls per B core "
        f"{results['ratio_calls_per_core_gateway_b']}\n"
        f"  (load generator, A, Kamailio and the B processes share {results['cpus']} CPUs: a second process adds no "
        f"core, so per-process calls per core is the figure; run took {results['elapsed_s']:.0f} s, load average "
        f"{results['load_average_1min_at_start']:.1f} at start, {results['load_average_1min']:.1f} at end)"
    )
    return 0


def run_soak(args: argparse.Namespace) -> int:
    """Exit status 0 when the calls held and nothing grew, 1 otherwise (so ``make soak`` fails on a leak)."""

    from voipgw.bench import soak
    from voipgw.bench.common import BenchError

    progress = _progress(args)

    try:
        results = soak.run(args.mode, args.calls, args.duration, args.sample, args.workdir, progress)
    except (BenchError, ValueError) as exc:
        raise CliError(f"bench soak: {exc}") from None
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True))
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        print(
            f"voipgw bench soak: {results['calls']} {results['mode']} calls held {results['duration_s']:.0f} s "
            f"({len(results['samples'])} samples of {results['sample_s']:g} s)\n"
            f"  holds (< {results['limits']['max_late_or_lost_pct']} % late/lost in every sample, no call lost): "
            f"{results['holds']}  (worst sample {results['worst_sample_late_or_lost_pct']} %, "
            f"calls lost {results['calls_lost_during_hold']})\n"
            f"  grows: {results['grows']}  (RSS {results['rss_kb_growth_per_min']} KB/min, "
            f"fds {results['fds_growth_per_min']}/min)"
        )
    return 0 if results["holds"] and not results["grows"] else 1


def run_churn(args: argparse.Namespace) -> int:
    """Exit status 0 when at least the lowest rate held (and the confirmation, when asked), 1 otherwise."""

    from voipgw.bench import churn
    from voipgw.bench.common import BenchError

    progress = _progress(args)

    try:
        results = churn.run(
            churn.parse_rates(args.rates), args.hold, args.step_s, args.background, args.window, args.confirm,
            args.workdir, progress, probe_calls=args.probe_calls,
        )  # fmt: skip
    except (BenchError, ValueError) as exc:
        raise CliError(f"bench churn: {exc}") from None
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(json.dumps(results, indent=2, sort_keys=True) if args.json else churn.format_table(results))
    return 0 if results["max_rate_held_per_s"] > 0 and results["confirmed"] in (None, True) else 1


PQ_ROWS = [
    ("pq_epochs", "completed PQ epochs"),
    ("pq_epoch_s_p50", "start of an exchange -> both sides switched, p50 (s)"),
    ("pq_epoch_s_p99", "start of an exchange -> both sides switched, p99 (s)"),
    ("extra_bytes_per_frame", "PQ bytes per frame over the call (of the fixed frame)"),
    ("extra_bytes_per_frame_while_exchanging", "PQ bytes per frame while a message goes out"),
    ("cpu_us_per_epoch", "CPU per epoch, both sides (µs, against the same calls without)"),
    ("frames_lost_at_switch", "frames refused within 1 s of a switch"),
]


def run_pq_ratchet(args: argparse.Namespace) -> int:
    from voipgw.bench import pq_ratchet

    if args.calls < 1 or args.seconds < 60:
        raise CliError("bench pq-ratchet: --calls must be >= 1 and --seconds >= 60")
    results = pq_ratchet.run(calls=args.calls, seconds=args.seconds)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    print(
        f"voipgw bench pq-ratchet ({results['calls_per_loss']} simulated calls of {results['call_s']:.0f} s per loss "
        f"rate, {results['frames_per_s']} frames/s, bursts of {results['mean_burst_frames']:.0f} frames; goals: "
        f"epoch <= {results['goal_pq_epoch_s']} s, <= {results['goal_extra_bytes_per_frame']} bytes/frame, 0 lost)"
    )
    losses = [key for key in results if key.startswith("loss_")]
    print(f"  {'':<64}" + "".join(f"{key.replace('loss_', '') + ' % loss':>12}" for key in losses))
    for key, label in PQ_ROWS:
        cells = []
        for loss in losses:
            value = results[loss][key]  # type: ignore[index]
            cells.append(
                f"{'n/a':>12}" if value is None else f"{value:>12.2f}" if isinstance(value, float) else f"{value:>12}"
            )
        print(f"  {label:<64}" + "".join(cells))
    return 0


def run_memory(args: argparse.Namespace) -> int:
    """``voipgw bench memory`` (issue 17): exit 0 when the goal (<= 100 KB a call) was met, 1 otherwise."""

    from voipgw.bench import memory
    from voipgw.bench.common import BenchError

    progress = _progress(args)

    try:
        steps = [int(x) for x in args.steps.split(",")]
        results = memory.run(steps, args.trace, args.workdir, progress)
    except (BenchError, ValueError) as exc:
        raise CliError(f"bench memory: {exc}") from None
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        print(
            f"voipgw bench memory: up to {results['max_calls']} pass-through calls (one frame a second per leg)\n"
            f"  gateway A memory per call: {results['memory_kb_per_call']} KB (goal <= {results['goal_kb_per_call']:g})"
            f", fds per call {results['fds_per_call']}"
        )
        for name, size in results.get("tracemalloc", {}).get("by_file_bytes_per_call", {}).items():
            print(f"  {size:>7} B/call  {name}")
    return 0 if results["meets_goal"] else 1
