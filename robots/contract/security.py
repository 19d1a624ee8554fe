"""Who can reach a driver's sockets: ZeroMQ CURVE across hosts, private ipc sockets on one host (DESIGN §2).

Sessions (session.py) decide which of the clients that reach a driver may command the arm; this module decides
who reaches it at all. The rule, applied to every socket a driver binds (`LinkServer`) or a client connects
(`connect`):

- tcp off loopback (or any other network transport) needs CURVE: the driver is a CURVE server whose ZAP handler
  admits only the client keys in its allow-list directory, and a client must hold the driver's public key, so
  both ends are authenticated and the traffic is encrypted. Without keys it is refused, naming the key file.
- ipc needs no keys: the socket's directory must be this user's and closed to group and others (a missing one
  is created 0700), so no other local user can connect. `local_endpoints` are such sockets, one pair per robot,
  and the default link. An abstract socket (`ipc://@name`) has no permissions at all: it counts as network.
- loopback tcp may run without keys (tests, the embedded sim): any local user can reach it, but only the session
  holding the lease can command.

Given keys, an end uses CURVE on any endpoint, loopback included (so one host can test it). Key files are
pyzmq's certificates (zmq.auth): NAME.key holds the public key, NAME.key_secret the pair; `pac-keys` makes and
lists them. The allow-list is read when the driver starts: restart it to admit or revoke a key.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import socket
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

log = logging.getLogger("pac-keys")

PUBLIC_SUFFIX, SECRET_SUFFIX = ".key", ".key_secret"  # zmq.auth's certificate files
SERVER_KEY_NAME = "server"  # `pac-sim --keys DIR`: the driver's pair is DIR/server.key_secret ...
CLIENT_KEY_NAME = "client"  # ... a client's DIR/client.key_secret, with the driver's public DIR/server.key
ALLOWED_CLIENTS_DIR = "clients"  # ... and the driver admits the clients whose public keys are in DIR/clients/
Z85_KEY_CHARS = 40  # a 32-byte Curve25519 key in Z85
MAX_IPC_PATH_BYTES = 107  # sockaddr_un.sun_path holds 108 bytes with the terminating NUL
MAX_LOGGED_REFUSALS = 100  # distinct refused client keys logged, then only counted
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # key and robot names: they become file names


class LinkRefused(ValueError):
    """An endpoint the link rule forbids, or key files that are missing, unreadable or too open; says which."""


def _default_keys_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "pac-runtime" / "keys"


@dataclass(frozen=True)
class LinkSecurity:
    """One link's key files; an empty string is "not configured". A driver needs the first two, a client the last
    two; an end with none of its own runs without CURVE, which the rule allows only on ipc and loopback tcp."""

    server_secret_key: str = ""  # driver: its key pair (NAME.key_secret)
    allowed_clients_dir: str = ""  # driver: the public keys (*.key) of the clients it admits
    client_secret_key: str = ""  # client: its key pair
    server_public_key: str = ""  # client: the driver's public key (the driver's NAME.key)

    @classmethod
    def server_keys(cls, keys_dir: str | os.PathLike) -> LinkSecurity:
        """A driver's keys in the `pac-keys` layout: DIR/server.key_secret and DIR/clients/."""
        d = Path(keys_dir)
        return cls(
            server_secret_key=str(d / (SERVER_KEY_NAME + SECRET_SUFFIX)),
            allowed_clients_dir=str(d / ALLOWED_CLIENTS_DIR),
        )

    @classmethod
    def client_keys(cls, keys_dir: str | os.PathLike, name: str = CLIENT_KEY_NAME) -> LinkSecurity:
        """A client's keys in the `pac-keys` layout: DIR/NAME.key_secret and the driver's DIR/server.key."""
        d = Path(keys_dir)
        return cls(
            client_secret_key=str(d / (name + SECRET_SUFFIX)),
            server_public_key=str(d / (SERVER_KEY_NAME + PUBLIC_SUFFIX)),
        )

    @property
    def serves(self) -> bool:
        return bool(self.server_secret_key or self.allowed_clients_dir)

    @property
    def connects(self) -> bool:
        return bool(self.client_secret_key or self.server_public_key)

    def missing_files(self) -> list[str]:
        """The configured key files and directories that do not exist."""
        given = (self.server_secret_key, self.allowed_clients_dir, self.client_secret_key, self.server_public_key)
        return [path for path in given if path and not os.path.exists(os.path.expanduser(path))]


