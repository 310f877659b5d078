// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";
import {ValidatorRegistry} from "./ValidatorRegistry.sol";
import {DinTasks} from "./DinTasks.sol";
import {Assignment} from "./Assignment.sol";
import {Settlement} from "./Settlement.sol";

/// @title DIN disputes: a dishonest majority of a subgroup loses to a larger random committee.
/// @notice Anyone who holds proof that a subgroup's accepted aggregate is wrong (`din verify`
///         recomputes it bit-exactly) files a dispute with a bond (the task's slash amount) until the
///         task settles (once training is over an upheld dispute slashes the liars but replays
///         nothing); an evaluation subgroup's majority score vector is disputed the same way
///         (`fileScores`, round 0) while the task settles. Filing freezes the task. In a later block anyone draws a committee
///         of up to `committee` stakers (an odd number, at least 3) by stake: from the registry's
///         stakers as listed at filing (up to 256 of them, a window picked by a Feistel permutation
///         keyed by the filing block's hash), successive draws without replacement, each staker's
///         chance proportional to its whole bonded stake (self-stake plus delegations) as it stood
///         at the end of the filing block, so stake moved once that hash is known cannot steer the
///         draw. A drawn staker that is not active now, lacks free stake, filed the dispute or
///         served the disputed subgroup in that round is passed over; each member bonds the slash amount. ("CID" below is a subgroup result: the
///         aggregate's CID followed by the 32-byte bitmap of the updates it admitted, as DinTasks'
///         revealAggregate takes it.) Members commit, then reveal the CID they
///         computed (windows: the task's aggregation commit and reveal durations). `resolve` after
///         the reveal window (or once all revealed): a CID revealed by more than half of the committee
///         decides.
///         - Upheld (the committee's CID is not the accepted one): the subgroup's validators that
///           revealed the accepted CID are slashed and removed, the committee's CID becomes the
///           subgroup's majority (the honest minority is not slashable), the bond is returned and the
///           task replays from the model the disputed round started from under a new round number.
///         - Dismissed (the committee revealed the accepted CID): the bond is burnt. The committee
///           is paid by no outcome, so rubber-stamping the accepted CID earns nothing over
///           recomputing it.
///         - No strict majority: the bond goes back to the filer (the committee failed, not the filer:
///           its silent members are slashed) and the accepted result stands.
///         Committee members that did not reveal, or revealed another CID than a strict majority, are
///         slashed; the rest get their bond back. A dispute nobody draws within 256 blocks (the filing
///         block's hash is gone) is void: the bond is burnt, since the filer only froze the task.
contract DinDisputes is ReentrancyGuard {
    using SafeERC20 for IERC20;

    uint256 public immutable committee; // committee size (odd, fixed at deployment); fewer when fewer stakers qualify
    uint256 internal constant MAX_SCAN = 256; // stakers looked at per draw: the draw's gas is bounded

    uint8 internal constant FILED = 1;
    uint8 internal constant DRAWN = 2;
    uint8 internal constant UPHELD = 3;
    uint8 internal constant DISMISSED = 4;
    uint8 internal constant UNDECIDED = 5; // no strict majority, or no committee could be drawn
    uint8 internal constant VOID = 6; // never drawn
    uint8 internal constant AGG_REVEAL = 4; // DinTasks' aggregation reveal phase

    struct Dispute {
        uint256 taskId;
        address filer;
        uint16 round;
        uint24 group;
        uint8 state;
        uint8 size; // committee size
        uint8 committed;
        uint8 revealed;
        bool cutShort; // filed in the disputed round's aggregation reveal phase
        uint64 filedBlock;
        uint32 stakers; // the staker list's length at filing: the draw permutes only those
        uint64 commitEnd;
        uint64 revealEnd;
        uint128 bond; // the filer's bond, and each member's
        bytes32 accepted; // digest of the accepted (disputed) CID
        bytes32 decided; // digest a strict majority of the committee revealed (0: none yet)
    }

    struct Vote {
        bytes20 commitment;
        bool member;
        bool revealed;
        bytes32 digest;
    }

    DinTasks public immutable tasks;
    ValidatorRegistry public immutable registry;
    IERC20 public immutable token;
    uint256 public disputeCount;
    mapping(uint256 => Dispute) internal _disputes;
    mapping(uint256 => address[]) internal _committee;
    mapping(uint256 => mapping(address => Vote)) internal _votes;
    mapping(bytes32 => uint256) internal _tally; // keccak(dispute, digest) -> reveals
    /// @notice Rounds an upheld dispute discarded (task => round => true): they cannot be disputed.
    mapping(uint256 => mapping(uint256 => bool)) public discarded;
    /// @notice Validators of a disputed subgroup that had committed and whose reveal window the
    ///         dispute's filing cut short (task => round => validator => true): once the dispute is
    ///         upheld and the round discarded, "did not reveal" is no offence for them.
    mapping(uint256 => mapping(uint256 => mapping(address => bool))) public revealCutShort;

    event DisputeFiled(uint256 indexed disputeId, uint256 indexed taskId, uint256 round, uint256 group, address filer, bytes acceptedCid, bytes cid, uint256 bond);
    event CommitteeDrawn(uint256 indexed disputeId, uint256 indexed taskId, address[] committee, uint64 commitEnd, uint64 revealEnd);
    event DisputeVoteCommitted(uint256 indexed disputeId, address indexed member);
    event DisputeVoteRevealed(uint256 indexed disputeId, address indexed member, bytes cid);
    event DisputeResolved(uint256 indexed disputeId, uint256 indexed taskId, uint256 round, uint256 group, uint8 outcome, bytes32 decided, uint256 newRound);
    event CommitteeSlashed(uint256 indexed disputeId, address indexed member, uint256 amount, string reason);
    event KeysGranted(uint256 indexed taskId, address indexed granter, bytes cid);

    constructor(DinTasks tasks_, uint256 committee_) {
        require(tasks_.disputes() == address(this), "the task manager names another dispute contract");
        require(committee_ % 2 == 1 && committee_ >= 3 && committee_ <= 255, "committee size must be odd, 3..255");
        committee = committee_;
        tasks = tasks_;
        registry = tasks_.registry();
        token = tasks_.token();
    }

    /// @notice Dispute subgroup `group`'s accepted aggregate (digest `accepted`) of `round` in task
    ///         `taskId`, claiming `cid` is the correct one; escrows the task's slash amount (approve
    ///         first) and freezes the task. Returns the dispute id (ids start at 1).
    function file(uint256 taskId, uint256 round, uint256 group, bytes calldata acceptedCid, bytes calldata cid) external nonReentrant returns (uint256 id) {
        require(round > 0 && cid.length > 0, "round 0 is an evaluation: fileScores; the claimed CID is empty");
        tasks.advance(taskId); // past expired deadlines first
        return _file(taskId, round, group, acceptedCid, cid);
    }

    /// @notice Dispute evaluation subgroup `group`'s majority score vector `acceptedScores` (packed
    ///         as DinTasks.revealScores takes them; `validators`: the subgroup's evaluation
    ///         validators in slot order; with no strict majority, a vector some of them revealed)
    ///         in task `taskId`, claiming `scores` (empty: the test set should be rejected), while
    ///         the task settles and before that subgroup settles. The
    ///         committee recomputes the scores (K and the updates' keys are granted to it); upheld,
    ///         `settle` accepts its vector and slashes every validator of the subgroup that revealed
    ///         another. Returns the dispute id; its round is 0.
    function fileScores(uint256 taskId, uint256 group, bytes calldata acceptedScores, bytes calldata scores, address[] calldata validators) external nonReentrant returns (uint256 id) {
        tasks.advance(taskId);
        bytes20 majority = tasks.scoreMajority(taskId, group, validators);
        // with no majority (a 2-2 split, say) the subgroup would score 0: any vector may be named
        require(majority == bytes20(0) || majority == bytes20(keccak256(acceptedScores)), "those scores are not the subgroup's majority vector");
        return _file(taskId, 0, group, acceptedScores, scores);
    }

    function _file(uint256 taskId, uint256 round, uint256 group, bytes calldata acceptedCid, bytes calldata cid) internal returns (uint256 id) {
        bytes32 accepted = keccak256(acceptedCid);
        uint256 frozen = tasks.dispute(taskId, round, group, accepted, true); // training or settling only, one open dispute per task
        require(!discarded[taskId][round], "that round was discarded by a dispute");
        DinTasks.DisputeView memory t = tasks.disputeView(taskId);
        require(keccak256(cid) != accepted, "the claimed CID is the accepted one");
        id = ++disputeCount;
        Dispute storage d = _disputes[id];
        d.taskId = taskId;
        d.filer = msg.sender;
        d.round = uint16(round);
        d.group = uint24(group);
        d.state = FILED;
        d.cutShort = round > 0 && frozen == ((round << 8) | AGG_REVEAL); // the round's reveals still open
        d.filedBlock = uint64(block.number);
        d.stakers = uint32(registry.stakerCount()); // stakers joining after the filing cannot steer the draw
        d.bond = uint128(t.slashAmount);
        d.accepted = accepted;
        emit DisputeFiled(id, taskId, round, group, msg.sender, acceptedCid, cid, t.slashAmount);
        token.safeTransferFrom(msg.sender, address(this), t.slashAmount);
    }

    /// @notice Draw dispute `id`'s committee (anyone, in a later block than the filing, within 256
    ///         blocks): seeded by the filing block's hash, which nobody knew when filing.
    function draw(uint256 id) external nonReentrant {
        Dispute storage d = _disputes[id];
        require(d.state == FILED, "dispute is not waiting for a committee");
        require(block.number > d.filedBlock, "draw in a later block than the filing");
        bytes32 h = blockhash(d.filedBlock);
        require(h != bytes32(0), "the filing block is too old to draw from: resolve the dispute");
        uint256 taskId = d.taskId;
        DinTasks.DisputeView memory t = tasks.disputeView(taskId);
        bytes32 k = keccak256(abi.encode(h, id));
        bytes32 kv = Assignment.key(tasks.roundSeed(taskId, d.round), Assignment.VALIDATORS);
        uint256 n = d.stakers;
        uint256[] memory at = new uint256[](n < MAX_SCAN ? n : MAX_SCAN);
        for (uint256 i = 0; i < at.length; i++) at[i] = Assignment.permute(k, i, n);
        (address[] memory who, uint256[] memory w) = registry.weightsAt(at, d.filedBlock);
        uint256 total;
        for (uint256 i = 0; i < w.length; i++) total += w[i];
        address[] storage c = _committee[id];
        // successive draws by stake without replacement; a drawn staker that cannot serve now is passed over
        for (uint256 j = 0; c.length < committee && total > 0; j++) {
            uint256 r = uint256(keccak256(abi.encode(k, j))) % total;
            uint256 i;
            while (r >= w[i]) r -= w[i++];
            total -= w[i];
            w[i] = 0;
            if (_eligible(who[i], d, t, kv)) {
                c.push(who[i]);
                _votes[id][who[i]].member = true;
            }
        }
        if (c.length % 2 == 0 && c.length > 0) {
            _votes[id][c[c.length - 1]].member = false;
            c.pop();
        }
        if (c.length < 3) {
            // no committee can outvote a subgroup: the result stands, the filer is not at fault
            d.state = UNDECIDED;
            tasks.dispute(taskId, 0, 0, bytes32(0), false);
            emit DisputeResolved(id, taskId, d.round, d.group, UNDECIDED, bytes32(0), 0);
            token.safeTransfer(d.filer, d.bond);
            return;
        }
        d.state = DRAWN;
        d.size = uint8(c.length);
        d.commitEnd = uint64(block.timestamp + t.commitTime);
        d.revealEnd = uint64(d.commitEnd + t.revealTime);
        emit CommitteeDrawn(id, taskId, c, d.commitEnd, d.revealEnd);
        for (uint256 i = 0; i < c.length; i++) registry.bond(c[i], d.bond);
    }

    function _eligible(address who, Dispute storage d, DinTasks.DisputeView memory t, bytes32 kv) internal view returns (bool) {
        if (who == d.filer) return false;
        // active: self-stake at least the minimum, not leaving, never slashed (tombstoned)
        (uint96 stake,, uint96 bonded,) = registry.validators(who);
        if (!registry.isActive(who) || uint256(stake) - bonded < d.bond) return false;
        uint256 i1 = tasks.validatorState(d.taskId, who).index1;
        if (i1 == 0) return true;
        uint256 pos = Assignment.permute(kv, i1 - 1, t.validators);
        return pos / t.perGroup != d.group || pos >= t.groups * t.perGroup;
    }

    /// @notice Commit keccak256(cid ‖ salt ‖ sender) of the subgroup aggregate you computed (members).
    function commit(uint256 id, bytes32 commitment) external {
        Dispute storage d = _disputes[id];
        require(d.state == DRAWN && block.timestamp < d.commitEnd, "not in the dispute's commit window");
        Vote storage v = _votes[id][msg.sender];
        require(v.member, "not on this dispute's committee");
        require(v.commitment == bytes20(0), "already committed");
        v.commitment = bytes20(commitment);
        d.committed++;
        emit DisputeVoteCommitted(id, msg.sender);
    }

    /// @notice Reveal the committed CID (members; once every member committed or the commit window
    ///         is over, until the reveal window ends).
    function reveal(uint256 id, bytes calldata cid, bytes32 salt) external {
        Dispute storage d = _disputes[id];
        require(d.state == DRAWN && block.timestamp < d.revealEnd && (d.committed == d.size || block.timestamp >= d.commitEnd), "not in the dispute's reveal window");
        Vote storage v = _votes[id][msg.sender];
        require(v.commitment != bytes20(0), "no vote committed");
        require(!v.revealed, "already revealed");
        require(bytes20(keccak256(abi.encodePacked(cid, salt, msg.sender))) == v.commitment, "reveal does not match commitment");
        bytes32 digest = keccak256(cid);
        v.revealed = true;
        v.digest = digest;
        d.revealed++;
        if (++_tally[keccak256(abi.encode(id, digest))] * 2 > d.size) d.decided = digest;
        emit DisputeVoteRevealed(id, msg.sender, cid);
    }

    /// @notice Decide dispute `id` (anyone) after the reveal window, or once every member revealed.
    ///         When upheld, give the disputed subgroup's validators of that round in slot order.
    function resolve(uint256 id, address[] calldata validators) external nonReentrant {
        Dispute storage d = _disputes[id];
        uint256 taskId = d.taskId;
        if (d.state == FILED) {
            require(blockhash(d.filedBlock) == bytes32(0) && block.number > d.filedBlock, "draw the committee first");
            d.state = VOID;
            tasks.dispute(taskId, 0, 0, bytes32(0), false);
            emit DisputeResolved(id, taskId, d.round, d.group, VOID, bytes32(0), 0);
            ERC20Burnable(address(token)).burn(d.bond);
            return;
        }
        require(d.state == DRAWN, "dispute is not open");
        require(block.timestamp >= d.revealEnd || d.revealed == d.size, "the committee is still voting");
        bytes32 decided = d.decided;
        uint256 newRound;
        if (decided == bytes32(0)) {
            d.state = UNDECIDED;
            tasks.dispute(taskId, 0, 0, bytes32(0), false);
        } else if (decided == d.accepted) {
            d.state = DISMISSED;
            tasks.dispute(taskId, 0, 0, bytes32(0), false);
        } else if (d.round == 0) {
            d.state = UPHELD; // settle takes the committee's scores and slashes the subgroup's liars
            tasks.dispute(taskId, 0, d.group, decided, false);
        } else {
            d.state = UPHELD;
            _checkSlots(taskId, d, validators);
            uint256 before = tasks.dispute(taskId, d.round, d.group, decided, false); // the committee's CID is the majority now
            tasks.advance(taskId); // replay: a new round from the model the disputed round started from
            newRound = tasks.disputeView(taskId).round;
            if (newRound == before) newRound = 0; // training was over: nothing replays
            for (uint256 r = d.round; r < newRound; r++) discarded[taskId][r] = true;
            if (d.cutShort && newRound != 0) {
                // filed before the subgroup's honest validators could reveal: those that committed
                // are not slashable for the reveal the filing cut short
                for (uint256 j = 0; j < validators.length; j++) {
                    if (tasks.validatorState(taskId, validators[j]).commitRound == d.round) revealCutShort[taskId][d.round][validators[j]] = true;
                }
            }
            for (uint256 j = 0; j < validators.length; j++) {
                // slashes and removes whoever revealed anything but the committee's CID (or nothing);
                // reverts (skipped) for the honest minority and for validators already removed. Enough
                // gas for each call, so a resolver cannot starve the slashes into failing.
                require(gasleft() > 300_000, "resolve needs more gas");
                try tasks.slashAggregator(taskId, d.round, validators[j], decided) {} catch {}
            }
        }
        emit DisputeResolved(id, taskId, d.round, d.group, d.state, decided, newRound);
        _settleCommittee(id, d, decided);
        if (d.state == DISMISSED) ERC20Burnable(address(token)).burn(d.bond);
        else token.safeTransfer(d.filer, d.bond);
    }

    /// @dev `validators` is the disputed subgroup's validators of that round, in slot order.
    function _checkSlots(uint256 taskId, Dispute storage d, address[] calldata validators) internal view {
        DinTasks.DisputeView memory t = tasks.disputeView(taskId);
        require(validators.length == t.perGroup, "need the subgroup's validators in slot order");
        bytes32 kv = Assignment.key(tasks.roundSeed(taskId, d.round), Assignment.VALIDATORS);
        for (uint256 j = 0; j < validators.length; j++) {
            uint256 i1 = tasks.validatorState(taskId, validators[j]).index1;
            require(i1 != 0 && Assignment.permute(kv, i1 - 1, t.validators) == uint256(d.group) * t.perGroup + j, "validator not in this slot");
        }
    }

    /// @dev Slash members that did not reveal or revealed another CID than the strict majority;
    ///      release the rest. Members earn nothing either way, so no outcome pays more than another
    ///      and copying the accepted CID without recomputing it gains nothing.
    function _settleCommittee(uint256 id, Dispute storage d, bytes32 decided) internal {
        address[] storage c = _committee[id];
        for (uint256 i = 0; i < c.length; i++) {
            address who = c[i];
            Vote storage v = _votes[id][who];
            if (!v.revealed) {
                emit CommitteeSlashed(id, who, registry.slash(who, d.bond), "did not reveal its dispute vote");
            } else if (decided != bytes32(0) && v.digest != decided) {
                emit CommitteeSlashed(id, who, registry.slash(who, d.bond), "revealed a minority dispute vote");
            } else {
                registry.unbond(who, d.bond);
            }
        }
    }

    // ------------------------------------------------------------------ reads

    struct DisputeView {
        uint256 taskId;
        address filer;
        uint256 round;
        uint256 group;
        uint8 state;
        uint256 size;
        uint256 committed;
        uint256 revealed;
        uint256 filedBlock;
        uint64 commitEnd;
        uint64 revealEnd;
        uint256 bond;
        bytes32 accepted;
        bytes32 decided;
        address[] committee;
    }

    /// @notice Announce a key grant for task `taskId`: `cid` names a din/key-grant/v1 document in
    ///         the content store that wraps sealed updates' keys to the readers who need them
    ///         (evaluation validators, a dispute committee). Anyone may announce; readers use only
    ///         keys that match the update's key check, so a bogus grant costs its sender gas and
    ///         nobody else anything.
    function grantKeys(uint256 taskId, bytes calldata cid) external {
        require(cid.length > 0 && cid.length <= 128, "grant CID must be 1..128 bytes");
        emit KeysGranted(taskId, msg.sender, cid);
    }

    /// @notice Dispute `id` and its committee (state 1 filed, 2 drawn, 3 upheld, 4 dismissed,
    ///         5 undecided, 6 void).
    function dispute(uint256 id) external view returns (DisputeView memory r) {
        Dispute storage d = _disputes[id];
        require(d.state != 0, "no such dispute");
        r.taskId = d.taskId;
        r.filer = d.filer;
        r.round = d.round;
        r.group = d.group;
        r.state = d.state;
        r.size = d.size;
        r.committed = d.committed;
        r.revealed = d.revealed;
        r.filedBlock = d.filedBlock;
        r.commitEnd = d.commitEnd;
        r.revealEnd = d.revealEnd;
        r.bond = d.bond;
        r.accepted = d.accepted;
        r.decided = d.decided;
        r.committee = _committee[id];
    }

    /// @notice Position of `index` among n under `seed` (population 0: participants, 1: validators),
    ///         as the contracts compute it; for off-chain checks of the assignment.
    function assignmentPosition(bytes32 seed, uint256 population, uint256 index, uint256 n) external pure returns (uint256) {
        return Assignment.permute(Assignment.key(seed, population), index, n);
    }

    /// @notice The strict-majority winner among revealed score-vector hashes (bytes20(0) = not
    ///         revealed) exactly as `settle` computes it: index + 1 of a holder, or 0 for none.
    function scoreMajority(bytes20[] calldata hashes, uint256 live) external pure returns (uint256) {
        return Settlement.majority(hashes, live);
    }
}
