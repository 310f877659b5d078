// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ValidatorRegistry} from "./ValidatorRegistry.sol";
import {Assignment} from "./Assignment.sol";
import {DinPayouts} from "./DinPayouts.sol";
import {Task, Member, GroupResult, GroupVotes, Val, isAccepted, voteCount, SCORE_BPS, SCORES, REMOVED, SETTLED_FEE, CLAIMED, BONDED} from "./DinTypes.sol";

/// @title DIN tasks: the "intelligence contract" of every federated-learning task, one id per task.
/// @notice Lifecycle of a task (phase numbers in brackets):
///   Joining [1] -> per round: Training [2] -> AggCommit [3] -> AggReveal [4] -> Global [5]
///   -> after the last round: TestSet [6] -> ScoreCommit [7] -> ScoreReveal [8] -> Settling [9]
///   -> Settled [10] (claims). Abandoned [11] is the refund path (without a test set, after a
///   window of the settling duration in which participants prove their records). Settling has a deadline too:
///   subgroups nobody settled by then score 0 (settle is permissionless).
///   Every phase ends at its deadline OR as soon as everyone expected has acted; any call
///   (including the permissionless `advance`) first moves a task past expired deadlines.
///   CIDs are stored as keccak256 digests; the full CID bytes travel in events.
contract DinTasks is ReentrancyGuard {
    using SafeERC20 for IERC20;

    uint8 internal constant JOINING = 1;
    uint8 internal constant TRAINING = 2;
    uint8 internal constant AGG_COMMIT = 3;
    uint8 internal constant AGG_REVEAL = 4;
    uint8 internal constant GLOBAL = 5;
    uint8 internal constant TEST_SET = 6;
    uint8 internal constant SCORE_COMMIT = 7;
    uint8 internal constant SCORE_REVEAL = 8;
    uint8 internal constant SETTLING = 9;
    uint8 internal constant SETTLED = 10;
    uint8 internal constant ABANDONED = 11;
    uint8 internal constant DISPUTED = 12; // frozen by an open dispute: no phase's action applies, no deadline runs

    uint256 internal constant EVAL_ROUND = 0; // seed slot of the evaluation assignment
    uint256 public constant SCORE_SCALE = SCORE_BPS; // scores are basis points
    uint256 internal constant MAX_PER_GROUP = 64; // validators per subgroup (bits of GroupVotes.mask)
    uint256 internal constant MAX_SUBGROUP = 256; // participants per subgroup: settle stays far below 10M gas

    struct TaskParams {
        bytes genesisCid;
        bytes32 arch; // model architecture id, ASCII left-aligned
        uint256 deposit; // reward in DIN (approve first)
        uint32 subgroupSize; // participants per subgroup
        uint32 validatorsPerSubgroup;
        uint16 maxRounds;
        uint16 feeBps; // validators' share of the deposit
        uint128 slashAmount; // at most the registry's minimum stake
        uint32 maxSamples; // cap on one participant's FedAvg weight (declared samples above it count as this)
        uint8 metric; // 0 accuracy, 1 macro F1, 2 exp(-cross-entropy): every evaluation validator scores with it
        uint8 rule; // 0 weighted mean, 1 norm-bounded mean, 2 trimmed mean, 3 median: every subgroup aggregates so
        uint32 ruleParam; // millionths: norm-bounded's L2 bound (1..2048e6), the trimmed mean's fraction (< 0.5e6)
        uint8 scoring; // 0 GTG-Shapley, 1 exact Shapley (subgroups of at most 16), 2 leave-one-out, 3 each latest update alone
        uint32 dpClip; // millionths: DP's L2 bound on each update's distance from the start (0: no DP)
        uint32 dpNoise; // millionths: DP's Gaussian noise multiplier (0 < z <= 1000 with DP)
        uint8 dpDelta; // DP's delta = 10^-dpDelta (1..30 with DP)
        uint8 privacy; // who reads participants' updates: 0 open (anyone), 1 sealed (the validators who must), 2 secagg (nobody: only subgroup sums; rule 0, ruleParam = Shamir threshold, millionths of a participant's neighbours, > 0.5e6)
        bytes32 testSetHash; // sha256 of the plaintext test set the owner will post (its commitment)
        uint32[9] durations; // seconds: join, train, aggCommit, aggReveal, global, testSet, scoreCommit, scoreReveal, settle
    }

    ValidatorRegistry public immutable registry;
    address public immutable disputes; // DinDisputes (deployed right after this contract)
    IERC20 public immutable token;
    uint256 public taskCount;

    mapping(uint256 => Task) internal _tasks;
    mapping(uint256 => mapping(address => Member)) internal _members;
    mapping(uint256 => mapping(address => Val)) internal _vals;
    /// @dev Round seeds (round 0 = evaluation). Round 1's reads PENDING | start block until the block
    ///      that started the round is sealed and the next call draws it (`_drawFirst`); no hash
    ///      has bits 64..254 all zero, so the two cannot be confused.
    mapping(uint256 => mapping(uint256 => bytes32)) public roundSeed;
    uint256 internal constant PENDING = 1 << 255;
    /// @dev keccak(task, round, group, CID digest) -> reveals (group = 2^256-1: global attestations)
    mapping(bytes32 => uint256) public votes;
    mapping(bytes32 => GroupResult) public groupResults; // keccak(task, group)
    /// @dev True once a subgroup's strict majority rejected the test set (see `settle`); SubgroupSettled
    ///      with no scores says it in the log.
    mapping(uint256 => bool) internal _rejected;
    /// @dev Each subgroup's votes in each round (DinTypes.GroupVotes), keyed keccak(task, round, group).
    mapping(bytes32 => GroupVotes) internal _groupVotes;
    /// @dev keccak(task, round, validator) -> its slot in that round was counted out by markGone.
    mapping(bytes32 => bool) internal _gone;
    /// @dev keccak(task, round, validator) -> a revealed CID digest other than its subgroup's first.
    mapping(bytes32 => bytes32) internal _deviant;
    /// @dev Disputes (DinDisputes): the model each round started from, the time a task was frozen
    ///      by an open dispute and the phase it was in (time << 8 | phase), and the aggregate a dispute
    ///      committee decided for a subgroup it overturned (keyed like _groupVotes).
    mapping(uint256 => mapping(uint256 => bytes32)) internal _roundModel;
    mapping(uint256 => uint256) internal _frozen;
    mapping(bytes32 => bytes32) internal _corrected;

    event TaskCreated(uint256 indexed taskId, address indexed owner, bytes genesisCid, bytes32 arch, uint256 deposit, uint256 subgroupSize, uint256 validatorsPerSubgroup, uint256 maxRounds, uint64 joinDeadline);
    event ParticipantJoined(uint256 indexed taskId, address indexed participant, uint256 index, bytes32 hpkeKey);
    event ValidatorRegistered(uint256 indexed taskId, address indexed validator, uint256 index);
    event PhaseChanged(uint256 indexed taskId, uint256 round, uint8 phase, uint64 deadline);
    event RoundStarted(uint256 indexed taskId, uint256 indexed round, bytes32 model, uint256 participants, uint256 validators, uint256 groups, uint256 perGroup);
    event UpdateSubmitted(uint256 indexed taskId, uint256 indexed round, address indexed participant, uint256 index, bytes cid);
    event AggregateCommitted(uint256 indexed taskId, uint256 indexed round, address indexed validator, uint256 group);
    event AggregateRevealed(uint256 indexed taskId, uint256 indexed round, address indexed validator, uint256 group, bytes cid);
    event SubgroupAccepted(uint256 indexed taskId, uint256 indexed round, uint256 group, bytes cid);
    event GlobalModelPosted(uint256 indexed taskId, uint256 indexed round, bytes cid);
    event GlobalModelAttested(uint256 indexed taskId, uint256 indexed round, address indexed validator);
    event GlobalModelAccepted(uint256 indexed taskId, uint256 indexed round, bytes cid);
    event FinalRoundSignalled(uint256 indexed taskId, uint256 round);
    event EvaluationStarted(uint256 indexed taskId, bytes32 seed);
    event SeedDrawn(uint256 indexed taskId, uint256 indexed round, bytes32 seed);
    event TestSetPosted(uint256 indexed taskId, bytes cid, address[] validators, bytes[] wrappedKeys);
    event ScoresCommitted(uint256 indexed taskId, address indexed validator, uint256 group);
    event ScoresRevealed(uint256 indexed taskId, address indexed validator, uint256 group, bytes scores);
    event TaskAbandoned(uint256 indexed taskId, string reason);
    event Claimed(uint256 indexed taskId, address indexed account, uint256 amount);
    event BondReleased(uint256 indexed taskId, address indexed validator);
    event ParticipantsCapped(uint256 indexed taskId, uint256 participants);
    event SlotGone(uint256 indexed taskId, uint256 indexed round, address indexed validator, uint256 group);

    constructor(ValidatorRegistry registry_, address disputes_) {
        registry = registry_;
        disputes = disputes_;
        token = registry_.token();
    }

    // ------------------------------------------------------------------ creation and joining

    /// @notice Create a task and deposit its reward; returns the task id (ids start at 1).
    function createTask(TaskParams calldata p) external nonReentrant returns (uint256 id) {
        require(p.genesisCid.length > 0, "genesis CID is empty");
        require(p.testSetHash != bytes32(0), "test set hash is empty");
        require(p.deposit > 0 && p.deposit < type(uint128).max, "deposit must be positive");
        require(p.subgroupSize > 0, "subgroup size must be positive");
        require(p.subgroupSize <= MAX_SUBGROUP, "at most 256 participants per subgroup");
        require(p.validatorsPerSubgroup > 0, "validators per subgroup must be positive");
        require(p.maxRounds > 0, "max rounds must be positive");
        require(p.feeBps <= SCORE_SCALE, "basis points above 10000");
        require(p.validatorsPerSubgroup <= MAX_PER_GROUP, "at most 64 validators per subgroup");
        require(p.slashAmount > 0 && p.slashAmount <= registry.minStake(), "slash amount must be 1..minimum stake");
        require(p.maxSamples > 0, "max samples must be positive");
        require(p.metric <= 2, "metric must be 0 (accuracy), 1 (f1) or 2 (loss)");
        require(p.rule == 1 ? p.ruleParam > 0 && p.ruleParam <= 2048e6 : p.rule == 2 ? p.ruleParam < 5e5 : p.rule <= 3 && (p.ruleParam == 0 || p.privacy == 2), "bad aggregation rule or parameter");
        require(p.scoring <= 3 && (p.scoring != 1 || p.subgroupSize <= 16), "scoring must be 0..3; exact Shapley needs subgroups of at most 16");
        require(p.dpClip == 0 ? p.dpNoise == 0 && p.dpDelta == 0 : p.dpClip <= 2048e6 && p.dpNoise > 0 && p.dpNoise <= 1000e6 && p.dpDelta > 0 && p.dpDelta <= 30, "bad differential privacy parameters");
        require(p.privacy < 2 || p.privacy == 2 && p.rule == 0 && p.ruleParam > 5e5 && p.ruleParam <= 1e6, "bad privacy mode");
        for (uint256 i = 0; i < 9; i++) require(p.durations[i] > 0, "phase durations must be positive");
        id = ++taskCount;
        Task storage t = _tasks[id];
        t.owner = msg.sender;
        t.subgroupSize = p.subgroupSize;
        t.validatorsPerSubgroup = p.validatorsPerSubgroup;
        t.maxRounds = p.maxRounds;
        t.feeBps = p.feeBps;
        t.slashAmount = p.slashAmount;
        t.maxSamples = p.maxSamples;
        t.metric = p.metric;
        t.rule = p.rule;
        t.ruleParam = p.ruleParam;
        t.scoring = p.scoring;
        if (p.dpClip != 0) (t.dpClip, t.dpNoise, t.dpDelta) = (p.dpClip, p.dpNoise, p.dpDelta);
        t.privacy = p.privacy;
        t.durations = p.durations;
        t.phase = JOINING;
        t.lastRound = p.maxRounds;
        uint64 deadline = uint64(block.timestamp) + p.durations[0];
        t.deadline = deadline;
        t.deposit = uint128(p.deposit);
        t.arch = p.arch;
        t.model = keccak256(p.genesisCid);
        t.testSetHash = p.testSetHash;
        t.entropy = keccak256(abi.encode(blockhash(block.number - 1), id)); // non-zero: reveals pay no fresh slot
        emit TaskCreated(id, msg.sender, p.genesisCid, p.arch, p.deposit, p.subgroupSize, p.validatorsPerSubgroup, p.maxRounds, deadline);
        token.safeTransferFrom(msg.sender, address(this), p.deposit);
    }

    /// @notice Opt in to task `id` as a participant, publishing an HPKE public key.
    function joinTask(uint256 id, bytes32 hpkeKey) external {
        Task storage t = _sync(id);
        require(t.phase == JOINING, "task is not open for joining");
        require(msg.sender != t.owner, "the model owner cannot participate");
        require(_vals[id][msg.sender].index1 == 0, "validators cannot participate");
        Member storage m = _members[id][msg.sender];
        require(m.index1 == 0, "already joined");
        uint24 index = t.participants;
        require(index < type(uint24).max, "task is full");
        t.participants = index + 1;
        m.index1 = index + 1;
        emit ParticipantJoined(id, msg.sender, index, hpkeKey);
    }

    /// @notice Register as a validator of task `id`: bonds the task's slash amount of your free stake
    ///         in the registry until the task is settled or abandoned (needs an active stake).
    function registerValidator(uint256 id) external {
        Task storage t = _sync(id);
        require(t.phase == JOINING, "task is not open for registration");
        require(msg.sender != t.owner, "the model owner cannot validate");
        require(_members[id][msg.sender].index1 == 0, "participants cannot validate");
        Val storage v = _vals[id][msg.sender];
        require(v.index1 == 0, "already registered");
        uint16 index = t.validators;
        require(index < type(uint16).max - 1, "task has all the validators it can take");
        t.validators = index + 1;
        v.index1 = index + 1;
        v.flags = BONDED;
        emit ValidatorRegistered(id, msg.sender, index);
        registry.bond(msg.sender, t.slashAmount); // reverts unless active with enough free stake
    }

    // ------------------------------------------------------------------ phases

    /// @notice Start round 1 before the join deadline (model owner; needs a participant and enough
    ///         validators for one per subgroup). After the deadline anyone's call starts it.
    function startRound(uint256 id) external {
        Task storage t = _tasks[id];
        require(t.phase != 0, "no such task");
        require(t.phase == JOINING, "task already started");
        _catchUp(id, t);
        if (t.phase != JOINING) return; // the join deadline had passed
        require(msg.sender == t.owner, "only the model owner starts before the join deadline");
        require(t.participants > 0, "no participants joined yet");
        require(t.validators > 0, "no validators registered yet");
        _advance(id, t);
    }

    /// @notice Move task `id` past every expired deadline (anyone may call).
    function advance(uint256 id) external {
        _sync(id);
    }

    /// @notice Make the round in progress the last one (model owner).
    function signalFinalRound(uint256 id) external {
        Task storage t = _sync(id);
        require(msg.sender == t.owner, "only the model owner");
        require(t.phase >= JOINING && t.phase <= GLOBAL, "training is over");
        uint16 last = t.round == 0 ? 1 : t.round;
        require(t.lastRound > last, "the current round is already the last one");
        t.lastRound = last;
        emit FinalRoundSignalled(id, last);
    }

    // ------------------------------------------------------------------ training and aggregation

    /// @notice Submit this round's update CID (participants, once per round, before the deadline).
    function submitUpdate(uint256 id, bytes calldata cid) external {
        Task storage t = _sync(id);
        require(t.phase == TRAINING, "not in the training phase");
        Member storage m = _members[id][msg.sender];
        require(m.index1 != 0 && m.index1 <= t.participants, "not a participant of this task");
        uint16 round = t.round;
        require(m.lastRound < round, "update already submitted this round");
        require(cid.length > 0, "CID is empty");
        m.lastRound = round;
        if (m.ordinal == 0) m.ordinal = ++t.contributors;
        uint24 acted = ++t.acted;
        emit UpdateSubmitted(id, round, msg.sender, m.index1 - 1, cid);
        if (acted == t.participants) _advance(id, t);
    }

    /// @notice Commit keccak256(result ‖ salt ‖ sender) of your subgroup's result (assigned validators;
    ///         the first 160 bits are kept). A result is the aggregate's CID followed by the 32-byte
    ///         bitmap of the subgroup positions whose update it admitted (bit k = position k), so a
    ///         majority agrees on both, and participants prove their records with it (proveRecord).
    function commitAggregate(uint256 id, bytes32 commitment) external {
        Task storage t = _sync(id);
        require(t.phase == AGG_COMMIT, "not in the aggregation commit phase");
        uint16 round = t.round;
        Val storage v = _vals[id][msg.sender];
        require(v.commitRound < round, "aggregate already committed this round");
        uint256 pos = _validatorPos(id, t, v, round);
        v.commitRound = round;
        v.hash = bytes20(commitment);
        v.pos = uint24(pos);
        emit AggregateCommitted(id, round, msg.sender, pos / t.perGroup);
        uint256 slots = uint256(t.groups) * t.perGroup;
        uint256 c = ++t.committed;
        // the last commit of a round without counted-out slots does not read goneSlots (a cold slot)
        if (c == slots || c + t.goneSlots == slots) _advance(id, t);
    }

    /// @notice Reveal the result committed to (`cid` is the result bytes); a result revealed by a
    ///         strict majority is accepted.
    function revealAggregate(uint256 id, bytes calldata cid, bytes32 salt) external {
        Task storage t = _sync(id);
        require(t.phase == AGG_REVEAL, "not in the aggregation reveal phase");
        uint16 round = t.round;
        Val storage v = _vals[id][msg.sender];
        require(v.commitRound == round, "no aggregate committed this round");
        require(v.flags & REMOVED == 0, "validator was slashed out of this task");
        require(bytes20(keccak256(abi.encodePacked(cid, salt, msg.sender))) == v.hash, "reveal does not match commitment");
        bytes32 digest = keccak256(cid);
        t.entropy ^= keccak256(abi.encode(salt, msg.sender)); // committed before any reveal; any order
        uint256 per = t.perGroup;
        uint256 pos = v.pos; // set by commitAggregate this round
        uint256 group = pos / per;
        emit AggregateRevealed(id, round, msg.sender, group, cid);
        GroupVotes storage gv = _groupVotes[keccak256(abi.encode(id, round, group))];
        uint256 count;
        if (gv.count == 0 || gv.first == bytes20(digest)) {
            uint64 bit = uint64(1) << uint64(pos % per);
            require(gv.mask & bit == 0, "aggregate already revealed this round");
            gv.first = bytes20(digest);
            gv.mask |= bit;
            count = ++gv.count;
        } else {
            bytes32 key = keccak256(abi.encode(id, round, msg.sender));
            require(_deviant[key] == bytes32(0), "aggregate already revealed this round");
            _deviant[key] = digest;
            count = ++votes[keccak256(abi.encode(id, round, group, digest))];
        }
        if (count == (per - gv.gone) / 2 + 1) emit SubgroupAccepted(id, round, group, cid);
        if (++t.acted == t.committed) _advance(id, t);
    }

    /// @notice Count removed `validator`'s slot in the current round out (anyone, in the aggregation
    ///         commit phase, for a validator that did not commit this round): its subgroup then accepts
    ///         the CID a strict majority of its other slots reveals, and the round's global model needs a
    ///         strict majority of the round's other slots. A subgroup whose validators a dispute
    ///         removed can so still decide in the replay. The counts are fixed before any reveal.
    function markGone(uint256 id, address validator) external {
        Task storage t = _sync(id);
        require(t.phase == AGG_COMMIT, "not in the aggregation commit phase");
        Val storage v = _vals[id][validator];
        require(v.index1 != 0 && v.flags & REMOVED != 0, "validator was not removed from this task");
        uint16 round = t.round;
        require(v.commitRound < round, "validator committed this round");
        uint256 per = t.perGroup;
        uint256 pos = Assignment.permute(Assignment.key(_seedOf(id, round), Assignment.VALIDATORS), v.index1 - 1, t.validators);
        require(pos < uint256(t.groups) * per, "validator not assigned this round");
        bytes32 key = keccak256(abi.encode(id, round, validator));
        require(!_gone[key], "slot already counted out");
        _gone[key] = true;
        _groupVotes[keccak256(abi.encode(id, round, pos / per))].gone++;
        t.goneSlots++;
        emit SlotGone(id, round, validator, pos / per);
        if (_complete(t, AGG_COMMIT)) _advance(id, t);
    }

    /// @notice Slash `validator` for round `round`: it was assigned and did not reveal, or
    ///         `majority` (a CID digest) won its subgroup and it revealed another CID. Anyone may call,
    ///         for any past round, until the task is settled; give majority = 0 for "did not reveal".
    ///         A minority is slashable only once training is over (a dispute may still overturn the
    ///         majority until then), or at once for a CID a dispute committee decided.
    ///         The validator is removed from the task and forfeits its fee.
    function slashAggregator(uint256 id, uint256 round, address validator, bytes32 majority) external nonReentrant {
        Task storage t = _sync(id);
        require(t.phase <= SETTLING, "task has ended: too late to slash");
        require(round >= 1 && (round < t.round || (round == t.round && t.phase >= GLOBAL)), "round not revealed yet");
        DinPayouts.slashAggregator(t, _vals[id][validator], _groupVotes, votes, _corrected, _deviant, registry, _seedOf(id, round), id, round, validator, majority);
    }

    /// @notice Propose the round's global model (model owner, in the global phase; may re-propose).
    function postGlobalModel(uint256 id, bytes calldata cid) external {
        Task storage t = _sync(id);
        require(msg.sender == t.owner, "only the model owner");
        require(t.phase == GLOBAL, "not in the global model phase");
        require(cid.length > 0, "CID is empty");
        t.proposed = keccak256(cid);
        emit GlobalModelPosted(id, t.round, cid);
    }

    /// @notice Attest the proposed global model (validators assigned this round); a strict majority of
    ///         the round's assigned validators accepts it and starts the next round from it.
    function attestGlobal(uint256 id, bytes calldata cid) external {
        Task storage t = _sync(id);
        require(t.phase == GLOBAL, "not in the global model phase");
        bytes32 digest = keccak256(cid);
        require(t.proposed != bytes32(0) && digest == t.proposed, "CID is not the proposed global model");
        uint16 round = t.round;
        Val storage v = _vals[id][msg.sender];
        require(v.attestRound < round, "global model already attested this round");
        _validatorGroup(id, t, v, round);
        v.attestRound = round;
        emit GlobalModelAttested(id, round, msg.sender);
        if (++votes[keccak256(abi.encode(id, round, type(uint256).max, digest))] == (uint256(t.groups) * t.perGroup - t.goneSlots) / 2 + 1) {
            t.model = digest;
            emit GlobalModelAccepted(id, round, cid);
            _advance(id, t);
        }
    }

    // ------------------------------------------------------------------ evaluation

    /// @notice Publish the encrypted test set and the key wrapped to each evaluation validator (model
    ///         owner): `validators` must be exactly the evaluation assignment's validators in slot order,
    ///         each with a non-empty wrapped key. The plaintext must hash (sha256) to the testSetHash
    ///         committed at creation; validators check that off chain and refuse to score otherwise.
    function postTestSet(uint256 id, bytes calldata cid, address[] calldata validators, bytes[] calldata wrappedKeys) external {
        Task storage t = _sync(id);
        require(msg.sender == t.owner, "only the model owner");
        require(t.phase == TEST_SET, "not in the test set phase");
        require(cid.length > 0, "CID is empty");
        DinPayouts.checkEvaluators(t, _vals[id], roundSeed[id][EVAL_ROUND], validators, wrappedKeys);
        t.testSet = keccak256(cid);
        emit TestSetPosted(id, cid, validators, wrappedKeys);
        _advance(id, t);
    }

    /// @notice Commit keccak256(keccak256(scores) ‖ salt ‖ sender) for your subgroup (scores packed as
    ///         below).
    function commitScores(uint256 id, bytes32 commitment) external {
        Task storage t = _sync(id);
        require(t.phase == SCORE_COMMIT, "not in the score commit phase");
        Val storage v = _vals[id][msg.sender];
        require(v.commitRound != SCORES, "scores already committed");
        uint256 pos = _validatorPos(id, t, v, EVAL_ROUND);
        uint256 group = pos / t.perGroup;
        v.commitRound = SCORES;
        v.hash = bytes20(commitment);
        v.pos = uint24(pos); // training is over: the evaluation slot from now on
        emit ScoresCommitted(id, msg.sender, group);
        if (++t.committed == uint256(t.groups) * t.perGroup) _advance(id, t);
    }

    /// @notice Reveal your score vector and salt: basis points in subgroup position order, each a
    ///         big-endian uint16 (2 bytes a participant: the calldata and the log stay small). An
    ///         empty vector rejects the test set (K does not unwrap, its signature or ciphertext
    ///         fails, or the plaintext is not the committed one).
    function revealScores(uint256 id, bytes calldata scores, bytes32 salt) external {
        Task storage t = _sync(id);
        require(t.phase == SCORE_REVEAL, "not in the score reveal phase");
        Val storage v = _vals[id][msg.sender];
        require(v.commitRound == SCORES, "no scores committed");
        require(v.revealRound != SCORES, "scores already revealed");
        require(v.flags & REMOVED == 0, "validator was slashed out of this task");
        uint256 group = v.pos / t.perGroup; // set by commitScores
        uint256 n = t.participants;
        uint256 g = t.groups;
        require(scores.length == 0 || scores.length == 2 * (Assignment.groupStart(group + 1, n, g) - Assignment.groupStart(group, n, g)), "score vector length differs from the subgroup size");
        (, uint256 top) = DinPayouts.scan(scores, scores.length / 2);
        require(top <= SCORE_SCALE, "score above 10000");
        bytes32 vh = keccak256(scores);
        require(bytes20(keccak256(abi.encodePacked(vh, salt, msg.sender))) == v.hash, "reveal does not match commitment");
        v.hash = bytes20(vh);
        v.revealRound = SCORES;
        emit ScoresRevealed(id, msg.sender, group, scores);
        if (++t.acted == t.committed) _advance(id, t);
    }

    /// @notice Settle subgroup `group` (anyone, in the settling phase): the score vector whose hash a
    ///         strict majority of the subgroup's evaluation validators revealed is accepted, and every
    ///         other validator of the subgroup (another vector, or none) is slashed. With no strict
    ///         majority, every participant of the subgroup scores 0, only validators that did not
    ///         reveal are slashed and none earns a fee. A score dispute's decided vector overrides
    ///         the majority's, and validators that disagree wait for the second half of the phase.
    ///         When the accepted vector is the empty one
    ///         (the test set was rejected), its validators earn their fee and the task's whole
    ///         participant pool goes to the contributors by record, as in an abandoned task: the test
    ///         set is one object, so scores made elsewhere on it are not trusted to split the pool,
    ///         and the owner cannot steer it by sabotaging the test set for one subgroup.
    /// @param participants participant indices in subgroup position order
    /// @param validators   the subgroup's validators in slot order (perGroup of them)
    /// @param scores       the majority's packed score vector, or empty when there is no strict majority or it rejected
    function settle(uint256 id, uint256 group, uint256[] calldata participants, address[] calldata validators, bytes calldata scores) external nonReentrant {
        Task storage t = _sync(id);
        require(t.phase == SETTLING, "not in the settlement phase");
        require(group < t.groups, "no such subgroup");
        GroupResult storage r = groupResults[keccak256(abi.encode(id, group))];
        require(r.scoresHash == bytes32(0), "subgroup already settled");
        bytes32 decided = _corrected[keccak256(abi.encode(id, EVAL_ROUND, group))];
        if (DinPayouts.settle(t, _vals[id], r, registry, id, group, roundSeed[id][EVAL_ROUND], participants, validators, scores, decided)) _rejected[id] = true;
        if (++t.settledGroups == t.groups) _advance(id, t);
    }

    /// @notice Prove your accepted training record in task `id` (participants that submitted, once,
    ///         while the task settles until its settling deadline, even settled early, or until the
    ///         deadline of a task abandoned for want of a test set; aggregate disputes are closed
    ///         by then): for each of `rounds` (increasing, none a dispute's replay discarded), the accepted result of your subgroup,
    ///         `results[i]` (the aggregate CID followed by the 32-byte bitmap of the subgroup positions
    ///         whose update it admitted, bit k = position k), with your bit set. When the test set is
    ///         withheld or rejected, the participants' pool is split by these records.
    function proveRecord(uint256 id, uint256[] calldata rounds, bytes[] calldata results) external {
        Task storage t = _sync(id);
        uint8 phase = t.phase;
        require(phase == SETTLING || ((phase == SETTLED || phase == ABANDONED) && block.timestamp < t.deadline), "records are proven while settling");
        DinPayouts.proveRecord(t, _members[id][msg.sender], roundSeed[id], _groupVotes, votes, _corrected, disputes, id, rounds, results);
    }

    // ------------------------------------------------------------------ disputes (DinDisputes only)

    /// @notice Dispute hook (DinDisputes only). `open`: freeze task `id` for a dispute of subgroup
    ///         `group`'s aggregate of `round`, which must be the CID with `digest` accepted by a strict
    ///         majority: phase DISPUTED, where every phase's action reverts and no deadline runs. Until
    ///         the task settles (the caller `advance`s first), one dispute at a time; returns round << 8 | the phase it froze in.
    ///         Not `open`: unfreeze, giving the phase back the time the dispute took; with `digest` != 0
    ///         the committee overturned the subgroup's aggregate: `digest` becomes its majority
    ///         (slashAggregator then slashes the rest) and the task replays from the model `round`
    ///         started from under a new round number (the next `advance`), lastRound extended by the
    ///         rounds discarded; once training is over nothing replays (the liars are still slashed
    ///         and `din verify` shows the corrected result).
    ///         Round 0 (EVAL_ROUND) disputes evaluation subgroup `group`'s majority score vector
    ///         (hash `digest`), while the task settles and before that subgroup settles; overturned,
    ///         `digest` is the committee's vector, which `settle` then accepts (slashing every
    ///         validator of the subgroup that revealed another), and nothing replays.
    function dispute(uint256 id, uint256 round, uint256 group, bytes32 digest, bool open) external returns (uint256) {
        require(msg.sender == disputes, "only the dispute contract");
        Task storage t = _tasks[id];
        bytes32 gk = keccak256(abi.encode(id, round, group));
        if (open) {
            // the caller advanced it: deadlines hold
            require(_corrected[gk] == bytes32(0), "a dispute already decided that subgroup");
            if (round == EVAL_ROUND) {
                // the caller checked `digest` is the subgroup's majority score vector (scoreMajority)
                require(t.phase == SETTLING && group < t.groups && groupResults[keccak256(abi.encode(id, group))].scoresHash == bytes32(0), "no such unsettled subgroup");
            } else {
                require(t.phase < SETTLING, "not disputable in this phase");
                require(voteCount(_groupVotes[gk], votes, id, round, group, digest) > (t.perGroup - _groupVotes[gk].gone) / 2, "CID is not the accepted one");
            }
            uint256 frozen = (block.timestamp << 8) | t.phase;
            _frozen[id] = frozen;
            t.phase = DISPUTED;
            return (uint256(t.round) << 8) | uint8(frozen); // the round and the phase it froze in
        }
        uint256 f = _frozen[id];
        t.phase = uint8(f);
        unchecked {
            t.deadline += uint64(block.timestamp - (f >> 8));
        }
        _frozen[id] = 0;
        if (digest == bytes32(0)) return t.round;
        _corrected[gk] = digest;
        // scores: settle takes the committee's vector; an aggregate after training: the committee's
        // CID is the subgroup's majority (slashAggregator slashes the rest), and nothing replays
        if (round == EVAL_ROUND || uint8(f) > GLOBAL) return t.round;
        t.lastRound += t.round - uint16(round) + 1; // the rounds discarded
        t.model = _roundModel[id][round];
        t.phase = GLOBAL; // expired: the next call starts the new round from t.model
        t.deadline = 0;
        return t.round;
    }

    /// @notice The score-vector hash a strict majority of evaluation subgroup `group`'s live
    ///         validators (`validators`, in slot order) revealed, as `settle` computes it (0: none).
    function scoreMajority(uint256 id, uint256 group, address[] calldata validators) external view returns (bytes20) {
        return DinPayouts.majorityHash(_tasks[id], _vals[id], group, validators, roundSeed[id][EVAL_ROUND]);
    }

    /// @dev What DinDisputes reads of a task.
    struct DisputeView {
        uint256 round;
        uint256 validators;
        uint256 groups;
        uint256 perGroup;
        uint256 slashAmount;
        uint256 commitTime; // the aggregation commit and reveal durations: the committee's windows
        uint256 revealTime;
    }

    /// @notice Round, validator count, subgroups, validators per subgroup, slash amount and the
    ///         aggregation commit and reveal durations of task `id` (for DinDisputes).
    function disputeView(uint256 id) external view returns (DisputeView memory r) {
        Task storage t = _tasks[id];
        r = DisputeView(t.round, t.validators, t.groups, t.perGroup, t.slashAmount, t.durations[2], t.durations[3]);
    }

    // ------------------------------------------------------------------ claims

    /// @notice Pull everything task `id` owes the caller: participant share (give your settled
    ///         subgroup's `scores`, from SubgroupSettled; empty otherwise), validator fee, owner refund;
    ///         a validator's bond is released too.
    function claim(uint256 id, bytes calldata scores) external nonReentrant returns (uint256 amount) {
        Task storage t = _sync(id);
        uint8 phase = t.phase;
        require(phase == SETTLED || phase == ABANDONED, "task is not settled");
        amount = claimable(id, msg.sender, scores);
        Member storage m = _members[id][msg.sender];
        Val storage v = _vals[id][msg.sender];
        bool released = _release(id, t, v, msg.sender);
        if (amount == 0) {
            if (released) return 0;
            require(!(m.claimed || v.flags & CLAIMED != 0 || (msg.sender == t.owner && t.ownerClaimed)), "already claimed");
            revert("nothing to claim");
        }
        DinPayouts.pay(t, m, v, registry, token, id, amount); // a validator's fee goes to its pool
    }

    /// @notice Release `validator`'s bond in task `id` once the task is settled or abandoned (anyone;
    ///         `claim` does it too). Reverts when there is no bond to release.
    function release(uint256 id, address validator) external {
        Task storage t = _sync(id);
        require(t.phase == SETTLED || t.phase == ABANDONED, "task is not settled");
        require(_release(id, t, _vals[id][validator], validator), "no bond to release");
    }

    /// @notice What `account` can claim from task `id` now (0 before settlement or once claimed);
    ///         a participant gives its subgroup's settled scores.
    /// @dev Settled: each validator that earned a fee gets fees / good; the participants' pool is the
    ///      rest of the deposit (fee dust included), split by accepted score; with a total score of 0,
    ///      a test set a subgroup rejected, or none posted (abandoned, once its proof window ends),
    ///      the pool goes to the contributors by the training records they proved (proveRecord), or
    ///      by first submission when nobody proved one. The owner gets something back only when
    ///      nobody contributed an update.
    function claimable(uint256 id, address account, bytes calldata scores) public view returns (uint256) {
        return DinPayouts.claimable(_tasks[id], _members[id][account], _vals[id][account], groupResults, _rejected[id], id, roundSeed[id][EVAL_ROUND], account, scores);
    }

    // ------------------------------------------------------------------ reads

    uint256 internal constant TASK_WORDS = 16; // at least the storage slots of struct Task (the client checks)

    /// @notice The storage words of task `id` (struct Task, as stored: a phase past its deadline moves
    ///         on with the next transaction). The artifact's `structs.Task` layout names the fields;
    ///         raw words keep this contract under the EIP-170 size limit.
    function taskWords(uint256 id) external view returns (bytes32[TASK_WORDS] memory w) {
        Task storage t = _tasks[id];
        require(t.phase != 0, "no such task");
        assembly ("memory-safe") {
            for { let i := 0 } lt(i, TASK_WORDS) { i := add(i, 1) } { mstore(add(w, mul(i, 32)), sload(add(t.slot, i))) }
        }
    }

    function member(uint256 id, address account) external view returns (Member memory) {
        return _members[id][account];
    }

    function validatorState(uint256 id, address account) external view returns (Val memory) {
        return _vals[id][account];
    }

    // ------------------------------------------------------------------ internals

    /// @dev The subgroup of an assigned, not removed validator under the seed of `round`.
    function _validatorGroup(uint256 id, Task storage t, Val storage v, uint256 round) internal view returns (uint256) {
        return _validatorPos(id, t, v, round) / t.perGroup;
    }

    /// @dev Slot position (group * perGroup + slot) of an assigned, not removed validator in `round`.
    function _validatorPos(uint256 id, Task storage t, Val storage v, uint256 round) internal view returns (uint256 pos) {
        require(v.index1 != 0, "not a validator of this task");
        require(v.flags & REMOVED == 0, "validator was slashed out of this task");
        pos = Assignment.permute(Assignment.key(_seedOf(id, round), Assignment.VALIDATORS), v.index1 - 1, t.validators);
        require(pos < uint256(t.groups) * t.perGroup, "validator not assigned this round");
    }

    /// @dev Unbond the task's slash amount when `v` still holds a bond in an ended task.
    function _release(uint256 id, Task storage t, Val storage v, address validator) internal returns (bool) {
        if (v.flags & BONDED == 0 || (t.phase != SETTLED && t.phase != ABANDONED)) return false;
        v.flags &= ~BONDED;
        emit BondReleased(id, validator);
        registry.unbond(validator, t.slashAmount);
        return true;
    }

    /// @dev Apply expired deadlines (and phases already complete), then return the task.
    function _sync(uint256 id) internal returns (Task storage t) {
        t = _tasks[id];
        require(t.phase != 0, "no such task");
        _catchUp(id, t);
        if (t.round == 1 && t.phase <= GLOBAL) _drawFirst(id);
    }

    function _catchUp(uint256 id, Task storage t) internal {
        while (true) {
            uint8 phase = t.phase;
            if (phase >= SETTLED) return;
            if (block.timestamp < t.deadline) return;
            _advance(id, t);
        }
    }

    function _complete(Task storage t, uint8 phase) internal view returns (bool) {
        if (phase == TRAINING) return t.acted == t.participants;
        if (phase == AGG_COMMIT) return t.committed + t.goneSlots == uint256(t.groups) * t.perGroup;
        if (phase == SCORE_COMMIT) return t.committed == uint256(t.groups) * t.perGroup;
        if (phase == AGG_REVEAL || phase == SCORE_REVEAL) return t.acted == t.committed;
        return false;
    }

    /// @dev Move to the next phase (the current one is complete or expired).
    function _advance(uint256 id, Task storage t) internal {
        if (t.round == 1) _drawFirst(id); // every later use of round 1's seed needs it drawn
        uint8 phase = t.phase;
        uint8 next;
        if (phase == JOINING) {
            uint256 n = t.participants;
            if (n == 0) return _abandon(id, t, "no participants joined");
            if (t.validators == 0) return _abandon(id, t, "no validators registered");
            uint256 cap = uint256(t.validators) * t.subgroupSize;
            if (n > cap) {
                // more joins than the validators can cover: the latest joiners sit out (no abandonment)
                n = cap;
                t.participants = uint24(cap);
                emit ParticipantsCapped(id, cap);
            }
            uint256 g = Assignment.groupCount(n, t.subgroupSize);
            uint256 per = t.validators / g;
            if (per > t.validatorsPerSubgroup) per = t.validatorsPerSubgroup;
            t.groups = uint24(g);
            t.perGroup = uint16(per);
            return _startRound(id, t, 1);
        } else if (phase == GLOBAL) {
            if (t.round < t.lastRound) return _startRound(id, t, t.round + 1); // lastRound <= maxRounds + rounds a dispute discarded
            bytes32 seed = _seed(id, EVAL_ROUND);
            emit EvaluationStarted(id, seed);
            next = TEST_SET;
        } else if (phase == TEST_SET) {
            if (t.testSet == bytes32(0)) return _abandon(id, t, "model owner posted no test set");
            next = SCORE_COMMIT;
        } else if (phase == SETTLING) {
            next = SETTLED;
        } else {
            next = phase + 1; // TRAINING->AGG_COMMIT->AGG_REVEAL->GLOBAL, SCORE_COMMIT->SCORE_REVEAL->SETTLING
        }
        _enter(id, t, next);
    }

    function _enter(uint256 id, Task storage t, uint8 phase) internal {
        t.phase = phase;
        t.acted = 0;
        t.committed = phase == SCORE_REVEAL || phase == AGG_REVEAL ? t.committed : 0;
        // settled early, a task keeps its settling deadline: the end of the records' proof window
        uint64 deadline = phase <= SETTLING ? uint64(block.timestamp) + t.durations[phase - 1] : phase == SETTLED ? t.deadline : type(uint64).max;
        t.deadline = deadline;
        emit PhaseChanged(id, t.round, phase, deadline);
        if (_complete(t, phase)) _advance(id, t); // e.g. a reveal phase nobody committed for
    }

    function _startRound(uint256 id, Task storage t, uint16 round) internal {
        t.round = round;
        t.proposed = bytes32(0);
        t.goneSlots = 0;
        _roundModel[id][round] = t.model;
        _seed(id, round);
        emit RoundStarted(id, round, t.model, t.participants, t.validators, t.groups, t.perGroup);
        _enter(id, t, TRAINING);
    }

    /// @dev Fix the seed of `round` (0 = evaluation). Rounds 2.. and the evaluation take the task's
    ///      entropy, the XOR of keccak(salt, validator) over every aggregate salt revealed so far:
    ///      each salt was committed before any was revealed and the XOR ignores their order, so no
    ///      sender chooses the result, and the block or time at which the round starts does not
    ///      change it. The last revealer can only withhold its reveal, which is
    ///      slashable. Round 1 has no reveals before it: it takes the hash of the block that starts
    ///      it, which nobody sending a transaction into that block knows, drawn by the first call
    ///      after that block (`_drawFirst`).
    function _seed(uint256 id, uint256 round) internal returns (bytes32 seed) {
        if (round == 1) {
            roundSeed[id][1] = bytes32(PENDING | block.number);
            return bytes32(0);
        }
        seed = keccak256(abi.encode(_tasks[id].entropy, id, round));
        roundSeed[id][round] = seed;
        emit SeedDrawn(id, round, seed);
    }

    /// @dev Draw round 1's pending seed, keccak(blockhash(start block), id, 1), once the block that
    ///      started the round is sealed. Past 256 blocks that hash is gone: the seed is pending again,
    ///      on the current block (whose hash the caller does not know either), not taken from a
    ///      block the caller could time.
    function _drawFirst(uint256 id) internal {
        uint256 s = uint256(roundSeed[id][1]);
        uint256 b = uint64(s);
        if (s >> 64 != PENDING >> 64 || block.number <= b) return; // drawn (a hash), or still the start block
        bytes32 h = blockhash(b);
        if (h == bytes32(0)) {
            roundSeed[id][1] = bytes32(PENDING | block.number);
            return;
        }
        bytes32 seed = keccak256(abi.encode(h, id, uint256(1)));
        roundSeed[id][1] = seed;
        emit SeedDrawn(id, 1, seed);
    }

    /// @dev A drawn seed (reverts while round 1's is pending).
    function _seedOf(uint256 id, uint256 round) internal view returns (bytes32 s) {
        s = roundSeed[id][round];
        require(uint256(s) >> 64 != PENDING >> 64, "seed not drawn yet: retry");
    }

    /// @dev Abandon the task. Abandoned for want of a test set, its deadline ends the window in which
    ///      participants prove their records (the settling duration); claims open after it.
    function _abandon(uint256 id, Task storage t, string memory reason) internal {
        uint64 until = uint64(block.timestamp) + (t.phase == TEST_SET ? t.durations[SETTLING - 1] : 0);
        t.phase = ABANDONED;
        t.deadline = until;
        emit TaskAbandoned(id, reason);
        emit PhaseChanged(id, t.round, ABANDONED, until);
    }
}
