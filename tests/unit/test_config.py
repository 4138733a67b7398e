"""ElectionConfig invariants and load_settings precedence: code > env > TOML file > default."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from leaderlib import DEFAULT_BACKEND, ConfigError, ElectionConfig, load_settings


def test_defaults_satisfy_the_invariants() -> None:
    config = ElectionConfig()
    assert config.lease_duration > config.renew_deadline > config.renew_interval
    assert (config.lease_duration, config.renew_deadline, config.renew_interval) == (10.0, 7.0, 2.0)
    assert config.identity.count("/") == 2  # hostname/pid/random


def test_config_is_frozen_and_keyword_only() -> None:
    config = ElectionConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lease_duration = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        ElectionConfig(10.0)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        pytest.param({"lease_duration": 0}, "lease_duration", "positive", id="zero-lease"),
        pytest.param({"lease_duration": -10}, "lease_duration", "positive", id="negative-lease"),
        pytest.param({"lease_duration": "10"}, "lease_duration", "positive", id="string-lease"),
        pytest.param({"lease_duration": True}, "lease_duration", "positive", id="bool-lease"),
        pytest.param({"renew_deadline": 0}, "renew_deadline", "positive", id="zero-deadline"),
        pytest.param({"renew_interval": -1}, "renew_interval", "positive", id="negative-interval"),
        pytest.param({"retry_period": 0}, "retry_period", "positive", id="zero-retry"),
        pytest.param(
            {"lease_duration": 7}, "lease_duration", "greater than renew_deadline", id="lease=deadline"
        ),
        pytest.param(
            {"lease_duration": 5}, "lease_duration", "greater than renew_deadline", id="lease<deadline"
        ),
        pytest.param(
            {"renew_interval": 7}, "renew_deadline", "greater than renew_interval", id="interval=deadline"
        ),
        pytest.param(
            {"renew_interval": 8, "lease_duration": 10}, "renew_deadline", "greater", id="interval>deadline"
        ),
        pytest.param({"jitter": -0.1}, "jitter", "between 0 and 1", id="negative-jitter"),
        pytest.param({"jitter": 1.5}, "jitter", "between 0 and 1", id="big-jitter"),
        pytest.param({"shutdown_grace": -1}, "shutdown_grace", "negative", id="negative-grace"),
        pytest.param({"identity": ""}, "identity", "single line", id="empty-identity"),
        pytest.param({"identity": "a\nb"}, "identity", "single line", id="two-line-identity"),
        pytest.param({"identity": "a\0b"}, "identity", "single line", id="nul-identity"),
        pytest.param(
            {"jitter": "0.5"},
            "jitter",
            "must be a number",
            id="string-jitter",
        ),
        pytest.param(
            {"shutdown_grace": "5"},
            "shutdown_grace",
            "must be a finite number",
            id="string-grace",
        ),
    ],
)
def test_bad_configs_name_the_field(changes: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ElectionConfig(**changes)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert words in str(raised.value)


def test_a_consistent_short_config_is_accepted() -> None:
    config = ElectionConfig(lease_duration=1.5, renew_deadline=1.0, renew_interval=0.25, retry_period=0.1)
    assert config.renew_deadline == 1.0


# -- load_settings --------------------------------------------------------------------


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "leaderlib.toml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_given() -> None:
    settings = load_settings(env={})
    assert settings.backend == DEFAULT_BACKEND
    assert settings.election is None
    assert settings.config.lease_duration == ElectionConfig().lease_duration


@pytest.mark.parametrize(
    ("use_file", "use_env", "use_code", "expected_lease", "expected_backend"),
    [
        (False, False, False, 10.0, DEFAULT_BACKEND),
        (True, False, False, 20.0, "memory://file"),
        (True, True, False, 30.0, "memory://env"),
        (False, True, False, 30.0, "memory://env"),
        (True, True, True, 40.0, "memory://code"),
        (True, False, True, 40.0, "memory://code"),
    ],
)
def test_precedence_code_over_env_over_file_over_default(
    tmp_path: Path,
    use_file: bool,
    use_env: bool,
    use_code: bool,
    expected_lease: float,
    expected_backend: str,
) -> None:
    path = write_toml(tmp_path, '[leaderlib]\nbackend = "memory://file"\nlease_duration = 20\n')
    env = {"LEADERLIB_BACKEND": "memory://env", "LEADERLIB_LEASE_DURATION": "30"} if use_env else {}
    code: dict[str, Any] = {"backend": "memory://code", "lease_duration": 40.0} if use_code else {}
    settings = load_settings(file=path if use_file else None, env=env, **code)
    assert settings.config.lease_duration == expected_lease
    assert settings.backend == expected_backend


def test_each_field_comes_from_its_own_highest_source(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        '[leaderlib]\nelection = "from-file"\nrenew_interval = 1\nidentity = "file-id"\n'
        "release_on_shutdown = false\n",
    )
    settings = load_settings(
        file=path,
        env={"LEADERLIB_IDENTITY": "env-id", "LEADERLIB_JITTER": "0.5"},
        renew_deadline=6.0,
    )
    assert settings.election == "from-file"
    assert settings.config.renew_interval == 1.0  # file
    assert settings.config.identity == "env-id"  # env over file
    assert settings.config.jitter == 0.5  # env
    assert settings.config.renew_deadline == 6.0  # code
    assert settings.config.release_on_shutdown is False  # file
    assert settings.config.lease_duration == 10.0  # default


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[leaderlib]\nlease_duration = 12.5\n")
    settings = load_settings(env={"LEADERLIB_CONFIG": str(path)})
    assert settings.config.lease_duration == 12.5


def test_none_in_code_means_not_given() -> None:
    settings = load_settings(env={"LEADERLIB_LEASE_DURATION": "30"}, lease_duration=None)
    assert settings.config.lease_duration == 30.0


def test_top_level_keys_work_without_a_leaderlib_table(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'backend = "memory://x"\nretry_period = 0.5\n')
    settings = load_settings(file=path, env={})
    assert (settings.backend, settings.config.retry_period) == ("memory://x", 0.5)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        pytest.param("[leaderlib]\nlease_durration = 10\n", "lease_durration", "unknown key", id="typo"),
        pytest.param("[leaderlib]\nbackend = 5\n", "backend", "must be a string", id="backend-not-string"),
        pytest.param(
            '[leaderlib]\nlease_duration = "long"\n', "lease_duration", "not a valid float", id="bad-float"
        ),
        pytest.param(
            "[leaderlib]\nrelease_on_shutdown = 2\n", "release_on_shutdown", "not a valid bool", id="bad-bool"
        ),
        pytest.param("leaderlib = 3\n", "config", "must be a table", id="not-a-table"),
        pytest.param("[leaderlib]\nlease_duration = 5\n", "lease_duration", "greater than", id="invariant"),
    ],
)
def test_bad_toml_files(tmp_path: Path, text: str, field: str, words: str) -> None:
    path = write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_settings(file=path, env={})
    assert raised.value.field == field
    assert words in str(raised.value)


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[leaderlib]\nlease_durration = 10\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(file=path, env={})
    message = str(raised.value)
    assert str(path) in message and "'lease_durration'" in message and "lease_duration" in message


def test_bad_toml_syntax_names_the_file_and_the_problem(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[leaderlib]\nlease_duration = = 10\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(file=path, env={})
    assert raised.value.field == "config"
    assert f"{path} is not valid TOML" in str(raised.value)
    assert "line 2" in str(raised.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as raised:
        load_settings(file=tmp_path / "nope.toml", env={})
    assert raised.value.field == "config"


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("LEADERLIB_LEASE_DURATION", "ten", "lease_duration"),
        ("LEADERLIB_RENEW_INTERVAL", "", "renew_interval"),
        ("LEADERLIB_JITTER", "0,2", "jitter"),
        ("LEADERLIB_RELEASE_ON_SHUTDOWN", "maybe", "release_on_shutdown"),
    ],
)
def test_bad_environment_values_name_the_variable(variable: str, value: str, field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env={variable: value})
    assert raised.value.field == field
    assert variable in str(raised.value)
    assert repr(value) in str(raised.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("OFF", False),
    ],
)
def test_boolean_environment_values(value: str, expected: bool) -> None:
    settings = load_settings(env={"LEADERLIB_RELEASE_ON_SHUTDOWN": value})
    assert settings.config.release_on_shutdown is expected


def test_environment_values_failing_an_invariant_name_the_field() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env={"LEADERLIB_RENEW_DEADLINE": "12"})
    assert raised.value.field == "lease_duration"


def test_unknown_keyword_argument() -> None:
    with pytest.raises(ConfigError, match="unknown setting") as raised:
        load_settings(env={}, lease_durration=3.0)
    assert raised.value.field == "lease_durration"


# -- issue 10: bad input that used to be accepted ------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"retry_period": float("nan")}, "retry_period", id="nan-retry"),
        pytest.param({"lease_duration": float("inf")}, "lease_duration", id="inf-lease"),
        pytest.param({"renew_deadline": 1e400}, "renew_deadline", id="overflowing-deadline"),
        pytest.param({"renew_interval": float("nan")}, "renew_interval", id="nan-interval"),
        pytest.param({"shutdown_grace": float("nan")}, "shutdown_grace", id="nan-grace"),
        pytest.param({"shutdown_grace": float("inf")}, "shutdown_grace", id="inf-grace"),
        pytest.param({"jitter": float("nan")}, "jitter", id="nan-jitter"),
    ],
)
def test_durations_must_be_finite(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ElectionConfig(**changes)
    assert raised.value.field == field
    assert "finite" in str(raised.value) or field == "jitter"


@pytest.mark.parametrize("source", ["env", "toml"])
def test_nan_from_the_environment_or_a_file_is_refused_naming_where(tmp_path: Path, source: str) -> None:
    if source == "env":
        where, env, file = "LEADERLIB_RETRY_PERIOD", {"LEADERLIB_RETRY_PERIOD": "nan"}, None
    else:
        file = write_toml(tmp_path, "[leaderlib]\nretry_period = nan\n")
        where, env = str(file), {}
    with pytest.raises(ConfigError) as raised:
        load_settings(file=file, env=env)
    assert raised.value.field == "retry_period"
    assert "finite" in str(raised.value) and where in str(raised.value)


@pytest.mark.parametrize("value", ["no", 0, 1, None])
def test_release_on_shutdown_must_be_a_bool(value: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        ElectionConfig(release_on_shutdown=value)
    assert raised.value.field == "release_on_shutdown"


def test_identity_must_be_a_string() -> None:
    with pytest.raises(ConfigError) as raised:
        ElectionConfig(identity=5)  # type: ignore[arg-type]
    assert raised.value.field == "identity"


def test_an_unknown_leaderlib_variable_is_warned_about_with_the_closest_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="leaderlib.config"):
        settings = load_settings(env={"LEADERLIB_LEASE_DURATIN": "30", "LEADERLIB_ETCD": "/bin/etcd"})
    assert settings.config.lease_duration == 10.0  # ignored, not failed
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert "LEADERLIB_LEASE_DURATIN" in record.getMessage()
    assert "LEADERLIB_LEASE_DURATION" in record.getMessage()


def test_known_leaderlib_variables_are_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    env = {
        name: "x"
        for name in (
            "LEADERLIB_CACHE_DIR",
            "LEADERLIB_KUBE_APISERVER",
            "LEADERLIB_REDIS_SERVER",
            "LEADERLIB_TOXIPROXY_SERVER",
            "LEADERLIB_CLIENTGO_ELECTOR",
            "LEADERLIB_TEST_REDIS_URL",
        )
    }
    with caplog.at_level("WARNING", logger="leaderlib.config"):
        load_settings(env={**env, "LEADERLIB_ELECTION": "e", "LEADERLIB_BACKEND": "memory://"})
    assert caplog.records == []


def test_pyproject_style_tool_leaderlib_table(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path, '[project]\nname = "app"\n\n[tool.leaderlib]\nlease_duration = 12\n\n[tool.ruff]\nx = 1\n'
    )
    assert load_settings(file=path, env={}).config.lease_duration == 12.0


def test_a_file_without_a_leaderlib_table_says_so(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[project]\nname = "app"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(file=path, env={})
    assert raised.value.field == "config"
    assert "[leaderlib]" in str(raised.value) and "[tool.leaderlib]" in str(raised.value)
    assert "unknown key" not in str(raised.value)


def test_a_config_from_code_wins_whole_and_says_what_it_shadows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_toml(tmp_path, "[leaderlib]\nlease_duration = 20\nrenew_deadline = 15\n")
    code = ElectionConfig(lease_duration=12, identity="from-code")
    with caplog.at_level("WARNING", logger="leaderlib.config"):
        settings = load_settings(file=path, env={"LEADERLIB_IDENTITY": "env-id"}, config=code)
    assert settings.config is code
    [record] = caplog.records
    message = record.getMessage()
    assert "identity" in message and "lease_duration" in message and "renew_deadline" in message


def test_config_and_field_keywords_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="not both"):
        load_settings(env={}, config=ElectionConfig(), lease_duration=12.0)
