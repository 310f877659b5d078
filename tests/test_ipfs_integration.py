"""Against a real IPFS RPC daemon on loopback (DIN_TEST_IPFS, started by scripts/ipfs-daemon.sh)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import urllib.request

import pytest
from test_store import vector_bytes, vector_rows

from din_cli.errors import ExitCode
from din_cli.store import open_store
from din_cli.store.cid import parse_cid
from din_cli.store.kubo import KuboStore
from din_cli.store.local import LocalStore
from din_cli.store.unixfs import CHUNK_SIZE, MAX_LINKS

pytestmark = pytest.mark.integration


def api_url(multiaddr: str, path: str) -> str:
    parts = multiaddr.strip("/").split("/")
    return f"http://{parts[1]}:{parts[3]}/api/v0/{path}"


def rpc(multiaddr: str, path: str, body: bytes | None = None, timeout: float = 60) -> bytes:
    """A raw RPC call (multipart upload when body is given), independent of din's client."""
    headers = {}
    data = None
    if body is not None:
        boundary = "dinboundary" + os.urandom(8).hex()
        data = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + body
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(
        api_url(multiaddr, path), data=data or b"", headers=headers, method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


@pytest.fixture
def kubo(ipfs_api) -> KuboStore:
    return open_store(ipfs_api)


@pytest.mark.parametrize("row", vector_rows(), ids=lambda r: f"{r[0]}B")
def test_node_and_local_store_agree_on_vectors(kubo, tmp_path, row):
    size, seed, _sha, v0, v1 = row
    data = vector_bytes(size, seed)
    assert kubo.add(io.BytesIO(data), cid_version=0) == v0
    assert kubo.add(io.BytesIO(data), cid_version=1) == v1
    assert b"".join(kubo.cat(v1)) == data


@pytest.mark.parametrize("version", [0, 1])
def test_two_level_dag_matches_the_node(kubo, tmp_path, version):
    n = CHUNK_SIZE * (MAX_LINKS + 1) + 12345
    data = random.Random(99).randbytes(n)
    local = LocalStore(tmp_path / "b")
    ours = local.add(io.BytesIO(data), cid_version=version)
    assert kubo.add(io.BytesIO(data), cid_version=version) == ours
    assert kubo.has(ours)
    got = bytearray()
    for piece in kubo.cat(ours):
        got += piece
    assert bytes(got) == data


def test_din_car_imports_into_the_node_and_comes_back_identical(ipfs_api, tmp_path):
    local = LocalStore(tmp_path / "b")
    data = os.urandom(CHUNK_SIZE * 3 + 77)  # fresh: the node has never seen it
    cid = local.add(io.BytesIO(data))
    buf = io.BytesIO()
    local.export_car([cid], buf)
    car = buf.getvalue()
    answer = rpc(ipfs_api, "dag/import", car)
    assert (
        parse_cid(cid).encode() in answer.decode()
        or str(parse_cid(cid)) in answer.decode()
        or b"Root" in answer
    )
    assert rpc(ipfs_api, f"cat?arg={cid}") == data
    assert rpc(ipfs_api, f"dag/export?arg={cid}") == car


def test_node_car_imports_into_din(ipfs_api, kubo, tmp_path, run_din):
    data = os.urandom(CHUNK_SIZE * 2 + 5)
    cid = kubo.add(io.BytesIO(data), cid_version=0)
    car = rpc(ipfs_api, f"dag/export?arg={cid}")
    (tmp_path / "node.car").write_bytes(car)
    p = run_din("ipfs", "car", "import", "node.car", check=True)
    assert p.stdout.decode().split() == [cid]
    p = run_din("ipfs", "cat", cid, check=True)
    assert p.stdout == data


def test_car_import_and_export_through_kubo_store(kubo, tmp_path):
    local = LocalStore(tmp_path / "b")
    data = os.urandom(CHUNK_SIZE + 1)
    cid = local.add(io.BytesIO(data), cid_version=0)
    buf = io.BytesIO()
    local.export_car([cid], buf)
    assert kubo.import_car(io.BytesIO(buf.getvalue())) == [cid]
    assert (
        cid in [parse_cid(r).encode() for r in kubo.roots()]
        or parse_cid(cid).to_v1().encode() in kubo.roots()
    )
    back = io.BytesIO()
    kubo.export_car([cid], back)
    assert back.getvalue() == buf.getvalue()


def test_tampered_car_is_refused_before_the_node_keeps_it(kubo, tmp_path):
    from din_cli.errors import VerificationError

    local = LocalStore(tmp_path / "b")
    cid = local.add(io.BytesIO(os.urandom(5000)))
    buf = io.BytesIO()
    local.export_car([cid], buf)
    bad = bytearray(buf.getvalue())
    bad[-1] ^= 1
    with pytest.raises(VerificationError):
        kubo.import_car(io.BytesIO(bytes(bad)))
    assert not kubo.has(cid)


def test_cli_with_ipfs_flag(ipfs_api, run_din, tmp_path):
    data = os.urandom(1000)
    (tmp_path / "x.bin").write_bytes(data)
    local_cid = run_din("ipfs", "add", "--only-hash", "x.bin", check=True).stdout.decode().strip()
    p = run_din("ipfs", "add", "--ipfs", ipfs_api, "x.bin", check=True)
    assert p.stdout.decode().strip() == local_cid
    p = run_din("ipfs", "cat", local_cid, env={"DIN_IPFS": ipfs_api}, check=True)
    assert p.stdout == data
    assert (
        run_din("ipfs", "has", local_cid).returncode == ExitCode.NOT_FOUND
    )  # local store never saw it
    assert run_din("ipfs", "has", local_cid, "--ipfs", ipfs_api).returncode == 0


def test_cat_of_an_old_style_dag_falls_back_to_verified_blocks(kubo, tmp_path):
    """Leaves of UnixFS type Raw (go-ipfs before 0.4.x) do not hash like din's: fetched block by block."""
    from din_cli.store import car, dagpb
    from din_cli.store.cid import CID, encode_varint

    def leaf(payload: bytes) -> bytes:
        fs = (
            b"\x08\x00\x12"
            + encode_varint(len(payload))
            + payload
            + b"\x18"
            + encode_varint(len(payload))
        )
        return dagpb.encode_node([], fs)

    parts = [os.urandom(1000), os.urandom(777)]
    blocks = [(CID.v0(hashlib.sha256(leaf(p)).digest()), leaf(p)) for p in parts]
    links = [dagpb.encode_link(c.to_bytes(), len(b)) for c, b in blocks]
    root_block = dagpb.encode_node(links, dagpb.encode_file_data(1777, [1000, 777]))
    root = CID.v0(hashlib.sha256(root_block).digest())
    buf = io.BytesIO()
    car.write_car(buf, [root], [(root, root_block), *blocks])
    assert kubo.import_car(io.BytesIO(buf.getvalue())) == [root.encode()]
    assert b"".join(kubo.cat(root)) == b"".join(parts)


def test_only_hash_through_the_node_stores_nothing(kubo):
    data = os.urandom(3000)
    cid = kubo.add(io.BytesIO(data), only_hash=True)
    assert cid == LocalStore("unused").add(io.BytesIO(data), only_hash=True)
    assert not kubo.has(cid)
