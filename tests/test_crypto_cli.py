"""`din data encrypt|decrypt` and `din keys wrap|unwrap`: the test-set protocol as a user runs it."""

from __future__ import annotations

import json
import os
import stat

import pytest
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

from din_cli.crypto import wrap
from din_cli.crypto.keystore import Keystore
from din_cli.errors import ExitCode

PW = "pw for tests"
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def people(tmp_path, monkeypatch, din_home):
    """An owner and two validators in the keystore (cheap KDF), and a password file."""
    (tmp_path / "pw").write_text(PW)
    monkeypatch.setenv("DIN_PASSWORD_FILE", str(tmp_path / "pw"))
    ks = Keystore()
    return {name: ks.new(name, PW, light_kdf=True) for name in ("owner", "v1", "v2")}


@pytest.fixture
def plain(tmp_path):
    data = os.urandom((2 << 20) + 1000)  # three 1 MiB chunks
    (tmp_path / "test.csv").write_bytes(data)
    return data


# -- data encrypt / decrypt -----------------------------------------------------


def test_encrypt_decrypt_round_trip_with_a_fresh_key(tmp_path, plain, din):
    r = din("data", "encrypt", "--key-out", "K.bin", "test.csv", "-o", "test.enc")
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == b""
    assert mode(tmp_path / "K.bin") == 0o600 and len((tmp_path / "K.bin").read_bytes()) == 32
    r = din("data", "decrypt", "--key", "K.bin", "test.enc", "-o", "back.csv")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "back.csv").read_bytes() == plain


def test_encrypt_to_stdout_and_decrypt_from_stdin(tmp_path, din):
    (tmp_path / "a.txt").write_bytes(b"rows\n" * 100)
    r = din("data", "encrypt", "--key-out", "K.bin", "a.txt")
    assert r.exit_code == 0, r.stderr
    blob = r.stdout_bytes
    assert blob.startswith(b"din-aead")
    r = din("data", "decrypt", "--key", "K.bin", "-", input=blob)
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == b"rows\n" * 100


def test_encrypt_reuses_a_key_and_never_overwrites_one(tmp_path, din):
    (tmp_path / "a").write_bytes(b"aaa")
    assert din("data", "encrypt", "--key-out", "K.bin", "a", "-o", "a.enc").exit_code == 0
    key = (tmp_path / "K.bin").read_bytes()
    r = din("data", "encrypt", "--key-out", "K.bin", "a", "-o", "b.enc")
    assert r.exit_code == ExitCode.USAGE and "already exists" in r.stderr
    assert (tmp_path / "K.bin").read_bytes() == key and not (tmp_path / "b.enc").exists()
    assert din("data", "encrypt", "--key", "K.bin", "a", "-o", "b.enc").exit_code == 0
    assert din("data", "decrypt", "--key", "K.bin", "b.enc").stdout_bytes == b"aaa"


def test_encrypt_needs_exactly_one_key_option(tmp_path, din):
    (tmp_path / "a").write_bytes(b"x")
    assert din("data", "encrypt", "a").exit_code == ExitCode.USAGE
    assert din("data", "encrypt", "--key", "K", "--key-out", "K2", "a").exit_code == ExitCode.USAGE


def _tampered(tmp_path, how):
    blob = bytearray((tmp_path / "test.enc").read_bytes())
    chunk = (1 << 20) + 16
    if how == "bit-header":
        blob[20] ^= 1
    elif how == "bit-middle":
        blob[48 + chunk + 12345] ^= 0x80
    elif how == "bit-last-tag":
        blob[-1] ^= 1
    elif how == "truncated-mid":
        blob = blob[: len(blob) // 2]
    elif how == "truncated-at-chunk":
        blob = blob[: 48 + 2 * chunk]
    elif how == "swapped-chunks":
        c0, c1 = blob[48 : 48 + chunk], blob[48 + chunk : 48 + 2 * chunk]
        blob[48 : 48 + 2 * chunk] = c1 + c0
    elif how == "extended":
        blob += b"\0" * 17
    (tmp_path / "bad.enc").write_bytes(bytes(blob))


@pytest.mark.parametrize(
    "how",
    [
        "bit-header",
        "bit-middle",
        "bit-last-tag",
        "truncated-mid",
        "truncated-at-chunk",
        "swapped-chunks",
        "extended",
    ],
)
def test_tampered_file_exits_3_and_writes_no_plaintext(tmp_path, plain, how, din):
    assert din("data", "encrypt", "--key-out", "K.bin", "test.csv", "-o", "test.enc").exit_code == 0
    _tampered(tmp_path, how)
    r = din("data", "decrypt", "--key", "K.bin", "bad.enc", "-o", "out.csv")
    assert r.exit_code == ExitCode.VERIFICATION_FAILED, r.stderr
    assert not (tmp_path / "out.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.csv")]  # no temp left
    r = din("data", "decrypt", "--key", "K.bin", "bad.enc")  # to stdout
    assert r.exit_code == ExitCode.VERIFICATION_FAILED and r.stdout_bytes == b""
    assert r.stderr.startswith("din: error:") and r.stderr.count("\n") == 1


