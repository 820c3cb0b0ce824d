"""The lab's stand-in for Win32-OpenSSH's default shell on a Windows IPC:
cmd.exe, the service control manager seen through sc.exe, taskkill, timeout,
and the site's own tools. The IPC's sshd runs it as its ForceCommand:

  python -I wincmd.py IPC_DIR     the client's command line in SSH_ORIGINAL_COMMAND,
                                  run as `cmd.exe /c LINE` would; without it, an
                                  interactive cmd reading command lines from stdin

cmd.exe, as the product relies on it:
  - %VAR% is expanded once, when the whole line is parsed (so `a & echo %errorlevel%`
    shows the value from before `a`); an undefined %NAME% stays as written;
    ERRORLEVEL, CD, RANDOM, CMDCMDLINE are pseudo-variables.
  - then, outside double quotes, ^ escapes the next character and & && || ( )
    < > >> N> N>&M are operators; inside double quotes everything is literal.
  - `call CMD` expands CMD's % once more (`call echo %^errorlevel%`: the value now);
    `cmd [/v:on] /c "LINE"` runs LINE in a child cmd (/v:on: !VAR! when each
    command runs).
  - `cmd /q` with no /c reads command lines from stdin with echo off (what the
    product's long-lived status session runs).
  - builtins: echo (the rest of its command verbatim, the space before & included),
    echo. , rem, set, exit [/b] [N], type FILE, copy [/y] SRC DST, move [/y] SRC DST
    (files inside IPC_DIR, its "disk"), ver.
  - programs, by base name (any path, .exe optional): sc, taskkill, timeout, cmd,
    linestat, labcall, labfault, labcalls, findstr (literal strings only);
    anything else is 'not recognized' (9009).
  - the exit status is the ERRORLEVEL at the end of the line. Linux's sshd carries
    only its low 8 bits (1060 arrives as 36); the full code is what
    `call echo %^errorlevel%` prints and what sc.exe prints after FAILED.
  - output: CRLF line ends, encoded in the OEM code page (sim.json "codepage":
    437 default; 936 = GBK, with sc.exe's, taskkill's and cmd's messages in Chinese).

sc.exe talks to the IPC's simulator (sim.py) through its `scm`, `status` and
`kill-pid` operations; sim.json's "names" maps Windows service names
(case-insensitive) to the simulator's services. Optional sim.json keys read here:
"access_denied" (true: the SSH user may query but not control services or kill
them, Win32 error 5), "failure_actions" ({service: [restart delay ms, ...]},
printed by `sc qfailure`, nothing ever restarts), "user".

Stdlib only and few imports: it starts once per SSH command.
"""

from __future__ import annotations

import os
import sys

WIN_VERSION = "10.0.17763.5830"  # Windows 10 IoT Enterprise LTSC 2019, an IPC's usual build
ENCODINGS = {437: "cp437", 936: "gbk", 65001: "utf-8"}
WS = " \t"
NOT_FOUND_RC = 9009


# ---------------------------------------------------------------------------
# Messages: English (code page 437) or Chinese (936). Only the words change;
# numbers, field labels and state names stay as Windows prints them.
# ---------------------------------------------------------------------------

WIN32_TEXT = {
    "en": {
        5: "Access is denied.",
        1052: "The requested control is not valid for this service.",
        1053: "The service did not respond to the start or control request in a timely fashion.",
        1056: "An instance of the service is already running.",
        1058: "The service cannot be started, either because it is disabled or because it has no enabled "
        "devices associated with it.",
        1060: "The specified service does not exist as an installed service.",
        1061: "The service cannot accept control messages at this time.",
        1062: "The service has not been started.",
        1722: "The RPC server is unavailable.",
    },
    "zh": {
        5: "拒绝访问。",
        1052: "请求的控件对此服务无效。",
        1053: "服务没有及时响应启动或控制请求。",
        1056: "服务的实例已在运行中。",
        1058: "无法启动服务，原因可能是已被禁用或与其相关联的设备没有启动。",  # noqa: RUF001 - the full-width comma Windows prints
        1060: "指定的服务未安装。",
        1061: "服务此时无法接受控制信息。",
        1062: "服务尚未启动。",
        1722: "RPC 服务器不可用。",
    },
}
TEXT = {
    "en": {
        "failed": "FAILED",
        "success": "SUCCESS",
        "not_recognized": "'{0}' is not recognized as an internal or external command,\n"
        "operable program or batch file.\n",
        "unexpected": "{0} was unexpected at this time.\n",
        "syntax": "The syntax of the command is incorrect.\n",
        "no_pipe": "The pipe operator | is not supported by the lab's cmd.exe stand-in (wincmd.py).\n",
        "no_file": "The system cannot find the file specified.\n",
        "no_path": "The system cannot find the path specified.\n",
        "no_var": "Environment variable {0} not defined\n",
        "echo_state": "ECHO is {0}.\n",
        "ver": "\nMicrosoft Windows [Version {0}]\n",
        "banner": "Microsoft Windows [Version {0}]\n(c) 2018 Microsoft Corporation. All rights reserved.\n",
        "call_label": "Invalid attempt to call batch label outside of batch script.\n",
        "tk_ok": "SUCCESS: The process with PID {0} has been terminated.\n",
        "tk_not_found": 'ERROR: The process "{0}" not found.\n',
        "tk_denied": "ERROR: The process with PID {0} could not be terminated.\nReason: Access is denied.\n",
        "tk_force": "ERROR: The process with PID {0} could not be terminated.\n"
        "Reason: This process can only be terminated forcefully (with /F option).\n",
        "tk_syntax": "ERROR: Invalid syntax. Neither /FI nor /PID nor /IM were specified.\n"
        'Type "TASKKILL /?" for usage.\n',
        "to_syntax": "ERROR: Invalid syntax. Value expected for '/t'.\nType \"TIMEOUT /?\" for usage.\n",
        "to_range": "ERROR: Invalid value for timeout (/T) specified. Valid range is -1 to 99999.\n",
        "to_wait": "\nWaiting for {0} seconds, press CTRL+C to quit ...",
        "to_key": "ERROR: Input redirection is not supported, exiting the process immediately.\n",
        "copied": "        {0} file(s) copied.\n",
        "moved": "        {0} file(s) moved.\n",
        "fs_open": "FINDSTR: Cannot open {0}\n",
        "fs_only": "FINDSTR: the lab's stand-in searches literal strings only (/l, /c:)\n",
    },
    "zh": {
        "failed": "失败",
        "success": "成功",
        "not_recognized": "'{0}' 不是内部或外部命令，也不是可运行的程序\n或批处理文件。\n",  # noqa: RUF001 - the full-width comma Windows prints
        "unexpected": "此时不应有 {0}。\n",
        "syntax": "命令语法不正确。\n",
        "no_pipe": "实验室的 cmd.exe 替身 (wincmd.py) 不支持管道符 |。\n",
        "no_file": "系统找不到指定的文件。\n",
        "no_path": "系统找不到指定的路径。\n",
        "no_var": "环境变量 {0} 没有定义\n",
        "echo_state": "ECHO 处于{0}状态。\n",
        "ver": "\nMicrosoft Windows [版本 {0}]\n",
        "banner": "Microsoft Windows [版本 {0}]\n(c) 2018 Microsoft Corporation。保留所有权利。\n",
        "call_label": "批处理脚本外调用批处理标签的尝试无效。\n",
        "tk_ok": "成功: 已终止 PID 为 {0} 的进程。\n",
        "tk_not_found": '错误: 没有找到进程 "{0}"。\n',
        "tk_denied": "错误: 无法终止 PID 为 {0} 的进程。\n原因: 拒绝访问。\n",
        "tk_force": "错误: 无法终止 PID 为 {0} 的进程。\n原因: 只能强行终止这个进程(带 /F 选项)。\n",
        "tk_syntax": '错误: 无效语法。没有指定 /FI、/PID 或 /IM。\n键入 "TASKKILL /?" 以了解用法。\n',
        "to_syntax": "错误: 无效语法。'/t' 需要值。\n键入 \"TIMEOUT /?\" 以了解用法。\n",
        "to_range": "错误: 指定的超时 (/T) 值无效。有效范围是 -1 到 99999。\n",
        "to_wait": "\n等待 {0} 秒，按 CTRL+C 退出 ...",  # noqa: RUF001 - the full-width comma Windows prints
        "to_key": "错误: 不支持输入重新定向，立即退出此进程。\n",  # noqa: RUF001 - the full-width comma Windows prints
        "copied": "已复制         {0} 个文件。\n",
        "moved": "移动了         {0} 个文件。\n",
        "fs_open": "FINDSTR: 无法打开 {0}\n",
        "fs_only": "FINDSTR: 实验室的替身只搜索字面字符串 (/l, /c:)\n",
    },
}


