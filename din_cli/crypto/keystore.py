"""Identities on disk: an Ethereum keystore plus an HPKE (X25519) key per name.

``$DIN_HOME/keys/NAME.json`` is a standard keystore v3 file (eth-account's
``Account.encrypt``: scrypt, aes-128-ctr, keccak MAC), the same format geth,
foundry and MetaMask export. ``NAME.hpke.json`` beside it holds the 32-byte
X25519 secret in the same keystore v3 structure (so any v3 decoder opens it),
with no ``address`` field and the public key in clear under ``"din"``::

    {"version": 3, "id": "...", "crypto": {...},
     "din": {"kind": "hpke-x25519", "suite": "...", "public": "<hex>", "address": "0x..."}}

Both files are mode 600 in a mode 700 folder, written atomically, never
overwritten, and share one password. Listing and showing keys read only the
clear fields, so they need neither the password nor eth-account.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from din_cli.errors import InputError, NotFoundError, UsageError, VerificationError

LIGHT_SCRYPT_N = 1 << 14  # "--light-kdf": dev accounts (geth's --lightkdf uses 4096)
STANDARD_SCRYPT_N = 1 << 18  # eth-account's default
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HPKE_SUFFIX = ".hpke.json"


@dataclass(frozen=True)
class KeyInfo:
    """What anyone may know about an identity: its name, address and HPKE public key."""

    name: str
    address: str  # EIP-55 checksum
    hpke_public: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "address": self.address,
            "hpke_public": "0x" + self.hpke_public.hex(),
        }


@dataclass(frozen=True)
class Identity:
    """An unlocked identity: the secrets of KeyInfo. Never print it or write it unencrypted."""

    name: str
    address: str
    private_key: bytes = field(repr=False)
    hpke_private: bytes = field(repr=False)
    hpke_public: bytes

    @cached_property
    def account(self):
        """The eth-account ``LocalAccount`` for signing transactions and messages."""
        from eth_account import Account

        return Account.from_key(self.private_key)

    @property
    def info(self) -> KeyInfo:
        return KeyInfo(self.name, self.address, self.hpke_public)


class Keystore:
    """The folder of identities (default ``$DIN_HOME/keys``)."""

    def __init__(self, folder: str | os.PathLike | None = None):
        if folder is None:
            from din_cli.config import din_home

            folder = din_home() / "keys"
        self.folder = Path(folder)

    # -- paths ---------------------------------------------------------------

    def eth_path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.json"

    def hpke_path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}{_HPKE_SUFFIX}"

    # -- create --------------------------------------------------------------

    def new(self, name: str, password: str, *, light_kdf: bool = False) -> KeyInfo:
        """Create a fresh Ethereum account and HPKE key under ``name``."""
        from eth_account import Account

        self._check_free(name)
        account = Account.create()
        return self._store(name, bytes(account.key), password, light_kdf=light_kdf, eth_json=None)

    def import_eth(
        self,
        name: str,
        password: str,
        *,
        keyfile: dict | None = None,
        private_key: bytes | None = None,
        keyfile_password: str | None = None,
        light_kdf: bool = False,
    ) -> KeyInfo:
        """Import an existing Ethereum key (keystore v3 dict, or raw 32 bytes) and give it an HPKE key.

        A keystore that opens with ``password`` (or with ``keyfile_password``
        equal to it) is kept byte for byte; otherwise it is re-encrypted under
        ``password``.
        """
        if (keyfile is None) == (private_key is None):
            raise UsageError(
                "give exactly one of a keystore file or a private key",
                "see `din keys import --help`",
            )
        self._check_free(name)
        keep_json = None
        if keyfile is not None:
            if not isinstance(keyfile, dict) or "crypto" not in {k.lower() for k in keyfile}:
                raise InputError(
                    'not an Ethereum keystore (no "crypto" section)', "give a keystore v3 JSON file"
                )
            if keyfile.get("version") != 3:
                raise InputError(
                    f"keystore version {keyfile.get('version')!r} is not an Ethereum account keystore",
                    "give a keystore v3 JSON file (geth, foundry, MetaMask)",
                )
            opener = password if keyfile_password is None else keyfile_password
            # decrypt_v3 tells a wrong password (VerificationError) from a damaged file (InputError)
            private_key = _check_private_key(
                decrypt_v3(keyfile, opener, where="the keystore being imported")
            )
            if opener == password and "crypto" in keyfile:  # eth-account opens it as it is
                keep_json = dict(keyfile)
        else:
            private_key = _check_private_key(private_key)
        return self._store(name, private_key, password, light_kdf=light_kdf, eth_json=keep_json)

    def _store(
        self,
        name: str,
        private_key: bytes,
        password: str,
        *,
        light_kdf: bool,
        eth_json: dict | None,
    ) -> KeyInfo:
        from eth_account import Account

        from din_cli.crypto import hpke

        address = Account.from_key(private_key).address
        n = LIGHT_SCRYPT_N if light_kdf else STANDARD_SCRYPT_N
        if eth_json is None:
            eth_json = Account.encrypt(private_key, password, kdf="scrypt", iterations=n)
        elif not eth_json.get("address"):
            eth_json["address"] = address[2:].lower()
        hpke_private, hpke_public = hpke.generate_keypair()
        hpke_json = encrypt_v3(hpke_private, password, scrypt_n=n)
        hpke_json["din"] = {
            "kind": "hpke-x25519",
            "suite": hpke.SUITE_NAME,
            "public": hpke_public.hex(),
            "address": address,
        }
        self._write_pair(name, eth_json, hpke_json)
        return KeyInfo(name, address, hpke_public)

    def _check_free(self, name: str) -> None:
        for p in (self.eth_path(name), self.hpke_path(name)):
            if p.exists():
                raise UsageError(
                    f"key {name!r} already exists ({p})",
                    "choose another name; din never overwrites a key",
                )

    def _write_pair(self, name: str, eth_json: dict, hpke_json: dict) -> None:
        from din_cli.files import write_secret

        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        eth_path, hpke_path = self.eth_path(name), self.hpke_path(name)
        self._check_free(name)
        write_secret(hpke_path, (json.dumps(hpke_json, indent=2) + "\n").encode())
        try:
            write_secret(eth_path, (json.dumps(eth_json, indent=2) + "\n").encode())
        except BaseException:
            hpke_path.unlink(missing_ok=True)  # ours: written a moment ago, no one else's key
            raise

    # -- read ----------------------------------------------------------------

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(
            p.name[: -len(".json")]
            for p in self.folder.glob("*.json")
            if not p.name.endswith(_HPKE_SUFFIX)
            and not p.name.startswith(".")
            and _NAME.match(p.name[: -len(".json")])
        )

    def list(self) -> list[KeyInfo]:
        """Every identity, sorted by name."""
        return [self.show(name) for name in self.names()]

    def show(self, name: str) -> KeyInfo:
        """The public facts of ``name``; NotFoundError if there is no such key."""
        eth = self._load_json(self.eth_path(name), name)
        hp = self._load_json(self.hpke_path(name), name, what="HPKE key")
        din = hp.get("din") or {}
        try:
            public = bytes.fromhex(din["public"])
        except (KeyError, ValueError, TypeError):
            raise InputError(
                f"{self.hpke_path(name)}: no HPKE public key",
                "the file is damaged; restore it from a backup",
            ) from None
        address = eth.get("address") or eth.get("Address") or din.get("address")
        if not address:
            raise InputError(
                f"{self.eth_path(name)}: no address field",
                "re-import the key with `din keys import`",
            )
        return KeyInfo(name, to_checksum(address), public)

    def find(self, address: str) -> KeyInfo | None:
        """The local identity with this Ethereum address, if any."""
        want = address.lower().removeprefix("0x")
        for info in self.list():
            if info.address.lower().removeprefix("0x") == want:
                return info
        return None

    def default_name(self, name: str | None = None) -> str:
        """``name`` if given, else the only key there is; UsageError when that is ambiguous."""
        if name:
            check_name(name)
            return name
        names = self.names()
        if len(names) == 1:
            return names[0]
        if not names:
            raise NotFoundError("no keys in the keystore", "create one with `din keys new NAME`")
        raise UsageError(
            f"{len(names)} keys in the keystore and none chosen",
            "choose one with --key NAME (or DIN_KEY)",
        )

    def unlock(self, name: str, password: str) -> Identity:
        """Decrypt ``name`` with ``password``; VerificationError on a wrong password or a tampered file."""
        from eth_account import Account

        from din_cli.crypto import hpke

        info = self.show(name)
        eth = self._load_json(self.eth_path(name), name)
        hp = self._load_json(self.hpke_path(name), name, what="HPKE key")
        try:
            private_key = bytes(Account.decrypt(eth, password))
        except ValueError:
            raise VerificationError(
                f"wrong password for key {name!r}", "check DIN_PASSWORD_FILE or retype it"
            ) from None
        except (KeyError, TypeError) as e:
            raise InputError(
                f"{self.eth_path(name)}: damaged keystore ({e})", "restore it from a backup"
            ) from None
        hpke_private = decrypt_v3(hp, password, where=str(self.hpke_path(name)))
        address = Account.from_key(private_key).address
        if address != info.address:
            raise VerificationError(
                f"{self.eth_path(name)}: address field does not match its key",
                "the file was altered",
            )
        if hpke.public_key(hpke_private) != info.hpke_public:
            raise VerificationError(
                f"{self.hpke_path(name)}: public key does not match its secret",
                "the file was altered",
            )
        return Identity(name, address, private_key, hpke_private, info.hpke_public)

    def _load_json(self, path: Path, name: str, what: str = "key") -> dict[str, Any]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            if what == "key":
                raise NotFoundError(
                    f"no key named {name!r} in {self.folder}", "see `din keys list`"
                ) from None
            raise NotFoundError(
                f"key {name!r} has no {path.name} beside it",
                "import the Ethereum key with `din keys import` to give it one",
            ) from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not JSON ({e})", "restore it from a backup") from None
        if not isinstance(doc, dict):
            raise InputError(f"{path}: not a keystore", "restore it from a backup")
        return doc


def check_name(name: str) -> str:
    """Validate a key name (letters, digits, ``_ . -``; not ending in ``.hpke``)."""
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith(".hpke"):
        raise UsageError(
            f"bad key name {name!r}",
            "use letters, digits, '_', '.', '-' (up to 64, starting with a letter or digit)",
        )
    return name


def to_checksum(address: str) -> str:
    """EIP-55 checksum form of a hex address (with or without 0x)."""
    from eth_hash.auto import keccak

    hexpart = address.lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]{40}", hexpart):
        raise InputError(
            f"{address!r} is not an Ethereum address", "give 0x followed by 40 hex digits"
        )
    digest = keccak(hexpart.encode()).hex()
    return "0x" + "".join(
        c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(hexpart)
    )


def _check_private_key(private_key: bytes) -> bytes:
    if not isinstance(private_key, (bytes, bytearray)) or len(private_key) != 32:
        raise InputError(
            "private key must be 32 bytes (64 hex digits)", "give the hex private key on stdin"
        )
    n = int.from_bytes(private_key, "big")
    if not 0 < n < 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141:
        raise InputError("private key is out of range for secp256k1", "check the key")
    return bytes(private_key)


# -- keystore v3 codec for the HPKE secret -----------------------------------


def encrypt_v3(
    secret: bytes, password: str, *, scrypt_n: int = STANDARD_SCRYPT_N
) -> dict[str, Any]:
    """Encrypt ``secret`` in the keystore v3 structure (scrypt r=8 p=1, aes-128-ctr, keccak MAC)."""
    import uuid

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    from eth_hash.auto import keccak

    salt, iv = os.urandom(32), os.urandom(16)
    derived = Scrypt(salt=salt, length=32, n=scrypt_n, r=8, p=1).derive(password.encode())
    enc = Cipher(algorithms.AES(derived[:16]), modes.CTR(iv)).encryptor()
    ciphertext = enc.update(secret) + enc.finalize()
    return {
        "version": 3,
        "id": str(uuid.uuid4()),
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": iv.hex()},
            "ciphertext": ciphertext.hex(),
            "kdf": "scrypt",
            "kdfparams": {"dklen": 32, "n": scrypt_n, "r": 8, "p": 1, "salt": salt.hex()},
            "mac": keccak(derived[16:32] + ciphertext).hex(),
        },
    }


def decrypt_v3(doc: dict[str, Any], password: str, *, where: str = "keystore") -> bytes:
    """Open a keystore v3 structure (scrypt or pbkdf2); VerificationError on a wrong password."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    from eth_hash.auto import keccak

    try:
        crypto = doc.get("crypto") or doc["Crypto"]
        params = crypto["kdfparams"]
        salt = bytes.fromhex(params["salt"])
        if crypto["kdf"] == "scrypt":
            derived = Scrypt(
                salt=salt, length=params["dklen"], n=params["n"], r=params["r"], p=params["p"]
            ).derive(password.encode())
        elif crypto["kdf"] == "pbkdf2" and params.get("prf", "hmac-sha256") == "hmac-sha256":
            derived = hashlib.pbkdf2_hmac(
                "sha256", password.encode(), salt, params["c"], params["dklen"]
            )
        else:
            raise InputError(f"{where}: unsupported KDF {crypto['kdf']!r}", "re-create the key")
        if crypto["cipher"] != "aes-128-ctr":
            raise InputError(
                f"{where}: unsupported cipher {crypto['cipher']!r}", "re-create the key"
            )
        ciphertext = bytes.fromhex(crypto["ciphertext"])
        mac = bytes.fromhex(crypto["mac"])
        iv = bytes.fromhex(crypto["cipherparams"]["iv"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{where}: damaged keystore ({e})", "restore it from a backup") from None
    if not hmac.compare_digest(keccak(derived[16:32] + ciphertext), mac):
        raise VerificationError(
            f"wrong password for {where}", "check DIN_PASSWORD_FILE or retype it"
        )
    dec = Cipher(algorithms.AES(derived[:16]), modes.CTR(iv)).decryptor()
    return dec.update(ciphertext) + dec.finalize()
