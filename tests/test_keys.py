"""Identities: keystore v3 files that other tools open, mode 600, never overwritten; the `din keys` commands."""

from __future__ import annotations

import json
import stat

import pytest
from eth_account import Account
from eth_keyfile import decode_keyfile_json

from din_cli.crypto import hpke
from din_cli.crypto.keystore import Keystore, check_name
from din_cli.errors import ExitCode, NotFoundError, UsageError, VerificationError

PW = "correct horse"


@pytest.fixture
def password(tmp_path, monkeypatch):
    path = tmp_path / "pw.txt"
    path.write_text(PW + "\n")
    monkeypatch.setenv("DIN_PASSWORD_FILE", str(path))
    return PW


@pytest.fixture
def ks(din_home):
    return Keystore()


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- library ------------------------------------------------------------------


def test_new_key_files_open_with_eth_account_and_eth_keyfile(ks, din_home):
    info = ks.new("alice", PW, light_kdf=True)
    folder = din_home / "keys"
    assert mode(folder) == 0o700
    eth_file, hpke_file = folder / "alice.json", folder / "alice.hpke.json"
    assert mode(eth_file) == 0o600 and mode(hpke_file) == 0o600
    eth = json.loads(eth_file.read_text())
    assert eth["version"] == 3 and eth["crypto"]["kdf"] == "scrypt"
    assert Account.from_key(Account.decrypt(eth, PW)).address == info.address
    hp = json.loads(hpke_file.read_text())
    assert "address" not in hp  # no tool mistakes the X25519 secret for an Ethereum key
    secret = decode_keyfile_json(hp, PW.encode())  # any keystore v3 decoder opens it
    assert hpke.public_key(secret) == info.hpke_public == bytes.fromhex(hp["din"]["public"])
    ident = ks.unlock("alice", PW)
    assert (ident.address, ident.hpke_public, ident.hpke_private) == (
        info.address,
        info.hpke_public,
        secret,
    )
    assert ident.account.address == info.address
    assert ident.private_key.hex() not in repr(ident) and secret.hex() not in repr(ident)


def test_default_kdf_is_eth_accounts_standard(ks, din_home):
    ks.new("std", PW)
    eth = json.loads((din_home / "keys" / "std.json").read_text())
    hp = json.loads((din_home / "keys" / "std.hpke.json").read_text())
    assert eth["crypto"]["kdfparams"]["n"] == 2**18 and hp["crypto"]["kdfparams"]["n"] == 2**18


def test_existing_key_is_never_overwritten(ks, din_home):
    ks.new("alice", PW, light_kdf=True)
    before = {p.name: p.read_bytes() for p in (din_home / "keys").iterdir()}
    with pytest.raises(UsageError, match="already exists"):
        ks.new("alice", PW, light_kdf=True)
    with pytest.raises(UsageError, match="already exists"):
        ks.import_eth("alice", PW, private_key=bytes(range(1, 33)), light_kdf=True)
    assert {p.name: p.read_bytes() for p in (din_home / "keys").iterdir()} == before


def test_wrong_password_and_missing_key(ks):
    ks.new("alice", PW, light_kdf=True)
    with pytest.raises(VerificationError, match="wrong password"):
        ks.unlock("alice", "nope")
    with pytest.raises(NotFoundError):
        ks.show("bob")
    with pytest.raises(NotFoundError):
        ks.unlock("bob", PW)


def test_tampered_public_key_is_detected(ks, din_home):
    ks.new("alice", PW, light_kdf=True)
    path = din_home / "keys" / "alice.hpke.json"
    doc = json.loads(path.read_text())
    doc["din"]["public"] = hpke.generate_keypair()[1].hex()
    path.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="does not match"):
        ks.unlock("alice", PW)


def test_import_keystore_kept_byte_for_byte(ks, din_home, tmp_path):
    key = bytes(range(1, 33))
    foreign = Account.encrypt(key, PW, kdf="pbkdf2", iterations=1000)
    info = ks.import_eth("imp", PW, keyfile=foreign, light_kdf=True)
    assert info.address == Account.from_key(key).address
    assert json.loads((din_home / "keys" / "imp.json").read_text()) == foreign
    assert ks.unlock("imp", PW).private_key == key


def test_import_keystore_with_other_password_is_re_encrypted(ks, din_home):
    key = bytes(range(2, 34))
    foreign = Account.encrypt(key, "old", kdf="pbkdf2", iterations=1000)
    ks.import_eth("imp", PW, keyfile=foreign, keyfile_password="old", light_kdf=True)
    assert ks.unlock("imp", PW).private_key == key
    with pytest.raises(VerificationError):
        ks.import_eth("imp2", PW, keyfile=foreign)  # wrong password for the file


def test_list_show_find_default(ks):
    assert ks.list() == []
    a = ks.new("alice", PW, light_kdf=True)
    assert ks.default_name() == "alice"
    b = ks.new("bob", PW, light_kdf=True)
    assert [i.name for i in ks.list()] == ["alice", "bob"]
    assert ks.show("bob") == b
    assert ks.find(a.address.lower()) == a
    with pytest.raises(UsageError):
        ks.default_name()


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x.hpke", "a b", "x" * 65])
def test_bad_names_are_refused(name):
    with pytest.raises(UsageError):
        check_name(name)