# ---------------------------------------------------------------------------
# Output handles: CRLF and the OEM code page, as a Windows console program writes.
# ---------------------------------------------------------------------------


class Sink:
    """One output handle (stdout, stderr, a file, or NUL)."""

    def __init__(self, f: object | None, encoding: str, owned: bool = False) -> None:
        self.f = f
        self.encoding = encoding
        self.owned = owned

    def write(self, text: str) -> None:
        if self.f is not None and text:
            self.write_bytes(text.replace("\r\n", "\n").replace("\n", "\r\n").encode(self.encoding, "replace"))

    def write_bytes(self, data: bytes) -> None:
        if self.f is not None:
            self.f.write(data)  # type: ignore[attr-defined]
            self.f.flush()  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.owned and self.f is not None:
            self.f.close()  # type: ignore[attr-defined]


Handles = dict  # {1: Sink, 2: Sink}


class Exit(Exception):  # cmd's `exit` ends the line (not an error)
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class CmdSyntaxError(Exception):
    """A line cmd.exe refuses as a whole (nothing of it runs; errorlevel 255)."""


# ---------------------------------------------------------------------------
# Parse tree: phase 2 of cmd.exe (after % expansion)
# ---------------------------------------------------------------------------


class Redir:
    __slots__ = ("fd", "mode", "target")

    def __init__(self, fd: int, mode: str, target: str) -> None:
        self.fd, self.mode, self.target = fd, mode, target  # mode: > >> < >&


class Simple:
    """One command: its text with carets removed and quotes kept (what the
    program's command line will be), redirections taken out."""

    __slots__ = ("redirs", "text")

    def __init__(self, text: str, redirs: list[Redir]) -> None:
        self.text, self.redirs = text, redirs


class Group:
    __slots__ = ("body", "redirs")

    def __init__(self, body: object, redirs: list[Redir]) -> None:
        self.body, self.redirs = body, redirs


class Op:
    __slots__ = ("left", "op", "right")

    def __init__(self, op: str, left: object, right: object) -> None:
        self.op, self.left, self.right = op, left, right


