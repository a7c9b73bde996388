"""The `caseloop` command (SPEC §2): one small function per subcommand."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from pathlib import Path

from sqlalchemy.orm import Session

from daemon import __version__, classifycmd, queries
from daemon import config as configmod
from daemon import log as logsetup
from daemon.app import App, ImportBusy, InstanceRunning, Summary, build_sources
from daemon.config import Config, ConfigError
from daemon.datadir import check_data_dir
from daemon.install import InitRefused, SystemLayout, initialize
from daemon.queries import status_report
from daemon.runners.backfill import ImportJob
from daemon.sender import check_smtp, make_transport
from daemon.settings import PRIORITIES
from daemon.sources.imap import ImapSource
from daemon.sources.maildir import MaildirSource
from daemon.store.db import check_database, make_engine, migrate
from daemon.store.models import OutboxMessage, Ticket
from daemon.views import outbox_json, status_text, ticket_json, ticket_text
from handlers import digest, privacy, report, staff
from handlers.rejection import CODES
from handlers.workflow import STATUSES, TransitionRefused

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in what the user asked for: exit 2 with the message."""


def load_config(args: argparse.Namespace) -> Config:
    return configmod.load(configmod.find_config_path(args.config))


@contextmanager
def open_app(args: argparse.Namespace, *, create: bool = False) -> Iterator[App]:
    """The App of the config; only `run` and `import` make a missing data folder/database."""
    app = App(load_config(args), create=create)
    try:
        yield app
    finally:
        app.close()


def find_ticket(session: Session, number: str) -> Ticket:
    ticket = queries.ticket_by_number(session, number)
    if ticket is None:
        raise UsageError(f"no case {number}")
    return ticket


def print_json(data: object) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