NO_KEYS = LinkSecurity()


# ----------------------------------------------------------------------------------------------- endpoints
def local_dir() -> Path:
    """This user's directory for ipc sockets: $XDG_RUNTIME_DIR/pac-runtime, or /tmp/pac-runtime-<uid> without one."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg) and os.path.isdir(xdg):
        return Path(xdg) / "pac-runtime"
    return Path(tempfile.gettempdir()) / f"pac-runtime-{os.getuid()}"


def local_endpoints(robot: str) -> tuple[str, str]:
    """The default (pub, cmd) endpoints of `robot`'s driver on this host: ipc sockets only this user can reach."""
    if not _NAME.match(robot):
        raise LinkRefused(f"robot name {robot!r} cannot name a socket file")
    d = local_dir()
    return f"ipc://{d}/{robot}-pub", f"ipc://{d}/{robot}-cmd"


def private_endpoint(tag: str) -> str:
    """A fresh ipc endpoint in this user's private socket directory, for a driver started by (and for) one
    process: pac-run --sim, pac-eval and the tests' sims. No other local user can connect to it."""
    directory = private_dir(local_dir())
    return f"ipc://{directory}/{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def private_dir(path: Path, create: bool = True) -> Path:
    """`path`, created 0700 if missing (its parent must exist); refused unless a directory of this user's that
    group and others cannot enter (a symlink is refused too: another user could repoint it)."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise LinkRefused(f"cannot create the socket directory {path}: {exc.strerror}") from exc
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise LinkRefused(f"socket directory {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise LinkRefused(f"{path} is not a directory (a symlink or a file): refusing to put sockets there")
    if st.st_uid != os.getuid():
        raise LinkRefused(f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}): refusing its sockets")
    if st.st_mode & 0o077:
        raise LinkRefused(
            f"{path} is open to group or others (mode {stat.S_IMODE(st.st_mode):04o}), so another local user "
            f"could connect: `chmod 700 {path}`, or use the default endpoints"
        )
    return path


def _tcp_hosts(address: str) -> list[str]:
    """The hosts of a tcp address, `host:port` or `source;host:port`; IPv6 brackets removed."""
    return [part.rsplit(":", 1)[0].strip("[]") for part in address.split(";")]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, an interface or "*": anything may be behind it
        return False


def endpoint_kind(endpoint: str) -> str:
    """What the rule asks of a link on `endpoint`: one of "inproc", "ipc", "loopback" or "network"."""
    if not endpoint:
        raise LinkRefused('no endpoint given: the default ("") stands for local_endpoints(robot), resolved per robot')
    transport, sep, address = endpoint.partition("://")
    if not sep or not address:
        raise LinkRefused(f"{endpoint!r} is not an endpoint (transport://address)")
    if transport == "inproc":
        return "inproc"
    if transport == "ipc" and not address.startswith("@"):  # abstract sockets have no file, so no permissions
        return "ipc"
    if transport == "tcp" and all(_loopback(host) for host in _tcp_hosts(address)):
        return "loopback"
    return "network"


def _check(endpoint: str, curve: bool, verb: str, needs: str, bind: bool) -> None:
    """Refuse `endpoint` unless the rule allows it; an ipc socket's directory is made private (bind and connect
    alike: whoever comes first creates it 0700, so another user cannot create it first)."""
    kind = endpoint_kind(endpoint)
    if kind == "network" and not curve:
        raise LinkRefused(f"refusing to {verb} {endpoint}: a link off loopback needs CURVE keys (DESIGN §2); {needs}")
    if kind != "ipc":
        return
    path = endpoint.partition("://")[2]
    if len(os.fsencode(path)) > MAX_IPC_PATH_BYTES:
        raise LinkRefused(f"ipc path {path} is longer than {MAX_IPC_PATH_BYTES} bytes; choose a shorter directory")
    directory = Path(os.path.abspath(path)).parent
    if not curve or not directory.is_dir():  # with CURVE any directory will do, but a missing one is made private
        private_dir(directory)
    if bind:
        _refuse_live_socket(path, endpoint)


def _refuse_live_socket(path: str, endpoint: str) -> None:
    """ZeroMQ binding an ipc path removes whatever socket is there: never take one from a running driver."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError:
        return  # none, or one that nobody listens on any more
    finally:
        probe.close()
    raise LinkRefused(f"{endpoint} is in use: another driver serves it; stop that one first")


