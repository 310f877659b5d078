"""din's secure aggregation beside Flower's SecAgg+, the same rounds side by side.

    python benchmarks/secagg.py                      # n = 10, 50, 100 x 100k, 1M weights
    python benchmarks/secagg.py --ns 10 --sizes 1e5  # one quick row
    python benchmarks/secagg.py --degree 4 --fraction 0.5  # a smaller graph: k = 4, t = 2
    python benchmarks/secagg.py --json               # one JSON document on stdout

Each row is one secure-aggregation round of n clients, each holding one
float32 vector of P weights (``standard_normal * 0.05``, the same generator
and seed on both sides) and a sample count in 1..1000 (Flower's default
``max_weight`` is 1000). Every client of the round is run, in protocol order
(all key generation, then all share distribution, then all masking), so the
server sums real masked vectors and the result is checked against plain FedAvg.

The same neighbour graph size and threshold on both sides. Flower's
``SecAggPlusWorkflow`` has no default for ``num_shares`` or
``reconstruction_threshold`` (its example app uses 3 and 2); here din's
degree is what a secagg task uses (``protocol.secagg.degree``: the complete
graph up to 17 clients, ``max(16, 4 * ceil(log2 n))`` beyond; ``--degree``
overrides it), capped at ``n - 1``, and ``t = secagg.threshold(k, fraction)``
(``--fraction``, default a task's default, 2/3). Flower gets ``num_shares = k + 1`` (its
neighbour set counts the client itself: k others plus its own share) and
``reconstruction_threshold = t``; a ``SecAggPlusWorkflow`` is built with them
so Flower's own checks accept them. Both sides then mask with k pairwise
masks plus one self mask per client and rebuild every seed from t (din) or
all collected (Flower) shares. Flower's client keeps a share of its own
seed, so a survivor's seed there has k + 1 holders to din's k: with t = k
(e.g. its example's 3 and 2, din's k = 2, t = 2) din stops at one dropout
where Flower goes on.

Client time: the median over the n clients of one client's whole part of
the round, up to and including its masked vector as bytes:

- din (``din_cli.crypto.secagg``): two X25519 key pairs (pair-seed key and
  HPKE key); a 32-byte self seed from ``secrets``; ``pair_seed`` (X25519 +
  HKDF) with each neighbour; ``split`` of the self seed and of every pair
  seed into t-of-k Shamir shares over GF(2^521-1); one bundle per neighbour
  (its share of each seed, 66 bytes apiece) sealed to it with
  ``hpke.seal``; opening the k bundles addressed to it (``hpke.unseal``);
  fixed-point quantisation (``q = rint(clip(w * 2^20, +-2^30)) * samples``,
  int64, din's aggregation encoding); ``mask`` (ChaCha20 keystream, mod
  2^64); ``y.tobytes()``.
- Flower (``flwr.client.mod.secure_aggregation.secaggplus_mod``, driven
  through its own stage functions ``_setup``, ``_share_keys`` and
  ``_collect_masked_vectors`` with a ``SecAggPlusState`` and the configs the
  workflow sends): two SECP384R1 key pairs (PEM); ``create_shares`` of its
  seed and of its PEM private key (PyCryptodome Shamir over GF(2^128));
  ECDH + HKDF + Fernet per neighbour; decrypting the neighbours' Fernet
  tokens; ``quantize`` (clip to +-8, stochastic rounding to 2^22 levels);
  ``pseudo_rand_gen`` (numpy MT19937 seeded from 32 bits) for the self and
  every pairwise mask; ``ndarray_to_bytes``. The mod's message and state
  (de)serialisation around those calls is not timed.

Server time, with zero dropouts and with one (a client that shared its keys
and then sent no masked vector, so its neighbours' pairwise masks with it
must be rebuilt):

- sum: adding the survivors' masked vectors from their bytes (din:
  ``add_into`` on ``np.frombuffer``; Flower: ``bytes_to_ndarray`` +
  ``parameters_addition`` + ``parameters_mod``, as in
  ``collect_masked_vectors_stage``);
- unmask: din ``combine`` of t shares per self seed and per dropout pair
  seed, ``unmask``, division by ``2^20 * sum(samples)`` to float32; Flower
  the body of ``SecAggPlusWorkflow.unmask_stage`` after the shares arrive:
  ``combine_shares`` per client, ``pseudo_rand_gen`` subtraction, for the
  dropout ECDH + ``pseudo_rand_gen`` per neighbour, ``dequantize`` and the
  offset and weight factor. Not timed: the strategy's ``aggregate_fit`` that
  Flower runs afterwards over n copies of the result (it would add a second
  full FedAvg to Flower's time).

Overhead: (sum + unmask, one dropout) over plain aggregation of the same
float32 vectors on the same side: din ``din_cli.ml.aggregate``'s CPU
kernels (numba when importable, as ``din aggregate`` uses them: the same
fixed-point integer sum, exact in float64) over the arrays in memory, one
thread; Flower ``flwr.server.strategy.aggregate.aggregate`` (numpy). The
two baselines differ (din's kernel is the faster one), so compare the sides'
absolute server seconds too, not only their ratios.

Flower 1.42's SecAgg+ path ships shares as concatenated bytes, not pickled;
its masks are still MT19937 seeded from 32 bits and its clip still +-8.

Bytes per client: every byte object a client uploads in the round, summed:
public keys, encrypted share bundles or tokens, the masked vector's bytes
and the shares it reveals at unmasking (one dropout), node ids counted at 8
bytes. Flower's masked vector is int64 (8 bytes a weight, values below
2^32) in ``.npy`` form, din's is uint64 raw.

Flower runs in its own virtual environment, never in din's: this file run by
the interpreter ``benchmarks/aggregate.py``'s ``flwr_python()`` names
(``DIN_BENCH_FLWR_PYTHON``, else ``~/.cache/din-bench/flwr-venv``) with
``--flower-child``, one JSON line back on stdout. Times are the best of
``--repeat`` whole rounds (each round's client time is its median client).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NS = [10, 50, 100]
SIZES = [100_000, 1_000_000]
INFO = b"din/secagg/v1 shares"
CONTEXT = b"din-bench secagg round 1"


def default_degree(n: int) -> int:
    from din_cli.protocol.secagg import degree

    return min(degree(n), n - 1)


def make_inputs(n: int, p: int, seed: int):
    """n float32 vectors of p weights and sample counts, the same on both sides."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vectors = [(rng.standard_normal(p) * 0.05).astype(np.float32) for _ in range(n)]
    samples = [int(s) for s in rng.integers(1, 1001, n)]
    return vectors, samples


