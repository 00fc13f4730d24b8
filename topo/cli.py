"""Command line: parses options, wires the engine, prints. Exit codes: 0 ok, 1 error, 2 changes pending."""

from __future__ import annotations

import gc
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from topo import __version__
from topo.cli_defer import defer_typer_adapters
from topo.cli_options import UNSET, ConnectionOptions, connect, connection_options, resolve
from topo.errors import NotConverged, TopoError
from topo.lazy import lazy_import
from topo.redact import redact_url, scrub

# Imported on first use: most commands need only a few of these, and requests and the pydantic models
# alone made every start (even `topo version`) 0.3 s slower.
_ = lazy_import
_(globals(), "topo.client", "ManagementClient")
_(globals(), "topo.definitions", "read_definitions")
_(globals(), "topo.diff", "Action")
_(globals(), "topo.engine", "apply_and_verify", "build_plan", "manages_access", "read_desired_scope", "release_seen")
_(globals(), "topo.engine", "scope", "NOT_VERIFIED", "declares_users_or_access")
_(globals(), "topo", "preflight")
_(globals(), "topo.export", "ExportResult", "ExportScope", "build_export")
_(globals(), "topo.load", "Loaded", "load_topology")
_(globals(), "topo.files", "guess_vhosts")
_(globals(), "topo.lock", "ApplyLock", "lock_scope")
_(globals(), "topo.model", "BrokerSpec", "json_schema")
_(globals(), "topo.outcome", "Outcome", "Status", "render_outcome_json", "render_outcome_markdown")
_(globals(), "topo.plan", "Plan", "Step")
_(globals(), "topo.read", "keep_users_with_access", "read_actual", "read_for_export")
_(globals(), "topo.render", "plan_to_json", "render_text")
_(globals(), "topo.render_markdown", "render_markdown")
_(globals(), "topo.savedplan", "SavedPlan", "key_material", "read_identity", "refuse_if_stale", "refuse_other_broker")
_(globals(), "topo.savedplan", "save")
_(globals(), "topo.savedplan", load_saved="load")
_(globals(), "topo.state", "Actual", "Key", "Kind")
_(globals(), "topo.target", "Selection", "narrow", "parse_targets", "select")
_(globals(), "topo.varfile", "environment_with")
del _
defer_typer_adapters()
if TYPE_CHECKING:  # the real imports, for linters and type checkers
    from concurrent.futures import Future

    from topo import preflight
    from topo.client import ManagementClient
    from topo.definitions import read_definitions
    from topo.diff import Action
    from topo.engine import (
        NOT_VERIFIED,
        apply_and_verify,
        build_plan,
        declares_users_or_access,
        manages_access,
        read_desired_scope,
        release_seen,
        scope,
    )
    from topo.export import ExportResult, ExportScope, build_export
    from topo.files import guess_vhosts
    from topo.load import Loaded, load_topology
    from topo.lock import ApplyLock, lock_scope
    from topo.model import BrokerSpec, json_schema
    from topo.outcome import Outcome, Status, render_outcome_json, render_outcome_markdown
    from topo.plan import Plan, Step
    from topo.read import keep_users_with_access, read_actual, read_for_export
    from topo.render import plan_to_json, render_text
    from topo.render_markdown import render_markdown
    from topo.savedplan import SavedPlan, key_material, read_identity, refuse_if_stale, refuse_other_broker, save
    from topo.savedplan import load as load_saved
    from topo.state import Actual, Key, Kind
    from topo.target import Selection, narrow, parse_targets, select
    from topo.varfile import environment_with