class Parser:
    """cmd.exe's precedence: `&` lowest, then `&&` / `||` (left to right), then `|`."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def parse(self) -> object | None:
        node = self.seq(0)
        if self.i < len(self.s):  # only a `)` outside any group stops seq() early
            raise CmdSyntaxError(self._unexpected())
        return node

    def peek(self, tok: str) -> bool:
        return self.s.startswith(tok, self.i)

    def skip_ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in WS:
            self.i += 1

    def _unexpected(self) -> str:
        self.skip_ws()
        if self.i >= len(self.s):
            return "syntax"
        tok = self.s[self.i : self.i + 2] if self.s[self.i : self.i + 2] in ("&&", "||") else self.s[self.i]
        return "unexpected:" + tok

    def seq(self, depth: int) -> object | None:
        left = self.cond(depth)
        while self.peek("&") and not self.peek("&&"):
            if left is None:
                raise CmdSyntaxError(self._unexpected())
            self.i += 1
            self.skip_ws()
            if self.i >= len(self.s) or (depth and self.peek(")")):
                break  # `a &` at the end is allowed
            right = self.cond(depth)
            if right is None:
                raise CmdSyntaxError(self._unexpected())
            left = Op("&", left, right)
        return left

    def cond(self, depth: int) -> object | None:
        left = self.command(depth)
        while self.peek("&&") or self.peek("||"):
            if left is None:
                raise CmdSyntaxError(self._unexpected())
            op = self.s[self.i : self.i + 2]
            self.i += 2
            right = self.command(depth)
            if right is None:
                raise CmdSyntaxError(self._unexpected())
            left = Op(op, left, right)
        if self.peek("|") and not self.peek("||"):
            raise CmdSyntaxError("no_pipe")
        return left

    def command(self, depth: int) -> object | None:
        self.skip_ws()
        if self.peek("("):
            return self.group(depth)
        return self.simple(depth)

    def group(self, depth: int) -> Group:
        self.i += 1
        body = self.seq(depth + 1)
        self.skip_ws()
        if not self.peek(")") or body is None:
            raise CmdSyntaxError(self._unexpected())
        self.i += 1
        redirs: list[Redir] = []
        while True:
            self.skip_ws()
            if self.i < len(self.s) and (self.s[self.i] in "<>" or self._handle_redir()):
                redirs.append(self.redir(self._take_fd()))
                continue
            break
        if self.i < len(self.s) and self.s[self.i] not in "&|" and not (depth and self.peek(")")):
            raise CmdSyntaxError("unexpected:" + self.s[self.i :].split()[0])
        return Group(body, redirs)

    def _handle_redir(self) -> bool:
        # `2>` after a group: a digit directly before > or <.
        return self.s[self.i].isdigit() and self.s[self.i + 1 : self.i + 2] in ("<", ">")

    def _take_fd(self) -> int | None:
        if self.s[self.i].isdigit():
            self.i += 1
            return int(self.s[self.i - 1])
        return None

    def simple(self, depth: int) -> Simple | None:
        s, buf, redirs = self.s, [], []
        quoted = False
        digit_fd = False  # the last char is an unescaped digit standing alone: `2>` names a handle
        while self.i < len(s):
            c = s[self.i]
            if quoted:
                buf.append(c)
                quoted = c != '"'
                self.i += 1
                continue
            if c == '"':
                quoted = True
            elif c == "^":
                self.i += 1
                if self.i < len(s):
                    buf.append(s[self.i])
                digit_fd = False
                self.i += 1
                continue
            elif c == "&" or c == "|" or (c == ")" and depth):
                break
            elif c in "<>":
                fd = int(buf.pop()) if digit_fd else None
                redirs.append(self.redir(fd))
                digit_fd = False
                continue
            elif not buf and _is_rem(s, self.i):
                buf.append(s[self.i :])  # REM: the rest of the line is its comment, operators too
                self.i = len(s)
                break
            digit_fd = c.isdigit() and (not buf or buf[-1] in WS)
            buf.append(c)
            self.i += 1
        text = "".join(buf)
        if not text.strip(WS) and not redirs:
            return None
        return Simple(text, redirs)

    def redir(self, fd: int | None) -> Redir:
        s = self.s
        c = s[self.i]
        self.i += 1
        mode = c
        if c == ">" and self.peek(">"):
            mode = ">>"
            self.i += 1
        if self.peek("&"):
            self.i += 1
            self.skip_ws()
            if self.i < len(s) and s[self.i].isdigit():
                self.i += 1
                return Redir(1 if fd is None else fd, ">&", s[self.i - 1])
            raise CmdSyntaxError("syntax")
        self.skip_ws()
        target = self.word()
        if not target:
            raise CmdSyntaxError(self._unexpected() if self.i < len(s) else "syntax")
        return Redir((0 if c == "<" else 1) if fd is None else fd, mode, target)

    def word(self) -> str:
        """A redirection target: a quoted or plain word (carets escape)."""
        s, out = self.s, []
        quoted = False
        while self.i < len(s):
            c = s[self.i]
            if c == '"':
                quoted = not quoted
            elif quoted:
                out.append(c)
            elif c in WS or c in "&|<>" or c == ")":
                break
            elif c == "^" and self.i + 1 < len(s):
                self.i += 1
                out.append(s[self.i])
            else:
                out.append(c)
            self.i += 1
        return "".join(out)


def _is_rem(s: str, i: int) -> bool:
    return s[i : i + 3].lower() == "rem" and (i + 3 == len(s) or s[i + 3] in " \t,;=/")


def parse(text: str) -> object | None:
    """Phase 2 of one command line (already % expanded) into a tree."""
    return Parser(text).parse()


def unescape(text: str) -> str:
    """Carets outside quotes removed (the second pass of `call`, where
    operators are no longer recognised)."""
    out, quoted, i = [], False, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            quoted = not quoted
        elif c == "^" and not quoted:
            i += 1
            if i < len(text):
                out.append(text[i])
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def split_args(text: str) -> list[str]:
    """A Windows program's argv from its command line (the C runtime's rules:
    whitespace separates, double quotes group and are removed, backslashes
    escape a quote only when they precede one)."""
    args: list[str] = []
    cur: list[str] = []
    have = quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            n = len(text) - i - len(text[i:].lstrip("\\"))
            if text[i + n : i + n + 1] == '"':
                cur.append("\\" * (n // 2))
                if n % 2:
                    cur.append('"')
                    i += n + 1
                else:
                    i += n
                have = True
                continue
            cur.append("\\" * n)
            i += n
            have = True
            continue
        if c == '"':
            quoted = not quoted
            have = True
        elif c in WS and not quoted:
            if have:
                args.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(c)
            have = True
        i += 1
    if have:
        args.append("".join(cur))
    return args


# ---------------------------------------------------------------------------
# The environment (Windows names, case-insensitive)
# ---------------------------------------------------------------------------


class Env:
    def __init__(self, values: dict[str, str]) -> None:
        self.vars = {k.upper(): (k, v) for k, v in values.items()}

    def get(self, name: str) -> str | None:
        hit = self.vars.get(name.upper())
        return hit[1] if hit else None

    def set(self, name: str, value: str) -> None:
        if value:
            old = self.vars.get(name.upper())
            self.vars[name.upper()] = (old[0] if old else name, value)
        else:
            self.vars.pop(name.upper(), None)

    def items(self) -> list[tuple[str, str]]:
        return sorted(self.vars.values(), key=lambda kv: kv[0].upper())

    def copy(self) -> Env:
        e = Env({})
        e.vars = dict(self.vars)
        return e


def windows_env(ipc: str, user: str) -> Env:
    name = ipc.upper()
    profile = f"C:\\Users\\{user}"
    values = {
        "ALLUSERSPROFILE": "C:\\ProgramData",
        "APPDATA": f"{profile}\\AppData\\Roaming",
        "COMPUTERNAME": name,
        "ComSpec": "C:\\Windows\\system32\\cmd.exe",
        "HOMEDRIVE": "C:",
        "HOMEPATH": f"\\Users\\{user}",
        "LOCALAPPDATA": f"{profile}\\AppData\\Local",
        "NUMBER_OF_PROCESSORS": str(os.cpu_count() or 1),
        "OS": "Windows_NT",
        "Path": "C:\\Windows\\system32;C:\\Windows;C:\\Windows\\System32\\Wbem;C:\\Windows\\System32\\OpenSSH\\",
        "PATHEXT": ".COM;.EXE;.BAT;.CMD;.VBS;.VBE;.JS;.JSE;.WSF;.WSH;.MSC",
        "PROCESSOR_ARCHITECTURE": "AMD64",
        "ProgramData": "C:\\ProgramData",
        "ProgramFiles": "C:\\Program Files",
        "ProgramFiles(x86)": "C:\\Program Files (x86)",
        "PROMPT": "$P$G",
        "SystemDrive": "C:",
        "SystemRoot": "C:\\Windows",
        "TEMP": f"{profile}\\AppData\\Local\\Temp",
        "TMP": f"{profile}\\AppData\\Local\\Temp",
        "USERDOMAIN": name,
        "USERNAME": user,
        "USERPROFILE": profile,
        "windir": "C:\\Windows",
    }
    for k in ("SSH_CLIENT", "SSH_CONNECTION"):  # Win32-OpenSSH sets these as sshd does
        if k in os.environ:
            values[k] = os.environ[k]
    return Env(values)


# ---------------------------------------------------------------------------
# The IPC (its directory, sim.json, the simulator)
# ---------------------------------------------------------------------------


class Host:
    def __init__(self, ipc_dir: str) -> None:
        self.dir = os.path.abspath(ipc_dir)
        with open(os.path.join(self.dir, "sim.json"), encoding="utf-8") as f:
            self.cfg: dict = loads(f.read())
        self.ipc: str = self.cfg.get("ipc", "ipc")
        cp = int(self.cfg.get("codepage", 437))
        self.encoding = ENCODINGS.get(cp, f"cp{cp}")
        self.lang = "zh" if cp == 936 else "en"
        names: dict[str, str] = self.cfg.get("names", {})
        # lower-cased Windows name -> (Windows name, logical service)
        self.names = {k.lower(): (k, v) for k, v in names.items()}
        self.control_timeout = float(self.cfg.get("control_timeout", 1.0))
        self.denied = bool(self.cfg.get("access_denied", False))

    def ask(self, req: dict, timeout: float = 10.0) -> dict | None:
        """One simulator request; None when the simulator does not answer."""
        try:
            answer = request(self.dir, req, timeout)
        except (OSError, ValueError):
            return None
        return answer if isinstance(answer, dict) else None

    def service(self, name: str) -> tuple[str, str] | None:
        return self.names.get(name.lower())

    def path(self, target: str) -> str | None:
        """A file name relative to the IPC's directory (its "disk"); None for
        anything outside it."""
        rel = target.replace("\\", "/")
        if not rel or rel.startswith("/") or ":" in rel or ".." in rel.split("/"):
            return None
        return os.path.join(self.dir, rel)


# ---------------------------------------------------------------------------
# The simulator's protocol (simctl.request's: one JSON line each way), without
# the json and socket modules: importing them (re, enum) would cost ~20 ms of
# the ~35 ms this command takes, on every SSH command.
# ---------------------------------------------------------------------------


def request(ipc_dir: str, req: dict, timeout: float) -> object:
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(os.path.join(ipc_dir, "sim.sock"))
        s.sendall((dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            data = s.recv(65536)
            if not data:
                break
            buf += data
    finally:
        s.close()
    return loads(buf.decode())


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


_JSON_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def dumps(v: object) -> str:
    """JSON for the simple values a request holds."""
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + "".join(_JSON_ESC.get(c) or (c if c >= " " else f"\\u{ord(c):04x}") for c in v) + '"'
    # json.dumps's default separators: simctl prints this, and drills match on it.
    if isinstance(v, dict):
        return "{" + ", ".join(f"{dumps(str(k))}: {dumps(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(dumps(x) for x in v) + "]"
    raise ValueError(f"cannot encode {type(v).__name__}")


def loads(text: str) -> object:
    """A JSON document (sim.json, the simulator's answers); ValueError when malformed."""
    try:
        value, i = _value(text, _ws(text, 0))
    except (IndexError, KeyError) as e:
        raise ValueError(f"malformed JSON: {e}") from e
    if _ws(text, i) != len(text):
        raise ValueError("malformed JSON: trailing data")
    return value


def _ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


def _value(s: str, i: int) -> tuple[object, int]:
    c = s[i]
    if c == "{":
        return _object(s, i)
    if c == "[":
        return _array(s, i)
    if c == '"':
        return _string(s, i)
    for word, value in (("true", True), ("false", False), ("null", None)):
        if s.startswith(word, i):
            return value, i + len(word)
    j = i
    while j < len(s) and s[j] in "+-0123456789.eE":
        j += 1
    if j == i:
        raise ValueError(f"malformed JSON at {i}")
    num = s[i:j]
    return (float(num) if any(ch in num for ch in ".eE") else int(num)), j


def _object(s: str, i: int) -> tuple[dict, int]:
    out: dict = {}
    i = _ws(s, i + 1)
    if s[i] == "}":
        return out, i + 1
    while True:
        key, i = _string(s, _ws(s, i))
        i = _ws(s, i)
        if s[i] != ":":
            raise ValueError(f"malformed JSON at {i}")
        out[key], i = _value(s, _ws(s, i + 1))
        i = _ws(s, i)
        if s[i] == "}":
            return out, i + 1
        if s[i] != ",":
            raise ValueError(f"malformed JSON at {i}")
        i += 1


def _array(s: str, i: int) -> tuple[list, int]:
    out: list = []
    i = _ws(s, i + 1)
    if s[i] == "]":
        return out, i + 1
    while True:
        item, i = _value(s, _ws(s, i))
        out.append(item)
        i = _ws(s, i)
        if s[i] == "]":
            return out, i + 1
        if s[i] != ",":
            raise ValueError(f"malformed JSON at {i}")
        i += 1


def _string(s: str, i: int) -> tuple[str, int]:
    if s[i] != '"':
        raise ValueError(f"malformed JSON at {i}")
    out, i = [], i + 1
    while True:
        end, esc = s.find('"', i), s.find("\\", i)
        if end < 0:
            raise ValueError("malformed JSON: unterminated string")
        if esc < 0 or end < esc:
            out.append(s[i:end])
            return "".join(out), end + 1
        out.append(s[i:esc])
        if s[esc + 1] != "u":
            out.append(_ESCAPES[s[esc + 1]])
            i = esc + 2
            continue
        code, i = int(s[esc + 2 : esc + 6], 16), esc + 6
        if 0xD800 <= code < 0xDC00 and s.startswith("\\u", i):  # a surrogate pair
            code = 0x10000 + ((code - 0xD800) << 10) + (int(s[i + 2 : i + 6], 16) - 0xDC00)
            i += 6
        out.append(chr(code))


# ---------------------------------------------------------------------------
# The shell
# ---------------------------------------------------------------------------


class Shell:
    def __init__(self, host: Host, env: Env, delayed: bool = False, line: str = "") -> None:
        self.host = host
        self.env = env
        self.delayed = delayed
        self.errorlevel = 0
        self.echo_on = True
        self.cmdline = line

    def t(self, key: str, *args: object) -> str:
        return TEXT[self.host.lang][key].format(*args)

    def sink(self, f: object) -> Sink:
        return Sink(f, self.host.encoding)

    # --- phase 1: % expansion (once, for the whole line) -------------------
    def var(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is not None:
            return value
        dynamic = name.upper()
        if dynamic == "ERRORLEVEL":
            return str(self.errorlevel)
        if dynamic == "CD":
            return self.env.get("USERPROFILE") or "C:\\"
        if dynamic == "CMDCMDLINE":
            return f"C:\\Windows\\system32\\cmd.exe /c {self.cmdline}"
        if dynamic == "CMDEXTVERSION":
            return "2"
        if dynamic == "RANDOM":
            return str(int.from_bytes(os.urandom(2), "big") % 32768)
        return None

    def expand(self, text: str) -> str:
        """%NAME% -> value; an undefined one (or a lone %) stays as written,
        as on a command line (a batch file would drop it)."""
        out, i = [], 0
        while True:
            j = text.find("%", i)
            if j < 0:
                out.append(text[i:])
                return "".join(out)
            k = text.find("%", j + 1)
            if k < 0:
                out.append(text[i:])
                return "".join(out)
            out.append(text[i:j])
            if k == j + 1:  # `%%`: the first stays, the second may open a name
                out.append("%")
                i = k
                continue
            value = self.var(text[j + 1 : k])
            out.append(text[j : k + 1] if value is None else value)
            i = k + 1

    def expand_delayed(self, text: str) -> str:
        """Phase 5 (`cmd /v:on`): !NAME! when the command runs (undefined: empty);
        in a command with a `!`, carets escape once more."""
        if "!" not in text:
            return text
        out, i = [], 0
        while i < len(text):
            c = text[i]
            if c == "^" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if c == "!":
                k = text.find("!", i + 1)
                if k < 0:
                    break  # a lone ! is dropped
                out.append(self.var(text[i + 1 : k]) or "")
                i = k + 1
                continue
            out.append(c)
            i += 1
        return "".join(out)

    # --- running a line ------------------------------------------------------
    def run_line(self, line: str, handles: Handles) -> int:
        """One command line as `cmd /c` runs it. Raises Exit for `exit`."""
        line = line.split("\n", 1)[0].replace("\r", "")
        try:
            tree = parse(self.expand(line))
        except CmdSyntaxError as e:
            key, _, tok = str(e).partition(":")
            handles[2].write(self.t(key, tok) if tok else self.t(key))
            self.errorlevel = 255
            return 255
        if tree is not None:
            self.execute(tree, handles)
        return self.errorlevel

    def execute(self, node: object, handles: Handles) -> int:
        if isinstance(node, Op):
            rc = self.execute(node.left, handles)
            if node.op == "&" or (node.op == "&&") == (rc == 0):
                rc = self.execute(node.right, handles)
            return rc
        assert isinstance(node, Simple | Group)
        local = self.redirect(node.redirs, handles)
        if local is None:
            return 1  # a failed redirection: the command does not run, errorlevel untouched
        try:
            if isinstance(node, Group):
                return self.execute(node.body, local)
            return self.simple(node.text, local)
        finally:
            for fd, sink in local.items():
                if sink is not handles.get(fd):
                    sink.close()

    def redirect(self, redirs: list[Redir], handles: Handles) -> Handles | None:
        local = dict(handles)
        for r in redirs:
            if r.mode == ">&":
                local[r.fd] = local.get(int(r.target), Sink(None, self.host.encoding))
                continue
            if r.target.lower() in ("nul", "nul:"):
                local[r.fd] = Sink(None, self.host.encoding)
                continue
            path = self.host.path(r.target)
            try:
                if path is None:
                    raise FileNotFoundError(r.target)
                if r.mode == "<":
                    open(path, "rb").close()  # input is never read: only checked
                    continue
                f = open(path, "ab" if r.mode == ">>" else "wb")  # noqa: SIM115 - the Sink owns it; execute() closes it
                local[r.fd] = Sink(f, self.host.encoding, owned=True)
            except OSError:
                handles[2].write(self.t("no_file" if r.mode == "<" and path else "no_path"))
                for fd, sink in local.items():
                    if sink is not handles.get(fd):
                        sink.close()
                return None
        return local

    def simple(self, text: str, handles: Handles) -> int:
        if self.delayed:
            text = self.expand_delayed(text)
        text = text.lstrip(WS)
        while text.startswith("@"):
            text = text[1:].lstrip(WS)
        if not text:
            return 0
        word = _first_word(text)
        head = word.split("/", 1)[0].lower() if not word.startswith('"') else ""
        if head.startswith("echo") and (len(head) == 4 or head[4] in ".:;,=(+[]\\"):
            return self.echo(text[4:], handles)
        builtin = BUILTINS.get(head)
        if builtin is not None:
            return builtin(self, text[len(head) :], handles)
        return self.external(text, word, handles)

    def external(self, text: str, word: str, handles: Handles) -> int:
        prog, rest = _resolve(text, word)
        if prog is None:
            handles[2].write(self.t("not_recognized", word))
            self.errorlevel = NOT_FOUND_RC
            return NOT_FOUND_RC
        rc = prog(self, split_args(rest), rest, handles)
        self.errorlevel = rc
        return rc

    # --- builtins --------------------------------------------------------------
    def echo(self, rest: str, handles: Handles) -> int:
        # The first character after ECHO is a separator, the rest is printed as
        # written: a space before `&` or a redirection is printed too.
        body = rest[1:] if rest else ""
        if rest[:1] in WS and body.strip(WS).lower() in ("on", "off"):
            self.echo_on = body.strip(WS).lower() == "on"
            return 0
        if not rest or (rest[:1] in WS and not body.strip(WS)):
            handles[1].write(self.t("echo_state", "on" if self.echo_on else "off"))
            return 0
        handles[1].write(body + "\n")
        return 0


def _first_word(text: str) -> str:
    if text.startswith('"'):
        end = text.find('"', 1)
        return text if end < 0 else text[: end + 1]
    for i, c in enumerate(text):
        if c in WS:
            return text[:i]
    return text


def _program(word: str) -> Program | None:
    base = word.strip('"').replace("/", "\\").rsplit("\\", 1)[-1].lower()
    if base.endswith(".exe"):
        base = base[:-4]
    return PROGRAMS.get(base)


def _resolve(text: str, word: str) -> tuple[Program | None, str]:
    """The program a command names, and its arguments' text. An unquoted path
    with spaces (C:\\Program Files\\x\\linestat.exe) is tried a word longer at a
    time, as cmd.exe does."""
    prog = _program(word)
    if prog is not None or word.startswith('"') or "\\" not in word:
        return prog, text[len(word) :]
    end = len(word)
    while end < len(text):
        nxt = end
        while nxt < len(text) and text[nxt] in WS:
            nxt += 1
        while nxt < len(text) and text[nxt] not in WS:
            nxt += 1
        end = nxt
        prog = _program(text[:end])
        if prog is not None:
            return prog, text[end:]
    return None, ""


def b_rem(sh: Shell, rest: str, handles: Handles) -> int:
    return 0


def b_ver(sh: Shell, rest: str, handles: Handles) -> int:
    handles[1].write(sh.t("ver", WIN_VERSION))
    return 0


def b_exit(sh: Shell, rest: str, handles: Handles) -> int:
    words = rest.replace("/", " /").split()
    words = [w for w in words if w.lower() != "/b"]
    code = sh.errorlevel
    if words:
        try:
            code = int(words[0])
        except ValueError:
            code = 0  # cmd reads a non-number as 0
    raise Exit(code)


def b_set(sh: Shell, rest: str, handles: Handles) -> int:
    # Only leading blanks go: `set X=1 & ...` sets "1 ", as cmd.exe does.
    arg = (rest[1:] if rest[:1] in WS else rest).lstrip(WS)
    if arg.startswith('"') and '"' in arg[1:]:
        arg = arg[1 : arg.rindex('"')]  # set "NAME=VALUE": the quotes are not part of it
    if arg[:2].lower() in ("/a", "/p"):
        handles[2].write(sh.t("syntax"))  # not modelled
        sh.errorlevel = 1
        return 1
    if "=" not in arg:
        shown = [(k, v) for k, v in sh.env.items() if k.upper().startswith(arg.upper())]
        if not shown:
            handles[2].write(sh.t("no_var", arg))
            sh.errorlevel = 1
            return 1
        handles[1].write("".join(f"{k}={v}\n" for k, v in shown))
        return 0
    name, value = arg.split("=", 1)
    if not name:
        handles[2].write(sh.t("syntax"))
        sh.errorlevel = 1
        return 1
    sh.env.set(name, value)
    return 0


def b_type(sh: Shell, rest: str, handles: Handles) -> int:
    files = split_args(rest)
    if not files:
        handles[2].write(sh.t("syntax"))
        sh.errorlevel = 1
        return 1
    rc = 0
    for name in files:
        path = sh.host.path(name)
        try:
            if path is None:
                raise FileNotFoundError(name)
            with open(path, "rb") as f:
                handles[1].write_bytes(f.read())  # type prints the file's bytes as they are
        except OSError:
            handles[2].write(sh.t("no_file" if path else "no_path"))
            rc = 1
    if rc:
        sh.errorlevel = rc
    return rc


def b_call(sh: Shell, rest: str, handles: Handles) -> int:
    # The second pass: % expanded again (what the first pass left, e.g.
    # %^errorlevel% -> %errorlevel%), carets removed once more.
    text = unescape(sh.expand(rest.strip(WS)))
    if not text:
        return 0
    if text.startswith(":"):
        handles[2].write(sh.t("call_label"))
        sh.errorlevel = 1
        return 1
    return sh.simple(text, handles)


# copy and move are cmd.exe's own commands: one source file to one target file
# (no wildcards, no directories, no /a /b), /y to overwrite without asking;
# what the drills' configuration backup, edit and restore need.
def _file_pair(sh: Shell, rest: str, handles: Handles) -> tuple[str, str] | None:
    args = [a for a in split_args(rest) if a.lower() not in ("/y", "/-y")]
    if len(args) != 2 or any(a.startswith("/") for a in args):
        handles[2].write(sh.t("syntax"))
        return None
    src, dst = sh.host.path(args[0]), sh.host.path(args[1])
    if src is None or dst is None or not os.path.isfile(src):
        handles[2].write(sh.t("no_file"))
        return None
    return src, dst


def b_copy(sh: Shell, rest: str, handles: Handles) -> int:
    pair = _file_pair(sh, rest, handles)
    if pair is None:
        handles[1].write(sh.t("copied", 0))
        sh.errorlevel = 1
        return 1
    with open(pair[0], "rb") as f:
        data = f.read()
    with open(pair[1], "wb") as f:
        f.write(data)
    handles[1].write(sh.t("copied", 1))
    sh.errorlevel = 0
    return 0


def b_move(sh: Shell, rest: str, handles: Handles) -> int:
    pair = _file_pair(sh, rest, handles)
    if pair is None:
        sh.errorlevel = 1
        return 1
    os.replace(pair[0], pair[1])  # one volume: a rename, replacing the target as /y does
    handles[1].write(sh.t("moved", 1))
    sh.errorlevel = 0
    return 0


BUILTINS = {
    "copy": b_copy,
    "move": b_move,
    "rem": b_rem,
    "ver": b_ver,
    "exit": b_exit,
    "set": b_set,
    "type": b_type,
    "call": b_call,
}


# ---------------------------------------------------------------------------
# cmd.exe as a program: cmd [/v:on] /c "LINE"
# ---------------------------------------------------------------------------


def p_cmd(sh: Shell, args: list[str], rest: str, handles: Handles) -> int:
    delayed, run, quiet = False, False, False
    text = rest.lstrip(WS)
    while text.startswith("/"):
        end = 1
        while end < len(text) and text[end] not in WS and text[end] != "/":
            end += 1
        switch, text = text[1:end].lower(), text[end:].lstrip(WS)
        if switch in ("c", "k"):
            run = True
            break
        if switch.startswith("v:"):
            delayed = switch == "v:on"
        if switch == "q":
            quiet = True
    child = Shell(sh.host, sh.env.copy(), delayed)
    child.echo_on = not quiet  # /Q: echo off (no prompts, no echoed lines)
    if not run:
        return interactive(child, handles)
    if text.startswith('"'):
        # cmd /? : without /S, a line starting with a quote loses its first
        # and its last quote.
        last = text.rfind('"')
        text = text[1:last] + text[last + 1 :] if last > 0 else text[1:]
    child.cmdline = text
    try:
        return child.run_line(text, handles)
    except Exit as e:
        return e.code


def interactive(sh: Shell, handles: Handles) -> int:
    """cmd reading command lines from a pipe: the banner, then each line echoed
    after the prompt, as cmd does when its input is not a console."""
    prompt = (sh.env.get("USERPROFILE") or "C:\\") + ">"
    out = handles[1]
    out.write(sh.t("banner", WIN_VERSION))
    stdin = sys.stdin.buffer
    while True:
        if sh.echo_on:
            out.write("\n" + prompt)
        raw = stdin.readline()
        if not raw:
            return sh.errorlevel
        line = raw.decode(sh.host.encoding, "replace").rstrip("\r\n")
        if sh.echo_on:
            out.write(line + "\n")
        sh.cmdline = line
        try:
            sh.run_line(line, handles)
        except Exit as e:
            return e.code


# ---------------------------------------------------------------------------
# sc.exe
# ---------------------------------------------------------------------------

STATE_CODES = {
    "STOPPED": 1,
    "START_PENDING": 2,
    "STOP_PENDING": 3,
    "RUNNING": 4,
    "CONTINUE_PENDING": 5,
    "PAUSE_PENDING": 6,
    "PAUSED": 7,
}
START_TYPE_WORDS = {2: "AUTO_START", 3: "DEMAND_START", 4: "DISABLED"}
CONTROL_FUNC = {"start": "StartService", "stop": "ControlService", "continue": "ControlService"}
CONTROL_FUNC["pause"] = "ControlService"


def sc_fail(sh: Shell, func: str, code: int, handles: Handles) -> int:
    msg = WIN32_TEXT[sh.host.lang].get(code, "")
    handles[1].write(f"[SC] {func} {sh.t('failed')} {code}:\n\n{msg}\n\n")
    return code


def _controls(state: str) -> str:
    if state == "RUNNING":
        return "STOPPABLE, NOT_PAUSABLE, ACCEPTS_SHUTDOWN"
    if state == "PAUSED":
        return "STOPPABLE, PAUSABLE, ACCEPTS_SHUTDOWN"
    return "NOT_STOPPABLE, NOT_PAUSABLE, IGNORES_SHUTDOWN"


def sc_block(name: str, st: dict, ex: bool) -> str:
    """One service's status as `sc query` (ex: `sc queryex`) prints it."""
    state = str(st.get("state", "STOPPED"))
    code = int(st.get("win32_exit_code") or 0)
    pending = state.endswith("_PENDING")
    lines = [
        "",
        f"SERVICE_NAME: {name}",
        "        TYPE               : 10  WIN32_OWN_PROCESS  ",
        f"        STATE              : {STATE_CODES.get(state, 1)}  {state}",
        f"                                ({_controls(state)})",
        f"        WIN32_EXIT_CODE    : {code}  (0x{code:x})",
        "        SERVICE_EXIT_CODE  : 0  (0x0)",
        f"        CHECKPOINT         : 0x{1 if pending else 0:x}",
        f"        WAIT_HINT          : 0x{2000 if pending else 0:x}",
    ]
    if ex:
        lines += [f"        PID                : {st.get('pid') or 0}", "        FLAGS              : "]
    return "\n".join(lines) + "\n"


def p_sc(sh: Shell, args: list[str], rest: str, handles: Handles) -> int:
    if args and args[0].startswith("\\\\"):
        server = args.pop(0)[2:].lower()
        if server not in (".", "localhost", "127.0.0.1", sh.host.ipc.lower()):
            return sc_fail(sh, "OpenSCManager", 1722, handles)
    if not args:
        handles[1].write(
            "DESCRIPTION:\n        SC is a command line program used for communicating with the\n"
            "        Service Control Manager and services.\nUSAGE:\n"
            "        sc <server> [command] [service name] <option1> <option2>...\n"
        )
        return 0
    verb = args[0].lower()
    handler = SC_VERBS.get(verb)
    if handler is None:
        handles[1].write(f"[SC] {args[0]}: unrecognized command (lab stand-in: {', '.join(SC_VERBS)})\n")
        return 1639  # ERROR_INVALID_COMMAND_LINE
    return handler(sh, verb, args[1:], handles)


def _sc_status(sh: Shell, handles: Handles) -> dict | None:
    st = sh.host.ask({"op": "status"}, timeout=5)
    if st is None or not st.get("ok"):
        sc_fail(sh, "OpenSCManager", 1722, handles)
        return None
    return st["services"]


def sc_query(sh: Shell, verb: str, args: list[str], handles: Handles) -> int:
    ex = verb == "queryex"
    if not args or "=" in args[0]:
        # No name: every active service (`state= all` includes stopped ones).
        services = _sc_status(sh, handles)
        if services is None:
            return 1722
        every = any(a.lower() == "all" for a in args)
        for win, logical in sorted(sh.host.names.values()):
            st = services.get(logical, {})
            if every or st.get("state", "STOPPED") != "STOPPED":
                handles[1].write(sc_block(win, st, ex))
        return 0
    svc = sh.host.service(args[0])
    if svc is None:
        return sc_fail(sh, "EnumQueryServicesStatus:OpenService", 1060, handles)
    services = _sc_status(sh, handles)
    if services is None:
        return 1722
    handles[1].write(sc_block(args[0], services.get(svc[1], {}), ex))
    return 0


def sc_control(sh: Shell, verb: str, args: list[str], handles: Handles) -> int:
    """start / stop / continue / pause: the SCM answers at once; the service
    reaches its final state later (poll with query)."""
    if not args:
        handles[1].write(
            f"DESCRIPTION:\n        Sends a {verb.upper()} request to a service.\nUSAGE:\n"
            f"        sc <server> {verb} [service name]\n"
        )
        return 1639
    svc = sh.host.service(args[0])
    if svc is None:
        return sc_fail(sh, "OpenService", 1060, handles)
    if sh.host.denied:
        return sc_fail(sh, "OpenService", 5, handles)
    # The SCM waits up to its control timeout for a hung service's answer.
    resp = sh.host.ask({"op": "scm", "verb": verb, "service": svc[1]}, timeout=sh.host.control_timeout + 10)
    if resp is None or "code" not in resp:
        return sc_fail(sh, "OpenSCManager", 1722, handles)
    code = int(resp["code"])
    if code:
        return sc_fail(sh, CONTROL_FUNC[verb], code, handles)
    handles[1].write(sc_block(args[0], resp, ex=verb == "start"))
    return 0


def sc_qc(sh: Shell, verb: str, args: list[str], handles: Handles) -> int:
    svc = sh.host.service(args[0]) if args else None
    if svc is None:
        return sc_fail(sh, "OpenService", 1060, handles)
    services = _sc_status(sh, handles)
    if services is None:
        return 1722
    start = int(services.get(svc[1], {}).get("start_type") or 3)
    win = svc[0]
    handles[1].write(
        f"[SC] QueryServiceConfig {sh.t('success')}\n\n"
        f"SERVICE_NAME: {args[0]}\n"
        "        TYPE               : 10  WIN32_OWN_PROCESS \n"
        f"        START_TYPE         : {start}   {START_TYPE_WORDS.get(start, 'DEMAND_START')}\n"
        "        ERROR_CONTROL      : 1   NORMAL\n"
        f'        BINARY_PATH_NAME   : "C:\\Program Files\\CallCenter\\{win.replace(" ", "")}.exe"\n'
        "        LOAD_ORDER_GROUP   : \n"
        "        TAG                : 0\n"
        f"        DISPLAY_NAME       : {win}\n"
        "        DEPENDENCIES       : \n"
        "        SERVICE_START_NAME : LocalSystem\n"
    )
    return 0


def sc_qfailure(sh: Shell, verb: str, args: list[str], handles: Handles) -> int:
    svc = sh.host.service(args[0]) if args else None
    if svc is None:
        return sc_fail(sh, "OpenService", 1060, handles)
    actions = _failure_actions(sh.host, svc)
    lines = [
        f"[SC] QueryServiceConfig2 {sh.t('success')}",
        "",
        f"SERVICE_NAME: {args[0]}",
        f"        RESET_PERIOD (in seconds)    : {86400 if actions else 0}",
        "        REBOOT_MESSAGE               : ",
        "        COMMAND_LINE                 : ",
    ]
    for n, delay in enumerate(actions):
        label = "FAILURE_ACTIONS              :" if n == 0 else "                             "
        lines.append(f"        {label} RESTART -- Delay = {int(delay)} milliseconds.")
    handles[1].write("\n".join(lines) + "\n")
    return 0


def _failure_actions(host: Host, svc: tuple[str, str]) -> list:
    table: dict = host.cfg.get("failure_actions", {})
    for key, value in table.items():
        if key.lower() == svc[0].lower() or key == svc[1]:
            return list(value)
    return []


SC_VERBS = {
    "query": sc_query,
    "queryex": sc_query,
    "start": sc_control,
    "stop": sc_control,
    "continue": sc_control,
    "pause": sc_control,
    "qc": sc_qc,
    "qfailure": sc_qfailure,
}


# ---------------------------------------------------------------------------
# taskkill, timeout
# ---------------------------------------------------------------------------


def p_taskkill(sh: Shell, args: list[str], rest: str, handles: Handles) -> int:
    force, pids, images, i = False, [], [], 0
    while i < len(args):
        flag = args[i].lower().replace("-", "/", 1)
        if flag == "/f":
            force = True
        elif flag in ("/pid", "/im") and i + 1 < len(args):
            (pids if flag == "/pid" else images).append(args[i + 1])
            i += 1
        i += 1
    if not pids and not images:
        handles[2].write(sh.t("tk_syntax"))
        return 1
    rc = 0
    for image in images:  # no image names in the lab: nothing matches
        handles[2].write(sh.t("tk_not_found", image))
        rc = 128
    for pid in pids:
        rc = _kill_one(sh, pid, force, handles) or rc
    return rc


def _kill_one(sh: Shell, pid: str, force: bool, handles: Handles) -> int:
    services = sh.host.ask({"op": "status"}, timeout=5) or {}
    ours = {str(s.get("pid")) for s in services.get("services", {}).values() if s.get("pid")}
    if not pid.isdigit() or pid not in ours:
        handles[2].write(sh.t("tk_not_found", pid))  # the lab's own processes are not this host's
        return 128
    if sh.host.denied:
        handles[2].write(sh.t("tk_denied", pid))
        return 1
    if not force:
        handles[2].write(sh.t("tk_force", pid))  # a service has no window to close
        return 1
    resp = sh.host.ask({"op": "kill-pid", "pid": int(pid)}, timeout=10)
    if not resp or not resp.get("ok"):
        handles[2].write(sh.t("tk_not_found", pid))
        return 128
    handles[1].write(sh.t("tk_ok", pid))
    return 0


def p_timeout(sh: Shell, args: list[str], rest: str, handles: Handles) -> int:
    seconds, nobreak, i = None, False, 0
    while i < len(args):
        a = args[i].lower()
        if a == "/t":
            if i + 1 >= len(args):
                handles[2].write(sh.t("to_syntax"))
                return 1
            seconds = args[i + 1]
            i += 1
        elif a == "/nobreak":
            nobreak = True
        elif seconds is None:
            seconds = args[i]
        i += 1
    try:
        n = int(seconds) if seconds is not None else None
    except ValueError:
        n = None
    if n is None or not -1 <= n <= 99999:
        handles[2].write(sh.t("to_syntax" if n is None else "to_range"))
        return 1
    if n < 0 or not nobreak:
        # Waiting for a key needs a console; over SSH there is none.
        handles[2].write(sh.t("to_key"))
        return 1
    import time

    handles[1].write(sh.t("to_wait", n))
    time.sleep(n)
    handles[1].write("\n")
    return 0


# ---------------------------------------------------------------------------
# The site's own tools (lab stand-ins)
# ---------------------------------------------------------------------------

LINE_EXIT = {"up": 0, "alarm": 1, "down": 3}
LINE_TEXT = {"up": "line up", "alarm": "line alarm", "down": "board driver not running"}


def p_linestat(sh: Shell, args: list[str], rest: str, handles: Handles) -> int:
    st = sh.host.ask({"op": "status"}, timeout=5)
    line = str(st.get("line", "unknown")) if st else "unknown"
    if line not in LINE_EXIT:
        handles[2].write("linestat: cannot read the board (the service manager does not answer)\n")
        return 4
    handles[1].write(LINE_TEXT[line] + "\n")
    return LINE_EXIT[line]


def _ask_manager(
    sh: Shell, handles: Handles, tool: str, req: dict, field: str, default: str, choices: tuple[str, ...], arg: str
) -> int:
    """A lab tool (labcall.exe, labcalls.exe): one request to the IPC's
    simulated service manager, its answer on stdout, an error on stderr."""
    if arg not in choices:
        handles[2].write(f"usage: {tool}.exe {'|'.join(choices)}\n")
        return 2
    resp = sh.host.ask(req, timeout=10)
    if resp is None:
        handles[2].write(f"{tool}: the service manager does not answer\n")
        return 1
    if resp.get("ok"):
        handles[1].write(f"{resp.get(field, default)}\n")
        return 0
    handles[2].write(f"{resp.get('error', 'failed')}\n")
    return 1


def p_labcall(sh: Shell, args: list[str], rest: str, handles: Handles) -> int:
    kind = args[0].lower() if args else "inbound"
    req = {"op": "call", "kind": kind}
    return _ask_manager(sh, handles, "labcall", req, "detail", "answered", ("inbound", "outbound", "agent"), kind)


def p_labcalls(sh: Shell, args: list[str], rest: str, handles: Handles) -> int:
    """Simulated calls: active (prints `ivr=N agent=M`), busy-out, release."""
    action = args[0].lower() if args else "active"
    req = {"op": "calls", "action": action}
    return _ask_manager(sh, handles, "labcalls", req, "text", "", ("active", "busy-out", "release"), action)


def p_labfault(sh: Shell, args: list[str], rest: str, handles: Handles) -> int:
    pos, seconds, i = [], 5.0, 0
    while i < len(args):
        if args[i].lower() in ("/seconds", "--seconds") and i + 1 < len(args):
            try:
                seconds = float(args[i + 1])
            except ValueError:
                pos = []
                break
            i += 2
            continue
        pos.append(args[i])
        i += 1
    if not pos:
        handles[2].write("usage: labfault.exe KIND [SERVICE] [/seconds N]\n")
        return 2
    service = None
    if len(pos) > 1:
        named = sh.host.service(pos[1])  # the Windows name, or the simulator's own
        service = named[1] if named else pos[1]
    resp = sh.host.ask({"op": "fault", "kind": pos[0], "service": service, "seconds": seconds}, timeout=15)
    if resp is None:
        handles[2].write("labfault: the service manager does not answer\n")
        return 1
    if resp.get("ok"):
        handles[1].write(f"{resp.get('detail', 'done')}\n")
        return 0
    handles[2].write(f"{resp.get('error', 'failed')}\n")
    return 1


def p_findstr(sh: Shell, args: list[str], rest: str, handles: Handles) -> int:
    """findstr with literal strings: /c:"STRING" (or space-separated words, any
    matching), /b /e /x anchors, /v inverts, /i ignores case; matching lines are
    printed as they are in the file. Exit 0 when a line was printed, else 1."""
    flags, strings, files = set(), [], []
    for a in args:
        low = a.lower()
        if low.startswith("/c:"):
            strings.append(a[3:])
        elif low in ("/v", "/b", "/e", "/x", "/l", "/i"):
            flags.add(low[1])
        elif low.startswith("/"):
            handles[2].write(sh.t("fs_only"))
            return 2
        elif not strings and not files:
            strings = a.split()
        else:
            files.append(a)
    found = False
    for name in files:
        path = sh.host.path(name)
        try:
            with open(path or "", "rb") as f:
                lines = f.read().splitlines(keepends=True)
        except OSError:
            handles[2].write(sh.t("fs_open", name))
            continue
        for raw in lines:
            text = raw.decode(sh.host.encoding, "replace").rstrip("\r\n")
            if _fs_match(text, strings, flags) != ("v" in flags):
                handles[1].write_bytes(raw if raw.endswith(b"\n") else raw + b"\r\n")
                found = True
    return 0 if found else 1


def _fs_match(text: str, strings: list[str], flags: set[str]) -> bool:
    if "i" in flags:
        text, strings = text.lower(), [s.lower() for s in strings]
    for s in strings:
        if "x" in flags or ("b" in flags and "e" in flags):
            hit = text == s
        elif "b" in flags:
            hit = text.startswith(s)
        elif "e" in flags:
            hit = text.endswith(s)
        else:
            hit = s in text
        if hit:
            return True
    return False


Program = type(p_sc)
PROGRAMS = {
    "sc": p_sc,
    "taskkill": p_taskkill,
    "timeout": p_timeout,
    "cmd": p_cmd,
    "linestat": p_linestat,
    "labcall": p_labcall,
    "labfault": p_labfault,
    "labcalls": p_labcalls,
    "findstr": p_findstr,
}


# ---------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: wincmd.py IPC_DIR  (the command line in SSH_ORIGINAL_COMMAND)\n")
        return 2
    host = Host(argv[0])
    line = os.environ.get("SSH_ORIGINAL_COMMAND")
    sh = Shell(host, windows_env(host.ipc, str(host.cfg.get("user") or "Administrator")), line=line or "")
    handles = {1: sh.sink(sys.stdout.buffer), 2: sh.sink(sys.stderr.buffer)}
    try:
        code = interactive(sh, handles) if line is None else sh.run_line(line, handles)
    except Exit as e:
        code = e.code
    # Windows exit codes are 32 bits; a Linux process (and so sshd) passes on the low 8.
    return code & 0xFF if code >= 0 else 255


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