# -- commands -----------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    system = None
    if args.system:  # the layout of systemd/caseloop.service, or the folders and user given
        unit = SystemLayout()
        system = SystemLayout(
            Path(args.dir or unit.config_dir),
            Path(args.data_dir or unit.data_dir),
            args.user or unit.user,
        )
    elif args.data_dir or args.user:
        raise UsageError("--data-dir and --user go with --system")
    try:
        initialize(
            system.config_dir if system else Path(args.dir or "."),
            with_samples=args.with_samples,
            system=system,
        )
    except InitRefused as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args)
    print(f"config: {config.source}: ok")
    data_dir = check_data_dir(config.data_dir)
    print(f"data_dir: {config.data_dir}: {data_dir}")
    database = check_database(config.database_url)
    failed = database.startswith("FAILED") or data_dir.startswith("FAILED")
    print(f"database: {config.database_url.split('://')[0]}: {database}")
    for source in build_sources(config):
        report = source.check()
        failed |= report.startswith("FAILED")
        print(f"source {source.name}: {source.describe()}: {report}")
    if config.smtp is not None:
        report = check_smtp(config.smtp)
        failed |= report.startswith("FAILED")
        print(f"smtp: {config.smtp.host}:{config.smtp.port}: {report}")
    else:
        print(f"outgoing mail: {make_transport(config).describe()}")
    regulator = config.regulator
    if regulator.to:
        print(
            f"regulator: {', '.join(regulator.to)} (safety, or a loss of "
            f"{regulator.major_loss_amount:g} CNY or more; contact: {regulator.contact})"
        )
    if not (config.escalation.supervisors or config.escalation.urgent_notify):
        print("warning: urgent cases alert nobody: set [escalation] supervisors or urgent_notify")
    return EXIT_RUNTIME if failed else EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    config = load_config(args)
    config.data_dir.mkdir(parents=True, exist_ok=True)  # the embedded database lives there
    engine = make_engine(config.database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    print("database schema is up to date")
    return EXIT_OK


def print_set_aside(summary: Summary, where: str) -> None:
    """The items a run set aside, and how many more it only counted (`where` to find them)."""
    for source, item, how, why in summary.set_aside:
        print(f"{how}: {source}/{item}: {why}")
    if summary.left_out["set_aside"]:
        print(f"... and {summary.left_out['set_aside']} more set aside{where}")


def print_summary(summary: Summary, app: App) -> None:
    acks = summary.outcomes
    shown = summary.opened[:20]
    print(
        f"cases opened: {acks['ticket']}"
        + (f" ({', '.join(shown)}{' ...' if acks['ticket'] > len(shown) else ''})" if shown else "")
    )
    print(f"replies threaded onto cases: {acks['entry']}")
    if acks["known"]:
        print(f"taken in before (repeated export rows): {acks['known']}")
    if acks["duplicate"]:
        print(f"duplicates taken in once: {acks['duplicate']}")
    print(
        f"mails delivered: {summary.sent} via {app.transport.describe()}"
        + (
            f"; {summary.not_sent} not delivered (see `caseloop outbox list`)"
            if summary.not_sent
            else ""
        )
    )
    print_set_aside(summary, " (each is in the log; a form's bad rows are also in its file's "
                     ".report.csv)")  # fmt: skip
    for note in summary.notes:
        print(f"note: {note}")
    if summary.left_out["notes"]:
        print(f"... and {summary.left_out['notes']} more notes (each is in the log)")


def cmd_run(args: argparse.Namespace) -> int:
    with open_app(args, create=True) as app:
        try:
            app.start_instance("once" if args.once else "run")
        except InstanceRunning as exc:
            raise UsageError(str(exc)) from None
        if args.once:
            summary = app.run_once()
            print_summary(summary, app)
        else:
            app.run_forever()
    return EXIT_OK


def cmd_tickets_list(args: argparse.Namespace) -> int:
    with open_app(args) as app, app.sessions() as session:
        found = queries.latest_tickets(session, args.status, args.limit + 1)
        tickets, more = found[: args.limit], len(found) > args.limit
        zone = app.config.timezone
        if args.json:
            print_json([ticket_json(t, zone, timeline=False) for t in tickets])
            return EXIT_OK
        row = "{:<20} {:<11} {:<6} {:<17} {:<28} {:<24} {}"
        print(
            row.format("NUMBER", "STATUS", "PRIO", "CATEGORY", "COMPLAINANT", "ASSIGNEE", "SUBJECT")
        )
        for t in tickets:
            print(
                row.format(
                    t.number, t.status, t.priority, t.category, t.complainant_email[:28],
                    (t.assignee or "-")[:24], t.subject[:60],
                )
            )  # fmt: skip
        if more:
            print(f"... more cases than --limit {args.limit}: raise it, or filter by --status")
    return EXIT_OK


def cmd_tickets_show(args: argparse.Namespace) -> int:
    with open_app(args) as app, app.sessions() as session:
        ticket = find_ticket(session, args.number)
        if args.json:
            print_json(ticket_json(ticket, app.config.timezone, timeline=True))
        else:
            print(ticket_text(ticket, app.config.timezone))
    return EXIT_OK


def _staff_action(args: argparse.Namespace, action: Callable[[App, Session, Ticket], str]) -> int:
    with open_app(args) as app:
        with app.sessions.begin() as session:
            ticket = find_ticket(session, args.number)
            try:
                done = action(app, session, ticket)
            except TransitionRefused as exc:
                raise UsageError(str(exc)) from None
        print(done)
    return EXIT_OK


def _actor(args: argparse.Namespace) -> str:
    return args.actor or f"cli:{getpass.getuser()}"  # the login name, not $HOME's folder


def cmd_tickets_reply(args: argparse.Namespace) -> int:
    message = Path(args.file).read_text(encoding="utf-8") if args.file else args.message

    def action(app: App, session: Session, ticket: Ticket) -> str:
        staff.reply(
            session,
            app.services,
            ticket,
            message,
            actor=_actor(args),
            now=app.clock.now(),
            status=args.status,
        )
        return f"{ticket.number}: reply queued" + (
            f", status {ticket.status}" if args.status else ""
        )

    return _staff_action(args, action)


def cmd_tickets_set(args: argparse.Namespace) -> int:
    def action(app: App, session: Session, ticket: Ticket) -> str:
        changes = staff.set_fields(
            session,
            app.services,
            ticket,
            actor=_actor(args),
            now=app.clock.now(),
            status=args.status,
            assignee=args.assignee,
            category=args.category,
            priority=args.priority,
            reason=args.reason,
        )
        return f"{ticket.number}: " + ("; ".join(changes) if changes else "nothing to change")

    return _staff_action(args, action)


def cmd_tickets_note(args: argparse.Namespace) -> int:
    def action(app: App, session: Session, ticket: Ticket) -> str:
        staff.note(session, ticket, args.message, actor=_actor(args), now=app.clock.now())
        return f"{ticket.number}: note added"

    return _staff_action(args, action)


def cmd_digest(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        now = app.clock.now()
        if args.print:
            with app.reads() as session:
                print(digest.print_digest(session, app.services, now), end="")
            return EXIT_OK
        with app.sessions.begin() as session:
            queued = digest.send_digest(session, app.services, now)
        sent = app.send_outbox()
        print(f"digest: {queued} queued, {sent.sent} sent")
    return EXIT_OK


def _local_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def cmd_report(args: argparse.Namespace) -> int:
    if args.since and args.until and args.since > args.until:
        raise UsageError(f"--since {args.since} is after --until {args.until}")
    with open_app(args) as app, app.reads() as session:
        sys.stdout.write(
            report.render(session, app.config, args.since, args.until, args.format, app.clock.now())
        )
    return EXIT_OK


def cmd_outbox_list(args: argparse.Namespace) -> int:
    with open_app(args) as app, app.sessions() as session:
        rows = queries.latest_outbox(session, args.status, args.limit)
        zone = app.config.timezone
        if args.json:
            print_json([outbox_json(r, zone) for r in rows])
        else:
            row = "{:>6} {:<8} {:<16} {:<30} {}"
            print(row.format("ID", "STATUS", "KIND", "RECIPIENT", "SUBJECT"))
            for r in rows:
                error = f"  error: {r.last_error}" if r.last_error else ""
                print(row.format(r.id, r.status, r.kind, r.recipient[:30], r.subject[:50]) + error)
    return EXIT_OK


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        with app.sessions.begin() as session:
            row = session.get(OutboxMessage, args.id)
            if row is None:
                raise UsageError(f"no outbox message {args.id}")
            if row.status == "sent":
                raise UsageError(f"outbox message {args.id} was already sent")
            if not row.raw:
                raise UsageError(f"outbox message {args.id} was erased (privacy): nothing to send")
            row.status, row.next_attempt_at = "queued", app.clock.now()
        print(f"outbox message {args.id} queued again")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    """SPEC §2 `import --source NAME --since DATE [--dry-run]`: deliberate backfill of a
    mailbox. Registers its mail dated on or after DATE as of its own date; sends nothing."""
    with open_app(args, create=True) as app:
        source = next((s for s in app.sources if s.name == args.source), None)
        mailboxes = [m.name for m in app.config.mailboxes]
        if source is None or not isinstance(source, MaildirSource | ImapSource):
            raise UsageError(
                f"no mailbox {args.source!r} (mailboxes: {', '.join(mailboxes) or 'none'}); "
                "form exports are taken in from their folder, old rows without an "
                "acknowledgement when [[forms]] maps submitted_at"
            )
        since = datetime.combine(args.since, time(0), app.config.timezone).astimezone(UTC)
        until = app.clock.now()  # mail dated later may be live: it is left for the daemon
        total, job = Summary(), ImportJob(source, since, until, args.dry_run)
        try:
            while not job.done:
                total.add(app.backfill.run_once(job))
        except ImportBusy as exc:
            raise UsageError(str(exc)) from None
        finally:
            if not args.dry_run:
                app.claim_import(source, None)
        error = getattr(source, "last_error", None)
        outcomes = total.outcomes
        if args.dry_run:
            print(f"dry run, nothing taken in: {outcomes['would_take_in']} messages dated "
                  f"{args.since} or later would be taken in (a case each, an entry on a case "
                  f"they answer, or once if repeated); {outcomes['skipped']} are older or "
                  f"undated and would be skipped; {outcomes['quarantined']} would be set aside; "
                  f"{outcomes['left']} are newer than the import and stay for the daemon; "
                  f"{outcomes['known']} were taken in before")  # fmt: skip
        else:
            print(f"imported: {outcomes['ticket']} cases, {outcomes['entry']} replies on cases, "
                  f"{outcomes['duplicate']} duplicates; skipped {outcomes['skipped']} dated "
                  f"before {args.since} or undated; left {outcomes['left']} newer than the "
                  f"import for the daemon; {outcomes['known']} taken in before; "
                  "no mail sent")  # fmt: skip
        print_set_aside(total, " (each is in the log)")
        if error:
            print(f"caseloop: import stopped: {error}; run it again to go on (what was taken in "
                  "is kept)", file=sys.stderr)  # fmt: skip
            return EXIT_RUNTIME
    return EXIT_OK


def cmd_privacy_export(args: argparse.Namespace) -> int:
    """SPEC §2 `privacy export EMAIL`: everything held about one person, as JSON."""
    with open_app(args) as app, app.sessions() as session:
        data = privacy.export_person(session, args.email, app.config.timezone, app.clock.now())
    print_json(data)
    return EXIT_OK


def cmd_privacy_erase(args: argparse.Namespace) -> int:
    """SPEC §2 `privacy erase EMAIL` (PIPL): erase it; refused while a case is being handled."""
    with open_app(args) as app:
        try:
            with app.sessions.begin() as session:
                done = privacy.erase_person(session, args.email, app.clock.now())
        except privacy.Refused as exc:
            raise UsageError(str(exc)) from exc
        deleted, waiting = app.clocks.collect_files()  # after the erasure committed
        forgotten = app.transport.forget(done.mail_sent)
    cases = ", ".join(done.cases) if done.cases else "none"
    print(f"erased: cases {cases}; {done.entries} timeline entries, {done.originals} original "
          f"messages, {done.outbox} outgoing mails, {done.attachments} attachments "
          f"({deleted} files deleted)")  # fmt: skip
    if waiting:
        print(f"{waiting} attachment files were stored within the last hour (mail being taken "
              "in may share them): the daemon's sweep deletes them later")  # fmt: skip
    for source, key in done.kept_by_sources:
        print(f"also held outside the database, erase it there: source {source}, item {key}")
    if forgotten.removed:
        print(f"removed {forgotten.removed} copies of sent mail from the outbox folder")
    for message_id in forgotten.beyond_reach:
        print(f"sent mail {message_id} is beyond caseloop's reach ({forgotten.where})")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with open_app(args) as app, app.sessions() as session:
        report = status_report(app, session)
    if args.json:
        print_json(report)
        return EXIT_OK
    print(status_text(report))
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------


def cmd_classify(args: argparse.Namespace) -> int:
    from handlers import textmodel  # numpy and scikit-learn: only for this command

    try:
        if args.classify_cmd == "train":
            with open_app(args) as app, app.sessions() as session:
                now = app.clock.now().isoformat(timespec="seconds")
                result = classifycmd.train(
                    app.config, session, corrected_only=args.corrected_only, now=now
                )
            classifycmd.print_training(result)
            return EXIT_OK
        config = load_config(args)
        rows = classifycmd.read_eval_file(args.file)
        path = args.model or config.data_dir / textmodel.MODEL_FILE
        model = textmodel.load(path) if args.model or path.exists() else None
        classifycmd.print_evaluation(classifycmd.evaluate(rows, config, model), config, args.json)
    except classifycmd.ClassifyUsageError as exc:
        raise UsageError(str(exc)) from None
    except textmodel.ModelError as exc:
        print(f"caseloop: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caseloop", description="Consumer complaints handled end to end by email."
    )
    parser.add_argument(
        "--config", help="config file (else $CASELOOP_CONFIG, ./caseloop.toml, embedded defaults)"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--version", action="version", version=f"caseloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write a commented caseloop.toml and the data folders")
    p.add_argument("dir", nargs="?", help="where caseloop.toml goes (--system: /etc/caseloop)")
    p.add_argument(
        "--system",
        action="store_true",
        help="as root, for systemd/caseloop.service: data paths absolute, owners and modes set",
    )
    p.add_argument("--data-dir", help="with --system: the state folder (/var/lib/caseloop)")
    p.add_argument("--user", help="with --system: the service user (caseloop)")
    p.add_argument(
        "--with-samples",
        action="store_true",
        help="also drop the shipped sample complaints into the inbox",
    )
    p.set_defaults(func=cmd_init)
    sub.add_parser("check-config", help="validate the config and reach each source").set_defaults(
        func=cmd_check_config
    )
    sub.add_parser("migrate", help="upgrade the database schema").set_defaults(func=cmd_migrate)
    p = sub.add_parser("run", help="the daemon (foreground); --once: until no work is left")
    p.add_argument("--once", action="store_true")
    p.set_defaults(func=cmd_run)

    tickets = sub.add_parser("tickets", help="cases").add_subparsers(
        dest="tickets_cmd", required=True
    )
    p = tickets.add_parser("list", help="the newest cases", description="The newest cases.")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tickets_list)
    p = tickets.add_parser("show", help="one case and its timeline")
    p.add_argument("number")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tickets_show)
    p = tickets.add_parser(
        "reply", help="answer the consumer (with --status: the move's notice carries it)"
    )
    p.add_argument("number")
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument("--message")
    body.add_argument("--file")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--actor", help="who acts (default: cli:<user>)")
    p.set_defaults(func=cmd_tickets_reply)
    p = tickets.add_parser("set", help="status, assignee, category or priority of a case")
    p.add_argument("number")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--assignee", help="a [[staff]] address")
    p.add_argument("--category", help="one of the desk's categories (caseloop check-config)")
    p.add_argument("--priority", choices=PRIORITIES)
    p.add_argument(
        "--reason", help=f"why (with --status rejected: one of {', '.join(CODES)}, or words)"
    )
    p.add_argument("--actor")
    p.set_defaults(func=cmd_tickets_set)
    p = tickets.add_parser("note", help="an internal note on a case (never sent)")
    p.add_argument("number")
    p.add_argument("--message", required=True)
    p.add_argument("--actor")
    p.set_defaults(func=cmd_tickets_note)

    outbox = sub.add_parser("outbox", help="outgoing mail queue").add_subparsers(
        dest="outbox_cmd", required=True
    )
    p = outbox.add_parser("list")
    p.add_argument("--status", choices=["queued", "sent", "failed", "bounced"])
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outbox_list)
    p = sub.add_parser("status", help="sources, outbox and case counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = outbox.add_parser("retry")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_outbox_retry)

    p = sub.add_parser("digest", help="the supervisor digest now")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--print", action="store_true", help="print its text, send nothing")
    how.add_argument("--send", action="store_true", help="mail it to the supervisors")
    p.set_defaults(func=cmd_digest)
    p = sub.add_parser("import", help="backfill a mailbox's old mail: registered, nothing sent")
    p.add_argument("--source", required=True, help="the [[mailboxes]] name")
    p.add_argument("--since", required=True, type=_local_date, help="first local date taken in")
    p.add_argument("--dry-run", action="store_true", help="say what would happen; take nothing")
    p.set_defaults(func=cmd_import)
    privacy_cmds = sub.add_parser("privacy", help="personal data (PIPL)").add_subparsers(
        dest="privacy_command", required=True
    )
    p = privacy_cmds.add_parser("export", help="everything held about one address, as JSON")
    p.add_argument("email")
    p.set_defaults(func=cmd_privacy_export)
    p = privacy_cmds.add_parser("erase", help="erase one address's personal data")
    p.add_argument("email")
    p.set_defaults(func=cmd_privacy_erase)
    p = sub.add_parser("report", help="statistics over a period")
    p.add_argument("--since", type=_local_date, help="first local date (YYYY-MM-DD)")
    p.add_argument("--until", type=_local_date, help="last local date, inclusive")
    p.add_argument("--format", choices=["text", "csv", "html"], default="text")
    p.set_defaults(func=cmd_report)
    classifycmd.add_parser(sub, cmd_classify)
    _global_options_anywhere(parser)
    return parser


def _global_options_anywhere(parser: argparse.ArgumentParser) -> None:
    """`caseloop tickets list --log-level DEBUG` as well as `caseloop --log-level DEBUG tickets
    list`: every subcommand also takes --config and --log-level (unset there: the top's)."""
    for action in parser._actions:  # noqa: SLF001 (argparse keeps subparsers only here)
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {a.dest: a.help for a in action._choices_actions}  # noqa: SLF001
            for name, sub in action.choices.items():
                said = helps.get(name) or ""
                if sub.description is None and said:
                    sub.description = f"{said[0].upper()}{said[1:]}."
            for sub in set(action.choices.values()):
                sub.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                sub.add_argument(
                    "--log-level",
                    default=argparse.SUPPRESS,
                    choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                    help=argparse.SUPPRESS,
                )
                _global_options_anywhere(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logsetup.setup(args.log_level)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"caseloop: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"caseloop: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    except Exception as exc:  # a runtime failure: one clear line, the traceback in the log
        logging.getLogger("caseloop").debug("traceback", exc_info=True)
        print(f"caseloop: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
