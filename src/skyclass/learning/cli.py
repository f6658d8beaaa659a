"""``skyclass queue``: the active-learning queue and its simulation."""

from __future__ import annotations

from pathlib import Path

import click

from skyclass.cli_params import OBJECT_IDS
from skyclass.learning.strategies import STRATEGIES


@click.group("queue")
def queue() -> None:
    """Which objects to label next (e.g. for follow-up spectroscopy), and whether it pays.

    \b
    A loop:
      skyclass queue create sgq --catalog survey --strategy entropy --budget 500
      skyclass queue show sgq --catalog survey          # hand the list to the observers
      skyclass queue label sgq --catalog survey labels.csv
      skyclass train ... --label class --queue-labels   # the next version learns from them
    """


@queue.command("create")
@click.argument("target")
@click.option("--catalog", required=True, help="Registered catalog scored by TARGET.")
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default="entropy",
    show_default=True,
    help="entropy: -sum p ln p; margin: 1 - (p1 - p2); least_confident: 1 - max p; random.",
)
@click.option("--budget", type=click.IntRange(1, 1_000_000), required=True, help="Objects.")
@click.option(
    "--ood-weight",
    is_flag=True,
    help="Multiply the score by the domain propensity p(application | x) (run skyclass domain "
    "first): favours objects unlike the training set.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --strategy random.")
def create(
    target: str, catalog: str, strategy: str, budget: int, ood_weight: bool, seed: int
) -> None:
    """Propose the next BUDGET objects to label from TARGET's stored predictions.

    TARGET is a deployment, MODEL:VERSION or model_version_id whose
    predictions of the catalog are stored (skyclass score). Objects already
    queued (not expired) or in the version's training snapshot are left out.
    Each call writes the next iteration of skyclass.label_queue.
    """
    from skyclass.db.connect import connect
    from skyclass.learning.queue import create_queue

    with connect() as conn:
        it = create_queue(conn, target, catalog, strategy, budget, ood_weight=ood_weight, seed=seed)
    _echo(it)


@queue.command("show")
@click.argument("target")
@click.option("--catalog", required=True, help="Registered catalog.")
@click.option("--iteration", type=click.IntRange(min=1), help="Iteration (default: newest).")
def show(target: str, catalog: str, iteration: int | None) -> None:
    """List an iteration of the queue: rank, object, score, state, label."""
    from skyclass.db.connect import connect
    from skyclass.learning.queue import show_queue

    with connect() as conn:
        _echo(show_queue(conn, target, catalog, iteration=iteration))


