"""Chain client and embedded chain: sends, reverts, events, time, persistence, crashes, concurrency.

The contract used here (compiled with solc 0.8.30, evmVersion prague, optimizer 200 runs)::

    // SPDX-License-Identifier: MIT
    pragma solidity 0.8.30;

    contract Probe {
        error TooSmall(uint256 given, uint256 minimum);
        event Stored(address indexed who, uint256 indexed key, uint256 value, string note);

        mapping(uint256 => uint256) public values;
        uint256 public count;

        function store(uint256 key, uint256 value, string calldata note) external {
            if (value < 10) revert TooSmall(value, 10);
            require(key != 0, "key must not be zero");
            values[key] = value;
            count += 1;
            emit Stored(msg.sender, key, value, note);
        }

        function divide(uint256 a) external pure returns (uint256) {
            return 10 / a;
        }

        function stamp() external view returns (uint256) {
            return block.timestamp;
        }
    }
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from din_cli.chain.client import connect, decode_revert
from din_cli.errors import BackendUnavailable, InputError, TransactionReverted, UsageError

PROBE = {
    "contractName": "Probe",
    "abi": json.loads(
        '[{"inputs": [{"internalType": "uint256", "name": "given", "type": "uint256"}, {"internalType": "uint256", "name": "minimum", "type": "uint256"}], "name": "TooSmall", "type": "error"}, {"anonymous": false, "inputs": [{"indexed": true, "internalType": "address", "name": "who", "type": "address"}, {"indexed": true, "internalType": "uint256", "name": "key", "type": "uint256"}, {"indexed": false, "internalType": "uint256", "name": "value", "type": "uint256"}, {"indexed": false, "internalType": "string", "name": "note", "type": "string"}], "name": "Stored", "type": "event"}, {"inputs": [], "name": "count", "outputs": [{"internalType": "uint256", "name": "", "type": "uint256"}], "stateMutability": "view", "type": "function"}, {"inputs": [{"internalType": "uint256", "name": "a", "type": "uint256"}], "name": "divide", "outputs": [{"internalType": "uint256", "name": "", "type": "uint256"}], "stateMutability": "pure", "type": "function"}, {"inputs": [], "name": "stamp", "outputs": [{"internalType": "uint256", "name": "", "type": "uint256"}], "stateMutability": "view", "type": "function"}, {"inputs": [{"internalType": "uint256", "name": "key", "type": "uint256"}, {"internalType": "uint256", "name": "value", "type": "uint256"}, {"internalType": "string", "name": "note", "type": "string"}], "name": "store", "outputs": [], "stateMutability": "nonpayable", "type": "function"}, {"inputs": [{"internalType": "uint256", "name": "", "type": "uint256"}], "name": "values", "outputs": [{"internalType": "uint256", "name": "", "type": "uint256"}], "stateMutability": "view", "type": "function"}]'
    ),
    "bytecode": (
        "0x6080604052348015600e575f5ffd5b506102f48061001c5f395ff3fe608060405234801561000f575f5ffd5b506004"
        "3610610055575f3560e01c806306661abd146100595780633e823f79146100745780635e383d211461008757806370ef"
        "6e0b146100a6578063c85e07b9146100bb575b5f5ffd5b61006260015481565b60405190815260200160405180910390"
        "f35b6100626100823660046101b8565b6100c1565b6100626100953660046101b8565b5f602081905290815260409020"
        "5481565b6100b96100b43660046101cf565b6100d3565b005b42610062565b5f6100cd82600a61024b565b9291505056"
        "5b600a8310156101045760405163e94fe3af60e01b815260048101849052600a60248201526044015b60405180910390"
        "fd5b835f0361014a5760405162461bcd60e51b81526020600482015260146024820152736b6579206d757374206e6f74"
        "206265207a65726f60601b60448201526064016100fb565b5f8481526020819052604081208490556001805490918291"
        "61016d90839061026a565b9091555050604051849033907f15bb85ffd8f2d7bbba4ce1715d9d465f15c8ed9a845bb049"
        "d4a861056660908a906101aa90879087908790610289565b60405180910390a350505050565b5f602082840312156101"
        "c8575f5ffd5b5035919050565b5f5f5f5f606085870312156101e2575f5ffd5b84359350602085013592506040850135"
        "67ffffffffffffffff811115610206575f5ffd5b8501601f81018713610216575f5ffd5b803567ffffffffffffffff81"
        "111561022c575f5ffd5b87602082840101111561023d575f5ffd5b949793965060200194505050565b5f826102655763"
        "4e487b7160e01b5f52601260045260245ffd5b500490565b808201808211156100cd57634e487b7160e01b5f52601160"
        "045260245ffd5b83815260406020820152816040820152818360608301375f818301606090810191909152601f909201"
        "601f191601019291505056fea2646970667358221220e6220bcbf17b315928c7a600e9565ed80b8a99a80b835d1d591c"
        "4f26d3b0131264736f6c634300081e0033"
    ),
}

# A child process that opens the chain in $DIN_HOME and stores values, one
# transaction (one SQLite commit) each, printing each key once committed.
WRITER = r"""
import json, sys
from din_cli.chain.client import connect
probe = json.load(open(sys.argv[1]))
chain = connect(None)
me = chain.dev_account()
c = chain.contract(probe, sys.argv[2])
for key in range(int(sys.argv[3]), int(sys.argv[4])):
    chain.send(me, c.functions.store(key, 100 + key, "w"))
    print(key, flush=True)
