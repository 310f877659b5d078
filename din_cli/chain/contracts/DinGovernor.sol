// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Checkpoints} from "@openzeppelin/contracts/utils/structs/Checkpoints.sol";
import {Member, Val, REMOVED, SETTLED_FEE, SETTLED_PHASE} from "./DinTypes.sol";

interface ITaskRecords {
    function taskWords(uint256 id) external view returns (bytes32[16] memory);
    function member(uint256 id, address account) external view returns (Member memory);
    function validatorState(uint256 id, address account) external view returns (Val memory);
}

/// @title DIN governance: DIN Proposal Protocols (DPPs) decided by non-coin, quadratic credit votes.
/// @notice Voting power is not token balance. Accounts earn *credits* for work the task manager
///         records as done honestly (`claimCredits`, once per task and role): a participant that was
///         paid for its contribution, a validator that earned its fee without being slashed, the owner
///         of a task that settled with at least `minOwnerDeposit` deposited. Credits are checkpointed
///         by block, so a vote counts the credits held when its proposal opened.
///
///         Anyone with `proposalThreshold` credits proposes: a content-store CID of the text and, for
///         parameter changes, the on-chain actions (targets and calldata). Voting lasts
///         `votingPeriod` seconds; casting n votes on a proposal costs n^2 of the voter's credits for
///         that proposal (quadratic voting: a voter with C credits casts at most floor(sqrt C) votes).
///         A proposal passes with more votes for than against and at least `quorumVotes` votes cast.
///         A passed proposal with actions is queued and runs after `timelockDelay` seconds (anyone
///         executes it, within `gracePeriod`); every economic parameter of the registry (inflation
///         curve, fee shares, slash amount, minimum stake) can only change this way. A proposal
///         without actions is a signal: passing is its outcome. The governor's own rules change only
///         through a proposal too.
contract DinGovernor {
    using Checkpoints for Checkpoints.Trace208;

    uint256 public constant CREDITS_PER_ROLE = 100; // per task and role done honestly
    uint8 internal constant PARTICIPANT = 1;
    uint8 internal constant VALIDATOR = 2;
    uint8 internal constant OWNER = 4;

    enum State {
        None,
        Active,
        Defeated,
        Succeeded,
        Queued,
        Executed,
        Expired
    }

    struct Proposal {
        address proposer;
        uint48 snapshot; // credits are counted as of this block
        uint64 voteEnd;
        uint64 eta; // queued: when it may execute
        bool executed;
        bool hasActions;
        uint128 forVotes;
        uint128 againstVotes;
        bytes32 actionsHash;
    }

    ITaskRecords public immutable tasks;
    uint256 public immutable minOwnerDeposit;

    uint64 public votingPeriod;
    uint64 public timelockDelay;
    uint64 public gracePeriod;
    uint128 public quorumVotes;
    uint128 public proposalThreshold;

    uint256 public proposalCount;
    mapping(uint256 => Proposal) public proposals;
    /// @dev votes cast per proposal and voter (the sign is the side: positive for)
    mapping(uint256 => mapping(address => int256)) public votesOf;
    mapping(uint256 => mapping(address => uint8)) public creditedRoles; // task => account => roles
    mapping(address => Checkpoints.Trace208) internal _credits;
    uint256 public totalCredits;

    event CreditsEarned(address indexed account, uint256 indexed taskId, uint8 roles, uint256 credits, uint256 total);
    event ProposalCreated(uint256 indexed id, address indexed proposer, bytes cid, address[] targets, bytes[] calldatas, uint256 snapshot, uint256 voteEnd);
    event VoteCast(uint256 indexed id, address indexed voter, bool support, uint256 votes, uint256 cost);
    event ProposalQueued(uint256 indexed id, uint256 eta);
    event ProposalExecuted(uint256 indexed id);
    event RulesChanged(uint256 votingPeriod, uint256 timelockDelay, uint256 gracePeriod, uint256 quorumVotes, uint256 proposalThreshold);

    constructor(ITaskRecords tasks_, uint256 minOwnerDeposit_, uint64 votingPeriod_, uint64 timelockDelay_, uint64 gracePeriod_, uint128 quorumVotes_, uint128 proposalThreshold_) {
        tasks = tasks_;
        minOwnerDeposit = minOwnerDeposit_;
        _setRules(votingPeriod_, timelockDelay_, gracePeriod_, quorumVotes_, proposalThreshold_);
    }

    // ------------------------------------------------------------------ credits

    /// @notice Earn the credits of every role you did honestly in settled task `taskId` (once each).
    function claimCredits(uint256 taskId) external returns (uint256 credits) {
        bytes32[16] memory w = tasks.taskWords(taskId);
        require(uint8(uint256(w[5])) == SETTLED_PHASE, "task is not settled");
        uint8 roles;
        if (tasks.member(taskId, msg.sender).claimed) roles |= PARTICIPANT;
        Val memory v = tasks.validatorState(taskId, msg.sender);
        if (v.flags & SETTLED_FEE != 0 && v.flags & REMOVED == 0) roles |= VALIDATOR;
        if (address(uint160(uint256(w[0]))) == msg.sender && uint128(uint256(w[7])) >= minOwnerDeposit) roles |= OWNER;
        uint8 had = creditedRoles[taskId][msg.sender];
        uint8 fresh = roles & ~had;
        require(fresh != 0, roles == 0 ? "no honest role in this task earns credits" : "credits already claimed");
        creditedRoles[taskId][msg.sender] = had | fresh;
        uint256 n = (fresh & 1) + ((fresh >> 1) & 1) + ((fresh >> 2) & 1);
        credits = n * CREDITS_PER_ROLE;
        Checkpoints.Trace208 storage c = _credits[msg.sender];
        uint256 total = c.latest() + credits;
        c.push(uint48(block.number), uint208(total));
        totalCredits += credits;
        emit CreditsEarned(msg.sender, taskId, fresh, credits, total);
    }

    /// @notice `account`'s credits now.
    function creditsOf(address account) external view returns (uint256) {
        return _credits[account].latest();
    }

    /// @notice `account`'s credits at the end of block `blockNumber` (a past block).
    function creditsAt(address account, uint256 blockNumber) public view returns (uint256) {
        require(blockNumber < block.number, "block not yet mined");
        return _credits[account].upperLookupRecent(uint48(blockNumber));
    }

    // ------------------------------------------------------------------ proposals

    /// @notice Propose `cid` (the text in the content store) with `targets[i].call(calldatas[i])` as
    ///         its actions (none: a signal). Returns the proposal id (from 1).
    function propose(bytes calldata cid, address[] calldata targets, bytes[] calldata calldatas) external returns (uint256 id) {
        require(cid.length > 0, "proposal has no text CID");
        require(targets.length == calldatas.length, "targets and calldatas differ in length");
        uint48 snapshot = uint48(block.number - 1);
        require(creditsAt(msg.sender, snapshot) >= proposalThreshold, "credits below the proposal threshold");
        id = ++proposalCount;
        Proposal storage p = proposals[id];
        p.proposer = msg.sender;
        p.snapshot = snapshot;
        p.voteEnd = uint64(block.timestamp) + votingPeriod;
        p.hasActions = targets.length > 0;
        p.actionsHash = keccak256(abi.encode(targets, calldatas));
        emit ProposalCreated(id, msg.sender, cid, targets, calldatas, snapshot, p.voteEnd);
    }

    /// @notice Bring your votes on proposal `id` to `votes` on side `support` (for or against); the
    ///         total costs votes^2 of the credits you held at the proposal's snapshot. You can add
    ///         votes later, not change sides.
    function vote(uint256 id, bool support, uint128 votes) external {
        Proposal storage p = proposals[id];
        require(state(id) == State.Active, "proposal is not open for votes");
        int256 cast = votesOf[id][msg.sender];
        require(cast == 0 || (cast > 0) == support, "cannot change sides");
        uint256 before = uint256(cast >= 0 ? cast : -cast);
        require(votes > before, "votes must exceed those already cast");
        uint256 cost = uint256(votes) * votes;
        require(cost <= creditsAt(msg.sender, p.snapshot), "votes^2 above your credits at the snapshot");
        votesOf[id][msg.sender] = support ? int256(uint256(votes)) : -int256(uint256(votes));
        uint128 added = uint128(votes - before);
        if (support) p.forVotes += added;
        else p.againstVotes += added;
        emit VoteCast(id, msg.sender, support, votes, cost);
    }

    /// @notice Queue passed proposal `id` (anyone): it may run `timelockDelay` seconds from now.
    function queue(uint256 id) external {
        require(state(id) == State.Succeeded, "proposal has not passed");
        Proposal storage p = proposals[id];
        require(p.hasActions, "a signal proposal has nothing to execute");
        p.eta = uint64(block.timestamp) + timelockDelay;
        emit ProposalQueued(id, p.eta);
    }

    /// @notice Run queued proposal `id`'s actions (anyone, after its timelock, within the grace
    ///         period); all or nothing.
    function execute(uint256 id, address[] calldata targets, bytes[] calldata calldatas) external {
        Proposal storage p = proposals[id];
        require(state(id) == State.Queued, "proposal is not queued");
        require(block.timestamp >= p.eta, "timelock not over");
        require(keccak256(abi.encode(targets, calldatas)) == p.actionsHash, "actions differ from the proposal's");
        p.executed = true;
        for (uint256 i = 0; i < targets.length; i++) {
            (bool ok, bytes memory ret) = targets[i].call(calldatas[i]);
            if (!ok) {
                assembly ("memory-safe") {
                    revert(add(ret, 32), mload(ret))
                }
            }
        }
        emit ProposalExecuted(id);
    }

    /// @notice Where proposal `id` stands.
    function state(uint256 id) public view returns (State) {
        Proposal storage p = proposals[id];
        if (p.proposer == address(0)) return State.None;
        if (p.executed) return State.Executed;
        if (block.timestamp < p.voteEnd) return State.Active;
        if (p.forVotes <= p.againstVotes || uint256(p.forVotes) + p.againstVotes < quorumVotes) return State.Defeated;
        if (p.eta == 0) return State.Succeeded;
        if (block.timestamp >= uint256(p.eta) + gracePeriod) return State.Expired;
        return State.Queued;
    }

    /// @notice Change the governor's own rules (only through a proposal). Bounds: voting period and
    ///         grace period at least an hour, timelock at least an hour, quorum at least one vote.
    function setRules(uint64 votingPeriod_, uint64 timelockDelay_, uint64 gracePeriod_, uint128 quorumVotes_, uint128 proposalThreshold_) external {
        require(msg.sender == address(this), "only a proposal changes the rules");
        _setRules(votingPeriod_, timelockDelay_, gracePeriod_, quorumVotes_, proposalThreshold_);
    }

    function _setRules(uint64 votingPeriod_, uint64 timelockDelay_, uint64 gracePeriod_, uint128 quorumVotes_, uint128 proposalThreshold_) internal {
        require(votingPeriod_ >= 3600 && gracePeriod_ >= 3600 && timelockDelay_ >= 3600, "periods must be at least an hour");
        require(quorumVotes_ > 0, "quorum must be at least one vote");
        votingPeriod = votingPeriod_;
        timelockDelay = timelockDelay_;
        gracePeriod = gracePeriod_;
        quorumVotes = quorumVotes_;
        proposalThreshold = proposalThreshold_;
        emit RulesChanged(votingPeriod_, timelockDelay_, gracePeriod_, quorumVotes_, proposalThreshold_);
    }
}
