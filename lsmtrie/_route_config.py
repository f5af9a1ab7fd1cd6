"""A pool of a nutcracker (twemproxy) YAML configuration, read as twemproxy 0.5.0 reads what
decides its routing: hash, distribution, hash_tag and servers (for lsmtrie.route.Route)."""

from __future__ import annotations

from .errors import Error, InvalidArgumentError

KETAMA_PORT = 11211  # an unnamed server on this port is named by its host alone (libmemcached's way)


def _yaml(path: str):
    try:
        import yaml
    except ImportError:
        raise Error("reading a nutcracker configuration needs PyYAML "
                    "(pip install 'lsmtrie[load]')") from None
    try:
        with open(path, "rb") as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise InvalidArgumentError(f"{path}: cannot read it: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise InvalidArgumentError(f"{path}: not YAML: {' '.join(str(e).split())}") from None


def _digits(text: str) -> int | None:
    """A decimal field as twemproxy's nc_atoi takes it: digits only, else None."""
    return int(text) if text.isascii() and text.isdigit() else None


def parse_server(text) -> tuple[str, int]:
    """(name, weight) of a servers entry, "host:port:weight [name]" or "/path/socket:weight
    [name]", parsed from the end as twemproxy does. An unnamed server is named "host:port"
    ("host" alone on port 11211; a socket "/path/socket:"), the text ketama hashes its points
    from. Raises ValueError with the reason."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a string")
    rest, space, name = text.rpartition(" ")
    if not space:
        rest, name = text, ""
    socket = text.startswith("/")
    fields = rest.rsplit(":", 1 if socket else 2)
    if len(fields) != (2 if socket else 3) or (socket and ":" in fields[0]):
        raise ValueError(f"{text!r} is not \"host:port:weight [name]\" or "
                         "\"/path/socket:weight [name]\"")
    weight = _digits(fields[-1])
    if not weight or weight > 0x7FFFFFFF:
        raise ValueError(f"{text!r} has an invalid weight (1..2147483647)")
    port = None if socket else _digits(fields[1])
    if not socket and (port is None or not 1 <= port <= 65535):
        raise ValueError(f"{text!r} has an invalid port")
    if not name:
        host = fields[0]
        # the address, then ":" and the port's text (none for a socket), as the proxy copies it
        name = host if port == KETAMA_PORT else rest[: len(host) + 1 + (0 if socket else len(fields[1]))]
    return name, weight


def _pick(doc, path: str, pool: str | None):
    if not isinstance(doc, dict) or not doc:
        raise InvalidArgumentError(f"{path}: no pools (a mapping of pool names to pools)")
    pools = {str(k): v for k, v in doc.items()}
    if pool is None:
        if len(pools) != 1:
            raise InvalidArgumentError(f"{path} has pools {', '.join(sorted(pools))}: "
                                       "name one (FILE:POOL)")
        pool = next(iter(pools))
    if pool not in pools:
        raise InvalidArgumentError(f"{path} has no pool {pool!r} (it has "
                                   f"{', '.join(sorted(pools))})")
    if not isinstance(pools[pool], dict):
        raise InvalidArgumentError(f"{path}: pool {pool!r} is not a mapping")
    return pool, pools[pool]


def read_pool(path: str, pool: str | None = None) -> dict:
    """Route's arguments (hash, distribution, names, weights, hash_tag) for a pool of the
    configuration at `path` (its only pool when `pool` is None)."""
    pool, conf = _pick(_yaml(path), path, pool)
    where = f"{path}: pool {pool!r}"
    hash_, dist = conf.get("hash", "fnv1a_64"), conf.get("distribution", "ketama")
    tag = conf.get("hash_tag")
    for key, value in (("hash", hash_), ("distribution", dist), ("hash_tag", tag)):
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(f"{where}: {key} is not a string (quote it: "
                                       f"{key}: \"...\")")
    if tag is not None and len(tag.encode()) != 2:
        raise InvalidArgumentError(f"{where}: hash_tag {tag!r} is not two characters")
    servers = conf.get("servers")
    if not isinstance(servers, list) or not servers:
        raise InvalidArgumentError(f"{where}: no servers list")
    try:
        parsed = [parse_server(s) for s in servers]
    except ValueError as e:
        raise InvalidArgumentError(f"{where}: server {e}") from None
    return {"hash": hash_, "distribution": dist, "hash_tag": tag,
            "names": [n for n, _ in parsed], "weights": [w for _, w in parsed]}
