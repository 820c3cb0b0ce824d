"""Platform command building and parsing (pure): Windows sc.exe output in its
real format (CRLF, padded columns, FAILED lines), quoting, batch parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover import platforms as pf
from failover.rules import State

SC_RUNNING = (
    "\r\nSERVICE_NAME: CTIServer \r\n"
    "        TYPE               : 10  WIN32_OWN_PROCESS  \r\n"
    "        STATE              : 4  RUNNING \r\n"
    "                                (STOPPABLE, NOT_PAUSABLE, ACCEPTS_SHUTDOWN)\r\n"
    "        WIN32_EXIT_CODE    : 0  (0x0)\r\n"
    "        SERVICE_EXIT_CODE  : 0  (0x0)\r\n"
    "        CHECKPOINT         : 0x0\r\n"
    "        WAIT_HINT          : 0x0\r\n"
)


def sc_state(n: int, name: str) -> str:
    return SC_RUNNING.replace("STATE              : 4  RUNNING", f"STATE              : {n}  {name}")


@pytest.mark.parametrize(
    ("n", "name", "want"),
    [
        (1, "STOPPED", State.STOPPED),
        (2, "START_PENDING", State.START_PENDING),
        (3, "STOP_PENDING", State.STOP_PENDING),
        (4, "RUNNING", State.RUNNING),
        (5, "CONTINUE_PENDING", State.START_PENDING),
        (6, "PAUSE_PENDING", State.PAUSED),
        # A paused service's process lives and may be continued: never "stopped"
        # (it must not count as fenced), never serving.
        (7, "PAUSED", State.PAUSED),
    ],
)
def test_parse_sc_states(n: int, name: str, want: State) -> None:
    r = pf.parse_sc(sc_state(n, name))
    assert r.state is want and r.error is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("[SC] StartService FAILED 1056:\r\n\r\nAn instance of the service is already running.\r\n", 1056),
        ("[SC] ControlService FAILED 1062:\r\n\r\nThe service has not been started.\r\n", 1062),
        (
            "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\r\n\r\nThe specified service does not "
            "exist as an installed service.\r\n",
            1060,
        ),
        ("[SC] OpenService FAILED 5:\r\n\r\nAccess is denied.\r\n", 5),
    ],
)
def test_parse_sc_errors(text: str, code: int) -> None:
    r = pf.parse_sc(text)
    assert r.error == code and r.state is None


def test_sc_start_returns_start_pending() -> None:
    # sc.exe start returns early: its own output shows START_PENDING.
    out = sc_state(2, "START_PENDING").replace("SERVICE_NAME", "SERVICE_NAME") + "        PID : 4242\r\n"
    assert pf.parse_sc(out).state is State.START_PENDING


def test_windows_batch_roundtrip() -> None:
    w = pf.Windows()
    refs = [
        pf.ServiceRef("cti", "CTIServer"),
        pf.ServiceRef("ivr", "IVR Service"),
        pf.ServiceRef("kcxp", None, "start.cmd", "stop.cmd", "status.cmd"),
    ]
    cmd = w.batch_status_cmd(refs)
    assert cmd.count("sc.exe query") == 2 and '"IVR Service"' in cmd
    out = (
        f"{pf.SEP} cti\r\n" + SC_RUNNING + f"{pf.SEP} ivr\r\n"
        "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\r\n\r\nnope\r\n"
        f"{pf.SEP} kcxp\r\n{pf.SEP}rc 3\r\n"
    )
    states, _ = w.parse_batch(out, refs)
    assert states == {"cti": State.RUNNING, "ivr": State.UNKNOWN, "kcxp": State.STOPPED}


def test_systemd_batch_roundtrip() -> None:
    sd = pf.Systemd()
    refs = [pf.ServiceRef("cti", "cti.service"), pf.ServiceRef("ivr", "ivr.service")]
    cmd = sd.batch_status_cmd(refs)
    assert cmd.count("systemctl") == 1 and "systemctl show -p LoadState -p ActiveState cti.service ivr.service" in cmd
    out = f"{pf.SEP} units\nLoadState=loaded\nActiveState=active\n\nActiveState=deactivating\nLoadState=loaded\n"
    assert sd.parse_batch(out, refs)[0] == {"cti": State.RUNNING, "ivr": State.STOP_PENDING}
    # cut short: nothing is read into the wrong unit
    assert sd.parse_batch(f"{pf.SEP} units\nLoadState=loaded\nActiveState=active\n", refs)[0] == {
        "cti": State.UNKNOWN,
        "ivr": State.UNKNOWN,
    }
    mixed = [pf.ServiceRef("cti", "cti.service"), pf.ServiceRef("fax", None, "a", "b", "fax-status")]
    out = f"{pf.SEP} units\nLoadState=loaded\nActiveState=failed\n{pf.SEP} fax\n{pf.SEP}rc 3\n"
    assert sd.parse_batch(out, mixed)[0] == {"cti": State.STOPPED, "fax": State.STOPPED}
    # a unit systemd does not know shows "inactive": that is no proof it is stopped
    out = f"{pf.SEP} units\nLoadState=not-found\nActiveState=inactive\n\nLoadState=loaded\nActiveState=active\n"
    assert sd.parse_batch(out, refs)[0] == {"cti": State.UNKNOWN, "ivr": State.RUNNING}
    assert sd.run_cmd("echo hi; sleep 1", 3) == "timeout -k 5 3 sh -c 'echo hi; sleep 1'"


def test_windows_session_protocol() -> None:
    w = pf.Windows()
    named, explicit = pf.ServiceRef("cti", "CTIServer"), pf.ServiceRef("fax", None, "a", "b", "c")
    assert w.session_command_request(explicit, "c") is None  # explicit commands never go through the session
    req = w.session_command_request(named, 'sc.exe queryex "CTIServer"')
    assert req is not None and req.endswith(f"echo {pf.SEP}end\r\n")
    answer = (
        f"\r\nSERVICE_NAME: CTIServer\r\n        STATE              : 1  STOPPED\r\n{pf.SEP}rc 0\r\n{pf.SEP}end\r\n"
    )
    assert w.session_answer_done(answer) and not w.session_answer_done(answer[:-2])
    assert not w.session_answer_done(f"C:\\>echo {pf.SEP}end\r\n")  # an echoed command is not the marker
    code, out = pf.session_command_result(answer)
    assert code == 0 and w.parse_state(out, named) is State.STOPPED
    # an answer about another service is no answer about this one
    other = out.replace("CTIServer", "KCXP")
    assert w.parse_state(other, named) is State.UNKNOWN
    assert pf.session_command_result(f"[SC] OpenService FAILED 1060:\r\n{pf.SEP}rc 1060\r\n")[0] == 1060


@pytest.mark.parametrize("bad", ['a"b', "a&b", "a|b", "50%", "a^b", "a<b", "a>b", "a!b", "x\ny"])
def test_cmd_quoting_refuses_metacharacters(bad: str) -> None:
    with pytest.raises(pf.UnsafeArgument):
        pf.quote_cmd(bad)


def test_cmd_quoting_accepts_service_names() -> None:
    assert pf.quote_cmd("Dialogic System Service") == '"Dialogic System Service"'


@given(st.text(min_size=1).filter(lambda t: "\0" not in t and "\n" not in t))
def test_posix_quoting_roundtrips(arg: str) -> None:
    import shlex

    assert shlex.split(pf.quote_posix(arg)) == [arg]


def test_lab_routes_simulator_verbs() -> None:
    lab = pf.Lab(["/py", "-I", "/simctl.py", "/lab/ipc-a"])
    assert lab.run_cmd("call inbound", 10) == "/py -I /simctl.py /lab/ipc-a call inbound --timeout 10"
    assert lab.run_cmd("sleep 1", 2).startswith("cd /lab/ipc-a && timeout -k 5 2 sh -c")


def test_parse_sc_reads_numbers_not_words() -> None:
    # Chinese Windows: localized words, GBK; the numbers are what is read.
    out = "[SC] StartService 失败 1056:\r\n\r\n服务的实例已在运行中。\r\n"
    assert pf.parse_sc(out).error == 1056
    ex = SC_RUNNING.replace("        WIN32_EXIT_CODE", "        PID                : 4242\r\n        WIN32_EXIT_CODE")
    r = pf.parse_sc(ex)
    assert r.pid == 4242 and r.exit_code == 0 and r.state is State.RUNNING
    assert pf.parse_sc(sc_state(1, "STOPPED").replace(": 0  (0x0)", ": 1067  (0x42b)", 1)).exit_code == 1067


W = pf.Windows()
CTI = pf.ServiceRef("cti", "CTIServer")
OC = pf.Outcome


@pytest.mark.parametrize(
    ("op", "code", "want"),
    [
        ("start", 0, OC.OK),
        ("start", 1056, OC.OK),  # already running: idempotent
        ("stop", 1062, OC.OK),  # not started: idempotent
        ("stop", 1056, OC.FAILED),
        ("start", 1061, OC.BUSY),  # pending: cannot accept control now
        ("stop", 1061, OC.BUSY),
        ("stop", 1053, OC.NO_RESPONSE),  # hung: no timely response
        ("start", 1060, OC.CONFIG),
        ("stop", 5, OC.DENIED),
        ("start", 1058, OC.FAILED),  # disabled
    ],
)
def test_windows_reads_sc_exit_codes(op: str, code: int, want: pf.Outcome) -> None:
    assert W.read_result(op, CTI, code, f"[SC] ControlService FAILED {code}:\r\n").outcome is want


@pytest.mark.parametrize("code", [1056, 1061, 1062, 1060])
def test_windows_reads_the_printed_code_over_a_truncated_exit_status(code: int) -> None:
    # Only the low 8 bits of an exit status survive some SSH servers.
    out = f"[SC] StartService FAILED {code}:\r\n\r\nwhatever the language\r\n"
    assert W.read_result("start", CTI, code & 0xFF, out) == W.read_result("start", CTI, code, out)


def test_windows_escalation_commands() -> None:
    assert W.pid_cmd(CTI) == 'sc.exe queryex "CTIServer"'
    assert W.kill_cmd(CTI, 4242) == "taskkill /F /PID 4242"
    assert W.kill_cmd(CTI, None) is None  # no PID, no blind kill
    explicit = pf.ServiceRef("kcxp", None, "start.cmd", "stop.cmd", "status.cmd")
    assert W.kill_cmd(explicit, 1) is None and W.pid_cmd(explicit) is None


def test_line_check_in_the_batch_every_platform() -> None:
    lc = pf.LineCheck('"C:\\Program Files\\Dialogic\\linestat.exe" /board 0', 5)
    refs = [CTI]
    w = pf.Windows(lc)
    cmd = w.batch_status_cmd(refs)
    assert cmd.endswith(f"& echo {pf.SEP} line & ({lc.command}) >nul 2>&1 & call echo {pf.SEP}rc %^errorlevel%")
    for rc, line in ((0, "up"), (1, "alarm"), (3, "down"), (2, "unknown"), (9009, "unknown")):
        out = f"{pf.SEP} cti \r\n{SC_RUNNING}{pf.SEP} line \r\n{pf.SEP}rc {rc}\r\n"
        assert w.parse_batch(out, refs) == ({"cti": State.RUNNING}, line)
    # no line check: not monitored, on every platform but the lab's simulator
    assert pf.Windows().parse_batch(f"{pf.SEP} cti\r\n{SC_RUNNING}", refs)[1] == pf.LINE_UNMONITORED
    sd = pf.Systemd(pf.LineCheck("linestat", 2))
    assert "timeout -k 5 2 sh -c linestat >/dev/null 2>&1 </dev/null; echo @@failover@@rc $?" in sd.batch_status_cmd(
        [pf.ServiceRef("cti", "cti.service")]
    )
    out = f"{pf.SEP} cti\nactive\n{pf.SEP} line\n{pf.SEP}rc 1\n"
    assert sd.parse_batch(out, [pf.ServiceRef("cti", "cti.service")])[1] == "alarm"
    assert pf.Systemd().parse_batch(out, [pf.ServiceRef("cti", "cti.service")])[1] == pf.LINE_UNMONITORED
    lab = pf.Lab(["/py", "/simctl.py", "/d"], pf.LineCheck("linestat", 2))
    assert lab.session_cmd() is None  # a shell command: through an exec channel
    status = '{"ok": true, "line": "up", "services": {"cti": {"state": "RUNNING"}}}'
    assert lab.parse_batch(f"{status}\n{pf.SEP} line\n{pf.SEP}rc 1\n", [pf.ServiceRef("cti", "cti")])[1] == "alarm"
    assert pf.Lab(["/py"]).parse_batch(status + "\n", [pf.ServiceRef("cti", "cti")])[1] == "up"