def _plan(n: int, degree: int, fraction: float) -> tuple[int, int]:
    """(degree used, threshold) as din computes them."""
    from din_cli.crypto import secagg

    k = min(degree, n - 1)
    if k < n - 1 and k % 2:
        k += 1
    return k, secagg.threshold(k, round(fraction * 1_000_000))


# --------------------------------------------------------------------------- din


def din_round(vectors, samples, degree: int, fraction: float, drop: int) -> dict:
    """One din round: per-client times, server times, bytes, and the results' errors."""
    import secrets

    import numpy as np

    from din_cli.crypto import hpke, secagg
    from din_cli.ml import aggregate as agg

    n, p = len(vectors), vectors[0].size
    k, t = _plan(n, degree, fraction)
    graph = secagg.neighbours(secrets.token_bytes(32), n, k)
    kern = agg._kernels()  # din's CPU kernels (numba when importable); compiled or loaded here
    plain_mean(kern, [np.ones(8, np.float32)] * 5, [1] * 5)
    spent = [0.0] * n
    scale = float(2**agg.SCALE_BITS)

    # stage 1: key pairs
    keys = []
    for i in range(n):
        t0 = time.perf_counter()
        keys.append((hpke.generate_keypair(), hpke.generate_keypair()))  # (pair seeds, HPKE)
        spent[i] += time.perf_counter() - t0
    # stage 2: seeds, shares, sealed bundles
    self_seeds, pair_seeds, inbox, sent_bytes = [], [], [dict() for _ in range(n)], [0] * n
    for i in range(n):
        t0 = time.perf_counter()
        (c_priv, _), _ = keys[i]
        seed = secrets.token_bytes(32)
        pairs = {j: secagg.pair_seed(c_priv, keys[j][0][1], CONTEXT, i, j) for j in graph[i]}
        xs = [j + 1 for j in graph[i]]
        shares = [secagg.split(seed, t, xs)] + [secagg.split(pairs[j], t, xs) for j in graph[i]]
        for h, j in enumerate(graph[i]):
            bundle = i.to_bytes(4, "big") + j.to_bytes(4, "big") + b"".join(s[h] for s in shares)
            inbox[j][i] = hpke.seal(keys[j][1][1], bundle, info=INFO)
        spent[i] += time.perf_counter() - t0
        self_seeds.append(seed)
        pair_seeds.append(pairs)
        sent_bytes[i] += 64 + sum(len(inbox[j][i]) for j in graph[i])
    # stage 3: open the bundles, quantise, mask
    held: list[dict] = [dict() for _ in range(n)]  # held[j][i] = j's shares of i's seeds
    masked = []
    for i in range(n):
        t0 = time.perf_counter()
        _, (s_priv, _) = keys[i]
        for src, sealed in inbox[i].items():
            bundle = hpke.unseal(s_priv, sealed, info=INFO)
            if int.from_bytes(bundle[:4], "big") != src or int.from_bytes(bundle[4:8], "big") != i:
                raise SystemExit(f"bundle from {src} to {i} is misaddressed")
            body = bundle[8:]
            held[i][src] = [
                body[a : a + secagg.SHARE_LEN] for a in range(0, len(body), secagg.SHARE_LEN)
            ]
        w = np.multiply(vectors[i], scale, dtype=np.float64)
        np.clip(w, -agg.Q_MAX, agg.Q_MAX, out=w)
        np.rint(w, out=w)
        q = w.astype(np.int64)
        q *= samples[i]
        y = secagg.mask(q, i, self_seeds[i], pair_seeds[i]).tobytes()
        spent[i] += time.perf_counter() - t0
        masked.append(y)
        sent_bytes[i] += len(y)

    reference = {}  # float64 FedAvg of the survivors, for the error check

    def server(dropped: set[int]) -> dict:
        alive = [i for i in range(n) if i not in dropped]
        t0 = time.perf_counter()
        total = np.zeros(p, np.uint64)
        for i in alive:
            secagg.add_into(total, np.frombuffer(masked[i], np.uint64))
        t1 = time.perf_counter()
        seeds = []
        for i in alive:  # t surviving holders reveal their share of i's self seed
            holders = [j for j in graph[i] if j not in dropped][:t]
            if len(holders) < t:
                raise SystemExit(
                    f"din: client {i} keeps {len(holders)} share holders, fewer than t = {t}: "
                    "raise --degree or lower --fraction"
                )
            seeds.append(secagg.combine([(j + 1, held[j][i][0]) for j in holders]))
        terms = []
        for d in dropped:  # ... and of d's pair seed with each surviving neighbour
            holders = [j for j in graph[d] if j not in dropped][:t]
            for h, peer in enumerate(graph[d]):
                if peer in dropped:
                    continue
                seed = secagg.combine([(j + 1, held[j][d][1 + h]) for j in holders])
                terms.append((1 if peer < d else -1, seed))  # the sign the survivor applied
        sums = secagg.unmask(total, seeds, terms)
        mean = (sums / (scale * sum(samples[i] for i in alive))).astype(np.float32)
        t2 = time.perf_counter()
        ns = [samples[i] for i in alive]
        t3 = time.perf_counter()
        plain = plain_mean(kern, [vectors[i] for i in alive], ns)
        t4 = time.perf_counter()
        key = tuple(sorted(dropped))
        if key not in reference:
            reference[key] = sum(vectors[i].astype(np.float64) * samples[i] for i in alive) / sum(
                ns
            )
        return {
            "sum": t1 - t0,
            "unmask": t2 - t1,
            "plain": t4 - t3,
            "error": float(np.max(np.abs(mean - reference[key]))),
            "plain_error": float(np.max(np.abs(plain - reference[key]))),
        }

    # what each holder reveals at unmasking with one dropout: a self-seed share per surviving
    # neighbour, the dropout's pair-seed shares; a 4-byte position with each
    reveal = [0] * n
    for j in range(n):
        if j == drop:
            continue
        for i in graph[j]:
            reveal[j] += 4 + secagg.SHARE_LEN * (len(graph[i]) if i == drop else 1)
    return {
        "degree": k,
        "threshold": t,
        "client": statistics.median(spent),
        "zero": server(set()),
        "one": server({drop}),
        "bytes": statistics.median(sent_bytes[j] + reveal[j] for j in range(n) if j != drop),
    }


