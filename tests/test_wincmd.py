"""The cmd.exe + sc.exe stand-in (failover/lab/wincmd.py): its parser as pure
tables, then against a real simulator (sim.py parenting real service
processes), run exactly as the IPC's sshd runs its ForceCommand: a fresh
`python -I wincmd.py IPC_DIR` per command, the line in SSH_ORIGINAL_COMMAND."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from failover import platforms
from failover.lab import simctl, wincmd
from failover.lab.procs import alive, free_ports, kill_and_wait, pids_where
from failover.rules import State

REPO = Path(__file__).resolve().parents[1]
WINCMD = str(REPO / "failover" / "lab" / "wincmd.py")
LABID = f"wincmd-test-{os.getpid()}"
NAMES = {
    "Dialogic System Service": "driver",
    "FaxServer": "fax",
    "CTIServer": "cti",
    "IVRService": "ivr",
    "KCXP": "kcxp",
    "KCBP": "kcbp",
    "KCXP_Replica": "kcxp-replica",
    "KCBP_Replica": "kcbp-replica",
}
CONTROL_TIMEOUT = 0.5


# ----- pure: the parser ---------------------------------------------------------


def shape(node: object) -> str:
    """A parse tree as text: [command text] and redirections, (a OP b), {group}."""
    if node is None:
        return "-"
    if isinstance(node, wincmd.Op):
        return f"({shape(node.left)} {node.op} {shape(node.right)})"
    assert isinstance(node, wincmd.Simple | wincmd.Group)
    redirs = "".join(f" {r.fd}{r.mode}{r.target}" for r in node.redirs)
    if isinstance(node, wincmd.Group):
        return "{" + shape(node.body) + "}" + redirs
    return f"[{node.text}]{redirs}"


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("a & b", "([a ] & [b])"),
        ("a & b && c", "([a ] & ([b ] && [c]))"),  # && binds tighter than &
        ("a && b || c", "(([a ] && [b ]) || [c])"),  # left to right
        ("a || b & c", "(([a ] || [b ]) & [c])"),
        ("a &", "[a ]"),  # a trailing & is allowed
        ('echo "a & b" & c', '([echo "a & b" ] & [c])'),  # quoted operators are text
        ("echo a ^& b", "[echo a & b]"),  # a caret escapes outside quotes and goes
        ('echo "^&"', '[echo "^&"]'),  # inside quotes a caret is literal
        ("echo ^^", "[echo ^]"),
        ("echo ^<x^>", "[echo <x>]"),
        ("echo a^", "[echo a]"),  # a caret at the end escapes nothing
        ("echo x >nul 2>&1", "[echo x  ] 1>nul 2>&1"),
        ("echo x 2>nul 1>out.txt", "[echo x  ] 2>nul 1>out.txt"),
        ("echo x>>log.txt", "[echo x] 1>>log.txt"),
        ('echo x > "my file.txt"', "[echo x ] 1>my file.txt"),
        ("echo 12>nul", "[echo 12] 1>nul"),  # a digit glued to a word is text
        (">nul echo x", "[ echo x] 1>nul"),
        ("(a & b) >nul 2>&1", "{([a ] & [b])} 1>nul 2>&1"),
        ("(a) & (b || c)", "({[a]} & {([b ] || [c])})"),
        ("(echo a) && echo b", "({[echo a]} && [echo b])"),
        ("rem a & echo b", "[rem a & echo b]"),  # REM: the rest of the line
        ("call echo x %^errorlevel%", "[call echo x %errorlevel%]"),
        ("  ", "-"),
    ],
)
def test_parse(line: str, want: str) -> None:
    assert shape(wincmd.parse(line)) == want


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("& a", "unexpected:&"),
        ("a & & b", "unexpected:&"),
        ("a &&", "syntax"),
        ("a && || b", "unexpected:||"),
        ("a | b", "no_pipe"),  # refused: not modelled
        ("(a", "syntax"),
        ("()", "unexpected:)"),
        ("echo x >", "syntax"),
        ("(a) b", "unexpected:b"),
    ],
)
def test_parse_errors(line: str, error: str) -> None:
    with pytest.raises(wincmd.CmdSyntaxError) as e:
        wincmd.parse(line)
    assert str(e.value) == error


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        ('sc.exe queryex "CTIServer"', ["sc.exe", "queryex", "CTIServer"]),
        ('sc stop "Dialogic System Service"', ["sc", "stop", "Dialogic System Service"]),
        ("taskkill  /F\t/PID 42 ", ["taskkill", "/F", "/PID", "42"]),
        ('a"b c"d', ["ab cd"]),
        ('a\\"b', ['a"b']),
        ('a\\\\"b c"', ["a\\b c"]),
        ("C:\\x\\y z", ["C:\\x\\y", "z"]),
        ('""', [""]),
    ],
)
def test_split_args(text: str, argv: list[str]) -> None:
    assert wincmd.split_args(text) == argv


@pytest.mark.parametrize(
    "doc",
    [
        {"a": [1, -2, 2.5, 1e-3, True, False, None], "b": 'q"\\\n\t/\u4e2d\U0001f600', "c": {}, "d": []},
        {"services": {"kcxp-replica": {"state": "STOPPED", "pid": None, "win32_exit_code": 1077}}},
    ],
)
def test_json_codec_matches_json(doc: dict) -> None:
    for text in (json.dumps(doc), json.dumps(doc, ensure_ascii=False), json.dumps(doc, indent=1)):
        assert wincmd.loads(text) == doc
    assert json.loads(wincmd.dumps(doc)) == doc
    for bad in ('{"a": 1', '{"a" 1}', "[1,]", '"x', "{} x"):
        with pytest.raises(ValueError):
            wincmd.loads(bad)


# ----- pure: expansion and builtins (an IPC directory, no simulator) ------------


@pytest.fixture
def shell(tmp_path: Path) -> Callable[..., tuple[int, str, str]]:
    (tmp_path / "sim.json").write_text(json.dumps({"lab": "t", "ipc": "ipc-a", "services": {}, "names": NAMES}))
    (tmp_path / "notes.txt").write_bytes(b"one\r\ntwo\r\n")
    host = wincmd.Host(str(tmp_path))

    def run(line: str) -> tuple[int, str, str]:
        out, err = io.BytesIO(), io.BytesIO()
        sh = wincmd.Shell(host, wincmd.windows_env("ipc-a", "Administrator"), line=line)
        handles = {1: sh.sink(out), 2: sh.sink(err)}
        try:
            code = sh.run_line(line, handles)
        except wincmd.Exit as e:
            code = e.code
        return code, out.getvalue().decode("cp437"), err.getvalue().decode("cp437")

    return run


NOT_RECOGNIZED = "'nosuch' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"


@pytest.mark.parametrize(
    ("line", "out", "code"),
    [
        ("echo hi & echo there", "hi \r\nthere\r\n", 0),  # the space before & is echoed
        ("echo hi", "hi\r\n", 0),
        ("echo  two", " two\r\n", 0),
        ("echo.", "\r\n", 0),
        ("echo", "ECHO is on.\r\n", 0),
        (
            "echo %COMPUTERNAME% %SystemRoot% %ProgramFiles% %OS%",
            "IPC-A C:\\Windows C:\\Program Files Windows_NT\r\n",
            0,
        ),
        ("echo %computername%", "IPC-A\r\n", 0),  # names are case-insensitive
        ("echo %nosuch% 50%", "%nosuch% 50%\r\n", 0),  # undefined: left as written
        ("nosuch & echo %errorlevel%", "0\r\n", 9009),  # expanded before anything ran
        ("nosuch & call echo %^errorlevel%", "9009\r\n", 9009),  # call expands again
        ("nosuch & call echo %errorlevel%", "0\r\n", 9009),  # already expanded by then
        ("set X=1 & echo %X% & call echo [%X%]", "%X% \r\n[1 ]\r\n", 0),  # set keeps the space
        ('set "Y=2" & call echo [%Y%]', "[2]\r\n", 0),
        ("nosuch || echo failed", "failed\r\n", 9009),
        ("nosuch && echo never", "", 9009),
        ("echo a && echo b", "a \r\nb\r\n", 0),
        ("(nosuch || echo x) && echo y", "x\r\ny\r\n", 9009),  # a group's rc is its last command's
        ("(echo a & echo b) >nul & echo c", "c\r\n", 0),
        ("echo gone >nul 2>&1", "", 0),
        ("echo ^<tag^> ^& ^| ^^", "<tag> & | ^\r\n", 0),
        ('echo "^& %OS%"', '"^& Windows_NT"\r\n', 0),  # % expands inside quotes too
        ("rem a & echo b", "", 0),
        ("exit /b 3 & echo no", "", 3),
        ("exit 4", "", 4),
        ("exit/b 5", "", 5),
        ('cmd /c "exit /b 6" & call echo %^errorlevel%', "6\r\n", 6),
        ('cmd /c "nosuch & echo %errorlevel%"', "0\r\n", 9009),  # the outer line expanded it
        ('cmd /v:on /c "nosuch & echo !errorlevel!"', "9009\r\n", 9009),  # delayed: when echo runs
        ("type notes.txt", "one\r\ntwo\r\n", 0),
        ("echo x>o.txt & type o.txt", "x \r\n", 0),  # the space before & went to the file
        ("ver", "\r\nMicrosoft Windows [Version 10.0.17763.5830]\r\n", 0),
        ("@echo quiet", "quiet\r\n", 0),
        ("echo a | more", "", 255),
        ("copy /y notes.txt n2.txt & type n2.txt", "        1 file(s) copied.\r\none\r\ntwo\r\n", 0),
        (
            "copy notes.txt n3.txt >nul && move /y n3.txt n4.txt & type n4.txt",
            "        1 file(s) moved.\r\none\r\ntwo\r\n",
            0,
        ),
        ('findstr /c:"tw" notes.txt', "two\r\n", 0),
        ('findstr /v /b /l /c:"one" notes.txt', "two\r\n", 0),
        ('findstr /x /c:"on" notes.txt', "", 1),
        ("findstr /i ONE notes.txt", "one\r\n", 0),
    ],
)
def test_cmd_semantics(shell: Callable[..., tuple[int, str, str]], line: str, out: str, code: int) -> None:
    got_code, got_out, _ = shell(line)
    assert (got_out, got_code) == (out, code)


@pytest.mark.parametrize(
    ("line", "err", "code"),
    [
        ("nosuch", NOT_RECOGNIZED, 9009),
        ('"C:\\Program Files\\x\\nosuch.exe" /q', "'\"C:\\Program Files\\x\\nosuch.exe\"' is not recognized", 9009),
        ("type ..\\etc\\passwd", "The system cannot find the path specified.\r\n", 1),
        ("type C:\\Windows\\win.ini", "The system cannot find the path specified.\r\n", 1),
        ("type missing.txt", "The system cannot find the file specified.\r\n", 1),
        ("echo x >..\\escape.txt", "The system cannot find the path specified.\r\n", 0),  # errorlevel untouched
        ("& echo x", "& was unexpected at this time.\r\n", 255),
        ("echo a | more", "The pipe operator | is not supported", 255),
        ("call :label", "Invalid attempt to call batch label outside of batch script.\r\n", 1),
        ("copy /y missing.txt x.txt", "The system cannot find the file specified.\r\n", 1),
        ("move /y ..\\notes.txt x.txt", "The system cannot find the file specified.\r\n", 1),
        ("findstr /r ^o notes.txt", "literal strings only", 2),
        ("findstr x missing.txt", "FINDSTR: Cannot open missing.txt\r\n", 1),
    ],
)
def test_cmd_errors(shell: Callable[..., tuple[int, str, str]], line: str, err: str, code: int) -> None:
    got_code, _, got_err = shell(line)
    assert err in got_err and got_code == code


# ----- integration: a real simulator, wincmd run as sshd runs it ----------------


class Ipc:
    """One simulated Windows IPC: its directory and simulator."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "ipc-a"
        self.dir.mkdir()
        cti, ivr = free_ports(2)
        self.ports = {"cti": cti, "ivr": ivr}
        cfg = {
            "lab": LABID,
            "ipc": "ipc-a",
            "host": "127.0.0.1",
            "python": sys.executable,
            "services": {s: {"port": self.ports.get(s, 0)} for s in NAMES.values()},
            "autostart": ["driver", "cti", "ivr", "kcxp", "kcbp"],
            "names": NAMES,
            "control_timeout": CONTROL_TIMEOUT,
        }
        (self.dir / "sim.json").write_text(json.dumps(cfg, indent=1))
        # The same IPC on a Chinese-language Windows: its own sim.json, the same simulator.
        self.zh = root / "ipc-a-zh"
        self.zh.mkdir()
        (self.zh / "sim.json").write_text(json.dumps({**cfg, "codepage": 936}))
        (self.zh / "sim.sock").symlink_to(self.dir / "sim.sock")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.dir / "sim.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "failover.lab.sim", str(self.dir)],
                cwd=str(REPO),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while not (self.dir / "sim.ready").exists():
            assert self.proc.poll() is None, (self.dir / "sim.log").read_text()
            assert time.monotonic() < deadline, "the simulator is not ready"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            kill_and_wait(self.proc.pid)
            self.proc.wait(5)
        # The simulator kills its services on SIGTERM; anything left (it was
        # SIGKILLed) is found by this test's lab id and stopped by PID.
        for pid in pids_where(lambda argv: LABID.encode() in argv):
            kill_and_wait(pid)

    def cmd(self, line: str, zh: bool = False, timeout: float = 20) -> tuple[int, bytes, bytes]:
        """One SSH command: a fresh wincmd, as sshd's ForceCommand starts it."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SSH_ORIGINAL_COMMAND": line}
        p = subprocess.run(
            [sys.executable, "-I", WINCMD, str(self.zh if zh else self.dir)],
            env=env,
            capture_output=True,
            timeout=timeout,
        )
        return p.returncode, p.stdout, p.stderr

    def out(self, line: str) -> tuple[int, str]:
        code, out, err = self.cmd(line)
        return code, (out + err).decode("cp437")

    def sim(self, req: dict) -> dict:
        return simctl.request(str(self.dir), req, timeout=10)

    def status(self, service: str) -> dict:
        return self.sim({"op": "status"})["services"][service]

    def query(self, name: str) -> platforms.ScResult:
        code, out = self.out(f'sc.exe queryex "{name}"')
        assert code == 0, out
        return platforms.parse_sc(out)

    def wait_state(self, name: str, state: State, timeout: float = 5.0) -> platforms.ScResult:
        deadline = time.monotonic() + timeout
        while True:
            r = self.query(name)
            if r.state == state or time.monotonic() > deadline:
                assert r.state == state, f"{name}: {r.state}, not {state}"
                return r
            time.sleep(0.05)


@pytest.fixture(scope="module")
def ipc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ipc]:
    i = Ipc(tmp_path_factory.mktemp("wincmd"))
    try:
        i.start()
        yield i
    finally:
        i.stop()


def _crlf_only(data: bytes) -> bool:
    return b"\n" in data and data.count(b"\n") == data.count(b"\r\n")


def _probe(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as c:
            c.sendall(b"PING\n")
            return c.recv(64).startswith(b"PONG")
    except OSError:
        return False


def test_queryex_as_windows_prints_it(ipc: Ipc) -> None:
    code, out, _ = ipc.cmd('sc.exe queryex "CTIServer"')
    assert code == 0 and _crlf_only(out)
    text = out.decode("cp437")
    assert text.startswith("\r\nSERVICE_NAME: CTIServer\r\n        TYPE               : 10  WIN32_OWN_PROCESS  \r\n")
    assert "        STATE              : 4  RUNNING\r\n" in text
    assert "                                (STOPPABLE, NOT_PAUSABLE, ACCEPTS_SHUTDOWN)\r\n" in text
    assert "        WIN32_EXIT_CODE    : 0  (0x0)\r\n" in text
    assert text.endswith("        FLAGS              : \r\n")
    r = platforms.parse_sc(text)
    assert r.state == State.RUNNING and r.pid == ipc.status("cti")["pid"] and r.error is None
    # query: no PID; any case, any path, .exe or not
    code, text = ipc.out("C:\\Windows\\System32\\SC query ctiserver")
    assert code == 0 and "SERVICE_NAME: ctiserver\r\n" in text and "PID" not in text
    never = ipc.query("KCXP_Replica")
    assert never.state == State.STOPPED and never.pid is None and never.exit_code == 1077  # never started


def test_start_and_stop_return_at_once_pending(ipc: Ipc) -> None:
    try:
        t0 = time.monotonic()
        code, text = ipc.out("sc.exe start FaxServer")
        r = platforms.parse_sc(text)
        assert code == 0 and r.state == State.START_PENDING and r.pid == ipc.status("fax")["pid"]
        assert "FLAGS" in text and time.monotonic() - t0 < 1.0
        assert ipc.wait_state("FaxServer", State.RUNNING).pid == r.pid

        code, text = ipc.out("sc.exe start FaxServer & call echo rc %^errorlevel%")
        assert "[SC] StartService FAILED 1056:\r\n\r\nAn instance of the service is already running.\r\n" in text
        assert "rc 1056\r\n" in text and code == 1056 & 0xFF  # sshd carries 8 bits of it

        ipc.out("labfault.exe slow-stop FaxServer /seconds 1")
        t0 = time.monotonic()
        code, text = ipc.out("sc.exe stop FaxServer & sc.exe stop FaxServer & sc.exe start FaxServer")
        assert time.monotonic() - t0 < 0.9  # none of them waited for the stop
        assert "STATE              : 3  STOP_PENDING" in text
        assert text.count("[SC] ControlService FAILED 1061:") == 1 and "[SC] StartService FAILED 1061:" in text
        assert ipc.query("FaxServer").state == State.STOP_PENDING
        done = ipc.wait_state("FaxServer", State.STOPPED)
        assert done.exit_code == 0 and done.pid is None and ipc.status("fax")["pid"] is None

        code, text = ipc.out("sc.exe stop FaxServer")
        assert (
            code == 1062 & 0xFF and "[SC] ControlService FAILED 1062:\r\n\r\nThe service has not been started." in text
        )
    finally:
        ipc.out("labfault clear FaxServer & sc stop FaxServer")


def test_unknown_service_1060_and_parse_time_errorlevel(ipc: Ipc) -> None:
    code, text = ipc.out("sc.exe query nosuch")
    want = (
        "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\r\n\r\n"
        "The specified service does not exist as an installed service.\r\n\r\n"
    )
    assert text == want and code == 1060 & 0xFF
    code, text = ipc.out("sc.exe query nosuch & echo %errorlevel%")
    assert text.endswith("\r\n0\r\n")  # the errorlevel from before the line ran
    code, text = ipc.out("sc.exe query nosuch & call echo X %^errorlevel%")
    assert text.endswith("X 1060\r\n")
    code, text = ipc.out("sc.exe start nosuch")
    assert text.startswith("[SC] OpenService FAILED 1060:") and code == 1060 & 0xFF


def test_and_or_and_unknown_program(ipc: Ipc) -> None:
    assert ipc.out("sc query nosuch >nul && echo yes")[1] == ""
    assert ipc.out("sc query nosuch >nul || echo no")[1] == "no\r\n"
    assert ipc.out("sc query CTIServer >nul && echo up")[1] == "up\r\n"
    code, out, err = ipc.cmd("nosuch.exe /x")
    assert out == b"" and code == 9009 & 0xFF
    assert (
        err
        == b"'nosuch.exe' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
    )
    assert ipc.out("nosuch 2>nul & call echo %^errorlevel%")[1] == "9009\r\n"


def test_hung_service_does_not_answer_1053(ipc: Ipc) -> None:
    pid = ipc.status("kcxp")["pid"]
    try:
        ipc.out("labfault hang KCXP")
        t0 = time.monotonic()
        code, text = ipc.out("sc.exe stop KCXP")
        waited = time.monotonic() - t0
        assert code == 1053 & 0xFF and "[SC] ControlService FAILED 1053:" in text
        assert "did not respond to the start or control request in a timely fashion" in text
        assert waited >= CONTROL_TIMEOUT
        r = ipc.query("KCXP")
        assert r.state == State.RUNNING and r.pid == pid  # the SCM still shows it running
        code, text = ipc.out(f"taskkill /F /PID {r.pid}")
        assert code == 0 and text == f"SUCCESS: The process with PID {pid} has been terminated.\r\n"
        gone = ipc.query("KCXP")
        assert gone.state == State.STOPPED and gone.exit_code == 1067 and not alive(pid)
    finally:
        ipc.out("sc start KCXP")
    ipc.wait_state("KCXP", State.RUNNING)


def test_stop_fail_stays_stop_pending_until_taskkill(ipc: Ipc) -> None:
    try:
        ipc.out("labfault stop-fail KCBP")
        code, text = ipc.out("sc.exe stop KCBP")
        assert code == 0 and platforms.parse_sc(text).state == State.STOP_PENDING
        time.sleep(0.6)
        r = ipc.query("KCBP")
        assert r.state == State.STOP_PENDING and r.pid == ipc.status("kcbp")["pid"] and alive(r.pid)
        assert ipc.out("sc.exe stop KCBP")[0] == 1061 & 0xFF
        assert ipc.out("sc.exe start KCBP")[0] == 1061 & 0xFF
        code, text = ipc.out(f"taskkill /PID {r.pid}")  # without /F: a service has no window to close
        assert code == 1 and "can only be terminated forcefully" in text and alive(r.pid)
        code, text = ipc.out(f"TASKKILL /pid {r.pid} /f")
        assert code == 0 and f"PID {r.pid} has been terminated" in text
        gone = ipc.query("KCBP")
        assert gone.state == State.STOPPED and gone.exit_code == 1067 and not alive(r.pid)
    finally:
        ipc.out("labfault clear KCBP & sc start KCBP")
    ipc.wait_state("KCBP", State.RUNNING)


def test_taskkill_only_kills_this_ipcs_services(ipc: Ipc) -> None:
    assert ipc.proc is not None
    for pid in (1, ipc.proc.pid, os.getpid()):
        code, text = ipc.out(f"taskkill /F /PID {pid}")
        assert code == 128 and text == f'ERROR: The process "{pid}" not found.\r\n'
    assert alive(ipc.proc.pid)
    assert ipc.out("taskkill /F")[0] == 1


def test_failed_start_shows_1067(ipc: Ipc) -> None:
    ipc.out("labfault fail-start KCXP_Replica")
    code, text = ipc.out("sc start KCXP_Replica")
    assert code == 0 and platforms.parse_sc(text).state == State.START_PENDING
    r = ipc.wait_state("KCXP_Replica", State.STOPPED)
    assert r.exit_code == 1067 and "WIN32_EXIT_CODE    : 1067  (0x42b)" in ipc.out("sc query KCXP_Replica")[1]


def test_paused_service(ipc: Ipc) -> None:
    port = ipc.ports["cti"]
    try:
        assert _probe(port)
        assert ipc.out("labfault pause CTIServer")[0] == 0
        r = ipc.query("CTIServer")
        assert r.state == State.PAUSED and "STATE              : 7  PAUSED" in ipc.out("sc query CTIServer")[1]
        assert r.pid == ipc.status("cti")["pid"] and not _probe(port)  # running, not serving
        assert ipc.out("sc start CTIServer")[0] == 1056 & 0xFF
        code, text = ipc.out("sc continue CTIServer")
        assert code == 0 and "STATE              : 5  CONTINUE_PENDING" in text
        assert ipc.wait_state("CTIServer", State.RUNNING).pid == r.pid and _probe(port)
        assert ipc.out("sc continue CTIServer")[0] == 1052 & 0xFF  # a running service is NOT_PAUSABLE
        assert ipc.out("sc pause CTIServer")[0] == 1052 & 0xFF
        # stop works on a paused service
        ipc.out("labfault pause CTIServer")
        code, text = ipc.out("sc stop CTIServer")
        assert code == 0 and platforms.parse_sc(text).state == State.STOP_PENDING
        assert ipc.wait_state("CTIServer", State.STOPPED).exit_code == 0
    finally:
        ipc.out("sc start CTIServer")
    ipc.wait_state("CTIServer", State.RUNNING)


def test_blocking_ops_with_a_paused_service(ipc: Ipc) -> None:
    """The lab platform's blocking start/stop: a paused service is continued by
    start (no second process), stopped by stop."""
    pid = ipc.status("ivr")["pid"]
    ipc.out("labfault pause IVRService")
    r = ipc.sim({"op": "start", "service": "ivr", "timeout": 5})
    assert r["ok"] and r["changed"]
    assert ipc.status("ivr")["state"] == "RUNNING" and ipc.status("ivr")["pid"] == pid and _probe(ipc.ports["ivr"])
    ipc.out("labfault pause IVRService")
    assert ipc.sim({"op": "stop", "service": "ivr", "timeout": 5})["ok"]
    assert ipc.status("ivr")["state"] == "STOPPED" and not alive(pid)
    assert ipc.sim({"op": "start", "service": "ivr", "timeout": 10})["ok"]


def test_blocking_stop_fail_unchanged(ipc: Ipc) -> None:
    ipc.sim({"op": "start", "service": "kcbp-replica", "timeout": 10})
    try:
        ipc.sim({"op": "fault", "kind": "stop-fail", "service": "kcbp-replica"})
        r = ipc.sim({"op": "stop", "service": "kcbp-replica", "timeout": 0.3})
        assert not r["ok"] and "did not stop within 0.3 s" in r["error"]
        assert ipc.status("kcbp-replica")["state"] == "RUNNING"
    finally:
        ipc.sim({"op": "fault", "kind": "clear", "service": "kcbp-replica"})
        assert ipc.sim({"op": "stop", "service": "kcbp-replica", "timeout": 5})["ok"]


def test_start_type_and_failure_actions(ipc: Ipc) -> None:
    code, text = ipc.out("sc qc CTIServer & sc qfailure CTIServer")
    assert code == 0 and "START_TYPE         : 3   DEMAND_START\r\n" in text
    assert "[SC] QueryServiceConfig2 SUCCESS" in text and "FAILURE_ACTIONS" not in text
    try:
        ipc.out("labfault auto-start CTIServer & labfault disable KCXP_Replica")
        assert "START_TYPE         : 2   AUTO_START" in ipc.out("sc qc CTIServer")[1]
        code, text = ipc.out("sc start KCXP_Replica")
        assert code == 1058 & 0xFF and "[SC] StartService FAILED 1058:" in text
    finally:
        ipc.out("labfault clear CTIServer & labfault clear KCXP_Replica")
    assert "DEMAND_START" in ipc.out("sc qc CTIServer")[1]


def test_line_check_and_call_test(ipc: Ipc) -> None:
    assert ipc.out("linestat.exe") == (0, "line up\r\n")
    assert ipc.out('"C:\\Program Files\\Dialogic\\bin\\linestat.exe"')[0] == 0
    assert ipc.out("C:\\Program Files\\Dialogic\\bin\\linestat.exe")[0] == 0  # unquoted, as cmd retries
    code, text = ipc.out("labcall.exe inbound")
    assert code == 0 and "inbound call answered on ipc-a" in text
    try:
        ipc.out("labfault line-alarm")
        assert ipc.out("linestat")[0] == 1
        assert ipc.out("labcall outbound")[0] == 1
    finally:
        ipc.out("labfault line-clear")
    try:
        assert ipc.out('sc stop "Dialogic System Service"')[0] == 0
        ipc.wait_state("Dialogic System Service", State.STOPPED)
        assert ipc.out("linestat.exe") == (3, "board driver not running\r\n")
    finally:
        ipc.out('sc start "dialogic system service"')
    ipc.wait_state("Dialogic System Service", State.RUNNING)


def test_the_products_batched_status(ipc: Ipc) -> None:
    """The Windows executor's own status line, parsed by its own parser."""
    win = platforms.Windows(platforms.LineCheck("linestat.exe", 5))
    refs = [platforms.ServiceRef(logical, name) for name, logical in NAMES.items()]
    code, out, _ = ipc.cmd(win.batch_status_cmd(refs))
    states, line = win.parse_batch(out.decode("cp437"), refs)
    sim = ipc.sim({"op": "status"})["services"]
    assert states == {logical: State(sim[logical]["state"]) for logical in NAMES.values()}
    assert line == "up" and states["cti"] == State.RUNNING and states["fax"] == State.STOPPED
    # A start of a running service, read the way the executor reads it: Windows
    # hands over exit code 1056; Linux's sshd only its low byte (32).
    ref = platforms.ServiceRef("cti", "CTIServer")
    code, out, _ = ipc.cmd(win.start_cmd(ref, 30))
    text = out.decode("cp437")
    assert code == 1056 & 0xFF and platforms.parse_sc(text).error == 1056
    assert win.read_result("start", ref, 1056, text).outcome == platforms.Outcome.OK


