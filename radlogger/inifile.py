"""Reading INI files for the configuration: sections with the line of every key, one-line
errors for everything configparser can object to, and the drop-in directory.

Split from ``config.py`` (which validates what is read here against the plugins' declarations)
because reading text and validating meaning are two concepts; configparser itself forgets line
numbers, which every message a user reads needs.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path

from radlogger.errors import ConfigurationError

__all__ = ["ConfigError", "DAEMON_SECTION", "Section", "read_file", "include_files"]

DAEMON_SECTION = "radlogger"
_SECTION_LINE = re.compile(r"^\s*\[([^\]]*)\]")
_KEY_LINE = re.compile(r"^([^\s#;=:\[][^=:]*?)\s*[=:]")


class ConfigError(ConfigurationError):
    """A configuration mistake: one line naming file, line, section, key and the fix."""

    def __init__(self, problem: str, file: str | None = None, section: str | None = None,
                 key: str | None = None, line: int | None = None) -> None:
        self.problem = problem
        self.file = file
        self.section = section
        self.key = key
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        section = f"[{self.section}] " if self.section else ""
        return f"{where}{section}{self.problem}"



@dataclass
class Section:
    """One section as read from one file, with the line of every key for messages."""

    name: str
    file: str
    line: int
    items: dict[str, str]
    lines: dict[str, int]


def _line_numbers(text: str) -> dict[tuple[str, str | None], int]:
    """(section, key) -> line number; configparser does not keep them."""
    out: dict[tuple[str, str | None], int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        m = _SECTION_LINE.match(line)
        if m:
            section = m.group(1).strip()
            out.setdefault((section, None), number)
            continue
        m = _KEY_LINE.match(line)
        if m and section:
            out.setdefault((section, m.group(1).strip().lower()), number)
    return out


#: a configuration file larger than this is not one (and /dev/zero would never end)
MAX_CONFIG_BYTES = 4 << 20


def read_file(path: Path) -> list[Section]:
    file = str(path)
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise ConfigError("is not a regular file (a device or a pipe); pass an INI file",
                              file)
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"larger than {MAX_CONFIG_BYTES >> 20} MiB: not a configuration "
                              "file", file)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found; pass an existing configuration file (radloggerd "
                          "config sample > radloggerd.ini writes one)", file) from None
    except IsADirectoryError:
        raise ConfigError("is a directory; pass an INI file", file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}; check the path and permissions",
                          file) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); save it as "
                          "UTF-8", file) from None
    parser = configparser.ConfigParser(interpolation=None, strict=True,
                                       inline_comment_prefixes=("#", ";"),
                                       default_section="\0no-defaults")
    try:
        parser.read_string(text, source=file)
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(f"{exc.line.strip()!r} comes before any section; start with "
                          "[radlogger], [device:NAME] or [endpoint:NAME]", file,
                          line=exc.lineno) from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError("appears twice in this file; merge the two or rename one", file,
                          str(exc.section), line=exc.lineno) from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(f"key '{exc.option}' is set twice; keep one", file,
                          str(exc.section), str(exc.option), exc.lineno) from None
    except configparser.ParsingError as exc:
        lineno, bad = exc.errors[0]  # configparser gives repr(line)
        text_lines = text.splitlines()
        bad = text_lines[lineno - 1].strip() if 0 < lineno <= len(text_lines) else bad
        headers = [m.group(1).strip() for ln in text_lines[:lineno - 1]
                   if (m := _SECTION_LINE.match(ln))]
        raise ConfigError(f"cannot parse {bad!r}: expected 'key = value', a [section] or a "
                          "# comment", file, headers[-1] if headers else None,
                          line=lineno) from None
    lines = _line_numbers(text)
    return [Section(name, file, lines.get((name.strip(), None), 0), dict(parser[name]),
                     {k: lines.get((name.strip(), k), 0) for k in parser[name]})
            for name in parser.sections()]


def include_files(main: Path, sections: list[Section]) -> tuple[list[Path], list[str]]:
    """The drop-in files in name order, and a warning if a configured directory is missing
    (not an error: an empty /etc/radlogger/conf.d is often simply not created)."""
    daemon = next((s for s in sections if s.name.strip() == DAEMON_SECTION), None)
    explicit = daemon is not None and "include" in daemon.items
    value = daemon.items["include"].strip() if daemon is not None and explicit else "conf.d"
    if not value:
        return [], []
    directory = Path(value) if Path(value).is_absolute() else main.parent / value
    if not directory.is_dir():
        if explicit and daemon is not None:
            line = daemon.lines.get("include")
            return [], [f"{main}:{line}: [{DAEMON_SECTION}] include = {value}: directory "
                        f"{directory} does not exist, no drop-ins read; create it or leave "
                        "include empty"]
        return [], []
    return sorted(directory.glob("*.ini"), key=lambda p: p.name), []