def plain_mean(kern, vectors, samples):
    """din's FedAvg arithmetic in memory: ``ml.aggregate``'s kernels over whole vectors, one thread.

    ``acc += rint(clip(w * 2^20)) * samples`` four inputs a pass, then the rest one at a
    time; ``float32(acc / (2^20 * sum(samples)))``, as ``din aggregate`` computes per block.
    """
    import numpy as np

    from din_cli.ml import aggregate as agg

    acc = np.zeros(vectors[0].size, np.float64)
    out = np.empty(vectors[0].size, np.float32)
    k = 0
    if kern.accumulate4 is not None:
        for k in range(0, len(vectors) - len(vectors) % 4, 4):
            kern.accumulate4(acc, *vectors[k : k + 4], *samples[k : k + 4])
        k = len(vectors) - len(vectors) % 4
    tmp = np.empty_like(acc)
    for w, n in zip(vectors[k:], samples[k:], strict=True):
        kern.accumulate(acc, w, n, tmp)
    kern.finalize(acc, out, float(sum(samples)) * float(2**agg.SCALE_BITS))
    return out


# ------------------------------------------------------------------------ Flower


def flower_round(vectors, samples, k: int, t: int, drop: int, seed: int) -> dict:
    """One round of Flower's SecAgg+ through its client stage functions and server body."""
    import importlib
    import random

    import numpy as np
    from flwr.common import bytes_to_ndarray, ndarrays_to_parameters
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_extract,
        get_parameters_shape,
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import dequantize
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.server.strategy.aggregate import aggregate
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

    mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    n = len(vectors)
    wf = SecAggPlusWorkflow(num_shares=k + 1, reconstruction_threshold=t)
    rnd = random.Random(seed)
    nids = [rnd.getrandbits(63) for _ in range(n)]  # Flower's node ids are random 64-bit ints
    # setup_stage: configuration, shuffled ring of num_shares (self included)
    num_shares, threshold = k + 1, t  # as setup_stage turns integer settings into the state's
    setup = {
        Key.SAMPLE_NUMBER: n,
        Key.SHARE_NUMBER: num_shares,
        Key.THRESHOLD: threshold,
        Key.CLIPPING_RANGE: wf.clipping_range,
        Key.TARGET_RANGE: wf.quantization_range,
        Key.MOD_RANGE: wf.modulus_range,
        Key.MAX_WEIGHT: wf.max_weight,
    }
    order = nids[:]
    rnd.shuffle(order)
    half = num_shares >> 1
    neigh = {
        nid: {order[(a + off) % n] for off in range(-half, half + 1)} for a, nid in enumerate(order)
    }
    params = {nid: ndarrays_to_parameters([v]) for nid, v in zip(nids, vectors, strict=True)}
    num_examples = dict(zip(nids, samples, strict=True))
    states = {nid: mod.SecAggPlusState() for nid in nids}
    spent = dict.fromkeys(nids, 0.0)
    sent = dict.fromkeys(nids, 0)
    pks = {}
    for nid in nids:
        st = states[nid]
        st.nid = nid
        t0 = time.perf_counter()
        res = mod._setup(st, dict(setup))
        spent[nid] += time.perf_counter() - t0
        pks[nid] = [res[Key.PUBLIC_KEY_1], res[Key.PUBLIC_KEY_2]]
        sent[nid] += sum(len(b) for b in pks[nid])
    fwd = {nid: ([], []) for nid in nids}  # dst -> (srcs, ciphertexts)
    for nid in nids:
        cfg = {str(j): pks[j] for j in neigh[nid]}
        t0 = time.perf_counter()
        res = mod._share_keys(states[nid], cfg)
        spent[nid] += time.perf_counter() - t0
        for dst, ct in zip(res[Key.DESTINATION_LIST], res[Key.CIPHERTEXT_LIST], strict=True):
            fwd[dst][0].append(nid)
            fwd[dst][1].append(ct)
            sent[nid] += 8 + len(ct)
    masked = {}
    for nid in nids:
        cfg = {Key.CIPHERTEXT_LIST: fwd[nid][1], Key.SOURCE_LIST: fwd[nid][0]}
        t0 = time.perf_counter()
        res = mod._collect_masked_vectors(states[nid], cfg, num_examples[nid], params[nid])
        spent[nid] += time.perf_counter() - t0
        masked[nid] = res[Key.MASKED_PARAMETERS]
        sent[nid] += sum(len(b) for b in masked[nid])

    reference = {}

    def server(dead: set[int]) -> dict:
        active = set(nids) - dead
        t0 = time.perf_counter()
        vec = None
        for nid in nids:  # collect_masked_vectors_stage's sum
            if nid in dead:
                continue
            client = [bytes_to_ndarray(b) for b in masked[nid]]
            vec = client if vec is None else parameters_addition(vec, client)
        vec = parameters_mod(vec, wf.modulus_range)
        t1 = time.perf_counter()
        collected = {nid: [] for nid in nids}  # the clients' _unmask replies, not timed
        revealed = {}
        for nid in active:
            cfg = {
                Key.ACTIVE_NODE_ID_LIST: list(neigh[nid] & active),
                Key.DEAD_NODE_ID_LIST: list(neigh[nid] & dead),
            }
            res = mod._unmask(states[nid], cfg)
            revealed[nid] = 8 * len(res[Key.NODE_ID_LIST]) + sum(
                len(s) for s in res[Key.SHARE_LIST]
            )
            for owner, share in zip(res[Key.NODE_ID_LIST], res[Key.SHARE_LIST], strict=True):
                collected[owner].append(share)
        t2 = time.perf_counter()
        # unmask_stage from "Remove masks for every active client"
        ring = {nid: set(s) for nid, s in neigh.items()}
        for nid, share_list in collected.items():
            if len(share_list) < threshold:
                raise SystemExit("Flower: not enough shares to recover a secret")
            secret = combine_shares(share_list)
            if nid in active:
                mask = pseudo_rand_gen(secret, wf.modulus_range, get_parameters_shape(vec))
                vec = parameters_subtraction(vec, mask)
            else:
                ring[nid].remove(nid)
                for other in ring[nid]:
                    shared = generate_shared_key(
                        bytes_to_private_key(secret), bytes_to_public_key(pks[other][0])
                    )
                    mask = pseudo_rand_gen(shared, wf.modulus_range, get_parameters_shape(vec))
                    if nid > other:
                        vec = parameters_addition(vec, mask)
                    else:
                        vec = parameters_subtraction(vec, mask)
        recon = parameters_mod(vec, wf.modulus_range)
        q_total, recon = factor_extract(recon)
        inv = wf.quantization_range / q_total
        out = dequantize(recon, wf.clipping_range, wf.quantization_range)
        offset = -(len(active) - 1) * wf.clipping_range
        for v in out:
            v += offset
            v *= inv
        t3 = time.perf_counter()
        results = [([vectors[a]], samples[a]) for a, nid in enumerate(nids) if nid in active]
        t4 = time.perf_counter()
        plain = aggregate(results)[0]
        t5 = time.perf_counter()
        key = tuple(sorted(dead))
        if key not in reference:
            reference[key] = sum(v[0].astype(np.float64) * s for v, s in results) / sum(
                s for _, s in results
            )
        return {
            "sum": t1 - t0,
            "unmask": t3 - t2,
            "plain": t5 - t4,
            "error": float(np.max(np.abs(out[0] - reference[key]))),
            "plain_error": float(np.max(np.abs(plain - reference[key]))),
            "revealed": revealed,
        }

    zero = server(set())
    one = server({nids[drop]})
    revealed = one.pop("revealed")
    zero.pop("revealed")
    return {
        "num_shares": num_shares,
        "threshold": threshold,
        "client": statistics.median(spent.values()),
        "zero": zero,
        "one": one,
        "bytes": statistics.median(sent[j] + revealed[j] for j in nids if j != nids[drop]),
    }


