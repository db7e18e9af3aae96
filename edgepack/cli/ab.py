"""`edgepack ab A B --device SERIAL|host`: parses the command line and renders what
edgepack.ab measured."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgepack.cli.app import app
from edgepack.cli.options import (
    AffinityOpt,
    DbOpt,
    EngineOpt,
    JsonOpt,
    LabelOpt,
    TimeoutOpt,
    number,
)
from edgepack.cli.render import console, emit_json, fmt, note
from edgepack.limits import MAX_ITERATIONS, MAX_SECONDS, MAX_THREADS

AUTO_FIRST = 30  # edgepack.ab.AUTO_FIRST_ITERATIONS (not imported: --help stays numpy-free)

if TYPE_CHECKING:
    from edgepack.ab import AbListener, AbResult


@app.command()
def ab(
    bundle_a: Annotated[Path, typer.Argument(help="Bundle A, the reference.")],
    bundle_b: Annotated[Path, typer.Argument(
        help="Bundle B, judged against A (the same path twice: an A/A check).")],
    device: Annotated[str, typer.Option(
        "--device", help="One device: a serial, or host.")],
    iterations: Annotated[str, typer.Option(
        "--iterations", help="Timed iterations per run, or auto (the default): "
        f"{AUTO_FIRST} in the first round, then as many as make a run's timed part about a "
        "third of its start-up, from 10 to 50.")] = "auto",
    warmup: Annotated[int, typer.Option(
        "--warmup", min=0, max=MAX_ITERATIONS, help="Untimed runs first, in every run.")] = 1,
    threads: Annotated[int, typer.Option(
        "--threads", min=0, max=MAX_THREADS, help="Intra-op threads, for both bundles.")] = 1,
    ep: Annotated[str, typer.Option("--ep", help="cpu, xnnpack or nnapi, for both.")] = "cpu",
    cpu_affinity: AffinityOpt = None,
    timeout: TimeoutOpt = None,
    engine: EngineOpt = "auto",
    cooldown: Annotated[str, typer.Option(
        "--cooldown", help="Seconds between runs, or auto: until the thermal status and "
        "battery temperature are back to the session's start (at most 120 s).")] = "0",
    min_rounds: Annotated[int, typer.Option(
        "--min-rounds", help="Rounds (A and B once each) before the stopping rule may stop "
        "(default 8).")] = 8,
    max_rounds: Annotated[int | None, typer.Option(
        "--max-rounds", help="Stop after this many usable rounds.")] = None,
    max_seconds: Annotated[float, typer.Option(
        "--max-seconds", "--max-session-seconds",
        help="The whole session's limit: no round starts that would end past this many "
        "seconds from the start (default 300). Not a per-run cap, unlike bench's "
        "--max-seconds: that is --max-run-seconds here.")] = 300.0,
    max_run_seconds: Annotated[float | None, typer.Option(
        "--max-run-seconds", callback=number(0, MAX_SECONDS, above=True),
        help="A run (one runner invocation) taking longer than this is semivalid: bench's "
        "--max-seconds, MLPerf's max duration (default: no cap).")] = None,
    precision: Annotated[float, typer.Option(
        "--precision", help="Stop once the 95 % interval's half-width is at most this many "
        "percent (default 1).")] = 1.0,
    equivalence: Annotated[float, typer.Option(
        "--equivalence", help="`same` when the whole interval lies within +/- this many "
        "percent (default 1).")] = 1.0,
    max_slowdown: Annotated[float | None, typer.Option(
        "--max-slowdown", help="Exit 1 when B is slower than A by more than this many percent "
        "with confidence (the interval's low end).")] = None,
    min_iterations: Annotated[int, typer.Option(
        "--min-iterations", help="A run with fewer timed iterations is invalid.")] = 1,
    min_seconds: Annotated[float, typer.Option(
        "--min-seconds", help="A run timing fewer seconds is invalid.")] = 0.0,
    max_cv: Annotated[float | None, typer.Option(
        "--max-cv", callback=number(0, above=True),
        help="A run whose CV is above this many percent is semivalid (default 25).")] = None,
    order: Annotated[str, typer.Option(
        "--order", help="abba (interleaved), or bundle-major (all A, then all B, "
        "--min-rounds of each: to compare with how a bundle-major bench fares).")] = "abba",
    figure: Annotated[str, typer.Option(
        "--figure", help="Which figure of a run the ratio, the stopping rule and the verdict "
        "rest on: median (default), or p25 (the first quartile: steadier on a machine shared "
        "with other work).")] = "median",
    seed: Annotated[int, typer.Option("--seed", help="The bootstrap's seed.")] = 0,
    db: DbOpt = None,
    label: LabelOpt = None,
    report_dir: Annotated[Path | None, typer.Option(
        "--report-dir", help="Write ab.json and ab.html (per-round ratios) here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Is B faster than A? Both bundles on one device in interleaved ABBA rounds, until the
    95 % interval of B/A is narrow enough; outputs of B compared with A's.

    Verdict: faster, slower, same (interval inside +/- --equivalence) or inconclusive. Exit 1
    with --max-slowdown exceeded, 3 when the device failed (the rounds finished are kept).
    """
    from edgepack.ab import AbParams, AbRequest, ab_session
    from edgepack.errors import EdgepackError
    from edgepack.option_values import parse_cooldown, parse_cpu_affinity
    from edgepack.records import BenchParams
    from edgepack.validity import DEFAULT_MAX_CV, ValidityRules

    seconds = parse_cooldown(cooldown)  # None: auto
    auto, cooldown_s = seconds is None, seconds or 0.0
    if min_rounds < 0 or max_seconds < 0 or (max_rounds is not None and max_rounds < 0):
        raise EdgepackError("--min-rounds, --max-rounds and --max-seconds must not be "
                            "negative")
    if max_seconds > MAX_SECONDS:
        raise EdgepackError(f"--max-seconds must be at most {MAX_SECONDS:g}")
    if iterations.strip().lower() == "auto":
        auto_iterations, count = True, max(AUTO_FIRST, min_iterations)
    else:
        try:
            count = int(iterations)
        except ValueError:
            raise EdgepackError(f"--iterations {iterations!r}: give a whole number or auto"
                                ) from None
        if not 1 <= count <= MAX_ITERATIONS:
            raise EdgepackError(f"--iterations must be from 1 to {MAX_ITERATIONS}")
        auto_iterations = False
    rules = ValidityRules(min_iterations=min_iterations, min_seconds=min_seconds,
                          max_seconds=max_run_seconds,
                          max_cv=(max_cv / 100 if max_cv is not None else DEFAULT_MAX_CV))
    params = AbParams(
        min_rounds=min_rounds, max_rounds=max_rounds, max_seconds=max_seconds,
        precision=precision / 100, equivalence=equivalence / 100,
        max_slowdown=max_slowdown / 100 if max_slowdown is not None else None,
        cooldown_s=cooldown_s, cooldown_auto=auto, order=order, seed=seed, rules=rules,
        figure=figure,
        auto_iterations=auto_iterations)
    bench = BenchParams(
        repeat=1, iterations=count, min_iterations=min_iterations,
        min_seconds=min_seconds, max_seconds=max_run_seconds, warmup=warmup,
        threads=(threads,), eps=(ep,),
        cpu_affinity=parse_cpu_affinity(cpu_affinity) if cpu_affinity is not None else None,
        timeout_s=timeout if timeout is not None else BenchParams().timeout_s)
    request = AbRequest(bundle_a, bundle_b, device, bench, params, engine=engine, db=db,
                        label=label, report_dir=report_dir)
    result = ab_session(request, _progress(quiet=json_out))
    if json_out:
        from edgepack.ab import ab_document

        emit_json(ab_document(result))
    else:
        _print(result)
    if result.exit_code:
        raise typer.Exit(int(result.exit_code))


