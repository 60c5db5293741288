"""Signed bundles: a signature over ``manifest.json``, which lists the sha256 of every other file in the bundle.

Whoever can change a model file can also change a hash written beside it; they cannot make a signature that the
app's public key accepts. The private key (Ed25519, or ECDSA P-256 from elsewhere, PEM) never enters the bundle:
``manifest.sig`` holds the signature, the algorithm, and the signer's public key (PEM) with its fingerprint.

The stored public key makes every signed bundle checkable without a key file: a manifest changed after signing fails.
It does not say who signed: anyone can sign a forged manifest with a key of their own and store that key. Only a key
the checker already trusts (``--key PUBLIC_KEY.pem``) proves the signer. Signature files written before the public key
was stored still check with ``--key``. Keys and signatures come from ``cryptography`` (pyca); nothing here is hand-made
cryptography.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from udacisense.errors import UdaciSenseError
from udacisense.io import atomic_write, sha256_of

SIGNATURE_FILE = "manifest.sig"
MANIFEST_FILE = "manifest.json"


def bundle_files(folder: Path) -> dict[str, str]:
    """sha256 of every file in the bundle but the manifest and its signature, by path relative to ``folder``."""
    return {path.relative_to(folder).as_posix(): sha256_of(path) for path in sorted(folder.rglob("*"))
            if path.is_file() and path.relative_to(folder).as_posix() not in (MANIFEST_FILE, SIGNATURE_FILE)}


def generate_key(path: Path) -> tuple[Path, Path]:
    """A new Ed25519 key pair: ``path`` (private, PEM, readable by its owner only) and ``path.pub`` (public, PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public_path = path.with_name(path.name + ".pub")
    if path.exists() or public_path.exists():
        raise UdaciSenseError(f"{path} or {public_path} already exists; choose a new path (a key is never overwritten)")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private)
    public_path.write_bytes(_public_pem(key.public_key()))
    return path, public_path


def sign_bundle(folder: Path, key_path: Path) -> dict[str, Any]:
    """Sign ``folder/manifest.json`` with the private key at ``key_path``; writes and returns ``manifest.sig``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = _load_key(key_path, private=True)
    data = (folder / MANIFEST_FILE).read_bytes()
    signature = key.sign(data) if _algorithm(key) == "ed25519" else key.sign(data, ec.ECDSA(hashes.SHA256()))
    record = _record(key.public_key(), signature)
    atomic_write(folder / SIGNATURE_FILE, lambda handle: handle.write(_encode(record)))
    return record


def _record(public_key: Any, signature: bytes, *, stores_key: bool = True) -> dict[str, str]:
    """The signature file's fields; ``stores_key`` False rebuilds a record written before the public key was stored."""
    record = {"algorithm": _algorithm(public_key), "signed": MANIFEST_FILE, "public_key_sha256": fingerprint(public_key)}
    if stores_key:
        record["public_key"] = _public_pem(public_key).decode()
    return record | {"signature": base64.b64encode(signature).decode()}


def _encode(record: dict[str, str]) -> bytes:
    return json.dumps(record, indent=2).encode()


def check_signature(folder: Path, public_key_path: Path | None = None, manifest: bytes | None = None) -> list[str]:
    """The problems with ``folder``'s signature (empty: it holds, or the bundle is unsigned and no key asks for one).

    With ``public_key_path`` a signature by that key is required: this proves who signed. Without it a signed bundle is
    checked with the public key stored in its ``manifest.sig``: this proves the manifest is unchanged since it was
    signed, not who signed it. ``manifest``: the manifest's bytes, when the caller has read them already (so what it
    goes on to use is what was checked)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    pinned = _load_key(public_key_path, private=False) if public_key_path is not None else None
    path = folder / SIGNATURE_FILE
    if not path.is_file():
        return [f"unsigned bundle: no {SIGNATURE_FILE}, but --key {public_key_path} asks for a signature"] if pinned is not None else []
    try:
        written = path.read_bytes()
        record = json.loads(written)
        signature = base64.b64decode(record["signature"], validate=True)
        stored = _stored_key(record)
    except (ValueError, KeyError, TypeError, AttributeError, UdaciSenseError) as error:
        return [f"{SIGNATURE_FILE} is unreadable: {error}"]
    if pinned is not None and record.get("public_key_sha256") != fingerprint(pinned):
        return [f"signed by another key (sha256 {str(record.get('public_key_sha256'))[:16]}…), not by {public_key_path} "
                f"(sha256 {fingerprint(pinned)[:16]}…)"]
    key = pinned if pinned is not None else stored
    if key is None:
        return [f"{SIGNATURE_FILE} predates stored public keys, so it cannot be checked without one: pass --key PUBLIC_KEY.pem "
                "(or sign the bundle again)"]
    data = manifest if manifest is not None else (folder / MANIFEST_FILE).read_bytes()
    try:
        if _algorithm(key) == "ed25519":
            key.verify(signature, data)
        else:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return [f"signature does not match {MANIFEST_FILE} (the manifest changed after signing)"]
    if written != _encode(_record(key, signature, stores_key="public_key" in record)):  # base64's spare bits, another field: not ours
        return [f"{SIGNATURE_FILE} was altered after signing (it is not the file the signer wrote)"]
    return []


def _stored_key(record: dict[str, Any]) -> Any:
    """The public key a signature file stores, or None for one written before keys were stored."""
    from cryptography.hazmat.primitives import serialization

    if "public_key" not in record:
        return None
    key = serialization.load_pem_public_key(record["public_key"].encode())
    _algorithm(key)  # only the algorithms this module signs with
    return key


def signature_note(folder: Path) -> str:
    """How a bundle is signed, for ``verify`` without ``--key`` once :func:`check_signature` found no problem."""
    path = folder / SIGNATURE_FILE
    if not path.is_file():
        return "unsigned (sign it with 'udacisense export --sign KEY'; make a key with 'udacisense keygen KEY')"
    try:
        key = json.loads(path.read_text()).get("public_key_sha256", "?")
    except ValueError:
        key = "?"
    return f"signed by key sha256 {str(key)[:16]}…; signature intact (only --key PUBLIC_KEY.pem proves who signed)"


def fingerprint(public_key: Any) -> str:
    """sha256 of the public key's DER SubjectPublicKeyInfo: the same for the PEM file and the key inside a private one."""
    from cryptography.hazmat.primitives import serialization

    return hashlib.sha256(public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def _public_pem(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _algorithm(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.name == "secp256r1":
        return "ecdsa-p256-sha256"
    raise UdaciSenseError(f"unsupported key type {type(key).__name__}: use Ed25519 ('udacisense keygen') or ECDSA P-256")


def _load_key(path: Path, *, private: bool) -> Any:
    from cryptography.hazmat.primitives import serialization

    kind = "private" if private else "public"
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UdaciSenseError(f"cannot read the {kind} key {path}: {error.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None) if private else serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as error:
        hint = " (give the private key to --sign, the .pub file to --key)" if b"PRIVATE" in data or b"PUBLIC" in data else ""
        raise UdaciSenseError(f"{path} is not a PEM {kind} key{hint}: {str(error).splitlines()[0][:120]}") from None
    _algorithm(key)
    return key
