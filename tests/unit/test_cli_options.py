"""The command line comes from one table (entrypoints/options.py): every option has an
environment variable, README's configuration table lists them all, and what `serve` parses is
the Config it runs with."""

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from attrs import fields

from chatserver.entrypoints.bootstrap import Config, ConfigError
from chatserver.entrypoints.cli import build_parser, main
from chatserver.entrypoints.options import CLIENT_OPTIONS, OPTIONS, config_from

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in (*OPTIONS.values(), *CLIENT_OPTIONS.values()):
        monkeypatch.delenv(option.variable, raising=False)


def serve_config(*argv: str) -> Config:
    return config_from(build_parser().parse_args(["serve", *argv]))


def readme_rows() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Configuration of `serve`"):]
    table = section[: section.index("\n\n", section.index("| option |"))]
    return [row for row in table.splitlines() if row.startswith("| `--")]


def test_every_option_has_an_environment_variable_of_its_own() -> None:
    every = (*OPTIONS.values(), *CLIENT_OPTIONS.values())
    variables = [option.variable for option in every]
    assert len(set(variables)) == len(variables)
    assert not set(OPTIONS) & set(CLIENT_OPTIONS)
    for option in every:
        assert re.fullmatch(r"CHATSERVER_[A-Z_]+", option.variable), option.flag


def test_the_variables_that_worked_before_the_table_still_do() -> None:
    variables = {option.variable for option in OPTIONS.values()}
    assert {"CHATSERVER_TRUSTED_PROXIES", "CHATSERVER_ALLOWED_ORIGINS", "CHATSERVER_GC",
            "CHATSERVER_PIPELINE", "CHATSERVER_TRANSPORT", "CHATSERVER_LOOP",
            "CHATSERVER_LOG_LEVEL", "CHATSERVER_WS_PORT", "CHATSERVER_NODE_LEASE"} <= variables


def test_readme_lists_every_option_with_its_variable_and_no_other() -> None:
    rows = readme_rows()
    listed = {flag for row in rows for flag in re.findall(r"`(--[a-z-]+)", row.split("|")[1])}
    missing, unknown = sorted(set(OPTIONS) - listed), sorted(listed - set(OPTIONS))
    assert missing == unknown == [], f"README lacks {missing}, lists unknown {unknown}"
    for option in OPTIONS.values():
        row = next(row for row in rows
                   if re.search(rf"`{re.escape(option.flag)}[` ]", row.split("|")[1]))
        assert option.variable in row.split("|")[2], f"README's row of {option.flag}: {row}"