def test_decrypt_with_a_missing_key_file_is_not_found(tmp_path, din):
    r = din("data", "decrypt", "--key", "nope.bin", "x.enc")
    assert r.exit_code == ExitCode.NOT_FOUND, r.stderr


# -- keys wrap / unwrap -----------------------------------------------------------


def _wrap(din, tmp_path, people, *extra):
    (tmp_path / "K.bin").write_bytes(bytes(range(32)))
    os.chmod(tmp_path / "K.bin", 0o600)
    args = ["keys", "wrap", "--key", "K.bin", "--task", 5, "--round", 1, "--chain-id", 1337]
    args += ["--to", people["v1"].address, "--to", "0x" + people["v2"].hpke_public.hex()]
    r = din(*args, *extra)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_wrap_document_with_signed_cid_and_unwrap_by_each_validator(tmp_path, people, din):
    doc = _wrap(din, tmp_path, people, "--cid", CID, "--signer", "owner")
    assert doc["owner"] == people["owner"].address
    assert [r["address"] for r in doc["recipients"]] == [people["v1"].address, None]
    (tmp_path / "w.json").write_text(json.dumps(doc))
    for v in ("v1", "v2"):
        r = din(
            "keys",
            "unwrap",
            "--key",
            v,
            "--owner",
            people["owner"].address,
            "--task",
            5,
            "--round",
            1,
            "--chain-id",
            1337,
            "w.json",
            "-o",
            f"{v}.bin",
        )
        assert r.exit_code == 0, r.stderr
        assert r.stdout == CID + "\n"
        assert (tmp_path / f"{v}.bin").read_bytes() == bytes(range(32))
        assert mode(tmp_path / f"{v}.bin") == 0o600


def test_unwrap_to_stdout_finds_the_only_local_recipient(tmp_path, people, din):
    doc = _wrap(din, tmp_path, people)
    (tmp_path / "w.json").write_text(json.dumps(doc))
    # with v2 removed from the keystore, v1 is the one local recipient (owner is not one)
    for p in (tmp_path / ".din" / "keys").glob("v2*"):
        p.unlink()
    r = din("keys", "unwrap", "--task", 5, "--round", 1, "--chain-id", 1337, "w.json")
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == bytes(range(32))


def test_unwrap_refusals_exit_3_and_write_nothing(tmp_path, people, din):
    doc = _wrap(din, tmp_path, people, "--cid", CID, "--signer", "owner")
    (tmp_path / "w.json").write_text(json.dumps(doc))
    moved = {**doc, "task": 6}  # replayed into another task
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    base = ["keys", "unwrap", "--key", "v1", "--round", 1, "--chain-id", 1337, "-o", "K1.bin"]
    cases = [
        [*base, "--task", 6, "w.json"],  # validator is on task 6: the document is for 5
        [*base, "--task", 6, "moved.json"],  # document edited to say 6: HPKE info differs
        [
            *base,
            "--task",
            5,
            "--owner",
            people["v2"].address,
            "w.json",
        ],  # not the owner's signature
    ]
    for args in cases:
        r = din(*args)
        assert r.exit_code == ExitCode.VERIFICATION_FAILED, (args, r.stderr)
        assert r.stdout_bytes == b"" and not (tmp_path / "K1.bin").exists()


def test_cid_signed_by_another_key_is_refused(tmp_path, people, din):
    """A validator who knows K re-encrypts a CID of its own choosing: the owner check refuses it."""
    ks = Keystore()
    doc = _wrap(din, tmp_path, people, "--cid", CID, "--signer", "owner")
    mallory = ks.unlock("v2", PW)
    binding = wrap.Binding(1337, 5, 1)
    doc["encrypted_cid"] = (
        "0x" + wrap.sign_cid(bytes(range(32)), "bafkreievil", mallory, binding).hex()
    )
    (tmp_path / "w.json").write_text(json.dumps(doc))
    r = din(
        "keys",
        "unwrap",
        "--key",
        "v1",
        "--owner",
        people["owner"].address,
        "--task",
        5,
        "--round",
        1,
        "--chain-id",
        1337,
        "w.json",
        "-o",
        "K1.bin",
    )
    assert r.exit_code == ExitCode.VERIFICATION_FAILED and "not by the task owner" in r.stderr
    assert r.stdout_bytes == b"" and not (tmp_path / "K1.bin").exists()


