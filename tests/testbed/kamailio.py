"""Kamailio (Debian package) as a loopback registrar + record-routing proxy for tests, listening on UDP and TCP
(one port number), with optional digest auth (db_text) and an rtpengine hook. Owns only the kamailio it starts,
stops it by PID, stays on 127.0.0.1.

Pitfalls (measured): db_text header lines end with a space and ha1 columns must be ``(string,null)``; the
port is bound ~0.13 s after start, so readiness is an OPTIONS that gets any SIP reply; own -Y/-P dirs each.

As a rewriting PBX (options ``strip_voipgw``, ``topoh``, ``transcode``; measured with kamailio 5.6.3 and rtpengine
10.5, tests/testbed/test_kamailio_rewrite.py):
- ``strip_voipgw``: ``sdp_remove_line_by_prefix("a=voipgw")`` then ``msg_apply_changes()``, on requests before
  ``record_route()`` (msg_apply_changes refuses to run after it) and in the reply route. rtpengine alone keeps
  unknown attributes (it only moves them after the ``m=`` line), so the strip is what removes them.
- ``topoh``: the callee sees ``Call-ID: !!:<masked>``, ``Contact: <sip:127.0.0.1;line=sr-...>`` and a masked
  second Via; Kamailio unmasks on the way back, so the caller sees its own Call-ID throughout.
- ``transcode``: ``codec-mask=opus codec-transcode=PCMU`` on offers: the callee is offered PCMU only, the caller
  is answered Opus, and rtpengine re-encodes between them (new payload type and bytes on each leg).
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tests.support.requires import KAMAILIO, need
from tests.testbed.ports import PortBlock, reserve_block
from tests.testbed.proc import ManagedProcess, TestbedError

MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
DOMAIN = "127.0.0.1"
READY_TIMEOUT = 10.0
PROBE_INTERVAL = 0.05
SHM_MB = 64
PKG_MB = 8

_CFG_HEAD = """#!KAMAILIO
debug={debug}
log_stderror=yes
children=2
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
alias="127.0.0.1:{port}"
tcp_connection_lifetime=3605
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
modparam("usrloc", "db_mode", 0)
modparam("rr", "enable_full_lr", 1)
modparam("registrar", "max_expires", {max_expires})
modparam("registrar", "min_expires", {min_expires})
"""

_CFG_TLS = """enable_tls=yes
listen=tls:127.0.0.1:{tls_port}
loadmodule "tls.so"
modparam("tls", "config", "{tls_cfg}")
"""

_TLS_CFG = """[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = {key}
certificate = {cert}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""

_CFG_AUTH = """loadmodule "db_text.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("auth_db", "db_url", "text://{dbdir}")
modparam("auth_db", "calculate_ha1", 1)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "use_domain", 0)
"""

_CFG_RTPENGINE = """loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "{ng_socket}")
"""

# A PBX that rewrites the SDP: sdpops deletes the a=voipgw lines (and textopsx applies that edit at once, so that
# rtpengine, which replaces the whole body, works on the stripped one: two overlapping edits would garble it).
_CFG_STRIP = """loadmodule "sdpops.so"
loadmodule "textopsx.so"
"""
# topoh masks Via/Contact/Record-Route and, with mask_callid, the Call-ID: the far side sees its own Call-ID.
_CFG_TOPOH = """loadmodule "topoh.so"
modparam("topoh", "mask_key", "voipgw-testbed-topoh")
modparam("topoh", "mask_callid", 1)
modparam("topoh", "mask_ip", "127.0.0.1")
"""

_CFG_ROUTE = """
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{
            {rtp_indialog}
            t_relay(); exit;
        }}
        if (is_method("ACK")) {{ if (t_check_trans()) t_relay(); exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) t_relay(); exit; }}
    t_check_trans();
    {auth_block}
    if (is_method("REGISTER")) {{ if (!save("location")) sl_reply_error(); exit; }}
    {strip_initial}
    if (is_method("INVITE|SUBSCRIBE")) record_route();
    if (uri==myself) {{
        {dispatch}
        if (!lookup("location")) {{ sl_send_reply("404", "User Not Found"); exit; }}
    }}
    {rtp_initial}
    if (!t_relay()) sl_reply_error();
}}
{rtp_onreply}
{dispatch_failure}
"""

_CFG_DISPATCHER = """loadmodule "dispatcher.so"
modparam("dispatcher", "list_file", "{list_file}")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "ds_ping_interval", 1)
modparam("dispatcher", "ds_probing_mode", 1)
modparam("tm", "fr_timer", {fr_timer_ms})
"""
# INVITEs for the PBX's own domain go to dispatcher set 1 (not the location table); a gateway that answers 408/5xx
# or nothing within fr_timer is skipped for the next one in the set (ds_next_dst), so a dead process costs one
# timeout, not the call; it is then marked inactive and probed with OPTIONS every second until it answers again.
# Every destination is probed (ds_probing_mode 1), not only those marked probing (mode 0): in Kamailio 5.6 a
# probe that times out under mode 0 sets the destination inactive *without* the probing flag, so it is never
# pinged again and a process restarted after that moment would never be taken back (kamailio issue #2100).
_DISPATCH = """if (is_method("INVITE")) {
            if (!ds_select_dst("1", "{algorithm}")) { sl_send_reply("503", "No Gateway"); exit; }
            t_on_failure("DS_NEXT");
            if (!t_relay()) sl_reply_error();
            exit;
        }"""
_DISPATCH_FAILURE = """failure_route[DS_NEXT] {
    if (t_is_canceled()) exit;
    if (t_check_status("408|5[0-9][0-9]") || t_branch_timeout()) ds_mark_dst("ip");
    if ((t_check_status("408|5[0-9][0-9]") || t_branch_timeout()) && ds_next_dst()) {
        t_on_failure("DS_NEXT");
        t_relay();
    }
}"""
DS_ROUND_ROBIN = 4

_AUTH_BLOCK_PROXY_REGISTER = """if (is_method("REGISTER")) {
        if (!proxy_authorize("$fd", "subscriber")) { proxy_challenge("$fd", "1"); exit; }
        consume_credentials();
    }
    """

_AUTH_BLOCK = """if (is_method("REGISTER|INVITE|MESSAGE|SUBSCRIBE")) {
        if (!auth_check("$fd", "subscriber", "1")) { auth_challenge("$fd", "1"); exit; }
        consume_credentials();
    }"""

RTP_FLAGS = "replace-origin replace-session-connection"
TRANSCODE_FLAGS = "codec-mask=opus codec-transcode=PCMU"
"""Added to the initial offer's flags in ``transcode`` mode: rtpengine hides Opus from the callee and offers PCMU
instead, transcoding between the legs (the caller still sees Opus in the answer)."""

# The default (rtpengine only): these exact fragments, as before the rewriting options existed.
_RTP_INITIAL_PLAIN = """if (is_method("INVITE") && has_body("application/sdp")) {
        rtpengine_manage("replace-origin replace-session-connection");
        t_on_reply("MANAGE_REPLY");
    }"""
_RTP_INDIALOG_PLAIN = """if (is_method("INVITE|UPDATE|ACK|BYE")) {
                rtpengine_manage("replace-origin replace-session-connection");
                if (is_method("INVITE|UPDATE")) t_on_reply("MANAGE_REPLY");
            }"""
_RTP_ONREPLY_PLAIN = """onreply_route[MANAGE_REPLY] {
    if (has_body("application/sdp")) rtpengine_manage("replace-origin replace-session-connection");
}"""
_STRIP = 'if (has_body("application/sdp") && sdp_remove_line_by_prefix("a=voipgw")) msg_apply_changes();'
# On an initial INVITE the strip must come before record_route(): msg_apply_changes() refuses to run after it.
_STRIP_INITIAL = 'if (is_method("INVITE")) { ' + _STRIP + " }"
_RTP_INITIAL = """if (is_method("INVITE") && has_body("application/sdp")) {
        {manage_offer}
        t_on_reply("MANAGE_REPLY");
    }"""
_RTP_INDIALOG = """if (is_method("INVITE|UPDATE|ACK|BYE")) {
                if (is_method("INVITE|UPDATE")) {
                    {strip}
                    {manage_offer}
                    t_on_reply("MANAGE_REPLY");
                } else {
                    {manage}
                }
            }"""
_RTP_ONREPLY = """onreply_route[MANAGE_REPLY] {
    {strip}
    if (has_body("application/sdp")) { {manage} }
}"""


def _manage(flags: str | None) -> str:
    return f'rtpengine_manage("{flags}");' if flags is not None else ""


def _write_dbtext(dbdir: Path, users: Mapping[str, str]) -> None:
    dbdir.mkdir(parents=True, exist_ok=True)
    (dbdir / "version").write_text("id(int,auto) table_name(string) table_version(int) \n0:version:1\n0:subscriber:7\n")
    rows = "".join(f"{i}:{user}:{DOMAIN}:{pw}::\n" for i, (user, pw) in enumerate(users.items(), start=1))
    header = "id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null) \n"
    (dbdir / "subscriber").write_text(header + rows)


def write_dispatcher_list(path: Path, destinations: Sequence[str]) -> None:
    """Kamailio's dispatcher list file: every destination in set 1 (``setid uri``, one a line)."""
    path.write_text("".join(f"1 {uri}\n" for uri in destinations))


def sip_options_probe(port: int, timeout: float = 0.3) -> bool:
    """True when something on 127.0.0.1:port answers an OPTIONS with any SIP status line."""
    tag = secrets.token_hex(4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        lport = sock.getsockname()[1]
        msg = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{tag}\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={tag}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: probe-{tag}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.settimeout(timeout)
        try:
            sock.sendto(msg.encode(), ("127.0.0.1", port))
            data = sock.recv(65535)
        except OSError:
            return False
        return data.startswith(b"SIP/2.0 ")


class Kamailio:
    """``with Kamailio(tmp_path, users={"alice": "alicepw"}, auth=True) as k: k.port``.

    The domain is 127.0.0.1: register ``sip:alice@127.0.0.1`` and call ``sip:bob@127.0.0.1:{k.port}`` via
    ``proxy=k.addr``."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str] | None = None,
        auth: bool = False,
        rtpengine_ng: str | None = None,
        max_expires: int = 3600,
        min_expires: int = 1,
        debug: int = 2,
        register_challenge: str = "www",
        dispatcher: Sequence[str] = (),
        dispatcher_algorithm: int = DS_ROUND_ROBIN,
        fr_timer_ms: int = 3000,
        tls_cert: tuple[Path, Path] | None = None,
        strip_voipgw: bool = False,
        topoh: bool = False,
        transcode: bool = False,
    ) -> None:
        """``rtpengine_ng``: an ng socket such as ``udp:127.0.0.1:2223`` (testbed.rtpengine) to relay media.
        ``register_challenge="proxy"`` challenges REGISTER with 407 instead of 401 (to test that path).
        ``dispatcher``: SIP URIs (``sip:127.0.0.1:5071``) of a dispatcher set: every INVITE for the PBX's own
        domain goes to one of them (round robin by default), failing over to the next on 408/5xx or silence for
        ``fr_timer_ms``; other requests use the location table as before.
        ``tls_cert=(cert.pem, key.pem)`` also listens for TLS on ``tls_port`` (kamailio-tls-modules).

        A PBX that rewrites what voipgw relies on (all off by default; see tests/testbed/test_kamailio_rewrite.py):
        ``strip_voipgw`` deletes every ``a=voipgw`` line from the SDP of INVITE/re-INVITE/UPDATE and of every
        reply to them (sdpops), as a B2BUA that regenerates the SDP would; ``topoh`` masks the Call-ID (and
        Via/Contact) so the callee sees another Call-ID than the caller sent; ``transcode`` (needs
        ``rtpengine_ng``) makes rtpengine offer the callee PCMU and no Opus, transcoding between the legs."""
        if transcode and not rtpengine_ng:
            raise ValueError("transcode=True needs rtpengine_ng")
        self.strip_voipgw = strip_voipgw
        self.topoh = topoh
        self.transcode = transcode
        self.tls_cert = tls_cert
        if auth and not users:
            raise ValueError("auth=True needs users")
        self.workdir = workdir
        self.users = dict(users or {})
        self.auth = auth
        self.rtpengine_ng = rtpengine_ng
        self.max_expires = max_expires
        self.min_expires = min_expires
        self.debug = debug
        if register_challenge not in ("www", "proxy"):
            raise ValueError("register_challenge is 'www' or 'proxy'")
        self.register_challenge = register_challenge
        self.dispatcher = tuple(dispatcher)
        self.dispatcher_algorithm = dispatcher_algorithm
        self.fr_timer_ms = fr_timer_ms
        self._ports: PortBlock | None = None
        self.proc: ManagedProcess | None = None
        self.dir: Path | None = None

    @property
    def port(self) -> int:
        if self._ports is None:
            raise TestbedError("kamailio not started")
        return self._ports[0]

    @property
    def tls_port(self) -> int:
        if self._ports is None or self.tls_cert is None:
            raise TestbedError("kamailio not started with TLS")
        return self._ports[1]

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def config_text(self) -> str:
        assert self.dir is not None
        text = _CFG_HEAD.format(
            debug=self.debug,
            port=self.port,
            mpath=MODULES,
            max_expires=self.max_expires,
            min_expires=self.min_expires,
        )
        if self.tls_cert is not None:
            text += _CFG_TLS.format(tls_port=self.tls_port, tls_cfg=self.dir / "tls.cfg")
        if self.auth:
            text += _CFG_AUTH.format(dbdir=self.dir / "dbtext")
        if self.rtpengine_ng:
            text += _CFG_RTPENGINE.format(ng_socket=self.rtpengine_ng)
        if self.strip_voipgw:
            text += _CFG_STRIP
        if self.topoh:
            text += _CFG_TOPOH
        if self.dispatcher:
            text += _CFG_DISPATCHER.format(list_file=self.dir / "dispatcher.list", fr_timer_ms=self.fr_timer_ms)
        text += _CFG_ROUTE.format(
            dispatch=_DISPATCH.replace("{algorithm}", str(self.dispatcher_algorithm)) if self.dispatcher else "",
            dispatch_failure=_DISPATCH_FAILURE if self.dispatcher else "",
            auth_block=self._auth_block(),
            **self._sdp_routes(),
        )
        return text

    def _sdp_routes(self) -> dict[str, str]:
        """The route fragments that touch SDP bodies: rtpengine and/or the a=voipgw strip (none by default)."""
        if not (self.rtpengine_ng or self.strip_voipgw):
            return {"strip_initial": "", "rtp_initial": "", "rtp_indialog": "", "rtp_onreply": ""}
        if not (self.strip_voipgw or self.transcode):
            return {
                "strip_initial": "",
                "rtp_initial": _RTP_INITIAL_PLAIN,
                "rtp_indialog": _RTP_INDIALOG_PLAIN,
                "rtp_onreply": _RTP_ONREPLY_PLAIN,
            }
        plain = RTP_FLAGS if self.rtpengine_ng else None
        offer = f"{RTP_FLAGS} {TRANSCODE_FLAGS}" if self.transcode else plain
        subst = {"{strip}": _STRIP if self.strip_voipgw else "", "{manage}": _manage(plain)}
        subst["{manage_offer}"] = _manage(offer)

        def fill(template: str) -> str:
            for key, value in subst.items():
                template = template.replace(key, value)
            return template

        return {
            "strip_initial": _STRIP_INITIAL if self.strip_voipgw else "",
            "rtp_initial": fill(_RTP_INITIAL),
            "rtp_indialog": fill(_RTP_INDIALOG),
            "rtp_onreply": fill(_RTP_ONREPLY),
        }

    def _auth_block(self) -> str:
        if not self.auth:
            return ""
        if self.register_challenge == "proxy":
            return _AUTH_BLOCK_PROXY_REGISTER + _AUTH_BLOCK.replace("REGISTER|", "")
        return _AUTH_BLOCK

    def start(self) -> Kamailio:
        need("kamailio")
        self._ports = reserve_block(2 if self.tls_cert is not None else 1)
        try:
            self.dir = self.workdir / f"kamailio-{self.port}"
            run = self.dir / "run"
            run.mkdir(parents=True, exist_ok=True)
            if self.auth:
                _write_dbtext(self.dir / "dbtext", self.users)
            if self.tls_cert is not None:
                cert, key = self.tls_cert
                (self.dir / "tls.cfg").write_text(_TLS_CFG.format(cert=cert, key=key))
            if self.dispatcher:
                write_dispatcher_list(self.dir / "dispatcher.list", self.dispatcher)
            cfg = self.dir / "kamailio.cfg"
            cfg.write_text(self.config_text())
            check = subprocess.run(
                [KAMAILIO, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=20, check=False
            )
            if check.returncode != 0:
                raise TestbedError(f"kamailio rejected {cfg}:\n{check.stderr[-3000:]}")
            argv = [KAMAILIO, "-f", str(cfg), "-DD", "-E", "-m", str(SHM_MB), "-M", str(PKG_MB)]
            argv += ["-Y", str(run), "-P", str(run / "kamailio.pid")]
            self.proc = ManagedProcess(argv, name=f"kamailio-{self.port}", log_dir=self.dir)
            self.proc.wait_until(lambda: sip_options_probe(self.port), READY_TIMEOUT, "an OPTIONS reply")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> int:
        rc = 0
        if self.proc is not None:
            rc = self.proc.stop()
            self.proc = None
        if self._ports is not None:
            self._ports.release()
        return rc

    def log_text(self) -> str:
        return self.proc.log_text() if self.proc is not None else ""

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def wait_for(predicate: object, timeout: float) -> None:
    """Tiny bounded poll used by callers that wait on Kamailio side effects."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TestbedError(f"condition not met within {timeout}s")
        time.sleep(PROBE_INTERVAL)
