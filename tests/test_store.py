"""The content store's library layer: Kubo's CIDs, CAR v1, LocalStore verification."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from din_cli.errors import InputError, NotFoundError, UsageError, VerificationError
from din_cli.store import car, dagpb, open_store
from din_cli.store.cid import CID, DAG_PB, RAW, parse_cid
from din_cli.store.local import LocalStore
from din_cli.store.unixfs import CHUNK_SIZE, MAX_LINKS, StreamHasher

# Kubo/js-ipfs CIDs of generated files: facts, kept beside the tests (no checkout needs more).
VECTORS = Path(__file__).parent / "data" / "unixfs-cid.tsv"


def vector_rows():
    rows = []
    for line in VECTORS.read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("size\t"):
            continue
        size, seed, sha, v0, v1 = line.split("\t")
        rows.append((int(size), seed, sha, v0, v1))
    return rows


def vector_bytes(size: int, seed: str) -> bytes:
    return hashlib.shake_256(f"ipfsproto-{seed}".encode()).digest(size) if size else b""


def test_vectors_file_is_there():
    assert VECTORS.is_file(), f"{VECTORS} missing from the checkout"
    assert len(vector_rows()) >= 6


@pytest.mark.parametrize("row", vector_rows(), ids=lambda r: f"{r[0]}B")
def test_cids_equal_kubo_vectors(row, tmp_path):
    size, seed, sha, v0, v1 = row
    data = vector_bytes(size, seed)
    assert hashlib.sha256(data).hexdigest() == sha
    store = LocalStore(tmp_path / "blocks")
    assert store.add(io.BytesIO(data), cid_version=0) == v0
    assert store.add(io.BytesIO(data), cid_version=1) == v1
    assert store.add(io.BytesIO(data), only_hash=True) == v1
    assert b"".join(store.cat(v0)) == data
    assert b"".join(store.cat(v1)) == data


def test_default_store_is_local_under_din_home(din_home):
    store = open_store()
    cid = store.add(io.BytesIO(b"hello\n"))
    assert cid == "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
    assert (din_home / "blocks").is_dir()
    assert store.block_path(cid).is_file()
    assert store.roots() == [cid]


def test_only_hash_stores_nothing(din_home):
    store = open_store()
    cid = store.add(io.BytesIO(b"x" * 1000), only_hash=True)
    assert not store.has(cid)
    assert store.roots() == []
    with pytest.raises(NotFoundError):
        list(store.cat(cid))


@pytest.mark.parametrize("version", [0, 1])
def test_balanced_layout_opens_a_second_level_after_174_chunks(version, tmp_path):
    data = random.Random(7).randbytes(CHUNK_SIZE * MAX_LINKS + 10)
    store = LocalStore(tmp_path / "b")
    root = parse_cid(store.add(io.BytesIO(data), cid_version=version))
    links, pbdata = dagpb.decode_node(store.get_block(root))
    fs = dagpb.decode_unixfs(pbdata)
    assert fs.filesize == len(data)
    assert len(links) == 2 and fs.blocksizes == [CHUNK_SIZE * MAX_LINKS, 10]
    first, _ = dagpb.decode_node(store.get_block(links[0].cid))
    second, _ = dagpb.decode_node(store.get_block(links[1].cid))
    assert len(first) == MAX_LINKS and len(second) == 1
    leaf = second[0].cid
    assert leaf.codec == (RAW if version == 1 else DAG_PB)
    assert b"".join(store.cat(root)) == data


def test_exactly_174_chunks_make_one_node(tmp_path):
    data = random.Random(8).randbytes(CHUNK_SIZE * MAX_LINKS)
    store = LocalStore(tmp_path / "b")
    root = parse_cid(store.add(io.BytesIO(data)))
    links, _ = dagpb.decode_node(store.get_block(root))
    assert len(links) == MAX_LINKS and all(link.cid.codec == RAW for link in links)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=3000)
    | st.integers(0, 3 * CHUNK_SIZE + 5).map(lambda n: random.Random(n).randbytes(n)),
    version=st.sampled_from([0, 1]),
    cut=st.integers(1, CHUNK_SIZE + 3),
)
def test_round_trip_and_same_bytes_same_cid(tmp_path, data, version, cut):
    store = LocalStore(tmp_path / "hyp")
    cid = store.add(io.BytesIO(data), cid_version=version)
    assert store.add(io.BytesIO(data), cid_version=version, only_hash=True) == cid
    assert b"".join(store.cat(cid)) == data
    # the push-style hasher (used to check a node's answer) agrees whatever the write sizes
    h = StreamHasher(version)
    for i in range(0, len(data), cut):
        h.write(data[i : i + cut])
    assert h.finish().encode() == cid


def test_progress_counts_every_byte(tmp_path):
    seen = []
    store = LocalStore(tmp_path / "b")
    cid = store.add(io.BytesIO(b"a" * (CHUNK_SIZE * 3 + 1)), progress=seen.append)
    assert sum(seen) == CHUNK_SIZE * 3 + 1
    seen.clear()
    b"".join(store.cat(cid, progress=seen.append))
    assert sum(seen) == CHUNK_SIZE * 3 + 1


# ------------------------------------------------------------------ CIDs
@pytest.mark.parametrize(
    "text",
    [
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        "bafybeie77fexlawuv7p7mhm5kwh3uwulmwlqkm6fcdzeqwsutsci2jvbvy",
    ],
)
def test_cid_text_round_trips(text):
    cid = parse_cid(text)
    assert cid.encode() == text
    assert parse_cid(cid.to_v1().encode()).multihash == cid.multihash
    assert parse_cid("B" + cid.to_v1().encode()[1:].upper()) == cid.to_v1()


def test_js_ipfs_base58_v1_text_parses():
    # js-ipfs answers `add` with base58btc CIDv1 text
    cid = parse_cid("zdj7WgCNNdC4V1BGU44eZMAaifj5auLUUdY2RZQR6TFQBNz9K")
    assert cid.encode() == "bafybeie77fexlawuv7p7mhm5kwh3uwulmwlqkm6fcdzeqwsutsci2jvbvy"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "hello",
        "Qm123",
        "bafkreiblah",
        "bafy!!!",
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ0",
    ],
)
def test_bad_cid_text_is_a_usage_error_naming_it(bad):
    with pytest.raises(UsageError) as e:
        parse_cid(bad)
    assert repr(bad.strip()) in e.value.one_line()


# ------------------------------------------------------------ verification
def test_corrupt_block_is_refused(tmp_path):
    store = LocalStore(tmp_path / "b")
    cid = store.add(io.BytesIO(b"precious weights"))
    path = store.block_path(cid)
    path.write_bytes(b"precious weighta")
    with pytest.raises(VerificationError) as e:
        list(store.cat(cid))
    assert cid in e.value.one_line()
    assert not (tmp_path / "out.bin").exists()
    with pytest.raises(VerificationError):
        store.cat_to(cid, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_corrupt_leaf_deep_in_a_file_stops_before_its_bytes(tmp_path):
    data = random.Random(3).randbytes(CHUNK_SIZE * 3)
    store = LocalStore(tmp_path / "b")
    root = parse_cid(store.add(io.BytesIO(data)))
    links, _ = dagpb.decode_node(store.get_block(root))
    bad = store.block_path(links[1].cid)
    bad.write_bytes(b"\0" * CHUNK_SIZE)
    got = []
    with pytest.raises(VerificationError):
        for piece in store.cat(root):
            got.append(piece)
    assert b"".join(got) == data[:CHUNK_SIZE]  # the good first chunk only, never the bad one
    target = tmp_path / "model.bin"
    with pytest.raises(VerificationError):
        store.cat_to(root, target)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_missing_block_is_not_found(tmp_path):
    store = LocalStore(tmp_path / "b")
    with pytest.raises(NotFoundError):
        list(store.cat("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"))
    assert not store.has("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")


def test_has_wants_the_whole_dag(tmp_path):
    data = random.Random(4).randbytes(CHUNK_SIZE * 2)
    store = LocalStore(tmp_path / "b")
    root = parse_cid(store.add(io.BytesIO(data)))
    assert store.has(root)
    links, _ = dagpb.decode_node(store.get_block(root))
    store.block_path(links[1].cid).unlink()
    assert not store.has(root)


# ------------------------------------------------------------------- CAR v1
def test_car_round_trip_between_stores(tmp_path):
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    data = random.Random(5).randbytes(CHUNK_SIZE * 2 + 17)
    cid1 = a.add(io.BytesIO(data))
    cid0 = a.add(io.BytesIO(b"small"), cid_version=0)
    buf = io.BytesIO()
    assert a.export_car([cid1, cid0], buf) == 5  # root + 3 leaves + v0 leaf
    blob = buf.getvalue()
    assert b.import_car(io.BytesIO(blob)) == [cid1, cid0]
    assert b"".join(b.cat(cid1)) == data and b"".join(b.cat(cid0)) == b"small"
    assert set(b.roots()) == {cid1, cid0}
    # the same DAG always gives the same CAR
    again = io.BytesIO()
    b.export_car([cid1, cid0], again)
    assert again.getvalue() == blob


def test_car_header_is_go_car_canonical():
    root = parse_cid("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    header = car.encode_header([root])
    # {"roots": [42(h'00' + cid)], "version": 1} in dag-cbor
    assert (
        header.hex()
        == "a265726f6f747381d82a5825" + "00" + root.to_bytes().hex() + "6776657273696f6e01"
    )
    assert car.decode_header(header) == [root]


def _car_of(store, cid) -> bytes:
    buf = io.BytesIO()
    store.export_car([cid], buf)
    return buf.getvalue()


@pytest.mark.parametrize("cut", [1, 10, 60, -1, -100])
def test_truncated_car_is_an_input_error(tmp_path, cut):
    a = LocalStore(tmp_path / "a")
    cid = a.add(io.BytesIO(random.Random(6).randbytes(1000)))
    blob = _car_of(a, cid)
    b = LocalStore(tmp_path / "b")
    with pytest.raises(InputError) as e:
        b.import_car(io.BytesIO(blob[:cut]))
    assert "truncated" in e.value.one_line() or "not a CAR" in e.value.one_line()
    assert b.roots() == []


def test_car_with_a_tampered_block_is_refused(tmp_path):
    a = LocalStore(tmp_path / "a")
    cid = a.add(io.BytesIO(b"the real model bytes"))
    blob = bytearray(_car_of(a, cid))
    blob[-1] ^= 1
    b = LocalStore(tmp_path / "b")
    with pytest.raises(VerificationError):
        b.import_car(io.BytesIO(bytes(blob)))
    assert not b.has(cid) and b.roots() == []


def test_car_reader_refuses_garbage():
    with pytest.raises(InputError):
        car.CarReader(io.BytesIO(b"\x05hello"), "x.car")
    with pytest.raises(InputError):
        car.CarReader(io.BytesIO(b""), "x.car")


def test_add_from_path_and_missing_path(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    store = LocalStore(tmp_path / "b")
    assert store.add(p) == store.add(str(p)) == store.add(io.BytesIO(b"abc"))
    with pytest.raises(NotFoundError):
        store.add(tmp_path / "nope.bin")


def test_cid_object_api():
    cid = parse_cid("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
    assert isinstance(cid, CID) and cid.version == 0 and cid.codec == DAG_PB
    assert cid.to_v1().encode().startswith("bafybei")


def test_adding_again_repairs_a_damaged_block(tmp_path):
    store = LocalStore(tmp_path / "b")
    data = b"weights" * 10
    cid = store.add(io.BytesIO(data))
    store.block_path(cid).write_bytes(b"")  # e.g. left empty by a crash
    with pytest.raises(VerificationError):
        list(store.cat(cid))
    store.add(io.BytesIO(data))
    assert b"".join(store.cat(cid)) == data


def test_car_export_to_a_file_leaves_nothing_when_a_block_is_missing(tmp_path):
    store = LocalStore(tmp_path / "b")
    root = parse_cid(store.add(io.BytesIO(random.Random(9).randbytes(CHUNK_SIZE * 3))))
    links, _ = dagpb.decode_node(store.get_block(root))
    store.block_path(links[2].cid).unlink()
    with pytest.raises(NotFoundError):
        store.export_car_to([root], tmp_path / "x.car")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_cat_of_a_directory_says_so(tmp_path):
    store = LocalStore(tmp_path / "b")
    child = parse_cid(store.add(io.BytesIO(b"inside")))
    node = dagpb.encode_node([dagpb.encode_link(child.to_bytes(), 6, "a.txt")], b"\x08\x01")
    root = CID.v1(DAG_PB, hashlib.sha256(node).digest())
    store.put_block(root, (node,))
    with pytest.raises(InputError) as e:
        list(store.cat(root))
    assert "directory" in e.value.one_line()


def test_unwritable_store_is_a_clear_error(tmp_path):
    blocks = tmp_path / "b"
    blocks.write_text("a file where the store folder should be")  # fails even as root
    with pytest.raises(InputError) as e:
        LocalStore(blocks).add(io.BytesIO(b"x"))
    assert str(blocks) in e.value.one_line()
