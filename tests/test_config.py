"""pac-run's config tree: defaults written once, robot YAMLs that carry only what differs, clear refusals."""

from __future__ import annotations

import pytest
import yaml

from robots.contract.link import DEFAULT_LINK, Mode
from robots.contract.messages import StatusMsg
from robots.servo import ServoConfig
from robots.sim.driver import DriverConfig
from robots.sim.process import SIM_START_S
from robots.spec import ARMS
from runtime.config import (
    CONFIG_DIR,
    ConfigError,
    RunConfig,
    load_config,
    with_endpoints,
    with_own_sim,
)
from runtime.safety.watchdogs import WatchdogConfig


@pytest.mark.parametrize("robot", ARMS)
def test_shipped_configs_name_the_robot_and_take_every_default(robot):
    assert yaml.safe_load((CONFIG_DIR / f"{robot}.yaml").read_text()) == {"robot": robot}
    assert load_config(robot=robot) == RunConfig(robot)


@pytest.mark.parametrize(("configured_s", "waited_s"), [(5.0, SIM_START_S), (0.5, SIM_START_S), (90.0, 90.0)])
def test_a_sim_of_our_own_gets_its_start_up_before_the_pre_flight_gives_up(configured_s, waited_s):
    """A running driver answers in the config's 5 s; a sim this process has just started is still importing."""
    config = with_own_sim(RunConfig(robot="sawyer", driver_wait_s=configured_s), "ipc:///tmp/p", "ipc:///tmp/c")
    assert config.driver_wait_s == waited_s and config.link.pub_endpoint == "ipc:///tmp/p"


def test_link_values_are_shared_by_driver_runtime_servo_and_messages():
    assert RunConfig("sawyer").link == DEFAULT_LINK == DriverConfig().link
    assert ServoConfig().period_s == DEFAULT_LINK.period_s == StatusMsg.__dataclass_fields__["period_s"].default
    assert ServoConfig().command_timeout_s * 1e3 == pytest.approx(DEFAULT_LINK.command_timeout_ms)


def test_a_cell_overrides_nested_values_and_keeps_the_other_defaults(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text(
        "robot: panda\nmode: joint_position\n"
        "link: {pub_endpoint: 'tcp://10.0.0.2:5555', cmd_endpoint: 'tcp://10.0.0.2:5556'}\n"
        "watchdogs: {max_image_age_ms: 120}\n"
    )
    config = load_config(path, "panda")
    assert config.mode is Mode.JOINT_POSITION
    assert config.link.pub_endpoint == "tcp://10.0.0.2:5555" and config.link.period_s == DEFAULT_LINK.period_s
    assert config.watchdogs.max_image_age_ms == 120
    assert config.watchdogs.max_state_age_ms == WatchdogConfig().max_state_age_ms
    moved = with_endpoints(config, None, "tcp://127.0.0.1:7000")
    assert moved.link.cmd_endpoint == "tcp://127.0.0.1:7000" and moved.link.pub_endpoint == config.link.pub_endpoint


@pytest.mark.parametrize(
    "text, message",
    [
        ("robot: sawyer\nperiod_s: 0.05\n", "unknown key(s) ['period_s']"),
        ("robot: sawyer\nlink: {period: 0.05}\n", ".link: unknown key(s) ['period']"),
        ("robot: sawyer\nmode: hold\n", "mode: 'hold' is not one of"),
        ("robot: sawyer\nmode: fly\n", "mode: 'fly' is not one of"),
        ("robot: sawyer\nwatchdogs: [1, 2]\n", ".watchdogs: expected a mapping"),
        ("cameras: [a]\n", "at least 'robot'"),
        ("robot: [unclosed\n", "is not YAML"),
        ("robot: panda\n", "is for robot 'panda', but --robot sawyer"),
    ],
)
def test_a_malformed_config_is_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, "sawyer")
    assert message in str(err.value)
