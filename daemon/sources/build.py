"""The sources of a Config: a Maildir or IMAP source per [[mailboxes]], a form source per
[[forms]]."""

from __future__ import annotations

from daemon.config import Config
from daemon.runners.source import Source
from daemon.sources.forms import FormSource
from daemon.sources.imap import ImapSource
from daemon.sources.maildir import MaildirSource


def build_sources(config: Config) -> list[Source]:
    sources: list[Source] = []
    for box in config.mailboxes:
        if box.type == "maildir":
            assert box.path is not None and box.quarantine_path is not None
            # Ours to create under data_dir; elsewhere (the MTA's) it must be there already.
            ours = box.path.is_relative_to(config.data_dir)
            sources.append(MaildirSource(box.name, box.path, box.quarantine_path, create=ours))
        elif box.type == "imap":
            sources.append(ImapSource(box))
    sources += [FormSource(form) for form in config.forms]
    return sources
