// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

// Storage types of DinTasks, shared with the DinPayouts library that runs settlement and claims on
// DinTasks' storage (by DELEGATECALL). The artifact's `structs.Task` layout names Task's fields.

uint256 constant SCORE_BPS = 10000; // scores and fees are basis points
uint8 constant GLOBAL_PHASE = 5;
uint8 constant SETTLING_PHASE = 9;
uint8 constant SETTLED_PHASE = 10;
uint8 constant ABANDONED_PHASE = 11;

struct Task {
    // slot: configuration
    address owner;
    uint32 subgroupSize;
    uint32 validatorsPerSubgroup;
    uint16 maxRounds;
    uint16 feeBps;
    // slot: configuration
    uint128 slashAmount;
    uint32 maxSamples;
    uint8 metric; // what validators score with: 0 accuracy, 1 macro F1, 2 exp(-cross-entropy)
    uint8 rule; // how a subgroup aggregates: 0 weighted mean, 1 norm-bounded, 2 trimmed mean, 3 median
    uint32 ruleParam; // millionths: norm-bounded's L2 bound, the trimmed mean's fraction per end
    uint8 scoring; // how validators score participants: 0 GTG-Shapley, 1 exact Shapley, 2 leave-one-out, 3 latest update alone
    uint32 dpClip; // millionths: differential privacy's bound on an update's L2 distance from the round's start (0: no DP)
    // slot: differential privacy
    uint32 dpNoise; // millionths: the Gaussian noise multiplier (noise std = dpNoise * dpClip)
    uint8 dpDelta; // delta = 10^-dpDelta of the (epsilon, delta) participants' accountants report
    uint8 privacy; // 0 open: updates are public; 1 sealed: each is encrypted to the validators who must read it; 2 secagg: masked, only subgroup sums open (ruleParam: the Shamir threshold)
    // slot: durations
    uint32[9] durations;
    // slot: state
    uint8 phase;
    uint16 round;
    uint16 lastRound;
    uint64 deadline;
    uint24 participants;
    uint16 validators;
    uint24 groups;
    uint16 perGroup; // validators per subgroup this task actually uses (<= validatorsPerSubgroup)
    uint24 acted; // submissions, or reveals, in the current phase
    uint24 committed; // commits in the current phase
    uint24 contributors; // participants with at least one update
    // slot: settlement
    uint32 settledGroups;
    uint32 goodValidators; // validators earning a fee
    uint64 totalScore; // sum of accepted scores (settlement)
    bool ownerClaimed;
    uint24 goneSlots; // this round's slots held by removed validators, counted by markGone (out of the majorities)
    uint32 records; // accepted training records participants proved (proveRecord): the contributors' split
    // slots
    uint128 deposit;
    bytes32 arch;
    bytes32 model; // digest of the current global model CID
    bytes32 proposed; // digest of the global model the owner proposed this round
    bytes32 testSet; // digest of the encrypted test set CID
    bytes32 testSetHash; // sha256 of the plaintext test set, fixed at creation
    bytes32 entropy; // XOR of keccak(salt, validator) over every revealed aggregate salt (seeds rounds 2.. and the evaluation)
}

struct Member {
    uint32 index1; // index + 1 (0 = not a member)
    uint16 lastRound; // last round with an update
    uint32 ordinal; // contributor ordinal (1-based): the contributors' split when nobody proved a record
    bool claimed;
    uint16 records; // rounds whose accepted subgroup result admitted its update (proveRecord)
    uint32 recordsBefore; // records proved before this member's: its share of the split is exact
}

/// @dev The first result digest revealed in a subgroup of a round, how many revealed it, and which
///      slots (bit j = slot j) did; keyed keccak(task, round, group).
///      `gone` counts the slots markGone took out: a strict majority of the other slots decides.
struct GroupVotes {
    bytes20 first;
    uint8 count;
    uint64 mask;
    uint8 gone;
}

/// @dev Whether `digest` is subgroup `group`'s accepted result of `round` (gk = keccak(id, round,
///      group)): the one a dispute committee decided where it overturned the subgroup, else the one a
///      strict majority of the subgroup's slots not counted out revealed.
function isAccepted(
    mapping(bytes32 => GroupVotes) storage groupVotes,
    mapping(bytes32 => uint256) storage votes,
    mapping(bytes32 => bytes32) storage corrected,
    bytes32 gk,
    uint256 id,
    uint256 round,
    uint256 group,
    uint256 per,
    bytes32 digest
) view returns (bool) {
    bytes32 right = corrected[gk];
    if (right != bytes32(0)) return digest == right;
    GroupVotes storage gv = groupVotes[gk];
    return voteCount(gv, votes, id, round, group, digest) > (per - gv.gone) / 2;
}

/// @dev How many validators of a subgroup revealed `digest`.
function voteCount(GroupVotes storage gv, mapping(bytes32 => uint256) storage votes, uint256 id, uint256 round, uint256 group, bytes32 digest) view returns (uint256) {
    return bytes20(digest) == gv.first ? gv.count : votes[keccak256(abi.encode(id, round, group, digest))];
}

/// @dev A settled subgroup: the hash of its accepted scores (position order) and the running
///      total of scores settled before it. Claims bring the scores back as calldata.
struct GroupResult {
    bytes32 scoresHash;
    uint64 before;
}

/// @dev One slot per validator and task. `hash` holds the latest commitment; after the score
///      reveal (revealRound = SCORES), the revealed score-vector hash
///      (160 bits). Round SCORES marks the evaluation. What a validator revealed in each
///      aggregation round stays in GroupVotes / _deviant (per round), so a lie stays
///      provable until settlement.
struct Val {
    uint16 index1; // index + 1 (0 = not registered)
    uint16 commitRound;
    uint16 revealRound;
    uint16 attestRound;
    bytes20 hash;
    uint24 pos; // slot position (group * perGroup + slot) in the round last committed
    uint8 flags; // REMOVED | SETTLED | CLAIMED
}

uint16 constant SCORES = type(uint16).max;
uint8 constant REMOVED = 1; // slashed: no more votes, no fee
uint8 constant SETTLED_FEE = 2; // earns a fee
uint8 constant CLAIMED = 4;
uint8 constant BONDED = 8; // slashAmount of its registry stake is bonded to this task