# ---------------------------------------------------------------------------------------------------- keys
def _key_file(path: str, what: str, secret: bool) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        name = p.name.removesuffix(SECRET_SUFFIX).removesuffix(PUBLIC_SUFFIX)
        hint = f"make it with `pac-keys generate --name {name} --dir {p.parent}`" if secret else "copy it from its host"
        raise LinkRefused(f"{what} {p} does not exist: {hint}")
    st = p.stat()
    if secret and st.st_mode & 0o077:
        raise LinkRefused(f"{what} {p} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): chmod 600")
    if secret and st.st_uid != os.getuid():
        raise LinkRefused(f"{what} {p} belongs to uid {st.st_uid}, not to you")
    return p


def _read_keys(path: Path, what: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise LinkRefused(f"{what} {path} is not a key file: {exc}") from exc
    for key in (public, secret):
        if key is not None and len(key) != Z85_KEY_CHARS:
            raise LinkRefused(f"{what} {path} holds a malformed key ({len(key)} characters, not {Z85_KEY_CHARS})")
    return public, secret


def load_key_pair(path: str, what: str) -> tuple[bytes, bytes]:
    """(public, secret) from a NAME.key_secret file that only this user can read."""
    p = _key_file(path, what, secret=True)
    public, secret = _read_keys(p, what)
    if secret is None:
        raise LinkRefused(f"{what} {p} holds no secret key: give the NAME{SECRET_SUFFIX} file, not NAME{PUBLIC_SUFFIX}")
    return public, secret


def load_public_key(path: str, what: str) -> bytes:
    return _read_keys(_key_file(path, what, secret=False), what)[0]


def load_allow_list(path: str) -> frozenset[bytes]:
    """The public keys in an allow-list directory (its *.key files), which others must not be able to change."""
    d = Path(path).expanduser()
    if not d.is_dir():
        raise LinkRefused(f"allow-list directory {d} does not exist: create it and copy each client's NAME.key there")
    keys = set()
    for item in (d, *sorted(d.glob("*" + PUBLIC_SUFFIX))):
        mode = stat.S_IMODE(item.stat().st_mode)
        if mode & 0o022:
            raise LinkRefused(f"{item} is writable by group or others (mode {mode:04o}): they could admit themselves")
        if item != d:
            keys.add(_read_keys(item, "allow-listed key")[0])
    if not keys:
        raise LinkRefused(f"allow-list directory {d} holds no client keys (*.key): copy each client's NAME.key there")
    return frozenset(keys)


# ------------------------------------------------------------------------------------------------ the ends
class _AllowList:
    """ZAP credentials callback: admit a key in the list; log each refused key once."""

    def __init__(self, keys: frozenset[bytes], where: str):
        self.keys, self.where, self.refused = keys, where, set()

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        if key not in self.refused and len(self.refused) < MAX_LOGGED_REFUSALS:
            log.warning("refused a CURVE client whose key %s is not in %s", key.decode(errors="replace"), self.where)
        self.refused.add(key)
        return False


class _ZapHandlers:
    """One ZAP ThreadAuthenticator per context (the ZAP endpoint is per context), shared by its CURVE servers;
    each allow-list is a ZAP domain of its own. Stopped when its last server closes."""

    _lock = threading.Lock()
    _by_context: dict[int, tuple[zmq.auth.thread.ThreadAuthenticator, dict[str, int]]] = {}

    @classmethod
    def acquire(cls, context: zmq.Context, domain: str, allow: _AllowList) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        with cls._lock:
            if id(context) not in cls._by_context:
                auth = ThreadAuthenticator(context, log=logging.getLogger("pac-keys.zap"))
                auth.start()
                cls._by_context[id(context)] = (auth, {})
            auth, users = cls._by_context[id(context)]
            auth.configure_curve_callback(domain, credentials_provider=allow)
            users[domain] = users.get(domain, 0) + 1

    @classmethod
    def release(cls, context: zmq.Context, domain: str) -> None:
        with cls._lock:
            auth, users = cls._by_context[id(context)]
            users[domain] -= 1
            if users[domain] == 0:
                del users[domain]
            if not users:
                auth.stop()
                del cls._by_context[id(context)]


_SERVER_NEEDS = (
    "there is no driver secret key file: make DIR/server.key_secret with `pac-keys generate --name server --dir DIR`,"
    " put the clients' public keys in DIR/clients/, and pass --keys DIR"
)
_CLIENT_NEEDS = (
    "there are no client key files: set link.security.client_secret_key (a pair from `pac-keys generate --name "
    "client --dir DIR`, its DIR/client.key allow-listed on the driver) and link.security.server_public_key (the "
    "driver's server.key)"
)


class LinkServer:
    """The binding end (a driver): applies the rule to each socket it binds; with keys, makes each a CURVE server
    whose ZAP handler admits only the allow-listed clients. Construction loads and checks the keys."""

    def __init__(self, security: LinkSecurity = NO_KEYS):
        self.security = security
        self.curve = security.serves
        self._zap: tuple[zmq.Context, str] | None = None
        if self.curve:
            if not security.server_secret_key:
                raise LinkRefused("an allow-list is configured but no server secret key (server_secret_key)")
            if not security.allowed_clients_dir:
                raise LinkRefused("a server key is configured but no allow-list directory of client keys")
            self._public, self._secret = load_key_pair(security.server_secret_key, "the driver's secret key file")
            allowed = Path(security.allowed_clients_dir).expanduser().absolute()
            self.allowed = load_allow_list(str(allowed))
            self._allow = _AllowList(self.allowed, str(allowed))
            self._domain = "pac-runtime/" + hashlib.sha256(str(allowed).encode()).hexdigest()[:16]

    def check(self, endpoint: str) -> None:
        """Refuse `endpoint` now if the rule forbids binding it (before any socket is made)."""
        _check(endpoint, self.curve, "bind", _SERVER_NEEDS, bind=True)

    def bind(self, sock: zmq.Socket, endpoint: str) -> None:
        _check(endpoint, self.curve, "bind", _SERVER_NEEDS, bind=True)
        if self.curve:
            if self._zap is None:
                _ZapHandlers.acquire(sock.context, self._domain, self._allow)
                self._zap = (sock.context, self._domain)
            sock.curve_secretkey, sock.curve_publickey = self._secret, self._public
            sock.zap_domain = self._domain.encode()
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler: nobody gets in (libzmq's default: anybody)
            sock.curve_server = True
        sock.bind(endpoint)

    def describe(self) -> str:
        """For the driver's start-up log line."""
        if not self.curve:
            return "no CURVE keys (ipc and loopback only)"
        return f"CURVE, {len(self.allowed)} allow-listed client key(s) in {self.security.allowed_clients_dir}"

    def close(self) -> None:
        """Stop admitting (after the sockets are closed)."""
        if self._zap is not None:
            _ZapHandlers.release(*self._zap)
            self._zap = None


def connect(sock: zmq.Socket, endpoint: str, security: LinkSecurity = NO_KEYS) -> None:
    """Connect a client socket under the rule; with keys, as a CURVE client of the driver's public key."""
    curve = security.connects
    _check(endpoint, curve, "connect to", _CLIENT_NEEDS, bind=False)
    if curve:
        if not security.client_secret_key or not security.server_public_key:
            missing = "client_secret_key" if not security.client_secret_key else "server_public_key"
            raise LinkRefused(f"link.security.{missing} is not set: a CURVE client needs its key pair and the driver's")
        public, secret = load_key_pair(security.client_secret_key, "the client's secret key file")
        sock.curve_serverkey = load_public_key(security.server_public_key, "the driver's public key file")
        sock.curve_secretkey, sock.curve_publickey = secret, public
    sock.connect(endpoint)


# ------------------------------------------------------------------------------------------------- pac-keys
def generate(name: str, keys_dir: Path, force: bool = False) -> tuple[Path, Path]:
    """NAME.key (public, 0644) and NAME.key_secret (0600) in `keys_dir` (created 0700; refused if others can enter
    it). The pair is written in a private temporary directory and linked into place, so the secret is never
    readable by anyone else, not even for a moment, and an existing pair is kept unless `force`."""
    if not _NAME.match(name):
        raise LinkRefused(f"key name {name!r}: use letters, digits, '_', '-' and '.'")
    keys_dir = Path(keys_dir).expanduser()
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_dir(keys_dir, create=False)
    targets = keys_dir / (name + PUBLIC_SUFFIX), keys_dir / (name + SECRET_SUFFIX)
    if not force and any(t.exists() for t in targets):
        raise LinkRefused(f"{targets[0]} or {targets[1]} already exists: pass --force to replace the pair")
    with tempfile.TemporaryDirectory(dir=keys_dir) as tmp:
        made = [Path(p) for p in zmq.auth.create_certificates(tmp, name, metadata={"name": name})]
        for path, mode in zip(made, (0o644, 0o600), strict=True):
            os.chmod(path, mode)
        for path, target in zip(made, targets, strict=True):
            if force:
                os.replace(path, target)
            else:
                os.link(path, target)  # fails if it appeared meanwhile: never overwrite silently
    return targets


def describe_dir(keys_dir: Path) -> list[str]:
    """One line per key in `keys_dir` and its allow-list: role, name, public key, and any permission problem."""
    keys_dir = Path(keys_dir).expanduser()
    if not keys_dir.is_dir():
        raise LinkRefused(f"{keys_dir} is not a directory")
    lines = []
    mode = stat.S_IMODE(keys_dir.stat().st_mode)
    if mode & 0o077:
        lines.append(f"WARNING {keys_dir} is open to group or others (mode {mode:04o}): chmod 700")
    sections = (("pair", keys_dir, SECRET_SUFFIX), ("public", keys_dir, PUBLIC_SUFFIX))
    sections += (("allowed", keys_dir / ALLOWED_CLIENTS_DIR, PUBLIC_SUFFIX),)
    for role, where, suffix in sections:
        for path in sorted(where.glob("*" + suffix)) if where.is_dir() else []:
            name = path.name.removesuffix(suffix)
            if role == "public" and (keys_dir / (name + SECRET_SUFFIX)).exists():
                continue  # listed with its pair
            try:
                key = load_key_pair(str(path), "key file")[0] if role == "pair" else load_public_key(str(path), "key")
                public = key.decode()
            except LinkRefused as exc:
                public = f"PROBLEM: {exc}"
            lines.append(f"{role:<8} {name:<24} {public}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`pac-keys`: make and list the CURVE key pairs that authenticate driver links across hosts."""
    p = argparse.ArgumentParser(prog="pac-keys", description=main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write NAME.key (public) and NAME.key_secret (secret, 0600) into DIR")
    gen.add_argument("--name", required=True, help=f"'{SERVER_KEY_NAME}' for a driver, e.g. the host for a client")
    gen.add_argument("--dir", type=Path, default=_default_keys_dir(), help="key directory (default: %(default)s)")
    gen.add_argument("--force", action="store_true", help="replace an existing pair")
    lst = sub.add_parser("list", help="the pairs, public keys and allow-listed client keys in DIR")
    lst.add_argument("--dir", type=Path, default=_default_keys_dir(), help="key directory (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        if args.command == "generate":
            public, secret = generate(args.name, args.dir, args.force)
            print(f"wrote {secret} (secret: stays on this host) and {public} (public: give it to the other end)")
            if args.name == SERVER_KEY_NAME:
                allowed = private_dir(public.parent / ALLOWED_CLIENTS_DIR)
                print(
                    f"a driver: `pac-sim --keys {public.parent}` admits the clients whose NAME.key is in {allowed}/;"
                    f" each client host needs a copy of {public} (its link.security.server_public_key)"
                )
            else:
                print(
                    f"a client: copy {public} into the driver's {ALLOWED_CLIENTS_DIR}/ directory; in this host's "
                    f"pac-run config, link.security: {{client_secret_key: {secret}, server_public_key: <a copy of "
                    f"the driver's {SERVER_KEY_NAME}{PUBLIC_SUFFIX}>}}"
                )
        else:
            print("\n".join(describe_dir(args.dir)) or f"no keys in {args.dir}")
    except (LinkRefused, OSError) as exc:
        print(f"pac-keys: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