app = typer.Typer(
    name="topo",
    help="RabbitMQ messaging topology as code: validate, plan and apply YAML against the management API.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # its tracebacks show local variables, which hold passwords
    # Plain help: rich's boxes showed flags as <bool>, -f as <list[str]> and cut text at 80 columns.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)

Files = Annotated[
    list[str] | None,
    typer.Option(
        "--file", "-f", metavar="PATH", help="Topology file or directory (repeatable). Default: topology.yaml."
    ),
]
VarFiles = Annotated[
    list[str] | None,
    typer.Option(
        "--var-file",
        metavar="FILE",
        help="Variables for ${...} from a dotenv file (repeatable; later files win, the environment wins over all).",
    ),
]


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"


FormatOption = Annotated[
    OutputFormat | None,
    typer.Option("--format", help="Output: text (default), json, or markdown (for pull requests and CI summaries)."),
]


def _output_format(chosen: OutputFormat | None, as_json: bool) -> OutputFormat:
    if as_json and chosen not in (None, OutputFormat.JSON):
        raise TopoError(f"--json and --format {chosen.value} contradict each other: pick one")
    return OutputFormat.JSON if as_json else chosen or OutputFormat.TEXT


Targets = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        metavar="KIND/VHOST/NAME",
        help="Plan only this object and what it depends on (repeatable; NAME may be a pattern like 'orders.*').",
    ),
]
OnlyVhosts = Annotated[
    list[str] | None,
    typer.Option(
        "--vhost", metavar="VHOST", help="Plan only this vhost's objects and what they depend on (repeatable)."
    ),
]
LockTimeout = Annotated[
    float,
    typer.Option(
        "--lock-timeout",
        min=0,
        max=86400,
        metavar="SECONDS",
        help="Seconds to wait for another apply's lock on the broker. Default: 0 (fail at once).",
    ),
]
NoLock = Annotated[
    bool,
    typer.Option("--no-lock", help="Apply without the lock (only where nothing else ever applies to the broker)."),
]
NoColor = Annotated[bool, typer.Option("--no-color", help="No colour (also: NO_COLOR set, or not a terminal).")]
Migrate = Annotated[
    bool,
    typer.Option(
        "--migrate",
        help="Replace queues (new type or arguments) by moving their messages while traffic flows (docs/migrate.md).",
    ),
]


