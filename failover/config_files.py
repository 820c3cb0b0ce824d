"""Commands that back up, edit, verify and restore an IPC's configuration file
(the inventory's `ipcs[].config_files`), built per platform: cmd.exe builtins
and findstr on Windows, POSIX tools elsewhere. Pure: strings in, command lines
out; the drill runs them through the executor.

The file format they edit is the call-center software's: one `KEY = VALUE`
per line. Setting a key drops its line(s) and appends `KEY = VALUE` (the key's
line moves to the end; other lines are kept as they are).

No runbook or inventory text reaches a shell unquoted: paths go through the
platform's quoting (cmd.exe: refused if it holds a character cmd.exe would
interpret); keys and values are restricted to characters that need no quoting
in either shell, even inside cmd.exe's `echo` (checked again here), so the
`KEY = VALUE` strings are put in cmd.exe's double quotes as they are (quote_cmd
refuses `=`, which is literal there).
"""

from __future__ import annotations

import re

from failover.platforms import UnsafeArgument, quote_cmd, quote_posix

KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9_.]{0,63}$"
VALUE_PATTERN = r"^[A-Za-z0-9_.+@#:/\\-]+( [A-Za-z0-9_.+@#:/\\-]+)*$"  # no ( ) & | < > ^ % ! " ' $ ` ;
_KEY, _VALUE = re.compile(KEY_PATTERN), re.compile(VALUE_PATTERN)


def backup_path(path: str, stamp: str) -> str:
    """The backup's name: the file's, with the drill's start time (YYYYmmdd-HHMMSS)."""
    return f"{path}.{stamp}.bak"


def _checked(key: str, value: str | None = None) -> None:
    if not _KEY.match(key):
        raise UnsafeArgument(f"configuration key {key!r} must match {KEY_PATTERN}")
    if value is not None and not _VALUE.match(value):
        raise UnsafeArgument(f"configuration value {value!r} must match {VALUE_PATTERN}")


def copy_cmd(platform: str, src: str, dst: str) -> str:
    if platform == "windows":
        return f"copy /y {quote_cmd(src)} {quote_cmd(dst)}"
    return f"cp -p -- {quote_posix(src)} {quote_posix(dst)}"


def set_cmd(platform: str, path: str, key: str, value: str) -> str:
    """Replace KEY's line with `KEY = VALUE`; fails (and changes nothing) when
    the file is missing. The new content is written beside it and renamed over
    it, so a failure half-way leaves the old file."""
    _checked(key, value)
    line = f"{key} = {value}"
    if platform == "windows":
        p, new = quote_cmd(path), quote_cmd(path + ".new")
        # findstr /v prints every other line; it exits 1 when that is none,
        # hence `&` (not `&&`) before the echo. `type` first: a missing file
        # must fail the step, not become a one-line file.
        return f'type {p} >nul && (findstr /v /b /l /c:"{key} =" {p} & echo {line})>{new} && move /y {new} {p}'
    p, new = quote_posix(path), quote_posix(path + ".new")
    pattern = quote_posix("^" + key.replace(".", "[.]") + " *=")
    # grep exits 1 when it selects no line (fine), 2 on an error (fail).
    return (
        f"test -f {p} && {{ grep -v -e {pattern} -- {p}; test $? -le 1 && printf '%s\\n' {quote_posix(line)}; }}"
        f" > {new} && mv -f -- {new} {p}"
    )


def verify_cmd(platform: str, path: str, key: str, value: str) -> str:
    """Exit 0 when the file has the line `KEY = VALUE` exactly."""
    _checked(key, value)
    line = f"{key} = {value}"
    if platform == "windows":
        return f'findstr /x /l /c:"{line}" {quote_cmd(path)}'
    return f"grep -x -F -e {quote_posix(line)} -- {quote_posix(path)}"