def flower_child(spec: dict) -> None:
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)  # its overflow warnings stay quiet
    vectors, samples = make_inputs(spec["n"], spec["p"], spec["seed"])
    runs = [
        flower_round(vectors, samples, spec["k"], spec["t"], spec["drop"], spec["seed"] + r)
        for r in range(spec["repeat"])
    ]
    import flwr

    print(json.dumps({"runs": runs, "version": flwr.__version__}))


# -------------------------------------------------------------------------- main


def best(runs: list[dict]) -> dict:
    """The fastest of each time over the runs (bytes and errors from the first)."""
    out = dict(runs[0])
    out["client"] = min(r["client"] for r in runs)
    for case in ("zero", "one"):
        out[case] = {
            **runs[0][case],
            **{f: min(r[case][f] for r in runs) for f in ("sum", "unmask", "plain")},
        }
        out[case]["error"] = max(r[case]["error"] for r in runs)
    return out


def flower_python() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from aggregate import flwr_python

    return flwr_python()


def run_flower(py: str, spec: dict) -> dict:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    proc = subprocess.run(
        [py, str(Path(__file__).resolve()), "--flower-child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        raise SystemExit(f"Flower child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--flower-child":
        flower_child(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--ns", nargs="+", type=int, default=NS, help="clients per round (default 10 50 100)"
    )
    ap.add_argument(
        "--sizes",
        nargs="+",
        type=lambda s: int(float(s)),
        default=SIZES,
        help="weights per model, e.g. 1e5 1e6 (the default)",
    )
    ap.add_argument(
        "--degree",
        type=int,
        help="neighbours per client (default: a secagg task's, capped at n - 1)",
    )
    ap.add_argument(
        "--fraction",
        type=float,
        default=2 / 3,
        help="threshold as a fraction of the degree (default 2/3, a task's default)",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="rounds per row; the fastest counts (default 1)"
    )
    ap.add_argument("--seed", type=int, default=0, help="inputs' seed (default 0)")
    ap.add_argument("--no-flower", action="store_true", help="time din only")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = ap.parse_args()
    if min(args.ns) < 3 or args.repeat < 1 or not 0 < args.fraction <= 1:
        ap.error("--ns needs 3+ clients, --repeat 1+, --fraction in (0, 1]")
    sys.path.insert(0, str(REPO))
    fpy = None if args.no_flower else flower_python()
    rows, version = [], None
    if not args.json:
        print(
            f"{'n':>4} {'params':>10} {'k':>3} {'t':>3} | {'client mask s':>15} | {'unmask s, 0 drop':>17} | "
            f"{'unmask s, 1 drop':>17} | {'server s, 1 drop':>17} | {'bytes/client':>21} | {'overhead x':>11}\n"
            f"{'':>23} | {'din':>7} {'flwr':>7} | {'din':>8} {'flwr':>8} | {'din':>8} {'flwr':>8} | "
            f"{'din':>8} {'flwr':>8} | {'din':>10} {'flwr':>10} | {'din':>5} {'flwr':>5}",
            flush=True,
        )
    for n in args.ns:
        degree = args.degree if args.degree is not None else default_degree(n)
        k, t = _plan(n, degree, args.fraction)
        for p in args.sizes:
            vectors, samples = make_inputs(n, p, args.seed)
            drop = n // 2
            din = best(
                [din_round(vectors, samples, k, args.fraction, drop) for _ in range(args.repeat)]
            )
            del vectors
            spec = {
                "n": n,
                "p": p,
                "k": k,
                "t": t,
                "drop": drop,
                "seed": args.seed,
                "repeat": args.repeat,
            }
            fl = None
            if fpy:
                got = run_flower(fpy, spec)
                fl, version = best(got["runs"]), got["version"]
            for side in filter(None, (din, fl)):
                for case in ("zero", "one"):
                    if side[case]["error"] > 1e-4:
                        raise SystemExit(
                            f"n={n} P={p}: an unmasked mean is off by {side[case]['error']}"
                        )
                c = side["one"]
                side["server"] = c["sum"] + c["unmask"]
                side["overhead"] = side["server"] / c["plain"]
            rows.append(
                {"n": n, "params": p, "degree": k, "threshold": t, "din": din, "flower": fl}
            )
            if not args.json:
                line = (
                    f"{n:>4} {p:>10,} {k:>3} {t:>3} | {din['client']:>7.4f} {_f(fl, 'client', '7.4f')} | "
                    f"{din['zero']['unmask']:>8.4f} {_f(fl and fl['zero'], 'unmask', '8.4f')} | "
                    f"{din['one']['unmask']:>8.4f} {_f(fl and fl['one'], 'unmask', '8.4f')} | "
                    f"{din['server']:>8.4f} {_f(fl, 'server', '8.4f')} | "
                    f"{din['bytes']:>10,.0f} {_f(fl, 'bytes', '10,.0f')} | "
                    f"{din['overhead']:>5.1f} {_f(fl, 'overhead', '5.1f')}"
                )
                print(line, flush=True)
    if args.json:
        print(json.dumps({"flower_version": version, "fraction": args.fraction, "rows": rows}))
        return
    print(
        f"Flower {version}: num_shares = k + 1, reconstruction_threshold = t, clip +-8, 2^22 levels, "
        "mod 2^32; din: k neighbours, t-of-k shares, mod 2^64. client: median client, whole round; "
        "unmask: after the masked sum; server: sum + unmask; overhead: server / plain FedAvg on the same side; "
        f"best of {args.repeat} round(s)"
    )


def _f(side: dict | None, key: str, fmt: str) -> str:
    width = fmt.split(".")[0].replace(",", "")
    return format(side[key], fmt) if side else format("-", f">{width}")


if __name__ == "__main__":
    main()
