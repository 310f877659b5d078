"""`din ipfs …` as a user runs it: outputs, pipes, exit codes, nothing half-written."""

from __future__ import annotations

import json
import random
import socket

from din_cli.errors import ExitCode
from din_cli.store import open_store

HELLO_V1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"  # `ipfs add --cid-version=1` of "hello\n"
HELLO_V0 = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"  # `ipfs add` of "hello\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_add_prints_kubo_cids(tmp_path, din):
    (tmp_path / "h.txt").write_bytes(b"hello\n")
    r = din("ipfs", "add", "h.txt")
    assert r.exit_code == 0, r.output
    assert r.stdout == HELLO_V1 + "\n"
    r = din("ipfs", "add", "--cid-version", "0", "-", input=b"hello\n")
    assert r.stdout == HELLO_V0 + "\n"


def test_add_several_files_one_cid_per_line(tmp_path, din):
    (tmp_path / "a").write_bytes(b"hello\n")
    (tmp_path / "b").write_bytes(b"")
    r = din("ipfs", "add", "a", "b")
    assert r.stdout.split() == [
        HELLO_V1,
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    ]


def test_cat_writes_the_bytes_to_stdout_or_a_file(tmp_path, din):
    data = random.Random(1).randbytes(600_000)
    (tmp_path / "m.bin").write_bytes(data)
    cid = din("ipfs", "add", "m.bin").stdout.strip()
    r = din("ipfs", "cat", cid)
    assert r.exit_code == 0 and r.stdout_bytes == data
    r = din("ipfs", "cat", "-o", "copy.bin", input=cid + "\n")  # CID from stdin
    assert r.exit_code == 0 and r.stdout_bytes == b""
    assert (tmp_path / "copy.bin").read_bytes() == data


def test_only_hash_stores_nothing(run_din, tmp_path, din):
    (tmp_path / "h.txt").write_bytes(b"hello\n")
    r = din("ipfs", "add", "--only-hash", "h.txt")
    assert r.stdout.strip() == HELLO_V1
    p = run_din("ipfs", "has", HELLO_V1)
    assert p.returncode == ExitCode.NOT_FOUND
    assert HELLO_V1 in p.stderr.decode()
    assert din("ipfs", "add", "h.txt").exit_code == 0
    assert run_din("ipfs", "has", HELLO_V1).returncode == 0


def test_ls_lists_added_and_imported_roots(tmp_path, din):
    (tmp_path / "h.txt").write_bytes(b"hello\n")
    assert din("ipfs", "add", "h.txt").exit_code == 0
    assert din("ipfs", "add", "--cid-version", "0", "h.txt").exit_code == 0
    r = din("ipfs", "ls")
    assert set(r.stdout.split()) == {HELLO_V1, HELLO_V0}
    r = din("ipfs", "ls", "--json")
    assert sorted(json.loads(r.stdout)) == sorted([HELLO_V1, HELLO_V0])


def test_corrupt_block_exit_3_and_no_wrong_bytes(run_din, tmp_path):
    (tmp_path / "w.bin").write_bytes(b"model weights v1")
    cid = run_din("ipfs", "add", "w.bin", check=True).stdout.decode().strip()
    path = open_store().block_path(cid)
    path.write_bytes(b"model weights v2")  # same length, different bytes
    p = run_din("ipfs", "cat", cid)
    assert p.returncode == ExitCode.VERIFICATION_FAILED
    assert p.stdout == b""
    err = p.stderr.decode()
    assert err.startswith("din: error:") and cid in err and err.count("\n") == 1
    p = run_din("ipfs", "cat", cid, "-o", "out.bin")
    assert p.returncode == ExitCode.VERIFICATION_FAILED
    assert not (tmp_path / "out.bin").exists()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".out.bin")]


def test_bad_cid_is_a_usage_error(run_din):
    p = run_din("ipfs", "cat", "not-a-cid", "-o", "x")
    assert p.returncode == ExitCode.USAGE
    assert "'not-a-cid' is not a valid CID" in p.stderr.decode()
    assert p.stderr.decode().count("\n") == 1


