// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ValidatorRegistry} from "./ValidatorRegistry.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Assignment} from "./Assignment.sol";
import {Settlement} from "./Settlement.sol";
import {Task, Member, GroupResult, GroupVotes, Val, isAccepted, SCORE_BPS, SETTLING_PHASE, SETTLED_PHASE, ABANDONED_PHASE, SCORES, REMOVED, SETTLED_FEE, CLAIMED, BONDED} from "./DinTypes.sol";

/// @title DIN payouts: subgroup settlement, slashing aggregators, participants' training records and
///        what each account can claim, run on DinTasks' storage. A linked library (DinTasks reaches it by DELEGATECALL): its code does not count
///        against DinTasks' EIP-170 size limit, and its events are emitted by DinTasks.
/// @dev The rounds a dispute's replay discarded (DinDisputes): their results cannot be disputed,
///      so they prove no record.
interface IDiscarded {
    function discarded(uint256 taskId, uint256 round) external view returns (bool);

    function revealCutShort(uint256 taskId, uint256 round, address validator) external view returns (bool);
}

/// @dev DinTasks' own getter, read from the library's code (which runs as DinTasks).
interface IDisputesOf {
    function disputes() external view returns (address);
}

library DinPayouts {
    using SafeERC20 for IERC20;

    event Claimed(uint256 indexed taskId, address indexed account, uint256 amount);
    event SubgroupSettled(uint256 indexed taskId, uint256 group, uint256[] participants, bytes scores, uint256 before);
    event ValidatorPenalised(uint256 indexed taskId, address indexed validator, uint256 amount, string reason);
    event ValidatorSlashed(uint256 indexed taskId, address indexed validator, uint256 round, uint256 amount, string reason);
    event RecordProven(uint256 indexed taskId, address indexed participant, uint256 records, uint256 before);

    /// @notice DinTasks.slashAggregator once the task is synced, in a phase that allows it and past
    ///         `round`'s reveals: check the offence and slash (see there).
    function slashAggregator(
        Task storage t,
        Val storage v,
        mapping(bytes32 => GroupVotes) storage groupVotes,
        mapping(bytes32 => uint256) storage votes,
        mapping(bytes32 => bytes32) storage corrected,
        mapping(bytes32 => bytes32) storage deviant,
        ValidatorRegistry registry,
        bytes32 seed,
        uint256 id,
        uint256 round,
        address validator,
        bytes32 majority
    ) external {
        require(v.index1 != 0, "not a validator of this task");
        require(v.flags & REMOVED == 0, "validator already removed");
        uint256 per = t.perGroup;
        uint256 pos = Assignment.permute(Assignment.key(seed, Assignment.VALIDATORS), v.index1 - 1, t.validators);
        require(pos < uint256(t.groups) * per, "validator not assigned in that round");
        bytes32 gk = keccak256(abi.encode(id, round, pos / per));
        // a round a dispute's replay discarded may have been cut short before anyone could reveal:
        // in it only the disputed subgroup, whose result the committee decided, is slashable
        require(corrected[gk] != bytes32(0) || !IDiscarded(IDisputesOf(address(this)).disputes()).discarded(id, round), "a dispute's replay discarded that round");
        GroupVotes storage gv = groupVotes[gk];
        bytes20 revealed = ((gv.mask >> (pos % per)) & 1) == 1 ? gv.first : bytes20(deviant[keccak256(abi.encode(id, round, validator))]);
        string memory reason;
        if (revealed == bytes20(0)) {
            require(!IDiscarded(IDisputesOf(address(this)).disputes()).revealCutShort(id, round, validator), "a dispute's filing cut its reveal short");
            reason = "did not reveal its aggregate";
        } else {
            require(majority != bytes32(0), "validator revealed an aggregate");
            require(isAccepted(groupVotes, votes, corrected, gk, id, round, pos / per, per, majority), "that result is not the subgroup's accepted one");
            require(revealed != bytes20(majority), "validator revealed the majority aggregate");
            // a dispute may still overturn the majority: no minority is slashed before disputes close
            require(corrected[gk] != bytes32(0) || t.phase >= SETTLING_PHASE, "a minority is slashable once the task settles");
            reason = "revealed a minority aggregate";
        }
        if (v.flags & SETTLED_FEE != 0) t.goodValidators--; // settled already: the fee is forfeited
        v.flags = (v.flags | REMOVED) & ~(BONDED | SETTLED_FEE); // the slash burns this task's bond
        emit ValidatorSlashed(id, validator, round, registry.slash(validator, t.slashAmount), reason);
    }

    /// @notice DinTasks.proveRecord in a phase that allows it: check each round's accepted result
    ///         admits member `m`'s update, and record its rounds after those proven before (so the
    ///         contributors' split is exact).
    function proveRecord(
        Task storage t,
        Member storage m,
        mapping(uint256 => bytes32) storage seeds,
        mapping(bytes32 => GroupVotes) storage groupVotes,
        mapping(bytes32 => uint256) storage votes,
        mapping(bytes32 => bytes32) storage corrected,
        address disputes,
        uint256 id,
        uint256[] calldata rounds,
        bytes[] calldata results
    ) external {
        require(m.index1 != 0 && m.index1 <= t.participants && m.ordinal != 0, "not a participant that submitted an update");
        require(m.records == 0, "record already proven");
        require(rounds.length > 0 && rounds.length == results.length, "give one accepted result per round");
        uint256 n = t.participants;
        uint256 g = t.groups;
        uint256 last = 0;
        for (uint256 i = 0; i < rounds.length; i++) {
            uint256 r = rounds[i];
            require(r > last && r <= t.round, "rounds must increase and be finished");
            require(!IDiscarded(disputes).discarded(id, r), "a dispute's replay discarded that round");
            last = r;
            uint256 pos = Assignment.permute(Assignment.key(seeds[r], Assignment.PARTICIPANTS), m.index1 - 1, n);
            uint256 group = Assignment.groupOf(pos, n, g);
            bytes calldata res = results[i];
            require(res.length > 32, "a result is the aggregate CID and a 32-byte bitmap");
            require((uint256(bytes32(res[res.length - 32:])) >> (pos - Assignment.groupStart(group, n, g))) & 1 == 1, "that result does not admit your update");
            require(isAccepted(groupVotes, votes, corrected, keccak256(abi.encode(id, r, group)), id, r, group, t.perGroup, keccak256(res)), "that result is not the subgroup's accepted one");
        }
        uint32 before = t.records;
        m.records = uint16(rounds.length);
        m.recordsBefore = before;
        t.records = before + uint32(rounds.length);
        emit RecordProven(id, msg.sender, rounds.length, before);
    }

    /// @notice Settle subgroup `group` of task `id` (DinTasks.settle checked the phase and that the
    ///         subgroup is unsettled): accept the score vector whose hash a strict majority of the
    ///         subgroup's evaluation validators revealed, record it in `r`, pay the majority and
    ///         slash the rest; true when that majority rejected the test set (an empty vector).
    ///         See DinTasks.settle for the rules.
    function settle(
        Task storage t,
        mapping(address => Val) storage vals,
        GroupResult storage r,
        ValidatorRegistry registry,
        uint256 id,
        uint256 group,
        bytes32 seed,
        uint256[] calldata participants,
        address[] calldata validators,
        bytes calldata scores,
        bytes32 decided
    ) external returns (bool rejected) {
        (bytes20[] memory hashes, uint256 live) = _checkValidators(t, vals, group, validators, seed);
        uint256 size = _checkParticipants(t, group, participants, seed);
        uint256 winner = Settlement.majority(hashes, live); // index + 1, or 0
        // a dispute committee's vector overrides the subgroup's majority
        bytes20 w = decided != bytes32(0) ? bytes20(decided) : winner != 0 ? hashes[winner - 1] : bytes20(0);
        bytes memory accepted = scores;
        uint256 sum = 0;
        if (w != bytes20(0)) {
            require(bytes20(keccak256(scores)) == w, "scores differ from the accepted vector");
            rejected = scores.length == 0;
            (sum, ) = scan(scores, scores.length / 2);
        } else {
            require(scores.length == 0, "no strict majority revealed that vector: give no scores");
            accepted = new bytes(2 * size);
        }
        if (decided == bytes32(0)) {
            // validators that disagree (no majority included) leave the first half of the
            // settling phase for a dispute
            for (uint256 j = 0; j < hashes.length; j++) {
                if (hashes[j] != w && vals[validators[j]].flags & REMOVED == 0) {
                    require(block.timestamp + t.durations[8] / 2 >= t.deadline, "the subgroup's validators disagree: it settles in the second half of the settling phase");
                    break;
                }
            }
        }
        uint64 before = t.totalScore;
        r.scoresHash = keccak256(accepted);
        r.before = before;
        t.totalScore = before + uint64(sum);
        emit SubgroupSettled(id, group, participants, accepted, before);
        _payValidators(t, vals, registry, id, validators, hashes, w);
    }

    /// @notice Check `validators` are exactly the evaluation assignment's validators in slot order,
    ///         each with a non-empty wrapped key (DinTasks.postTestSet).
    function checkEvaluators(Task storage t, mapping(address => Val) storage vals, bytes32 seed, address[] calldata validators, bytes[] calldata wrappedKeys) external view {
        uint256 k = uint256(t.groups) * t.perGroup;
        require(validators.length == k && wrappedKeys.length == k, "wrap K to exactly the evaluation validators");
        bytes32 kv = Assignment.key(seed, Assignment.VALIDATORS);
        for (uint256 j = 0; j < k; j++) {
            uint256 i1 = vals[validators[j]].index1;
            require(i1 != 0 && Assignment.permute(kv, i1 - 1, t.validators) == j, "validator not in this evaluation slot");
            require(wrappedKeys[j].length > 0, "wrapped key is empty");
        }
    }

    /// @notice The score-vector hash a strict majority of evaluation subgroup `group`'s live
    ///         validators revealed (0: none), as `settle` computes it.
    function majorityHash(Task storage t, mapping(address => Val) storage vals, uint256 group, address[] calldata validators, bytes32 seed) external view returns (bytes20) {
        (bytes20[] memory hashes, uint256 live) = _checkValidators(t, vals, group, validators, seed);
        uint256 winner = Settlement.majority(hashes, live);
        return winner == 0 ? bytes20(0) : hashes[winner - 1];
    }

    /// @notice DinTasks.claim once `amount` (> 0) is known: mark the claim, then pay. A validator's
    ///         fee is a network fee: it goes to the validator's pool in the registry
    ///         (`notifyFees`: part burnt, part to public goods, the rest to the validator's
    ///         commission and its delegators' shares); the rest of `amount` to the claimant.
    function pay(Task storage t, Member storage m, Val storage v, ValidatorRegistry registry, IERC20 token, uint256 id, uint256 amount) external {
        uint256 fee;
        if (t.phase == SETTLED_PHASE && v.flags & (SETTLED_FEE | CLAIMED | REMOVED) == SETTLED_FEE) fee = (uint256(t.deposit) * t.feeBps) / SCORE_BPS / t.goodValidators;
        if (m.index1 != 0) m.claimed = true;
        if (v.index1 != 0) v.flags |= CLAIMED;
        if (msg.sender == t.owner) t.ownerClaimed = true;
        emit Claimed(id, msg.sender, amount);
        if (fee > 0) {
            token.forceApprove(address(registry), fee);
            registry.notifyFees(msg.sender, fee);
        }
        if (amount > fee) token.safeTransfer(msg.sender, amount - fee);
    }

    /// @notice What `account` can claim from task `t` now (0 before settlement or once claimed);
    ///         a participant gives its subgroup's settled scores. See DinTasks.claimable.
    function claimable(
        Task storage t,
        Member storage m,
        Val storage v,
        mapping(bytes32 => GroupResult) storage results,
        bool rejected,
        uint256 id,
        bytes32 seed,
        address account,
        bytes calldata scores
    ) external view returns (uint256 amount) {
        uint256 deposit = t.deposit;
        uint256 c = t.contributors;
        uint256 pool = deposit;
        if (t.phase == SETTLED_PHASE) {
            uint256 good = t.goodValidators;
            if (good > 0) {
                uint256 fee = (deposit * t.feeBps) / SCORE_BPS / good;
                pool -= fee * good;
                if (v.flags & (SETTLED_FEE | CLAIMED | REMOVED) == SETTLED_FEE) amount += fee;
            }
            uint256 total = t.totalScore;
            if (total > 0 && !rejected) {
                if (m.index1 != 0 && m.index1 <= t.participants && !m.claimed) amount += _share(t, results, id, seed, m.index1 - 1, pool, total, scores);
                return amount;
            }
        } else if (t.phase != ABANDONED_PHASE) {
            return 0;
        }
        // the contributors' split waits for the end of the records' proof window
        if (block.timestamp < t.deadline) return amount;
        uint256 records = t.records;
        if (m.claimed) {} else if (records != 0) {
            // by accepted training record; by first submission when nobody proved one
            amount += (pool * (m.recordsBefore + m.records)) / records - (pool * m.recordsBefore) / records;
        } else if (m.ordinal != 0) {
            amount += (pool * m.ordinal) / c - (pool * (m.ordinal - 1)) / c;
        }
        if (account == t.owner && !t.ownerClaimed && c == 0) amount += pool;
    }

    /// @dev Sum and maximum of the first `count` scores of a packed vector (big-endian uint16s).
    function scan(bytes calldata scores, uint256 count) internal pure returns (uint256 sum, uint256 top) {
        require(2 * count <= scores.length, "score vector too short");
        assembly ("memory-safe") {
            let end := add(scores.offset, mul(count, 2))
            for { let p := scores.offset } lt(p, end) { p := add(p, 2) } {
                let s := shr(240, calldataload(p))
                sum := add(sum, s)
                if gt(s, top) { top := s }
            }
        }
    }

    /// @dev pool * (before + score) / total - pool * before / total for participant `index`.
    function _share(Task storage t, mapping(bytes32 => GroupResult) storage results, uint256 id, bytes32 seed, uint256 index, uint256 pool, uint256 total, bytes calldata scores) private view returns (uint256) {
        uint256 n = t.participants;
        uint256 g = t.groups;
        uint256 pos = Assignment.permute(Assignment.key(seed, Assignment.PARTICIPANTS), index, n);
        uint256 group = Assignment.groupOf(pos, n, g);
        GroupResult storage r = results[keccak256(abi.encode(id, group))];
        if (r.scoresHash == bytes32(0)) return 0; // not settled by the deadline: scores 0
        require(keccak256(scores) == r.scoresHash, "scores differ from the settled subgroup's");
        uint256 offset = pos - Assignment.groupStart(group, n, g);
        (uint256 upto, ) = scan(scores, offset + 1); // scores of the subgroup up to and including this one
        upto += r.before;
        return (pool * upto) / total - (pool * (upto - uint16(bytes2(scores[2 * offset:])))) / total;
    }

    /// @dev Check `validators` is the subgroup's slot order; their revealed score hashes (0: none, or
    ///      removed from the task) and how many are not removed.
    function _checkValidators(Task storage t, mapping(address => Val) storage vals, uint256 group, address[] calldata validators, bytes32 seed) private view returns (bytes20[] memory hashes, uint256 live) {
        uint256 per = t.perGroup;
        require(validators.length == per, "need the subgroup's validators in slot order");
        hashes = new bytes20[](per);
        bytes32 kv = Assignment.key(seed, Assignment.VALIDATORS);
        for (uint256 j = 0; j < per; j++) {
            Val storage v = vals[validators[j]];
            require(v.index1 != 0 && Assignment.permute(kv, v.index1 - 1, t.validators) == group * per + j, "validator not in this slot");
            if (v.flags & REMOVED != 0) continue; // a removed validator's vector does not count
            live++;
            if (v.revealRound == SCORES) hashes[j] = v.hash;
        }
    }

    /// @dev With an accepted vector `w`, pay who revealed it and slash the rest; without, slash only
    ///      the silent.
    function _payValidators(Task storage t, mapping(address => Val) storage vals, ValidatorRegistry registry, uint256 id, address[] calldata validators, bytes20[] memory hashes, bytes20 w) private {
        for (uint256 j = 0; j < validators.length; j++) {
            address va = validators[j];
            Val storage v = vals[va];
            if (v.flags & REMOVED != 0) continue;
            string memory reason;
            if (hashes[j] == bytes20(0)) {
                reason = "did not reveal scores";
            } else if (w == bytes20(0)) {
                continue; // no majority: no fee, no slash
            } else if (hashes[j] != w) {
                reason = "revealed a minority score vector";
            } else {
                v.flags |= SETTLED_FEE;
                t.goodValidators++;
                continue;
            }
            v.flags = (v.flags | REMOVED) & ~BONDED; // the slash burns this task's bond
            emit ValidatorPenalised(id, va, registry.slash(va, t.slashAmount), reason);
        }
    }

    function _checkParticipants(Task storage t, uint256 group, uint256[] calldata participants, bytes32 seed) private view returns (uint256) {
        uint256 n = t.participants;
        uint256 g = t.groups;
        uint256 start = Assignment.groupStart(group, n, g);
        require(participants.length == Assignment.groupStart(group + 1, n, g) - start, "participant list differs from the subgroup size");
        bytes32 kp = Assignment.key(seed, Assignment.PARTICIPANTS);
        for (uint256 i = 0; i < participants.length; i++) {
            require(Assignment.permute(kp, participants[i], n) == start + i, "participant not at this subgroup position");
        }
        return participants.length;
    }
}