def test_codepage_936(ipc: Ipc) -> None:
    code, out, _ = ipc.cmd('sc.exe queryex "CTIServer"', zh=True)
    assert code == 0 and _crlf_only(out) and "STATE              : 4" in out.decode("gbk")
    code, out, _ = ipc.cmd("sc.exe start CTIServer", zh=True)
    text = out.decode("gbk")
    assert "[SC] StartService 失败 1056:" in text and "服务的实例已在运行中。" in text
    assert "失败".encode("gbk") in out and "失败".encode() not in out  # GBK bytes, not UTF-8
    assert platforms.parse_sc(text).error == 1056 and code == 1056 & 0xFF
    code, out, err = ipc.cmd("nosuch", zh=True)
    assert "不是内部或外部命令" in err.decode("gbk") and code == 9009 & 0xFF
    code, out, _ = ipc.cmd("sc stop FaxServer", zh=True)
    assert "服务尚未启动。" in out.decode("gbk") and code == 1062 & 0xFF


def test_interactive_without_a_command(ipc: Ipc) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    p = subprocess.run(
        [sys.executable, "-I", WINCMD, str(ipc.dir)],
        env=env,
        input=b"echo hi\r\nsc query nosuch >nul\r\nexit 7\r\necho never\r\n",
        capture_output=True,
        timeout=20,
    )
    text = p.stdout.decode("cp437")
    assert p.returncode == 7 and _crlf_only(p.stdout)
    assert re.search(r"Administrator>echo hi\r\nhi\r\n", text) and "never" not in text
