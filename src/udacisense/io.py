"""Atomic file writes (a crash mid-write never leaves a half-written result behind), file hashes, and reading a user's YAML safely."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import yaml

from udacisense.errors import StorageFull, UdaciSenseError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp_name, path)
    except BaseException as error:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(f"cannot write {path}: {os.strerror(error.errno)}; free some space, then continue with --resume "
                              "(every file written before is intact)") from None
        raise
    return path


def config_hash(*parts: Any) -> str:
    """A short, stable fingerprint of JSON-able configuration (stage results are reused while it holds)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def size_of(path: str | Path) -> int:
    """Bytes of a file, or of a directory's files."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(part.stat().st_size for part in path.rglob("*") if part.is_file())


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


MAX_YAML_VALUES = 100_000  # a recipe holds a few hundred; anchors and aliases can multiply a small file past any memory


def read_yaml(path: str | Path) -> Any:
    """A user's YAML file, or one clear line: unreadable, not UTF-8, not YAML, nested too deeply or too large."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UdaciSenseError(f"cannot read {path}: {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UdaciSenseError(f"{path} is not UTF-8 text (byte {error.start} is 0x{data[error.start]:02x}); save it as UTF-8") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, where: str) -> Any:
    """``text`` as YAML (safe loader), refusing documents whose aliases expand to more than ``MAX_YAML_VALUES`` values."""
    loader = None
    try:  # what yaml.safe_load does (compose, then construct), with the size check in between
        loader = yaml.SafeLoader(text)  # its reader already refuses some characters
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise UdaciSenseError(f"{where} expands to more than {MAX_YAML_VALUES:,} values through YAML aliases; write the values out")
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UdaciSenseError(f"{where} is not valid YAML{line}: {problem}") from None
    except RecursionError:
        raise UdaciSenseError(f"{where} is nested too deeply (or refers to itself through an alias)") from None
    finally:
        if loader is not None:
            loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` becomes once every alias is expanded (each shared node counted once per use)."""
    if id(node) not in sizes:
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]