def test_wrapped_key_from_the_cli_opens_with_pyhpke(tmp_path, people, din):
    doc = _wrap(din, tmp_path, people)
    secret = Keystore().unlock("v2", PW).hpke_private
    entry = doc["recipients"][1]
    sealed = bytes.fromhex(entry["wrapped_key"][2:])
    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
    ctx = suite.create_recipient_context(
        sealed[:32], suite.kem.deserialize_private_key(secret), info=wrap.Binding(1337, 5, 1).info()
    )
    assert ctx.open(sealed[32:]) == bytes(range(32))


def test_wrap_reads_recipients_from_stdin_and_nl_output(tmp_path, people, din):
    (tmp_path / "K.bin").write_bytes(bytes(range(32)))
    lines = f"{people['v1'].address}\n{people['v2'].address}\n".encode()
    r = din("keys", "wrap", "--key", "K.bin", "--task", 1, "--round", 0, "--nl", input=lines)
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [r["address"] for r in rows] == [people["v1"].address, people["v2"].address]
    assert all(r["task"] == 1 for r in rows)


def test_wrap_to_an_unknown_address_is_not_found(tmp_path, people, din):
    (tmp_path / "K.bin").write_bytes(bytes(range(32)))
    r = din("keys", "wrap", "--key", "K.bin", "--task", 1, "--round", 0, "--to", "0x" + "ab" * 20)
    assert r.exit_code == ExitCode.NOT_FOUND and "ADDRESS:HPKE_PUBLIC" in r.stderr


def test_whole_flow_in_real_processes(tmp_path, people, run_din):
    """Real argv and exit codes: encrypt, wrap with a signed CID, unwrap, decrypt; nothing secret in argv."""
    (tmp_path / "test.csv").write_bytes(b"x,y\n1,2\n")
    env = {"DIN_PASSWORD_FILE": str(tmp_path / "pw")}
    run_din(
        "data", "encrypt", "--key-out", "K.bin", "test.csv", "-o", "test.enc", env=env, check=True
    )
    run_din(
        "keys",
        "wrap",
        "--key",
        "K.bin",
        "--to",
        "v1",
        "--cid",
        CID,
        "--signer",
        "owner",
        "--task",
        9,
        "--round",
        0,
        "-o",
        "w.json",
        env=env,
        check=True,
    )
    proc = run_din(
        "keys",
        "unwrap",
        "--key",
        "v1",
        "--owner",
        people["owner"].address,
        "--task",
        9,
        "--round",
        0,
        "w.json",
        "-o",
        "K1.bin",
        env=env,
        check=True,
    )
    assert proc.stdout.decode() == CID + "\n"
    proc = run_din("data", "decrypt", "--key", "K1.bin", "test.enc", env=env, check=True)
    assert proc.stdout == b"x,y\n1,2\n"
    proc = run_din(
        "keys",
        "unwrap",
        "--key",
        "v1",
        "--owner",
        people["v1"].address,
        "--task",
        9,
        "--round",
        0,
        "w.json",
        "-o",
        "K2.bin",
        env=env,
    )
    assert proc.returncode == 3 and proc.stdout == b"" and not (tmp_path / "K2.bin").exists()


def test_unwrap_reads_its_own_ndjson_line(tmp_path, people, din):
    """A validator handed only its line of `wrap --nl` output recovers K from it."""
    (tmp_path / "K.bin").write_bytes(bytes(range(32)))
    r = din(
        "keys",
        "wrap",
        "--key",
        "K.bin",
        "--task",
        2,
        "--round",
        0,
        "--nl",
        "--cid",
        CID,
        "--signer",
        "owner",
        "--to",
        "v1",
        "--to",
        "v2",
    )
    assert r.exit_code == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if people["v2"].address in ln]
    r = din(
        "keys",
        "unwrap",
        "--key",
        "v2",
        "--owner",
        people["owner"].address,
        "--task",
        2,
        "--round",
        0,
        "-o",
        "K2.bin",
        "-",
        input=line[0].encode() + b"\n",
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == CID and (tmp_path / "K2.bin").read_bytes() == bytes(range(32))