@queue.command("label")
@click.argument("target")
@click.argument("labels", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--catalog", required=True, help="Registered catalog.")
@click.option(
    "--source",
    help="Provenance of the labels (default: the file name); a 'source' column overrides it.",
)
def label(target: str, labels: Path, catalog: str, source: str | None) -> None:
    """Import labels (CSV: object_id,label[,source]) for queued objects.

    Every row must name an object proposed or observed in TARGET's queue on the
    catalog, with one of the model's classes; otherwise nothing is imported
    and the error names the line. Train with --queue-labels to use them.
    """
    from skyclass.db.connect import connect
    from skyclass.learning.queue import import_labels

    with connect() as conn:
        n = import_labels(conn, target, catalog, labels, source=source or labels.name)
    click.echo(f"labelled {n} queued object(s) of {catalog} from {labels}")


@queue.command("mark")
@click.argument("target")
@click.option("--catalog", required=True, help="Registered catalog.")
@click.option("--ids", type=OBJECT_IDS, required=True, help="Object ids (commas or spaces).")
@click.option(
    "--state",
    type=click.Choice(["observed", "expired"]),
    required=True,
    help="observed: followed up, label pending; expired: dropped from the queue.",
)
def mark(target: str, catalog: str, ids: list[int], state: str) -> None:
    """Mark queued objects observed (followed up, label pending) or expired (dropped)."""
    from skyclass.db.connect import connect
    from skyclass.learning.queue import set_state

    with connect() as conn:
        n = set_state(conn, target, catalog, ids, state)
    click.echo(f"{n} queue entr{'y' if n == 1 else 'ies'} of {catalog} now {state}")


@queue.command("simulate")
@click.argument("feature_set")
@click.option("--label", "label_column", required=True, help="Label column of the catalog.")
@click.option("--target-class", default="QSO", show_default=True, help="Class for completeness.")
@click.option(
    "--purity",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.95,
    show_default=True,
    help="Purity target of the completeness curve.",
)
@click.option(
    "--start",
    type=click.IntRange(min=10),
    default=500,
    show_default=True,
    help="Random labels to start from.",
)
@click.option(
    "--step", type=click.IntRange(min=1), default=500, show_default=True, help="Labels per round."
)
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True, help="Rounds.")
@click.option(
    "--seeds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Repeats with other test sets and start labels (the error bars).",
)
@click.option(
    "--max-iter",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Boosting iterations of the model refitted each round.",
)
def simulate_command(
    feature_set: str,
    label_column: str,
    target_class: str,
    purity: float,
    start: int,
    step: int,
    rounds: int,
    seeds: int,
    max_iter: int,
) -> None:
    """Replay the labelling loop on labelled objects: does a strategy beat random labelling?

    FEATURE_SET is a feature build (NAME or NAME:HASH or id) whose catalog holds
    the --label column. Per seed a stratified 20% test set is held out; from
    the same random --start labels, each strategy adds --step objects per
    round for --rounds rounds. Accuracy and the --target-class completeness at
    --purity are stored per round in skyclass.learning_curve and compared with
    random labelling (mean difference over seeds with its standard error).
    """
    from skyclass.db.connect import connect
    from skyclass.learning.simulate import (
        MODEL_PARAMS,
        SimulationSettings,
        compare_with_random,
        simulate,
    )

    settings = SimulationSettings(
        start=start,
        step=step,
        rounds=rounds,
        seeds=seeds,
        purity=purity,
        model_params={**MODEL_PARAMS, "max_iter": max_iter},
    )
    with (
        connect() as conn,
        click.progressbar(
            length=seeds * len(settings.strategies) * (rounds + 1), label="fits", file=None
        ) as bar,
    ):
        last = [0]

        def progress(done: int, total: int) -> None:
            bar.update(done - last[0])
            last[0] = done

        result = simulate(conn, feature_set, label_column, target_class, settings, progress)
    click.echo(
        f"simulation {result.simulation_id}: {seeds} seeds x {len(settings.strategies)} "
        f"strategies x {rounds + 1} rounds in {result.seconds:.0f} s"
    )
    n = result.n_labels()
    click.echo(f"labels: {n[0]} -> {n[-1]}")
    for metric, name in (
        ("accuracy", "accuracy"),
        ("completeness", f"{target_class} completeness at {purity:.0%} purity"),
    ):
        click.echo(f"\n{name} at the last round (mean ± std over seeds), and minus random:")
        diffs = compare_with_random(result, metric)
        for strategy in settings.strategies:
            last_round = result.curve(strategy, metric)[-1]
            text = f"  {strategy:>15}: {last_round.mean():.4f} ± {last_round.std(ddof=1):.4f}"
            if strategy in diffs:
                mean, se = diffs[strategy]
                verdict = (
                    "better" if mean > 2 * se else "worse" if mean < -2 * se else "no difference"
                )
                text += f"   {mean:+.4f} ± {se:.4f} ({verdict})"
            click.echo(text)


def _echo(it: object) -> None:
    from skyclass.learning.queue import QueueIteration

    assert isinstance(it, QueueIteration)
    click.echo(
        f"queue iteration {it.iteration} of model version {it.model_version_id} on "
        f"{it.catalog} ({it.strategy}): {len(it.entries)} object(s)"
    )
    click.echo(f"{'rank':>5} {'object_id':>12} {'score':>8} {'state':>9}  label")
    for e in it.entries:
        click.echo(f"{e.rank:>5} {e.object_id:>12} {e.score:>8.4f} {e.state:>9}  {e.label or ''}")