"""


@pytest.fixture
def memory_chain():
    chain = connect("memory")
    yield chain
    chain.close()


def deploy_probe(chain):
    me = chain.dev_account()
    return me, chain.contract(PROBE, chain.deploy(me, PROBE))


def run_writer(tmp_path, address, start, stop, **kw):
    probe_file = tmp_path / "probe.json"
    if not probe_file.exists():
        probe_file.write_text(json.dumps(PROBE))
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(probe_file), address, str(start), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


# ---------------------------------------------------------------- the client


def test_send_call_and_receipt(memory_chain):
    me, c = deploy_probe(memory_chain)
    receipt = memory_chain.send(me, c.functions.store(7, 70, "seven"))
    assert receipt["status"] == 1
    assert memory_chain.call(c.functions.values(7)) == 70
    assert memory_chain.call(c.functions.count()) == 1
    assert memory_chain.head() == receipt["blockNumber"]  # automine: one block per transaction


def test_custom_error_is_decoded_with_its_arguments(memory_chain):
    me, c = deploy_probe(memory_chain)
    with pytest.raises(TransactionReverted) as info:
        memory_chain.send(me, c.functions.store(1, 5, "too small"))
    assert info.value.reason == "TooSmall(given=5, minimum=10)"
    assert info.value.one_line() == "store reverted: TooSmall(given=5, minimum=10)"
    assert info.value.exit_code == 5
    assert memory_chain.call(c.functions.count()) == 0


def test_require_reason_and_panic_are_decoded(memory_chain):
    me, c = deploy_probe(memory_chain)
    with pytest.raises(TransactionReverted, match="key must not be zero"):
        memory_chain.send(me, c.functions.store(0, 50, "zero key"))
    with pytest.raises(
        TransactionReverted, match=r"divide reverted: panic 0x12 \(division or modulo by zero\)"
    ):
        memory_chain.call(c.functions.divide(0))
    assert memory_chain.call(c.functions.divide(2)) == 5


def test_a_mined_revert_reports_its_reason(memory_chain):
    """With gas given there is no estimate: the transaction is mined, fails, and is replayed for its reason.

    On the embedded chain the failed command's SQLite transaction is rolled
    back, so the failed block is not kept and the nonce stays free."""
    me, c = deploy_probe(memory_chain)
    head = memory_chain.head()
    with pytest.raises(TransactionReverted, match=r"TooSmall\(given=3, minimum=10\)"):
        memory_chain.send(me, c.functions.store(1, 3, "x"), gas=200_000)
    assert memory_chain.head() == head
    memory_chain.send(me, c.functions.store(1, 30, "x"), gas=200_000)
    assert memory_chain.call(c.functions.values(1)) == 30


def test_decode_revert_without_data_and_unknown_selector():
    assert decode_revert(b"") == "reverted without a reason"
    assert decode_revert("0xdeadbeef") == "custom error 0xdeadbeef"


def test_event_index_matches_a_full_scan(memory_chain):
    me, c = deploy_probe(memory_chain)
    other = memory_chain.dev_account().address
    for key in (1, 2, 3, 2):
        memory_chain.send(me, c.functions.store(key, 10 * key + 10, f"note {key}"))
    indexed = memory_chain.logs(c, "Stored")
    # eth-tester's own eth_getLogs scans every block: the reference answer
    scanned = [
        c.events.Stored().process_log(log)
        for log in memory_chain.w3.eth.get_logs({"address": c.address, "fromBlock": 0})
    ]
    assert [dict(e["args"]) for e in indexed] == [dict(e["args"]) for e in scanned]
    assert [(e["blockNumber"], e["logIndex"], e["transactionHash"]) for e in indexed] == [
        (e["blockNumber"], e["logIndex"], e["transactionHash"]) for e in scanned
    ]
    assert [e.args.key for e in memory_chain.logs(c, "Stored", key=2)] == [2, 2]
    assert [e.args.key for e in memory_chain.logs(c, "Stored", key=[1, 3])] == [1, 3]
    assert len(memory_chain.logs(c, "Stored", who=other)) == 4
    assert [e.args.note for e in memory_chain.logs(c, "Stored", note="note 3")] == ["note 3"]
    last = indexed[-1]["blockNumber"]
    assert [e.args.key for e in memory_chain.logs(c, "Stored", from_block=last)] == [2]
    with pytest.raises(UsageError, match="no argument nope"):
        memory_chain.logs(c, "Stored", nope=1)


def test_block_timestamps_follow_the_wall_clock(memory_chain):
    me, c = deploy_probe(memory_chain)
    before = int(time.time())
    receipt = memory_chain.send(me, c.functions.store(1, 10, "t"))
    after = int(time.time())
    stamp = memory_chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    parent = memory_chain.w3.eth.get_block(receipt["blockNumber"] - 1)["timestamp"]
    assert stamp == max(before, parent + 1) or before <= stamp <= max(after, parent + 1)
    assert stamp > parent


def test_advance_time_moves_block_time(memory_chain):
    me, c = deploy_probe(memory_chain)
    t0 = memory_chain.now()
    memory_chain.advance_time(3600)
    assert memory_chain.now() >= t0 + 3600
    assert memory_chain.call(c.functions.stamp()) == memory_chain.now()
    receipt = memory_chain.send(me, c.functions.store(1, 10, "later"))
    assert memory_chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"] >= t0 + 3600
    with pytest.raises(UsageError):
        memory_chain.advance_time(-1)


def test_fund_gives_ether_to_a_new_account(memory_chain):
    from eth_account import Account

    new = Account.create()
    assert memory_chain.balance(new.address) == 0
    memory_chain.fund(new.address, 3 * 10**18)
    assert memory_chain.balance(new.address) == 3 * 10**18


def test_a_failed_writing_block_keeps_nothing(memory_chain):
    me, c = deploy_probe(memory_chain)
    head = memory_chain.head()
    with pytest.raises(RuntimeError), memory_chain.writing():
        memory_chain.send(me, c.functions.store(1, 10, "rolled back"))
        raise RuntimeError("the command failed after its first transaction")
    assert memory_chain.head() == head
    assert memory_chain.call(c.functions.count()) == 0
    memory_chain.send(me, c.functions.store(1, 10, "kept"))  # the same nonce is free again
    assert memory_chain.call(c.functions.count()) == 1


def test_reads_forget_a_rolled_back_block_even_when_its_number_comes_back(memory_chain):
    """Logs and views are kept per head block (a node rereads them every few seconds): a block a
    failed command rolled back is forgotten, and so is a new block with the same number."""
    me, c = deploy_probe(memory_chain)
    memory_chain.send(me, c.functions.store(1, 10, "first"))
    assert [e.args.note for e in memory_chain.logs(c, "Stored")] == ["first"]
    with pytest.raises(RuntimeError), memory_chain.writing():
        memory_chain.send(me, c.functions.store(2, 20, "rolled back"))
        assert [e.args.note for e in memory_chain.logs(c, "Stored")] == ["first", "rolled back"]
        assert memory_chain.call(c.functions.count()) == 2
        gone = memory_chain.head()
        raise RuntimeError("the command failed after its transaction")
    # (another query than the one kept at the rolled-back block: that one is read only below)
    assert [e.args.note for e in memory_chain.logs(c, "Stored", who=me.address)] == ["first"]
    assert memory_chain.call(c.functions.count()) == 1
    assert memory_chain.call(c.functions.values(2)) == 0
    memory_chain.send(me, c.functions.store(3, 30, "kept"))
    assert memory_chain.head() == gone  # the same number, another block
    assert [e.args.note for e in memory_chain.logs(c, "Stored")] == ["first", "kept"]
    assert [e.args.key for e in memory_chain.logs(c, "Stored", key=[2, 3])] == [3]
    assert memory_chain.call(c.functions.count()) == 2


def test_reads_see_what_another_process_wrote(din_home, tmp_path):
    """A reader's kept logs and views take in blocks another process appended to the file."""
    chain = connect(None)
    me, c = deploy_probe(chain)
    chain.send(me, c.functions.store(1, 11, "mine"))
    assert len(chain.logs(c, "Stored")) == 1 and chain.call(c.functions.count()) == 1
    writer = run_writer(tmp_path, c.address, 10, 13)
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert [e.args.key for e in chain.logs(c, "Stored")] == [1, 10, 11, 12]
    assert chain.call(c.functions.count()) == 4
    chain.close()