def _progress(quiet: bool) -> AbListener:
    from edgepack.ab import AbListener

    class Progress(AbListener):
        def on_round(self, rnd, estimate) -> None:  # noqa: ANN001
            if quiet:
                return
            a, b = rnd.stats("A"), rnd.stats("B")
            text = (f"round {rnd.index + 1} {rnd.order}: A {fmt(a.median_ms if a else None)} "
                    f"ms, B {fmt(b.median_ms if b else None)} ms, B/A "
                    f"{'-' if rnd.ratio is None else f'{rnd.ratio:.4f}'}, "
                    f"{rnd.validity.text()}")
            if estimate is not None:
                text += (f"; so far {estimate.ratio:.4f} [{estimate.low:.4f}, "
                         f"{estimate.high:.4f}] +/-{estimate.half_width * 100:.2f} %")
            note(text)

    return Progress()


def _print(result: AbResult) -> None:
    from rich.markup import escape as esc
    from rich.table import Table

    out = console()
    p = result.params
    out.print(f"ab on {esc(result.serial)}, {esc(result.config_key)}: A = {esc(result.a.name)} "
              f"({result.a.sha256[:8]}), B = {esc(result.b.name)} ({result.b.sha256[:8]}); "
              f"{len(result.rounds)} round(s) ({p.order}), {len(result.usable_rounds)} used; "
              f"stopped by {result.stopped_by}; session {result.session}, "
              f"{result.wall_s:.1f} s", highlight=False)
    table = Table(title="latency over the rounds used (ms)", title_justify="left")
    for col in ("bundle", "n", "median", "mean", "p90", "CV", "validity"):
        table.add_column(col, justify="left" if col in ("bundle", "validity") else "right")
    counts = {v: sum(1 for r in result.rounds if r.validity.verdict.value == v)
              for v in ("valid", "semivalid", "invalid")}
    validity = ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "-"
    for side, ref in (("A", result.a), ("B", result.b)):
        s = result.side_stats(side)
        table.add_row(f"{side} {ref.name}", str(s.count) if s else "0",
                      fmt(s.median_ms if s else None), fmt(s.mean_ms if s else None),
                      fmt(s.p90_ms if s else None), f"{s.cv * 100:.1f}%" if s else "-",
                      validity)
    out.print(table)
    for name, e in (("median", result.median), ("p25", result.p25), ("mean", result.mean),
                    ("p90", result.p90)):
        if e is not None:
            out.print(f"B/A {name:6} {e.ratio:.4f}  95% CI [{e.low:.4f}, {e.high:.4f}]  "
                      f"({(e.ratio - 1) * 100:+.2f} %, +/-{e.half_width * 100:.2f} %)",
                      markup=False)
    colour = {"faster": "green", "slower": "red", "same": "green"}.get(result.verdict, "yellow")
    out.print(f"verdict: B is [{colour}]{result.verdict}[/{colour}] than A"
              if result.verdict in ("faster", "slower") else
              f"verdict: [{colour}]{result.verdict}[/{colour}] (equivalence +/-"
              f"{p.equivalence * 100:g} %)", highlight=False)
    out.print(f"(the verdict rests on the {p.figure} ratio)", markup=False)
    if result.too_slow and p.max_slowdown is not None:
        out.print(f"[red]B is slower than A by more than {p.max_slowdown * 100:g} %[/red] "
                  "(--max-slowdown)", highlight=False)
    # Every reason once, with the rounds it applied to: a noisy session would otherwise print
    # a line per round.
    reasons: dict[tuple[str, str], list[int]] = {}
    for r in result.rounds:
        for reason in r.validity.reasons:
            kind = "invalid, NOT USED" if not r.validity.usable else r.validity.verdict.value
            text = reason.split(": ", 1)[-1] if reason[:3] in ("A: ", "B: ") else reason
            if "CV " in text:
                text = f"CV above {p.rules.max_cv * 100:g} %" if p.rules.max_cv else text
            reasons.setdefault((kind, text), []).append(r.index + 1)
    for (kind, text), where in reasons.items():
        shown = ", ".join(map(str, where[:8])) + (", ..." if len(where) > 8 else "")
        out.print(f"{kind}: {esc(text)} in {len(where)} round(s) ({shown})", highlight=False)
    if p.cooldown_auto or p.cooldown_s:
        from edgepack.report.ab_report import cooldown_text

        out.print(cooldown_text(result), markup=False)
    if result.outputs_note:
        out.print(f"note: {result.outputs_note}", markup=False)
    else:
        from edgepack.cli.render import verdict_table

        for d in result.outputs:
            out.print(verdict_table(d.verdicts, title=f"outputs of B against A, input set "
                                                      f"{d.set_index}"))
    for text in result.notes:
        out.print(f"note: {text}", markup=False)
    if result.error:
        out.print(f"[yellow]stopped[/yellow]: {esc(result.error)}; the "
                  f"{len(result.rounds)} round(s) measured are stored", highlight=False)