def test_missing_file_is_not_found(run_din):
    p = run_din("ipfs", "add", "nope.bin")
    assert p.returncode == ExitCode.NOT_FOUND
    assert "nope.bin: no such file" in p.stderr.decode() and p.stdout == b""


def test_unknown_cid_is_not_found_and_writes_nothing(run_din, tmp_path):
    p = run_din("ipfs", "cat", HELLO_V1, "-o", "out.bin")
    assert p.returncode == ExitCode.NOT_FOUND
    assert not (tmp_path / "out.bin").exists()
    p = run_din("ipfs", "car", "export", HELLO_V1, "-o", "x.car")
    assert p.returncode == ExitCode.NOT_FOUND
    assert not (tmp_path / "x.car").exists()


def test_unreachable_ipfs_api_is_backend_unavailable(run_din, tmp_path):
    (tmp_path / "h.txt").write_bytes(b"hello\n")
    addr = f"/ip4/127.0.0.1/tcp/{free_port()}"
    p = run_din("ipfs", "add", "--ipfs", addr, "h.txt")
    assert p.returncode == ExitCode.UNAVAILABLE
    assert addr in p.stderr.decode() and p.stderr.decode().count("\n") == 1
    p = run_din("ipfs", "cat", HELLO_V1, "-o", "out.bin", env={"DIN_IPFS": addr})
    assert p.returncode == ExitCode.UNAVAILABLE
    assert not (tmp_path / "out.bin").exists()


def test_bad_multiaddr_is_a_usage_error(run_din):
    p = run_din("ipfs", "cat", HELLO_V1, "--ipfs", "localhost:5001")
    assert p.returncode == ExitCode.USAGE
    assert "localhost:5001" in p.stderr.decode()


def test_car_export_import_through_a_pipe(run_din, tmp_path):
    data = random.Random(2).randbytes(700_000)
    (tmp_path / "m.bin").write_bytes(data)
    cid = run_din("ipfs", "add", "m.bin", check=True).stdout.decode().strip()
    car = run_din("ipfs", "car", "export", cid, "-o", "-", check=True).stdout
    other = {"DIN_HOME": str(tmp_path / "other")}
    p = run_din("ipfs", "car", "import", "-", input=car, env=other, check=True)
    assert p.stdout.decode().split() == [cid]
    p = run_din("ipfs", "cat", cid, env=other, check=True)
    assert p.stdout == data
    # CIDs from stdin, CAR to a file
    p = run_din("ipfs", "car", "export", "-o", "m.car", input=(cid + "\n").encode(), check=True)
    assert (tmp_path / "m.car").read_bytes() == car


def test_truncated_and_tampered_cars(run_din, tmp_path):
    (tmp_path / "m.bin").write_bytes(b"weights " * 100)
    cid = run_din("ipfs", "add", "m.bin", check=True).stdout.decode().strip()
    car = run_din("ipfs", "car", "export", cid, check=True).stdout
    other = {"DIN_HOME": str(tmp_path / "other")}
    (tmp_path / "short.car").write_bytes(car[:-5])
    p = run_din("ipfs", "car", "import", "short.car", env=other)
    assert p.returncode == ExitCode.ERROR and p.stdout == b""
    assert "short.car: CAR is truncated" in p.stderr.decode()
    bad = bytearray(car)
    bad[-3] ^= 0xFF
    p = run_din("ipfs", "car", "import", "-", input=bytes(bad), env=other)
    assert p.returncode == ExitCode.VERIFICATION_FAILED and p.stdout == b""
    assert "does not match its CID" in p.stderr.decode()
    assert run_din("ipfs", "ls", env=other, check=True).stdout == b""


def test_help_shows_examples(din):
    for sub in (["add"], ["cat"], ["car", "export"], ["car", "import"], ["has"], ["ls"]):
        r = din("ipfs", *sub, "--help")
        assert r.exit_code == 0 and "Example:" in r.output