def test_an_account_without_ether_is_told_to_fund_it(memory_chain):
    from eth_account import Account

    _, c = deploy_probe(memory_chain)
    poor = Account.create()
    with pytest.raises(InputError) as info:
        memory_chain.send(poor, c.functions.store(1, 20, "x"))
    assert info.value.one_line().startswith(f"{poor.address} cannot pay for the gas of store; fund")
    assert info.value.exit_code == 1


def test_unreachable_node_is_backend_unavailable():
    with pytest.raises(
        BackendUnavailable, match="cannot reach the chain node at http://127.0.0.1:9"
    ):
        connect("http://127.0.0.1:9")


def test_a_bad_chain_url_is_a_usage_error():
    with pytest.raises(UsageError, match="not a chain URL"):
        connect("ftp://example.org")


# ---------------------------------------------------------------- persistence


def test_reopen_gives_the_same_head_and_state(din_home):
    chain = connect(None)
    me, c = deploy_probe(chain)
    chain.send(me, c.functions.store(4, 44, "kept"))
    chain.advance_time(100)
    head, head_hash, now = chain.head(), chain.w3.eth.get_block("latest")["hash"], chain.now()
    chain.close()
    assert (din_home / "chain.sqlite").is_file()

    again = connect(None)
    assert (again.head(), again.w3.eth.get_block("latest")["hash"], again.now()) == (
        head,
        head_hash,
        now,
    )
    c2 = again.contract(PROBE, c.address)
    assert again.call(c2.functions.values(4)) == 44
    assert [e.args.key for e in again.logs(c2, "Stored")] == [4]
    again.send(me, c2.functions.store(5, 55, "more"))  # nonces carry over too
    assert again.call(c2.functions.count()) == 2
    again.close()