# -- commands -----------------------------------------------------------------


def test_keys_new_list_show(password, din_home, din):
    r = din("keys", "new", "alice", "--light-kdf")
    assert r.exit_code == 0, r.stderr
    address = r.stdout.strip()
    assert address.startswith("0x") and len(address) == 42
    assert din("keys", "list").stdout == f"alice\t{address}\n"
    doc = json.loads(din("keys", "show", "alice", "--json").stdout)
    assert doc["address"] == address and len(bytes.fromhex(doc["hpke_public"][2:])) == 32
    assert din("keys", "show", "alice", "--field", "address").stdout.strip() == address
    assert din("keys", "show", "alice").stdout.split() == [address, doc["hpke_public"]]
    assert json.loads(din("keys", "list", "--json").stdout) == [doc]


def test_keys_new_twice_is_refused_with_usage_code(password, din_home, din):
    assert din("keys", "new", "alice", "--light-kdf").exit_code == 0
    before = (din_home / "keys" / "alice.json").read_bytes()
    r = din("keys", "new", "alice", "--light-kdf")
    assert r.exit_code == ExitCode.USAGE and r.stdout_bytes == b""
    assert "already exists" in r.stderr and r.stderr.count("\n") == 1
    assert (din_home / "keys" / "alice.json").read_bytes() == before


def test_keys_show_missing_is_not_found(din):
    r = din("keys", "show", "nobody")
    assert r.exit_code == ExitCode.NOT_FOUND and "din keys list" in r.stderr


def test_keys_new_without_a_password_source_is_a_usage_error(din_home, din):
    r = din("keys", "new", "alice", "--light-kdf")  # stdin is not a terminal here
    assert r.exit_code == ExitCode.USAGE and "DIN_PASSWORD_FILE" in r.stderr
    assert not (din_home / "keys" / "alice.json").exists()


def test_keys_import_hex_from_stdin(password, din):
    key = bytes(range(3, 35))
    r = din("keys", "import", "dev", "--light-kdf", input=("0x" + key.hex() + "\n").encode())
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == Account.from_key(key).address


def test_keys_import_keystore_file(password, tmp_path, din):
    key = bytes(range(4, 36))
    path = tmp_path / "foundry-keystore"
    path.write_text(json.dumps(Account.encrypt(key, PW, kdf="scrypt", iterations=2**12)))
    r = din("keys", "import", "deployer", path, "--light-kdf")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == Account.from_key(key).address


def test_keys_import_garbage_is_an_input_error(password, din):
    r = din("keys", "import", "dev", input=b"not a key\n")
    assert r.exit_code == ExitCode.ERROR and "hex private key" in r.stderr


def test_keys_import_wrong_password_and_damaged_keystore(password, tmp_path, din, din_home):
    """A wrong password (exit 3) is told apart from a damaged or foreign file (exit 1); nothing is written."""
    good = Account.encrypt(bytes(range(5, 37)), "other", kdf="pbkdf2", iterations=1000)
    damaged = {**good, "crypto": {**good["crypto"], "ciphertext": "zz"}}
    bls = {**good, "version": 4}
    cases = [
        (good, ExitCode.VERIFICATION_FAILED, "wrong password"),
        (damaged, ExitCode.ERROR, "damaged keystore"),
        (bls, ExitCode.ERROR, "version 4"),
    ]
    for doc, code, text in cases:
        (tmp_path / "k.json").write_text(json.dumps(doc))
        r = din("keys", "import", "imp", "k.json", "--light-kdf")
        assert r.exit_code == code and text in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert not (din_home / "keys" / "imp.json").exists()


def test_no_command_takes_a_secret_as_an_option_value():
    """Passwords and private keys are never flags; --key options name files or identities."""
    from din_cli.cli.main import cli

    forbidden = ("password", "passphrase", "secret", "private", "mnemonic")
    mine = {
        "keys": ["new", "list", "show", "import", "wrap", "unwrap"],
        "data": ["encrypt", "decrypt"],
    }
    for group, names in mine.items():
        g = cli.get_command(None, group)
        for name in names:
            cmd = g.get_command(None, name)
            for p in cmd.params:
                flags = " ".join(getattr(p, "opts", [])).lower()
                assert not any(w in flags for w in forbidden), (name, flags)
                if "--key" in p.opts:
                    assert p.metavar in ("K.bin", "NAME"), (name, p.metavar)


def test_listing_and_showing_keys_need_neither_password_nor_eth_account(password, din_home):
    import os
    import subprocess
    import sys

    Keystore().new("alice", PW, light_kdf=True)
    code = (
        "import sys\n"
        "from din_cli.cli.main import main\n"
        "try:\n    main(['keys', 'show', 'alice'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'eth_account' not in sys.modules and 'web3' not in sys.modules, 'heavy import'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DIN_PASSWORD_FILE"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=env, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split()[0] == Keystore().show("alice").address
