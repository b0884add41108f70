"""What gateways need: headers and query parameters sent on every request, besides the body.

`--header 'Name: value'` and `--query name=value` (job files: `headers`, `query`; each of
`[[endpoints]]` may add its own over the job's), and `OPENAI_ORG_ID` / `OPENAI_PROJECT_ID` sent as
`OpenAI-Organization` / `OpenAI-Project` as the openai SDK sends them. The decisions a reader must
know (docs/endpoints.md): a value may be `env:NAME`, read from that variable where requests are
sent, as the key is; header values are never written to a file or shown in a message, only their
names; and a header that carries the key (Azure's `api-key`) or a header `Authorization` of the
user's own takes the place of our `Authorization: Bearer`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from batcher.errors import ConfigError

#: A value read from an environment variable: `env:AZURE_OPENAI_API_KEY`.
ENV_PREFIX = "env:"
#: What a message or the resume command shows in place of a value.
HIDDEN = "***"
#: The variables the openai SDK reads, and the headers it sends them as.
OPENAI_ENV_HEADERS = {"OPENAI_ORG_ID": "OpenAI-Organization", "OPENAI_PROJECT_ID": "OpenAI-Project"}
#: A header name: an HTTP token (RFC 9110, 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Words of a header or query name whose value is a credential: a job file names a variable for it.
_CREDENTIAL_WORDS = ("auth", "key", "token", "secret", "password", "signature", "cookie", "credential")
#: Header values shorter than this are not looked for in messages (they would match ordinary words).
_SHORTEST_SECRET = 8


class Pairs(tuple):
    """(name, value) pairs, in the order given; their repr shows the names only (a value may be a key)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Pairs(" + ", ".join(f"{name}={HIDDEN}" for name, _ in self) + ")"

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self]


NO_PAIRS = Pairs()


def parse_headers(given: Any, origin: str) -> Pairs:
    """Headers from flags or a job file: "Name: value" strings, or a table {Name: value}.

    A name given again replaces the earlier one (names are case-insensitive). Errors name
    `origin` ("--header", "headers", "endpoints[2].headers") and the header, never its value."""
    pairs = []
    for where, name, value in _entries(given, origin, ":", "'X-Title: my-app'"):
        value = value.strip()
        if not _TOKEN.fullmatch(name):
            said = f"'{name}' is not" if name and len(name) <= 64 else "its name is not"
            raise ConfigError(f"{where}: {said} a header name (letters, digits and !#$%&'*+-.^_`|~)")
        _check_value(f"{where} ({name})", value)
        pairs.append((name, value))
    return merged(Pairs(), Pairs(pairs))


def parse_query(given: Any, origin: str) -> Pairs:
    """Query parameters from flags or a job file: "name=value" strings, or a table {name: value}."""
    pairs = {}
    for where, name, value in _entries(given, origin, "=", "api-version=1"):
        if not name:
            raise ConfigError(f"{where} has an empty name before its '='")
        _check_value(f"{where} ({name})", value)
        pairs[name] = value
    return Pairs(pairs.items())


def _entries(given: Any, origin: str, separator: str, example: str) -> Iterable[tuple[str, str, str]]:
    """(where, name, value) of each entry: "name<separator>value" strings, or a table's items."""
    for where, item in _items(given, origin):
        if isinstance(item, str):
            name, found, value = item.partition(separator)
            if not found:
                raise ConfigError(f"{where} has no '{separator}' between its name and value (e.g. {example})")
        else:
            name, value = item
        yield where, name.strip(), value


def _items(given: Any, origin: str) -> Iterable[tuple[str, Any]]:
    """Each entry with the place to name in an error: a list's are numbered, a table's named."""
    if isinstance(given, Mapping):
        for name, value in given.items():
            if not isinstance(value, str):
                raise ConfigError(f"{origin}.{name} must be a string, got {type(value).__name__}")
            yield f"{origin}.{name}", (str(name), value)
        return
    if isinstance(given, str) or not isinstance(given, Iterable):
        raise ConfigError(f"{origin} must be a list of strings or a table, got {type(given).__name__}")
    for number, item in enumerate(given, start=1):
        where = f"{origin} #{number}" if origin.startswith("--") else f"{origin}[{number}]"
        if isinstance(item, str) or (isinstance(item, tuple) and len(item) == 2):  # (a tuple: Pairs)
            yield where, item
        else:
            raise ConfigError(f"{where} must be a string, got {type(item).__name__}")


def _check_value(where: str, value: str) -> None:
    if not value:
        raise ConfigError(f"{where} has an empty value (was the variable it came from set?)")
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(f"{where}: its value holds a line break or NUL, which no header may")
    if value.startswith(ENV_PREFIX) and not value[len(ENV_PREFIX) :].strip():
        raise ConfigError(f"{where}: env: must be followed by the name of an environment variable")


def merged(base: Pairs, over: Pairs, *, fold_case: bool = True) -> Pairs:
    """`base` with `over` replacing what it names again (header names compared case-insensitively)."""
    out: dict[str, tuple[str, str]] = {}
    for name, value in (*base, *over):
        out[name.lower() if fold_case else name] = (name, value)
    return Pairs(out.values())


def openai_headers(environ: Mapping[str, str]) -> Pairs:
    """`OpenAI-Organization` / `OpenAI-Project` from `OPENAI_ORG_ID` / `OPENAI_PROJECT_ID`, where set."""
    return Pairs((header, environ[var]) for var, header in OPENAI_ENV_HEADERS.items() if environ.get(var))


