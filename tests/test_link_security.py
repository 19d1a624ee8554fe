"""Links and keys (issue 12): CURVE with a ZAP allow-list across hosts, private ipc sockets on one host.

Real sockets and real `pac-sim` processes, no mocks. CURVE runs on loopback here: given keys, both ends use it on
any endpoint, so one host sees what a client on another host would.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from robots.contract.client import DriverClient, DriverUnavailable
from robots.contract.link import DEFAULT_LINK, Mode
from robots.contract.security import (
    LinkRefused,
    LinkSecurity,
    LinkServer,
    load_key_pair,
    local_endpoints,
    private_dir,
)
from robots.contract.security import main as pac_keys
from robots.sim.driver import DriverConfig, SimDriver
from robots.sim.process import free_loopback_endpoint, stop_sim
from robots.spec import load_spec
from runtime.config import ConfigError, RunConfig, load_config, with_endpoints

SPACE = load_spec("sawyer").action_spaces[Mode.CARTESIAN_VELOCITY]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    """A driver host's key directory (server pair, one allow-listed client) and, apart, an intruder's pair."""
    root = tmp_path_factory.mktemp("keys")
    for name, where in (("server", "driver"), ("client", "driver"), ("intruder", "elsewhere")):
        assert pac_keys(["generate", "--name", name, "--dir", str(root / where)]) == 0
    (root / "driver" / "clients" / "client.key").write_bytes((root / "driver" / "client.key").read_bytes())
    return root


def _send_everything(client: DriverClient, seconds: float) -> None:
    """What a rogue client would try: take the arm, then command it, for `seconds`."""
    with pytest.raises(DriverUnavailable):
        client.claim(timeout_s=seconds / 2)
    end = time.monotonic() + seconds / 2
    while time.monotonic() < end:
        client.send_command(Mode.CARTESIAN_VELOCITY, np.full(SPACE.size, 0.01), time.monotonic_ns() + 10**9, 1, 1)
        client.poll(20)


def test_only_an_allow_listed_client_key_gets_state_and_commands_the_arm(keys, start_driver, tmp_path):
    driver_keys, server_key = keys / "driver", str(keys / "driver" / "server.key")
    sim = start_driver("sawyer", "--lockstep", "--cameras", "none", "--keys", str(driver_keys))
    # The runtime side as pac-run builds it: its config's link section names the client's keys.
    config_file = tmp_path / "cell.yaml"
    config_file.write_text(
        f"robot: sawyer\nlink:\n  security:\n    client_secret_key: {driver_keys / 'client.key_secret'}\n"
        f"    server_public_key: {server_key}\n"
    )
    config = with_endpoints(load_config(config_file, "sawyer"), sim.pub, sim.cmd)
    good = DriverClient.for_link(config.link, source="allowed")
    unlisted = LinkSecurity(
        client_secret_key=str(keys / "elsewhere" / "intruder.key_secret"), server_public_key=server_key
    )
    intruders = {
        "no keys": DriverClient(sim.pub, sim.cmd, source="no-keys"),
        "a key not on the list": DriverClient(sim.pub, sim.cmd, source="unlisted", security=unlisted),
    }
    try:
        status = good.wait_ready(timeout_s=60)  # the driver is up and heartbeating: the intruders' chance
        assert status.holder == "" and status.commands_applied == 0
        for intruder in intruders.values():
            _send_everything(intruder, 2.0)
        for name, intruder in intruders.items():
            assert intruder.poll(200).state is None and intruder.latest.status is None, name
        status = good.poll(300).status
        # Nothing of theirs reached the driver: no claim, no command, not even a message to refuse or drop.
        assert status.holder == "" and status.not_owner == 0 and status.commands_applied == 0
        assert status.messages_dropped == {} and status.commands_rejected == {}

        good.claim()
        obs = good.step(Mode.CARTESIAN_VELOCITY, np.zeros(SPACE.size))
        assert obs.state.last_cmd_seq == good.seq and obs.status.commands_applied == 1
        assert good.mine(obs.state)
        for name, intruder in intruders.items():  # the driver is publishing every step now: still nothing
            assert intruder.poll(300).state is None, name
    finally:
        for client in (good, *intruders.values()):
            client.close()
        out = stop_sim(sim.proc)
    assert sim.proc.returncode == 0, out
    assert "CURVE, 1 allow-listed client key(s)" in out
    intruder_key = load_key_pair(str(keys / "elsewhere" / "intruder.key_secret"), "key")[0].decode()
    assert f"refused a CURVE client whose key {intruder_key}" in out


def test_a_client_refuses_a_driver_whose_key_it_does_not_hold(keys, start_driver):
    """Authentication runs both ways: an impostor driver (another server key) gets no connection either."""
    sim = start_driver("sawyer", "--lockstep", "--cameras", "none", "--keys", str(keys / "driver"))
    wrong_server = LinkSecurity(
        client_secret_key=str(keys / "driver" / "client.key_secret"),
        server_public_key=str(keys / "elsewhere" / "intruder.key"),
    )
    client = DriverClient(sim.pub, sim.cmd, security=wrong_server)
    try:
        with pytest.raises(DriverUnavailable):
            client.wait_ready(timeout_s=3)
    finally:
        client.close()


def test_off_loopback_without_keys_is_refused_naming_the_missing_key_file(tmp_path):
    anywhere = replace(DEFAULT_LINK, pub_endpoint="tcp://0.0.0.0:5599", cmd_endpoint=free_loopback_endpoint())
    with pytest.raises(LinkRefused, match=r"tcp://0\.0\.0\.0:5599.*CURVE.*server\.key_secret"):
        SimDriver(DriverConfig(lockstep=True, cameras=(), link=anywhere))
    # --keys naming a directory without the driver's pair: the message names the file it looked for.
    with pytest.raises(LinkRefused, match=f"{tmp_path / 'server.key_secret'} does not exist.*pac-keys generate"):
        LinkServer(LinkSecurity.server_keys(tmp_path))
    # A client: connecting off loopback without keys is refused before anything is sent.
    with pytest.raises(LinkRefused, match=r"connect to tcp://192\.0\.2\.1:5555.*client_secret_key"):
        DriverClient("tcp://192.0.2.1:5555", "tcp://192.0.2.1:5556")
    # The same from the command line: exit 2 and the reason.
    run = subprocess.run(
        [sys.executable, "-m", "robots.sim.cli", "--pub", "tcp://0.0.0.0:5599", "--cameras", "none"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "CURVE" in run.stderr and "server.key_secret" in run.stderr


def test_default_endpoints_are_ipc_sockets_in_a_directory_only_the_user_can_enter(tmp_path, monkeypatch):
    run_dir = tmp_path / "xdg"
    run_dir.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run_dir))
    assert local_endpoints("sawyer") == (
        f"ipc://{run_dir}/pac-runtime/sawyer-pub",
        f"ipc://{run_dir}/pac-runtime/sawyer-cmd",
    )
    # pac-sim and pac-run, both on their defaults, meet on those sockets.
    argv = [sys.executable, "-m", "robots.sim.cli", "--robot", "sawyer", "--lockstep", "--cameras", "none"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = None
    try:
        config = with_endpoints(RunConfig("sawyer"), None, None)
        assert config.link.pub_endpoint == local_endpoints("sawyer")[0]
        client = DriverClient.for_link(config.link)
        assert client.wait_ready(timeout_s=60).robot == "sawyer"
        assert _mode(run_dir / "pac-runtime") == 0o700
        # A second driver for the same arm must not take the sockets over (ZeroMQ would silently unlink them).
        with pytest.raises(LinkRefused, match="in use"):
            SimDriver(DriverConfig(lockstep=True, cameras=()))
    finally:
        if client is not None:
            client.close()
        out = stop_sim(proc)
    assert proc.returncode == 0, out


def test_a_socket_directory_open_to_others_or_not_a_plain_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    shared = tmp_path / "pac-runtime"
    shared.mkdir(mode=0o700)
    shared.chmod(0o750)  # group may enter: another user in the group could connect
    with pytest.raises(LinkRefused, match="open to group or others"):
        DriverClient.for_link(with_endpoints(RunConfig("sawyer"), None, None).link)
    with pytest.raises(LinkRefused, match="open to group or others"):
        SimDriver(DriverConfig(lockstep=True, cameras=()))
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    chosen.chmod(0o755)
    with pytest.raises(LinkRefused, match="open to group or others"):
        DriverClient(f"ipc://{chosen}/x-pub", f"ipc://{chosen}/x-cmd")  # a directory of the user's choosing
    shared.chmod(0o700)
    assert private_dir(shared) == shared
    link = tmp_path / "link"
    link.symlink_to(shared)
    with pytest.raises(LinkRefused, match="not a directory"):
        private_dir(link)
    with pytest.raises(LinkRefused, match="CURVE"):  # an abstract socket has no permissions at all
        DriverClient("ipc://@pac-runtime-test-pub", "ipc://@pac-runtime-test-cmd")


def test_pac_keys_writes_secret_files_only_the_user_can_read(tmp_path, capsys):
    keys_dir = tmp_path / "keys"
    assert pac_keys(["generate", "--name", "server", "--dir", str(keys_dir)]) == 0
    assert _mode(keys_dir) == 0o700 and _mode(keys_dir / "clients") == 0o700
    assert _mode(keys_dir / "server.key_secret") == 0o600 and _mode(keys_dir / "server.key") == 0o644
    public, secret = load_key_pair(str(keys_dir / "server.key_secret"), "key")
    assert len(public) == len(secret) == 40
    assert secret.decode() not in (keys_dir / "server.key").read_text()
    # An existing pair is never overwritten by accident.
    before = (keys_dir / "server.key_secret").read_bytes()
    assert pac_keys(["generate", "--name", "server", "--dir", str(keys_dir)]) == 2
    assert (keys_dir / "server.key_secret").read_bytes() == before and "--force" in capsys.readouterr().err
    # Listing names each pair with its public key.
    assert pac_keys(["list", "--dir", str(keys_dir)]) == 0
    assert public.decode() in capsys.readouterr().out
    # A secret file others can read, a key directory others can enter: refused, with the fix.
    (keys_dir / "server.key_secret").chmod(0o644)
    with pytest.raises(LinkRefused, match="chmod 600"):
        LinkServer(LinkSecurity.server_keys(keys_dir))
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    open_dir.chmod(0o755)
    assert pac_keys(["generate", "--name", "client", "--dir", str(open_dir)]) == 2
    assert not list(open_dir.iterdir())


def test_an_allow_list_others_could_write_to_or_an_empty_one_is_refused(keys, tmp_path):
    server = str(keys / "driver" / "server.key_secret")
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    with pytest.raises(LinkRefused, match="holds no client keys"):
        LinkServer(LinkSecurity(server, str(empty)))
    empty.chmod(0o777)
    with pytest.raises(LinkRefused, match="writable by group or others"):
        LinkServer(LinkSecurity(server, str(empty)))


def test_a_config_naming_a_key_file_that_does_not_exist_is_refused_at_load(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text(f"robot: sawyer\nlink: {{security: {{client_secret_key: {tmp_path / 'nope.key_secret'}}}}}\n")
    with pytest.raises(ConfigError, match="nope.key_secret"):
        load_config(path)
