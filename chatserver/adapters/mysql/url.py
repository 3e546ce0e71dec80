"""`mysql://user:password@host:port/database` URLs, and keeping their passwords out of logs."""

from urllib.parse import SplitResult, unquote, urlsplit

from attrs import evolve, frozen

DEFAULT_PORT = 3306


class InvalidMySqlUrl(ValueError):
    """A database URL that does not say where and as whom to connect."""


@frozen(repr=False)
class MySqlUrl:
    user: str
    password: str
    host: str
    port: int
    database: str

    def __repr__(self) -> str:
        return f"MySqlUrl({self.redacted()!r})"

    def redacted(self) -> str:
        secret = ":***" if self.password else ""
        return f"mysql://{self.user}{secret}@{self.host}:{self.port}/{self.database}"

    def server(self) -> "MySqlUrl":
        """The same server and account, connected to no database (to create this one)."""
        return evolve(self, database="")


def quote_name(name: str) -> str:
    """A database or table name, quoted for SQL text."""
    return "`" + name.replace("`", "``") + "`"


def parse_mysql_url(url: str) -> MySqlUrl:
    """Read `mysql://user[:password]@host[:port]/database`; user and password may be %-escaped."""
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as error:
        raise InvalidMySqlUrl(f"bad port in {redact_password(url)!r}") from error
    database = parts.path.removeprefix("/")
    if parts.scheme != "mysql" or not parts.hostname or not parts.username or not database:
        raise InvalidMySqlUrl(
            f"not a MySQL URL: {redact_password(url)!r} "
            "(use mysql://user:password@host:port/database)"
        )
    if "/" in database or parts.query or parts.fragment:
        raise InvalidMySqlUrl(f"unexpected path or query in {redact_password(url)!r}")
    return MySqlUrl(
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        host=parts.hostname,
        port=port,
        database=unquote(database),
    )


def redact_password(url: str) -> str:
    """The URL with any password replaced by ***, fit for logs and error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "<unparsable URL>"
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return SplitResult(
        parts.scheme, f"{user}:***@{hostinfo}", parts.path, parts.query, parts.fragment
    ).geturl()