def _show_version(value: bool) -> None:
    if value:
        _out(f"topo {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _main(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """RabbitMQ messaging topology as code: validate, plan and apply YAML against the management API."""


def _out(text: str) -> None:
    # Plans and JSON are built from the files and the broker, never from credentials; scrubbing them
    # would corrupt names or numbers that happen to equal a password.
    sys.stdout.write(text)
    sys.stdout.flush()


def _out_json(value: Any) -> None:
    """`_out(json.dumps(value, indent=2, ensure_ascii=False) + "\n")`, written as it is encoded: with an
    indent, json.dumps keeps every fragment (about 40 small strings per change) in one list before joining
    them, and then the whole text: 695 MB peak for `plan --json` of 105,002 objects."""
    parts: list[str] = []
    size = 0
    for chunk in json.JSONEncoder(indent=2, ensure_ascii=False).iterencode(value):
        parts.append(chunk)
        size += len(chunk)
        if size >= 1 << 16:
            sys.stdout.write("".join(parts))
            parts.clear()
            size = 0
    parts.append("\n")
    sys.stdout.write("".join(parts))
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(scrub(text).rstrip("\n") + "\n")
    sys.stderr.flush()


def _colour(no_color: bool) -> bool:
    return not no_color and "NO_COLOR" not in os.environ and sys.stdout.isatty()


def _guarded(body: Callable[[], int]) -> None:
    """Runs a command: known errors become a message and exit 1, never a traceback."""
    try:
        code = body()
    except TopoError as exc:
        for warning in getattr(exc, "warnings", []):
            _err(f"Warning: {warning}")
        _err(f"Error: {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        _err("Interrupted.")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # an unexpected bug: say so plainly, traceback only on request
        _err(f"Internal error: {type(exc).__name__}: {exc}")
        if os.environ.get("TOPO_DEBUG"):
            _err("".join(traceback.format_exc()))
        else:
            _err("This is a bug in topo. Set TOPO_DEBUG=1 for details.")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _client(options: ConnectionOptions, broker: BrokerSpec | None = None) -> ManagementClient:
    return connect(options, broker, notify=_err)


@dataclass
class Planned:
    loaded: Loaded
    client: ManagementClient
    plan: Plan
    actual: Actual
    selection: Selection | None = None


def _load_and_plan(
    files: list[str] | None,
    options: ConnectionOptions,
    before_read: Callable[[ManagementClient, Loaded], None] | None = None,
    var_files: list[str] | None = None,
    targets: list[str] | None = None,
    only_vhosts: list[str] | None = None,
    migrate: bool = False,
    migrate_queues: Iterable[Key] = (),
) -> Planned:
    """Loads the files and plans; `before_read` (apply's lock) runs before the broker is read.
    `migrate_queues`: queues to migrate as if they said `migrate: true` (a saved plan's migrations)."""
    # An apply reads the broker only once it holds the lock, so no read may start early.
    variables = environment_with(var_files)
    early = None if before_read is not None else _prefetch(files or [], options)
    loaded = load_topology(files or [], variables)
    if migrate:  # --migrate: every queue as if it said `migrate: true`
        loaded.desired.migrate.update(key for key in loaded.desired.objects if key.kind is Kind.QUEUE)
    loaded.desired.migrate.update(key for key in migrate_queues if key in loaded.desired.objects)
    client = _client(options, loaded.broker)
    connection = client.connection
    if before_read is not None:
        before_read(client, loaded)
    actual = None
    if early is not None:
        early_client, vhosts, reading = early
        # The early read counts only if it asked the same broker, as the same user, about the same vhosts.
        same_read = vhosts == scope(loaded.desired) and not manages_access(loaded.desired)
        if early_client.connection == connection:
            client = early_client  # it knows whether the broker has answered (see ManagementClient)
            if same_read:
                actual = reading.result()  # the same read would fail the same way: its error stands
    if actual is None:
        # Tags first: a non-administrator declaring users is refused before the listings that would fail.
        # (Only users and access need the administrator tag: global parameters need policymaker, checked later.)
        preflight.refuse_before_reading(client, loaded.desired, declares_users_or_access(loaded.desired))
        actual = read_desired_scope(client, loaded.desired)
    the_plan = build_plan(client, loaded.desired, actual)
    if not targets and not only_vhosts:
        return Planned(loaded, client, the_plan, actual)
    known = [*loaded.desired.vhosts, *loaded.desired.absent_vhosts, *actual.vhosts]
    selection = select(
        list(the_plan.changes), loaded.desired, actual, parse_targets(targets or [], known), list(only_vhosts or [])
    )
    return Planned(loaded, client, narrow(the_plan, selection), actual, selection)


def _plan_document(planned: Planned) -> dict[str, object]:
    document = plan_to_json(planned.plan)
    if planned.selection is not None:
        document["partial"] = {
            "targets": [t.text for t in planned.selection.targets],
            "vhosts": list(planned.selection.vhosts),
        }
    return document


def _prefetch(
    files: list[str], options: ConnectionOptions
) -> tuple[ManagementClient, list[str], Future[Actual]] | None:
    """Starts reading the broker while the files are parsed, when options or environment say where it is.

    On large topologies parsing and reading take about as long as each other; overlapping them halves
    the wait. The definitions request goes first, before the rest of the read is even imported. Without
    a URL from options or environment the broker: section decides, after parsing.
    """
    if not (options.url or os.environ.get("TOPO_URL")):
        return None
    vhosts = guess_vhosts(files)
    if not vhosts:
        return None
    try:
        connection = resolve(options)
    except TopoError:
        return None
    from topo.first_read import EarlyDefinitions

    # The longest request leaves now, before requests, topo.read and the models are imported (0.5 s).
    definitions = EarlyDefinitions(connection, vhosts)
    client = ManagementClient(connection, notify=_err)
    # Here, not at the top: concurrent.futures brings logging, 3 ms of every start that reads no broker.
    import threading
    from concurrent.futures import Future

    reading: Future[Actual] = Future()

    def read() -> None:
        try:
            reading.set_result(read_actual(client, vhosts, early=definitions))
        except BaseException as exc:  # handed to whoever waits for the result
            reading.set_exception(exc)

    # A daemon thread: a file with errors must not keep the process waiting for a slow broker.
    threading.Thread(target=read, name="topo-prefetch", daemon=True).start()
    return client, vhosts, reading


@app.command()
def validate(files: Files = None, var_files: VarFiles = None) -> None:
    """Check topology files offline: schema, types, names, references. No broker needed."""

    def run() -> int:
        loaded = load_topology(files or [], environment_with(var_files), every_version=True)
        desired = loaded.desired
        count = len(desired.objects) + len(desired.absent)
        for warning in desired.warnings:
            _err(f"Warning: {warning}")
        _out(f"Valid: {len(loaded.files)} file(s), {len(desired.vhosts)} vhost(s), {count} object(s).\n")
        return 0

    _guarded(run)


@app.command()
@connection_options
def plan(
    files: Files = None,
    var_files: VarFiles = None,
    options: ConnectionOptions = UNSET,
    as_json: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
    output_format: FormatOption = None,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when changes are pending (0 = in sync, 1 = error).")
    ] = False,
    out: Annotated[
        str | None,
        typer.Option("--out", metavar="FILE", help="Also save the plan to FILE, for `topo apply FILE` (no secrets)."),
    ] = None,
    targets: Targets = None,
    only_vhosts: OnlyVhosts = None,
    fail_on_unmanaged: Annotated[
        bool,
        typer.Option(
            "--fail-on-unmanaged",
            help="With --detailed-exitcode: exit 2 also when the broker has objects the files do not declare.",
        ),
    ] = False,
    no_color: NoColor = False,
    migrate: Migrate = False,
) -> None:
    """Show what apply would change on the live broker."""

    def run() -> int:
        if fail_on_unmanaged and not detailed_exitcode:
            raise TopoError("--fail-on-unmanaged changes the exit code of --detailed-exitcode: pass both")
        fmt = _output_format(output_format, as_json)
        planned = _load_and_plan(
            files, options, var_files=var_files, targets=targets, only_vhosts=only_vhosts, migrate=migrate
        )
        the_plan = planned.plan
        if out:
            identity = read_identity(planned.client)
            connection = planned.client.connection
            size = save(
                out,
                the_plan,
                planned.actual,
                identity,
                url=connection.url,
                user=connection.user,
                material=key_material(connection.password),
                files=list(files or []),
                var_files=list(var_files or []),
                targets=list(targets or []),
                vhosts=list(only_vhosts or []),
                plan_json=plan_to_json(the_plan),
            )
            _err(f"Saved the plan to {out} ({size:,} bytes): apply exactly it with `topo apply {out}`.")
        if fmt is OutputFormat.JSON:
            _out_json(_plan_document(planned))
        elif fmt is OutputFormat.MARKDOWN:
            _out(render_markdown(the_plan))
        else:
            _out(render_text(the_plan, _colour(no_color)))
        drift = not the_plan.empty or (fail_on_unmanaged and bool(the_plan.unmanaged))
        return 2 if detailed_exitcode and drift else 0

    _guarded(run)


@app.command()
@connection_options
def apply(
    plan_file: Annotated[
        str | None,
        typer.Argument(
            metavar="PLAN_FILE",
            help="A plan saved by `topo plan --out FILE`: apply exactly it, without asking, or refuse if stale.",
            show_default=False,
        ),
    ] = None,
    files: Files = None,
    var_files: VarFiles = None,
    options: ConnectionOptions = UNSET,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Apply without asking.")] = False,
    allow_data_loss: Annotated[
        bool, typer.Option("--allow-data-loss", help="Allow deleting or replacing queues that hold messages.")
    ] = False,
    allow_disruption: Annotated[
        bool,
        typer.Option(
            "--allow-disruption",
            help="Allow deleting or replacing queues that have consumers (the broker cancels them).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
    output_format: FormatOption = None,
    lock_timeout: LockTimeout = 0.0,
    no_lock: NoLock = False,
    targets: Targets = None,
    only_vhosts: OnlyVhosts = None,
    no_color: NoColor = False,
    migrate: Migrate = False,
) -> None:
    """Show the plan, ask, then make the broker match the files and verify it does."""
    held: list[ApplyLock] = []
    saved: list[SavedPlan] = []

    def take_lock(client: ManagementClient, loaded: Loaded) -> None:
        if saved:
            refuse_other_broker(str(plan_file), saved[0], read_identity(client))
        if no_lock:
            return
        vhosts, broker_wide = lock_scope(client, loaded.desired)
        lock = ApplyLock(client)
        held.append(lock)
        lock.acquire(vhosts, lock_timeout, broker_wide)
        for warning in lock.warnings:
            _err(f"Warning: {warning}")

    def run() -> int:
        fmt = _output_format(output_format, as_json)
        if plan_file is not None:
            if files or var_files or targets or only_vhosts:
                raise TopoError(
                    "a saved plan names its own files, var files and targets: give only the plan file "
                    "(or no plan file and the options)"
                )
            saved.append(load_saved(plan_file))
        if fmt is not OutputFormat.TEXT and not (auto_approve or saved):
            raise TopoError(f"--format {fmt.value} needs --auto-approve: there is no one to ask")
        outcome = Outcome()
        try:
            code = apply_files(fmt, outcome)
        except TopoError as exc:
            outcome.failed_with(exc)
            _emit_outcome(fmt, outcome)
            raise
        _emit_outcome(fmt, outcome)
        return code

    def apply_files(fmt: OutputFormat, outcome: Outcome) -> int:
        if saved:
            plan_files, plan_vars, plan_targets, plan_vhosts = (
                saved[0].files,
                saved[0].var_files,
                saved[0].targets,
                saved[0].vhosts,
            )
        else:
            plan_files, plan_vars, plan_targets, plan_vhosts = files, var_files, targets, only_vhosts
        # A saved plan's migrations are planned as migrations again (and compared as such), --migrate or not.
        saved_migrations = [Key(Kind.QUEUE, m["vhost"], m["queue"]) for m in saved[0].migrations] if saved else []
        planned = _load_and_plan(
            plan_files, options, take_lock, plan_vars, plan_targets, plan_vhosts, migrate, saved_migrations
        )
        loaded, client, the_plan = planned.loaded, planned.client, planned.plan
        if saved:
            material = key_material(client.connection.password)
            refuse_if_stale(str(plan_file), saved[0], the_plan, planned.actual, material)
        outcome.plan = the_plan
        outcome.warnings = [warning for lock in held for warning in lock.warnings]
        if fmt is OutputFormat.TEXT:
            _out(render_text(the_plan, _colour(no_color), allow_data_loss))
        if the_plan.empty:
            release_seen(client, loaded.desired, the_plan, planned.actual)
            outcome.status = Status.NO_CHANGES
            return 0
        the_plan.raise_if_unsafe(allow_data_loss, the_plan.me, allow_disruption)
        if not auto_approve and not saved and not _confirm():  # a saved plan was reviewed already
            outcome.status = Status.CANCELLED
            _err("Apply cancelled.")
            return 1
        notes: list[str] = []
        progress = _locking(held, outcome.record, _progress_printer())
        try:
            count = apply_and_verify(
                client,
                loaded.desired,
                the_plan,
                allow_data_loss=allow_data_loss,
                allow_disruption=allow_disruption,
                progress=progress,
                notes=notes,
                report=lambda text: _err(f"migrate: {text}"),
            )
        except NotConverged as exc:
            # A partial apply verifies what it targeted; what it left out is still pending, as planned.
            if planned.selection is None or any(c.key in planned.selection.keys for c in exc.remaining):
                raise
            count = len(outcome.done)
        outcome.succeeded()
        for vhost in (vhost for lock in held for vhost in lock.lost):
            outcome.warnings.append(
                f"the apply lock on vhost {vhost!r} was lost during the apply (the broker was unreachable for longer "
                "than its expiry, and another apply took it); the verification passed, but check the broker"
            )
            _err(f"Warning: {outcome.warnings[-1]}")
        outcome.warnings.extend(notes)
        summary = the_plan.summary()
        unverified = any(note.startswith(NOT_VERIFIED) for note in notes)
        verified = NOT_VERIFIED if unverified else "the broker matches the topology"
        _err(
            f"Apply complete: {summary['add']} added, {summary['change']} changed, {summary['replace']} replaced, "
            f"{summary['destroy']} destroyed ({count} step{'' if count == 1 else 's'}). Verified: {verified}."
        )
        for note in notes:
            _err(f"Note: {note}")
        return 0

    try:
        _guarded(run)
    finally:
        for lock in held:
            lock.release()


def _emit_outcome(fmt: OutputFormat, outcome: Outcome) -> None:
    if fmt is OutputFormat.JSON:
        _out(render_outcome_json(outcome))
    elif fmt is OutputFormat.MARKDOWN:
        _out(render_outcome_markdown(outcome))


def _locking(held: list[ApplyLock], *progress: Callable[[int, int, Step], None]) -> Callable[[int, int, Step], None]:
    """Progress callbacks that also lock each vhost the apply creates, right after it exists."""

    def each(done: int, total: int, step: Step) -> None:
        for callback in progress:
            callback(done, total, step)
        if held and step.change.kind is Kind.VHOST and step.phase is Action.CREATE:
            held[0].take_new(step.change.key.vhost)

    return each


def _confirm() -> bool:
    if not sys.stdin.isatty():
        raise TopoError("refusing to apply without confirmation: no terminal to ask on; pass --auto-approve")
    _err("Do you want to perform these actions? Only 'yes' will be accepted.")
    sys.stderr.write("  Enter a value: ")
    sys.stderr.flush()
    return sys.stdin.readline().strip() == "yes"


def _progress_printer() -> Callable[[int, int, Step], None]:
    """Progress on stderr for long applies: a line every 10% (a live counter on a terminal)."""
    tty = sys.stderr.isatty()

    def show(done: int, total: int, step: Step) -> None:
        if total < 200:
            return
        if tty:
            sys.stderr.write(f"\r  applied {done}/{total}")
            if done == total:
                sys.stderr.write("\n")
        elif done == total or done % max(total // 10, 1) == 0:
            sys.stderr.write(f"  applied {done}/{total}\n")
        else:
            return  # nothing written: no flush (21,000 of them after one bulk import)
        sys.stderr.flush()

    return show


@app.command()
@connection_options
def export(
    vhost: Annotated[
        list[str] | None,
        typer.Option("--vhost", metavar="VHOST", help="Export only this vhost (repeatable). Default: all."),
    ] = None,
    from_definitions: Annotated[
        str | None,
        typer.Option(
            "--from-definitions",
            metavar="FILE",
            help="Read a definitions JSON file (rabbitmqctl export_definitions) instead of a broker; offline.",
        ),
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
    ] = None,
    keep_hashes: Annotated[
        bool,
        typer.Option("--keep-hashes", help="Keep password hashes (password_hash) instead of ${VARIABLE} placeholders."),
    ] = False,
    no_users: Annotated[bool, typer.Option("--no-users", help="Leave users and permissions out.")] = False,
    include_client_owned: Annotated[
        bool,
        typer.Option(
            "--include-client-owned",
            help="Keep the objects clients declare for themselves at run time (auto-delete, x-expires, Celery's...).",
        ),
    ] = False,
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore", metavar="PATTERN", help="Leave out objects whose name matches (* ? [...]; repeatable)."
        ),
    ] = None,
    options: ConnectionOptions = UNSET,
) -> None:
    """Write the topology of a live broker, or of a definitions file, as topo YAML."""

    def run() -> int:
        scope = ExportScope(include_client_owned, tuple(ignore or ()))
        result = _exported(vhost, from_definitions, options, keep_hashes, not no_users, scope)
        for note in result.notes:
            _err(f"Note: {note}")
        if result.variables.names:
            width = max(map(len, result.variables.names))
            listing = "\n".join(f"  {name:<{width}}  {what}" for name, what in result.variables.names.items())
            _err(f"Set these environment variables before topo plan or apply:\n{listing}")
        if output:
            try:
                with open(output, "w", encoding="utf-8") as handle:
                    handle.write(result.text)
            except OSError as exc:
                raise TopoError(f"cannot write {output}: {exc.strerror}") from None
            _err(f"Wrote {output}.")
        else:
            _out(result.text)
        return 0

    _guarded(run)


def _exported(
    vhosts: list[str] | None,
    from_definitions: str | None,
    options: ConnectionOptions,
    keep_hashes: bool,
    users: bool,
    scope: ExportScope,
) -> ExportResult:
    if from_definitions is not None:
        if options.url:
            raise TopoError("--from-definitions reads a file: it takes no --url")
        read = read_definitions(from_definitions)
        missing = [name for name in vhosts or [] if name not in read.vhosts]
        if missing:
            raise TopoError(f"{from_definitions} has no vhost {', '.join(map(repr, missing))}")
        source = f"definitions file {os.path.basename(from_definitions)}"
        selected = sorted(vhosts or read.vhosts)
        if vhosts:
            keep_users_with_access(read.actual, selected)
        return build_export(read.actual, selected, users and read.has_users, keep_hashes, source, read.notes, scope)
    client = _client(options)
    connection = client.connection
    actual, selected, with_users, notes = read_for_export(client, vhosts, users)
    source = f"{redact_url(connection.url)} (RabbitMQ {actual.version})"
    return build_export(actual, selected, with_users, keep_hashes, source, notes, scope)


@app.command()
@connection_options
def lint(
    files: Files = None,
    live: Annotated[bool, typer.Option("--live", help="Judge the live broker's state instead of the files.")] = False,
    target_version: Annotated[
        str | None,
        typer.Option(
            "--target-version",
            metavar="X.Y",
            help="RabbitMQ version to check against. Default: the newest topo knows (4.3), or the broker's if newer.",
        ),
    ] = None,
    options: ConnectionOptions = UNSET,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    no_color: NoColor = False,
) -> None:
    """Advice and the upgrade check: what the target RabbitMQ version refuses or deprecates. Exit 1 on errors."""

    def run() -> int:
        from topo import lint as linting  # imported on use: the other commands do not need the rules

        lint_target_version = target_version
        if lint_target_version is not None:
            linting.target_version(lint_target_version)  # a bad version fails before any file or request
        if live:
            loaded = load_topology(files) if files else None
            broker = loaded.broker if loaded is not None else None
            vhosts = list(loaded.desired.vhosts) if loaded is not None else None
            lint_input, notes = linting.from_broker(_client(options, broker), vhosts, lint_target_version)
            for note in notes:
                _err(f"Note: {note}")
        else:
            lint_input = linting.from_files(load_topology(files or []), lint_target_version)
        findings = linting.run(lint_input)
        if as_json:
            _out(linting.render_json(findings, lint_input))
        else:
            _out(linting.render_text(findings, lint_input, _colour(no_color)))
        return 1 if any(finding.level is linting.Level.ERROR for finding in findings) else 0

    _guarded(run)


@app.command()
def schema() -> None:
    """Print the JSON Schema of topology files (the one in schemas/), for editors."""
    _out(json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n")


@app.command()
def version() -> None:
    """Print topo's version."""
    _out(f"topo {__version__}\n")


def _untyped_arguments(command: Any) -> None:
    """typer writes an argument's Python type after its name in --help (`NAME <str>`); click and every
    other CLI show the name alone, which is all a user needs."""
    subcommands = getattr(command, "commands", {}).values()
    for each in (command, *subcommands):
        for param in each.params:
            if param.param_type_name == "argument":
                param.display_type_rich = lambda ctx: None  # type: ignore[attr-defined,method-assign]


def main() -> None:
    # A short-lived process that builds hundreds of thousands of small containers: the cyclic garbage
    # collector would scan them over and over (it doubled the time to load a 10,000-queue file), and
    # reference counting already frees everything topo makes.
    gc.disable()
    # Not standalone: click's usage errors exit 2, which would read as "changes pending" in CI.
    try:
        command = typer.main.get_command(app)
        _untyped_arguments(command)
        code = command(prog_name="topo", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        _err("Aborted.")
        code = 1
    except Exception as exc:
        show = getattr(exc, "show", None)
        if callable(show):  # click's usage errors: message and usage, exit 1
            show()
            code = 1
        else:
            _err(f"Internal error: {type(exc).__name__}: {exc}")
            code = 1
    sys.exit(code if isinstance(code, int) else 0)


# The read-only commands (route, test, graph, explain) live in their own module and register here.
from topo import routing_cli as _routing_cli  # noqa: E402, F401

# click shortens each command's summary to fit 80 columns ("make the broker match the files and..."):
# the first line of each docstring, whole, instead (after the routing commands registered, so theirs too).
for _command in app.registered_commands:
    _command.short_help = _command.short_help or (_command.callback.__doc__ or "").strip().splitlines()[0]