def test_kill_9_mid_command_loses_no_committed_transaction(din_home, tmp_path):
    chain = connect(None)
    _, c = deploy_probe(chain)
    chain.close()
    writer = run_writer(tmp_path, c.address, 1, 10_000)
    committed = []
    deadline = time.time() + 60
    while len(committed) < 8 and time.time() < deadline:
        line = writer.stdout.readline()
        if not line:
            break
        committed.append(int(line))
    writer.send_signal(signal.SIGKILL)  # most likely in the middle of the next transaction
    writer.wait()
    assert len(committed) >= 8, writer.stderr.read()

    again = connect(None)
    c2 = again.contract(PROBE, c.address)
    count = again.call(c2.functions.count())
    assert count >= len(committed)  # everything reported committed is there (maybe one more)
    for key in committed:
        assert again.call(c2.functions.values(key)) == 100 + key
    assert len(again.logs(c2, "Stored")) == count
    again.send(again.dev_account(), c2.functions.store(99_999, 1_000, "after the crash"))
    assert again.call(c2.functions.count()) == count + 1
    again.close()


def test_two_processes_sending_at_once_both_succeed(din_home, tmp_path):
    chain = connect(None)
    _, c = deploy_probe(chain)
    chain.close()
    a = run_writer(tmp_path, c.address, 1, 9)
    b = run_writer(tmp_path, c.address, 101, 109)
    for p in (a, b):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    again = connect(None)
    c2 = again.contract(PROBE, c.address)
    assert again.call(c2.functions.count()) == 16
    assert sorted(e.args.key for e in again.logs(c2, "Stored")) == list(range(1, 9)) + list(
        range(101, 109)
    )
    again.close()


# ---------------------------------------------------------------- anvil

