"""One policy for the names of images and hash-list entries: what may be stored, and how a
stored name is written into exports.

A name is stored exactly as it arrived (``</script>.png`` stays ``</script>.png``: pages and
JSON escape it where they show it) or refused with a reason; it is never silently rewritten.
Refused: empty names, names over :data:`MAX_FILENAME_CHARS`, control characters (newline,
tab, ESC, NUL, DEL, C1 controls, Unicode line and paragraph separators: a name is one line
everywhere it is shown) and ``..`` path components. An uploaded file part whose name is a
client's local path (absolute, a drive letter or backslashes) keeps its last component only;
other names (zip members' relative paths, ``a/b.png``) are kept whole.

Exports still neutralise what they write, for rows stored before this policy and as a
second line of defence: :func:`one_line` for line-based text, :func:`spreadsheet_cell` for
CSV cells (formula neutralisation).
"""

from __future__ import annotations

import re

#: Longest name stored (the database columns hold 1024 characters).
MAX_FILENAME_CHARS = 1024

#: C0 controls, DEL, C1 controls (NEL included) and the Unicode line/paragraph separators:
#: anything a terminal, a spreadsheet or ``str.splitlines`` may treat as a new line or a
#: command.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SEPARATORS = re.compile(r"[/\\]")
_DRIVE = re.compile(r"^[A-Za-z]:[/\\]")
#: A CSV cell starting with one of these is read as a formula by spreadsheets (OWASP "CSV
#: injection"); such a cell gets a leading ``'``.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be stored as a file name, or None when it can (as it is)."""
    if not name.strip():
        return "empty file name"
    if len(name) > MAX_FILENAME_CHARS:
        return f"file name longer than {MAX_FILENAME_CHARS} characters"
    control = _CONTROL.search(name)
    if control is not None:
        return (
            f"file name contains a control character (U+{ord(control.group()):04X}); "
            "names may not hold newlines, tabs, escapes or NUL"
        )
    if ".." in name and ".." in _SEPARATORS.split(name):
        return "file name has a '..' path component"
    return None


def uploaded_name(raw: str) -> str:
    """The name of an uploaded file part. A client may send its local path (old browsers,
    some scripts): an absolute path, a drive-letter path or one with backslashes keeps its
    last component. Any other name is kept as sent (``</script>.png`` is a name, not a
    path into ``<``)."""
    if raw.startswith("/") or "\\" in raw or _DRIVE.match(raw):
        return _SEPARATORS.split(raw)[-1]
    return raw


def one_line(text: str) -> str:
    """``text`` for a line-based export: each control character becomes a ``\\uXXXX``
    escape, so a name can never end a line or start a forged one."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def spreadsheet_cell(text: str) -> str:
    """A CSV cell holding text from outside (a name): one line, and a cell that starts with
    ``=``, ``+``, ``-``, ``@``, tab or CR gets a leading ``'`` so a spreadsheet shows it
    as text instead of running it as a formula (OWASP's recommendation). Numbers the
    service computes are written as they are (a negative score stays a number)."""
    if text.startswith(FORMULA_START):
        text = "'" + text
    return one_line(text)