def flags_over(settings: dict[str, Any], headers: tuple[str, ...], query: tuple[str, ...]) -> None:
    """`--header` / `--query` flags over a job file's `headers` / `query`, name by name."""
    if headers:
        earlier = parse_headers(settings.get("headers", ()), "headers")
        settings["headers"] = merged(earlier, parse_headers(headers, "--header"))
    if query:
        earlier = parse_query(settings.get("query", ()), "query")
        settings["query"] = merged(earlier, parse_query(query, "--query"), fold_case=False)


def looks_secret(name: str) -> bool:
    """Whether a header or query name says its value is a credential (api-key, Authorization, ...)."""
    lowered = name.strip().lower()
    return lowered in ("sig", "code") or any(word in lowered for word in _CREDENTIAL_WORDS)


def job_settings(settings: dict[str, Any], environ: Mapping[str, str]) -> None:
    """A job's `headers` (OPENAI_ORG_ID / OPENAI_PROJECT_ID's under the user's) and `query`, parsed."""
    given = parse_headers(settings.get("headers", ()), "headers")
    settings["headers"] = merged(openai_headers(environ), given)
    settings["query"] = parse_query(settings.get("query", ()), "query")


def check_variables(headers: Pairs, query: Pairs) -> None:
    """Refuse `env:` values whose variables are not set, before anything is written or sent."""
    resolved(headers, "header")
    resolved(query, "query parameter")


def refuse_written_secrets(origin: str, settings: dict[str, Any], key: str | None) -> None:
    """A job file's headers and query never hold a credential (or `key`) itself, only the variable to
    read it from (`env:NAME`): the job's and each of its endpoints'."""
    tables = [settings, *(e for e in settings.get("endpoints", ()) if isinstance(e, Mapping))]
    entries = []
    for table in tables:
        if "headers" in table:
            entries.append(("header", parse_headers(table["headers"], "headers")))
        if "query" in table:
            entries.append(("query parameter", parse_query(table["query"], "query")))
    for label, pairs in entries:
        for name, value in pairs:
            if value.startswith(ENV_PREFIX):
                continue
            if looks_secret(name) or (key and len(key) >= _SHORTEST_SECRET and key in value):
                raise ConfigError(
                    f"{origin}: {label} '{name}' would keep a secret in the job file, which never holds "
                    'keys: write its value as "env:VARIABLE" and set that variable'
                )


def variables(pairs: Pairs) -> list[str]:
    """The environment variables `pairs` read (their `env:` values)."""
    return [value[len(ENV_PREFIX) :].strip() for _, value in pairs if value.startswith(ENV_PREFIX)]


def resolved(pairs: Pairs, label: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`pairs` with their `env:` values read; a variable not set is a ConfigError naming it."""
    out = {}
    for name, value in pairs:
        if value.startswith(ENV_PREFIX):
            variable = value[len(ENV_PREFIX) :].strip()
            value = environ.get(variable, "")
            if not value:
                raise ConfigError(f"{label} {name} is read from ${variable}, which is not set: set it first")
        out[name] = value
    return out


@dataclass(frozen=True, slots=True, repr=False)
class Gateway:
    """What every request to one endpoint carries besides its body, its `env:` values read."""

    #: Every header but the body's own (Content-Type): ours, the user's over them.
    headers: dict[str, str]
    query: dict[str, str]
    #: Values a message must not show, longest first: header values, and query values read from
    #: the environment (the key is the caller's to hide: `failure_of`).
    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Gateway(headers={list(self.headers)}, query={list(self.query)})"

    @classmethod
    def of(cls, api_key: str | None, headers: Pairs = NO_PAIRS, query: Pairs = NO_PAIRS) -> Gateway:
        """The headers and query of an endpoint whose key is `api_key` (None: none is sent).

        `Authorization: Bearer <key>` is sent unless the user gives an `Authorization` header of
        their own, or a header whose value holds the key (which then carries it, as Azure's
        `api-key` does: the key is not sent twice)."""
        given = resolved(headers, "header")
        named = {name.lower() for name in given}
        ours = {"User-Agent": "batcher"}
        # (the key itself, or "Bearer <key>": a short dummy key such as "EMPTY" is no part of a value)
        carried = api_key and any(value in (api_key, f"Bearer {api_key}") for value in given.values())
        if api_key and "authorization" not in named and not carried:
            ours["Authorization"] = f"Bearer {api_key}"
        everything = {**{k: v for k, v in ours.items() if k.lower() not in named}, **given}
        read = resolved(query, "query parameter")
        secrets = {
            *given.values(),
            *(read[name] for name, value in query if value.startswith(ENV_PREFIX) or looks_secret(name)),
        }
        hidden = sorted((s for s in secrets if len(s) >= _SHORTEST_SECRET), key=len, reverse=True)
        return cls(everything, read, tuple(hidden))

    def with_defaults(self, defaults: Mapping[str, str]) -> dict[str, str]:
        """The headers, with `defaults` for those the user did not name."""
        named = {name.lower() for name in self.headers}
        return {**{k: v for k, v in defaults.items() if k.lower() not in named}, **self.headers}


def shown_flag(flag: str, value: str) -> str:
    """A `--header` or `--query` value as the resume command shows it: a header's value hidden
    (unless it names a variable), a query parameter's when its name says it is a credential."""
    separator = ":" if flag == "--header" else "="
    name, found, given = value.partition(separator)
    if not found or given.strip().startswith(ENV_PREFIX):
        return value if found else HIDDEN
    if flag == "--header" or looks_secret(name):
        return f"{name}{separator}{' ' if flag == '--header' else ''}{HIDDEN}"
    return value