REPO = Path(__file__).resolve().parent.parent
ANVIL = REPO / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not ANVIL.exists(), reason="anvil is not installed (npm ci)")
def test_anvil_script_starts_a_node_keeps_state_and_stops(tmp_path):
    port = free_port()
    env = {**os.environ, "ANVIL_PORT": str(port), "DIN_ANVIL_STATE": str(tmp_path / "state")}
    script = [str(REPO / "scripts/anvil.sh")]
    state = tmp_path / "anvil-state.json"
    started = subprocess.run(
        ["bash", *script, "start", "--state", str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"export DIN_TEST_ANVIL=http://127.0.0.1:{port}"
        pid = int((tmp_path / "state/anvil.pid").read_text())
        chain = connect(f"http://127.0.0.1:{port}")
        assert chain.chain_id == 31337 and chain.is_dev
        address = deploy_probe(chain)[1].address
    finally:
        stopped = subprocess.run(
            ["bash", *script, "stop"], env=env, capture_output=True, text=True, timeout=60
        )
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "state/anvil.pid").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(BackendUnavailable):
        connect(f"http://127.0.0.1:{port}")
    # --state FILE: the restarted node still has the contract
    restarted = subprocess.run(
        ["bash", *script, "start", "--state", str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        assert restarted.returncode == 0, restarted.stderr
        assert connect(f"http://127.0.0.1:{port}").w3.eth.get_code(address)
    finally:
        subprocess.run(["bash", *script, "stop"], env=env, capture_output=True, timeout=60)


@pytest.mark.integration
def test_anvil_send_revert_logs_and_time(anvil_url):
    chain = connect(anvil_url)
    assert chain.is_dev and chain.url == anvil_url
    me, c = deploy_probe(chain)
    chain.send(me, c.functions.store(3, 30, "anvil"))
    assert chain.call(c.functions.values(3)) == 30
    with pytest.raises(TransactionReverted, match=r"TooSmall\(given=1, minimum=10\)"):
        chain.send(me, c.functions.store(3, 1, "x"))
    with pytest.raises(TransactionReverted, match="key must not be zero"):
        chain.send(me, c.functions.store(0, 30, "x"), gas=200_000)
    assert [e.args.note for e in chain.logs(c, "Stored", key=3)] == ["anvil"]
    t0 = chain.now()
    chain.advance_time(600)
    assert chain.now() >= t0 + 600


@pytest.mark.integration
def test_anvil_reads_follow_evm_revert(anvil_url):
    """Kept logs are checked against the block they were read up to: after evm_revert and a new
    block with the same number, a read shows the new chain, not the reverted one."""
    chain = connect(anvil_url)
    me, c = deploy_probe(chain)
    chain.send(me, c.functions.store(1, 10, "before"))
    snap = chain.w3.provider.make_request("evm_snapshot", [])["result"]
    chain.send(me, c.functions.store(2, 20, "reverted"))
    assert [e.args.note for e in chain.logs(c, "Stored")] == ["before", "reverted"]
    gone = chain.head()
    assert chain.w3.provider.make_request("evm_revert", [snap])["result"] is True
    assert [e.args.note for e in chain.logs(c, "Stored", who=me.address)] == ["before"]
    chain.send(me, c.functions.store(3, 30, "after"))
    assert chain.head() == gone
    assert [e.args.note for e in chain.logs(c, "Stored")] == ["before", "after"]
    assert chain.call(c.functions.count()) == 2


@pytest.mark.integration
def test_anvil_two_processes_one_key_no_nonce_collision(anvil_url, tmp_path):
    chain = connect(anvil_url)
    _, c = deploy_probe(chain)
    env = {**os.environ, "DIN_CHAIN": anvil_url}
    writer = WRITER.replace("connect(None)", "connect(__import__('os').environ['DIN_CHAIN'])")
    probe_file = tmp_path / "probe.json"
    probe_file.write_text(json.dumps(PROBE))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", writer, str(probe_file), c.address, str(lo), str(lo + 8)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for lo in (1, 101)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert chain.call(c.functions.count()) == 16


def test_a_contract_with_a_linked_library_needs_its_address(memory_chain):
    """DinTasks links DinPayouts: deploying it bare is refused, linked it settles through it."""
    from din_cli.chain.client import link, load_artifact
    from din_cli.errors import UsageError

    me = memory_chain.dev_account()
    art = load_artifact("DinTasks")
    with pytest.raises(UsageError, match="library DinPayouts"):
        memory_chain.deploy(me, "DinTasks", me.address, me.address)
    lib = memory_chain.deploy(me, "DinPayouts")
    code = link(art, {"DinPayouts": lib})
    assert "__$" not in code and code.count(lib.lower()[2:]) == len(art["links"]["DinPayouts"])
    # the library's events are in DinTasks' ABI: settlement logs are emitted at DinTasks' address
    events = {e["name"] for e in art["abi"] if e["type"] == "event"}
    assert {"SubgroupSettled", "ValidatorPenalised"} <= events