def test_readme_lists_every_option_of_the_terminal_client_with_its_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### The terminal client"):]
    table = section[: section.index("\n\n", section.index("| option |"))]
    rows = {re.findall(r"`(--[a-z-]+)", row.split("|")[1])[0]: row.split("|")[2]
            for row in table.splitlines() if row.startswith("| `--")}
    with pytest.raises(SystemExit):
        main(["client", "--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    flags = set(re.findall(r"\[(--[a-z-]+)", usage)) - {"--help"}
    assert set(rows) == flags, usage
    for option in CLIENT_OPTIONS.values():
        assert option.variable in rows[option.flag], option.flag
    for flag, shared in (("--host", "--host"), ("--port", "--port"), ("--web-port", "--ws-port")):
        assert OPTIONS[shared].variable in rows[flag], flag


def test_the_terminal_client_takes_tls_from_the_command_line_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["client"])
    assert (args.tls, args.tls_ca) == (False, None)
    assert build_parser().parse_args(["client", "--tls", "--tls-ca", "ca.pem"]).tls_ca == "ca.pem"
    monkeypatch.setenv("CHATSERVER_TLS", "1")
    monkeypatch.setenv("CHATSERVER_TLS_CA", "/etc/chat/ca.pem")
    args = build_parser().parse_args(["client"])
    assert (args.tls, args.tls_ca) == (True, "/etc/chat/ca.pem")
    assert build_parser().parse_args(["client", "--no-tls"]).tls is False
    with pytest.raises(SystemExit):
        main(["client", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "CHATSERVER_TLS=1 or 0" in text and "CHATSERVER_TLS_CA" in text
    assert "tls" not in vars(build_parser().parse_args(["serve"]))  # serve's is --tls-cert


def test_a_tls_ca_file_that_cannot_work_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    assert main(["client", "--tls-ca", str(not_pem)]) == 2
    err = capsys.readouterr().err
    assert err == f"chatserver: --tls-ca {not_pem} holds no PEM certificate " \
        "(NO_CERTIFICATE_OR_CRL_FOUND)\n", err


def test_serve_help_names_every_option_and_its_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--help"])
    assert stopped.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    for option in OPTIONS.values():
        assert option.flag in text and option.variable in text, option.flag


def test_no_options_give_configs_defaults() -> None:
    config, default = serve_config(), Config()
    different = [f.name for f in fields(Config)
                 if f.name != "node_id" and getattr(config, f.name) != getattr(default, f.name)]
    assert different == []


def test_the_environment_sets_every_kind_of_option(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [("PORT", "7001"), ("REQUEST_RATE", "7.5"), ("STORED_LIMIT", "12"),
                        ("BEHIND_PROXY", "1"), ("PIPELINE", "0"), ("GC", "default"),
                        ("TRUSTED_PROXIES", "10.0.0.0/8, 10.1.0.0/16,"), ("WS_PORT", "0"),
                        ("TRANSPORT", "anyio"), ("LOG_LEVEL", "warning"),
                        ("REGISTRATIONS_PER_MINUTE", "3")]:
        monkeypatch.setenv(f"CHATSERVER_{name}", value)
    config = serve_config()
    assert (config.port, config.transport.requests_per_second, config.limits.stored_per_user) \
        == (7001, 7.5, 12)
    assert config.behind_proxy and not config.transport.pipeline and config.gc == "default"
    assert config.trusted_proxies == ("10.0.0.0/8", "10.1.0.0/16")
    assert config.ws_port is None  # 0 in the environment: off
    assert (config.driver, config.log_level) == ("anyio", "warning")
    assert config.limits.registration_attempts_per_minute == 18  # six times the accounts


def test_the_command_line_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSERVER_PORT", "7001")
    monkeypatch.setenv("CHATSERVER_PIPELINE", "0")
    monkeypatch.setenv("CHATSERVER_ALLOWED_ORIGINS", "https://a.example,https://b.example")
    config = serve_config("--port", "7002", "--pipeline", "--allowed-origin", "https://c.example",
                          "--allowed-origin", "https://d.example")
    assert config.port == 7002 and config.transport.pipeline
    assert config.allowed_origins == ("https://c.example", "https://d.example")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [("CHATSERVER_TRANSPORT", "trio", "--transport 'trio' is not one of: asyncio, anyio"),
     ("CHATSERVER_LOOP", "tokio", "--loop 'tokio' is not one of: asyncio, uvloop"),
     ("CHATSERVER_GC", "off", "--gc 'off' is not one of: freeze, default"),
     ("CHATSERVER_BEHIND_PROXY", "maybe", "CHATSERVER_BEHIND_PROXY='maybe' is not 1 or 0"),
     ("CHATSERVER_NODE_LEASE", "soon", "CHATSERVER_NODE_LEASE='soon' is not a number"),
     ("CHATSERVER_LOG_LEVEL", "LOUD", "--log-level 'LOUD' is not a level")],
)
def test_a_setting_that_cannot_work_is_one_line_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    variable: str, value: str, says: str,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve", "--port", "0", "--database", "memory://"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and says in lines[0], lines


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--history-days", "-1"), ("--devices-per-user", "0"), ("--group-member-limit", "-1"),
     ("--registrations-per-minute", "-1"), ("--registrations-per-hour", "-1"),
     ("--file-limit", "-5"), ("--file-quota", "-1"), ("--login-timeout", "-3")],
)
def test_a_number_out_of_range_is_refused_before_anything_starts(flag: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{flag} \S+ is too small: it must be"):
        serve_config(flag, value)


def test_config_itself_refuses_a_choice_it_does_not_know() -> None:
    with pytest.raises(ConfigError, match="--transport 'uv' is not one of"):
        Config(driver="uv")  # type: ignore[arg-type]


def test_the_other_commands_take_the_shared_options_from_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATSERVER_DATABASE", "sqlite:///shared.db")
    monkeypatch.setenv("CHATSERVER_BUS", "redis://127.0.0.1:6379/9")
    parser = build_parser()
    for argv in (["cluster"], ["admin", "users", "list"], ["db", "upgrade"],
                 ["db", "check-names"], ["db", "import-legacy", "--from", "mysql://x/chat"]):
        assert parser.parse_args(argv).database == "sqlite:///shared.db", argv
    assert parser.parse_args(["cluster"]).bus == "redis://127.0.0.1:6379/9"
    assert parser.parse_args(["admin", "groups", "list"]).bus == "redis://127.0.0.1:6379/9"
    monkeypatch.delenv("CHATSERVER_BUS")
    assert build_parser().parse_args(["cluster"]).bus == "redis://127.0.0.1:6379/0"



def test_files_that_cannot_work_are_one_line(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    from chatserver.adapters.clock import SystemClock
    from chatserver.entrypoints.bootstrap import open_files

    web: dict[str, Any] = {"database": "memory://", "ws_port": 8080}
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^--files http://example.com/x: not a folder"):
        open_files(Config(files="http://example.com/x", **web), SystemClock())
    assert not any(tmp_path.iterdir())  # no folder named "http:" was made
    monkeypatch.setitem(sys.modules, "boto3", None)  # the s3 extra not installed
    monkeypatch.delitem(sys.modules, "chatserver.adapters.web.s3_store", raising=False)
    with pytest.raises(ConfigError, match=r"^--files s3://bucket/chat needs the s3 extra"):
        open_files(Config(files="s3://bucket/chat", **web), SystemClock())


def test_a_missing_tls_file_is_named(tmp_path: Path) -> None:
    from chatserver.entrypoints.bootstrap import tls_context

    cert, key = tmp_path / "missing.pem", tmp_path / "missing.key"
    with pytest.raises(ConfigError, match=rf"{re.escape(str(cert))} or key "
                                          rf"{re.escape(str(key))}: No such file"):
        tls_context(str(cert), str(key))


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_admin_webhooks_dead_refuses_a_limit_below_one(
    capsys: pytest.CaptureFixture[str], limit: str,
) -> None:
    argv = ["admin", "webhooks", "dead", "--limit", limit, "--database", "memory://"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1 and f"--limit {limit}" in lines[0], lines


@pytest.mark.parametrize("device", ["", "x" * 65])
def test_the_terminal_refuses_a_device_name_login_would(
    capsys: pytest.CaptureFixture[str], device: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["client", "--device", device])
    assert stopped.value.code == 2
    assert "a device name has 1 to 64 characters" in capsys.readouterr().err
    assert build_parser().parse_args(["client", "--device", "x" * 64]).device == "x" * 64


def test_admin_retrying_a_dead_letter_that_is_not_there_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("retry", "drop"):
        assert main(["admin", "webhooks", command, "7", "--database", "memory://"]) == 1
        assert "no dead letter 7" in capsys.readouterr().err


def test_a_number_out_of_range_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATSERVER_PORT", "70000")
    with pytest.raises(ConfigError, match=r"--port \(or CHATSERVER_PORT\) 70000"):
        config_from(build_parser().parse_args(["serve"]))


def test_an_admin_mistake_is_said_by_chatserver_admin(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["admin", "users", "suspend", "1", "--until", "2x", "--database", "memory://"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("chatserver admin: --until '2x'")


@pytest.mark.parametrize("flag", ["--idle-timeout", "--login-timeout", "--request-rate",
                                  "--node-lease"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_number_that_is_not_finite_is_refused(
    flag: str, value: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QA: CHATSERVER_IDLE_TIMEOUT=nan (or --idle-timeout nan) started a server, since NaN
    passes every comparison with the lowest value allowed."""
    with pytest.raises(ConfigError, match=rf"^{flag} {value} is not a number"):
        serve_config(f"{flag}={value}")
    monkeypatch.setenv(OPTIONS[flag].variable, value)
    with pytest.raises(ConfigError, match=rf"^{flag} \(or {OPTIONS[flag].variable}\) "):
        serve_config()


@pytest.mark.parametrize("argv", [["client", "--port", "70000"], ["client", "--port", "-1"],
                                  ["client", "--web-port", "70000"]])
def test_the_terminal_client_refuses_a_port_out_of_range_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    """QA: `chatserver client --port 70000` (or CHATSERVER_PORT=70000) ended in an exception
    group's traceback (OverflowError from connect)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("chatserver: --") and "is not a port number" in err, err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("argv", [["db", "upgrade"], ["db", "check-names"],
                                  ["db", "import-legacy", "--from", "mysql://x@127.0.0.1:1/c"]])
def test_db_commands_refuse_a_memory_database(
    argv: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    """QA: `db upgrade --database memory://` printed "schema at version 0" and exited 0, and
    import-legacy would fill a database gone at exit."""
    assert main([*argv, "--database", "memory://"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"chatserver: db {argv[1]} --database memory://: "), err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("origin", ["chat.example.com", "https://", "https://a.example/page",
                                    "*.example.com"])
def test_an_allowed_origin_that_no_browser_can_send_is_refused(
    origin: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QA: --allowed-origin chat.example.com (no scheme) was taken, and every browser from
    https://chat.example.com was then refused (HTTP 403): a browser's Origin never matches it."""
    with pytest.raises(ConfigError, match=r"^--allowed-origin '.*' is not an origin"):
        serve_config("--allowed-origin", origin)
    monkeypatch.setenv("CHATSERVER_ALLOWED_ORIGINS", f"https://ok.example, {origin}")
    with pytest.raises(ConfigError, match=r"CHATSERVER_ALLOWED_ORIGINS\) '.*' is not an origin"):
        serve_config()


def test_allowed_origins_as_readme_writes_them_are_taken() -> None:
    config = serve_config("--allowed-origin", "https://chat.example.com",
                          "--allowed-origin", "http://127.0.0.1:8080/", "--allowed-origin", "*")
    assert config.allowed_origins == ("https://chat.example.com", "http://127.0.0.1:8080/", "*")


def test_a_metrics_host_that_cannot_be_listened_on_is_named_as_such(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """QA: `--metrics-host nohost.invalid` said "cannot listen on 127.0.0.1:PORT
    (--metrics-port) ...; check --host and the port": the chat port's address and option."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["serve", "--port", "0", "--database", "memory://", "--metrics-port", str(port),
            "--metrics-host", "nohost.invalid"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert f"nohost.invalid:{port} (--metrics-port)" in lines[0], lines
    assert "check --metrics-host" in lines[0], lines


@pytest.mark.parametrize("url", ["http://", "https:///events", "http:/x.example/events"])
def test_a_webhook_url_without_a_host_is_refused(url: str,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """QA: `--webhook http://` was taken: every event then failed, and waited in the outbox."""
    monkeypatch.setenv("CHATSERVER_WEBHOOK_SECRET", "s")
    assert main(["serve", "--port", "0", "--database", "memory://", "--webhook", url]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "--webhook must be an http:// or https:// URL" in lines[0], lines


@pytest.mark.parametrize("argv", [[], ["db"], ["admin"], ["admin", "users"], ["admin", "groups"],
                                  ["admin", "webhooks"]])
def test_a_missing_subcommand_is_named_by_its_choices(
    argv: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    """QA: `chatserver db` said "the following arguments are required: db_command" (and
    `admin`: admin_kind, `admin users`: admin_command), names of the code's, not the user's."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert re.search(r"required: \{[a-z-]+(,[a-z-]+)+\}$", last), last


def test_cluster_help_says_where_the_nodes_listen_and_takes_files(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """QA: `cluster --help` said --host is the address "for nginx and the nodes" (the nodes
    listen on 127.0.0.1 whatever it is, README says), and had no --files."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["cluster", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "for nginx and the nodes" not in text
    assert "the nodes listen on 127.0.0.1 whatever it is" in text
    assert build_parser().parse_args(["cluster", "--files", "shared"]).files == "shared"


@pytest.mark.parametrize("argv", [["--port", "7001", "--ws-port", "7001"],
                                  ["--port", "7001", "--metrics-port", "7001"],
                                  ["--ws-port", "7002", "--metrics-port", "7002"]])
def test_one_port_for_two_listeners_is_said_as_such(argv: list[str]) -> None:
    """QA: `serve --port 7001 --ws-port 7001` said "port 7001 ... is already in use
    (--ws-port): stop what uses it": the server itself."""
    with pytest.raises(ConfigError, match=r"^--(ws|metrics)-port 700\d is --(port|ws-port)'s "
                                          r"port too: give each its own$"):
        serve_config(*argv)


def test_the_metrics_port_may_be_the_chat_port_on_another_address() -> None:
    config = serve_config("--host", "127.0.0.2", "--port", "7001", "--metrics-port", "7001")
    assert config.metrics_port == config.port == 7001
    with pytest.raises(ConfigError, match="--metrics-port 7001 is --port's port too"):
        serve_config("--host", "0.0.0.0", "--port", "7001", "--metrics-port", "7001")
