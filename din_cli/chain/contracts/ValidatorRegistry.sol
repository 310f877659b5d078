// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {DinToken} from "./DinToken.sol";

/// @title Validator registry: delegated stake, its rewards and inflation, slashing that reaches delegators.
/// @notice A validator stakes at least `minStake` of its own (self-stake), publishes an HPKE key and
///         sets a commission; token holders delegate to it without running a node (no minimum). A
///         validator's *stake* is its whole pool: self-stake plus delegations, after slashes; that is
///         what tasks bond and what earns rewards.
///
///         Pools hold shares: a delegation is a number of shares of its validator's pool, and a slash
///         burns pool tokens, so every share (the validator's own included) loses the same fraction.
///         Undelegated stake waits `unstakeDelay` in the validator's unbonding pool, which a slash
///         reduces by the same fraction, so nobody escapes a pending slash by leaving. A validator
///         slashed for a protocol offence is tombstoned: out of the active set for good (it must
///         register anew, from another address); its delegators can only leave.
///
///         Rewards use reward-per-share accumulators, so every operation costs the same gas whatever
///         the number of delegators: rewards reach the registry (inflation minted on the schedule
///         below, and task fees through `notifyFees`) and are shared among active pools by stake
///         (`accPerWeight`); a pool's share pays the validator's commission and the rest goes to its
///         shares (`accPerShare`). Rewards arriving while nothing is staked wait in `undistributed`
///         for the next staker; rounding dust stays in the registry and is counted (`rewardsIn` =
///         paid + owed + dust).
///
///         Inflation: epoch k (of `epochLength` seconds) emits `epochEmission * (1 - decayBps/1e4)^k`,
///         accruing by the second, so the supply converges to the initial supply plus
///         `epochEmission * 1e4 / decayBps`, and the token's cap bounds it whatever happens.
///         Fees: `feeBurnBps` of every fee is burnt and `publicGoodsBps` goes to the public-goods pool.
///
///         There is no owner. The deployer names the task manager, the dispute contract, the governor
///         and the public-goods pool once (`initialize`); only the task manager and the dispute
///         contract bond, unbond and slash; only the governor (proposals, a credit vote and a timelock)
///         changes the economic parameters, within fixed bounds.
contract ValidatorRegistry is ReentrancyGuard {
    using SafeERC20 for IERC20;

    struct Pool {
        uint128 tokens; // bonded: self-stake plus delegations, after slashes
        uint128 shares;
        uint128 ubTokens; // unbonding (undelegated, waiting for the delay), after slashes
        uint128 ubShares;
        uint128 bonded; // stake bonded to tasks in progress (<= tokens)
        uint128 weight; // tokens counted in totalWeight (0 while not active)
        uint64 unlockAt; // 0 = validating; otherwise the time from which `withdraw` works
        bool tombstoned;
        uint16 commission; // basis points of the pool's rewards the validator keeps
        uint16 nextCommission;
        uint64 commissionAt; // when nextCommission applies (0: no change announced)
        bytes32 hpkeKey; // X25519 public key for key wrapping
        uint256 accGlobal; // accPerWeight when the pool last collected its share
        uint256 accPerShare; // rewards per share, scaled by ACC
        uint256 commissionOwed;
    }

    struct Delegation {
        uint128 shares;
        uint128 ubShares; // the sum of its unbonding entries' shares
        uint256 acc; // pool.accPerShare when last settled
        uint256 owed; // rewards settled, not yet claimed
    }

    uint256 internal constant P25519 = 2 ** 255 - 19;
    uint256 internal constant ACC = 1e36;
    uint256 internal constant BPS = 1e4;
    uint256 internal constant ONE = 1e18;
    uint256 internal constant MAX_ENTRIES = 7; // undelegations unbonding at once per delegation (as Cosmos)

    IERC20 public immutable token;
    uint64 public immutable unstakeDelay; // validators' unstake and delegators' unbonding delay
    uint64 public immutable commissionNotice; // seconds between announcing a commission and its start
    uint16 public immutable maxCommissionBps;
    uint64 public immutable epochLength;
    address internal immutable deployer;

    address public tasks; // the task manager: may bond, unbond and slash; set once
    address public disputes; // the dispute contract: may bond, unbond and slash; set once
    address public governor; // changes the parameters below; set once
    address public grants; // the public-goods pool; set once

    // parameters the governor changes (within bounds)
    uint256 public minStake; // self-stake a validator needs to be active
    uint16 public offenceSlashBps; // a protocol offence burns at least this share of the pool
    uint16 public feeBurnBps = 1000; // 10 % of fees burnt at deployment
    uint16 public publicGoodsBps = 1000; // 10 % to public goods at deployment
    uint16 public decayBps; // emission decay per epoch
    uint128 public epochEmission; // emission of the schedule's first epoch
    uint64 public scheduleStart;
    uint256 public scheduleBase; // emitted before the current schedule started

    uint256 public emitted; // tokens minted by the schedule so far
    uint256 public totalWeight; // sum of active pools' tokens
    uint256 public accPerWeight; // rewards per unit of active stake, scaled by ACC
    uint256 public undistributed; // rewards that arrived while nothing was staked
    uint256 public rewardsIn; // rewards credited: minted emission plus delegators' share of fees
    uint256 public rewardsPaid; // rewards claimed or compounded
    uint256 public totalBonded; // sum of pools' tokens
    uint256 public totalUnbonding; // sum of pools' ubTokens

    mapping(address => Pool) public pools;
    mapping(address => mapping(address => Delegation)) public delegations;
    address[] internal _stakers; // every account that ever staked, in order of its first stake
    mapping(address => bool) internal _listed;
    /// @dev Each pool's weight (its stake while active, else 0) by block: dispute committees are
    ///      drawn by stake as it stood in the filing block, so stake moved once that block's hash
    ///      is known cannot steer a draw.
    ///      Entries are block << 208 | weight, in block order, one per block.
    mapping(address => uint256[]) internal _weightAt;
    /// @dev A delegation's unbonding entries, oldest first: releaseAt << 128 | unbonding shares. Each
    ///      undelegation waits its own delay (undelegations in one block share an entry).
    mapping(address => mapping(address => uint256[])) internal _unbonding;

    event Staked(address indexed validator, uint256 amount, uint256 total, bytes32 hpkeKey);
    event UnstakeRequested(address indexed validator, uint256 unlockAt);
    event Withdrawn(address indexed validator, uint256 amount);
    event Slashed(address indexed validator, address indexed by, uint256 amount);
    event Tombstoned(address indexed validator);
    event Initialized(address tasks, address disputes);
    event Delegated(address indexed validator, address indexed delegator, uint256 amount, uint256 shares);
    event Undelegated(address indexed validator, address indexed delegator, uint256 amount, uint256 releaseAt);
    event UnbondedWithdrawn(address indexed validator, address indexed delegator, uint256 amount);
    event RewardsClaimed(address indexed validator, address indexed delegator, uint256 amount, bool compounded);
    event CommissionAnnounced(address indexed validator, uint256 bps, uint256 at);
    event FeesNotified(address indexed validator, address indexed from, uint256 amount, uint256 burnt, uint256 publicGoods);
    event Emitted(uint256 amount, uint256 totalEmitted);
    event ParameterChanged(string name, uint256 value);

    constructor(
        IERC20 token_,
        uint256 minStake_,
        uint64 unstakeDelay_,
        uint64 commissionNotice_,
        uint16 maxCommissionBps_,
        uint64 epochLength_,
        uint128 epochEmission_,
        uint16 decayBps_
    ) {
        require(minStake_ > 0, "minimum stake must be positive");
        require(maxCommissionBps_ <= BPS, "commission above 100%");
        require(epochLength_ > 0, "epoch length must be positive");
        require(decayBps_ > 0 && decayBps_ <= BPS, "decay must be 1..10000 bps");
        token = token_;
        minStake = minStake_;
        unstakeDelay = unstakeDelay_;
        commissionNotice = commissionNotice_;
        maxCommissionBps = maxCommissionBps_;
        epochLength = epochLength_;
        epochEmission = epochEmission_;
        decayBps = decayBps_;
        scheduleStart = uint64(block.timestamp);
        deployer = msg.sender;
    }

    /// @notice Name the task manager, the dispute contract, the governor and the public-goods pool
    ///         (the deployer, once; nothing can change them afterwards).
    function initialize(address tasks_, address disputes_, address governor_, address grants_) external {
        require(msg.sender == deployer, "only the deployer initializes");
        require(tasks == address(0), "already initialized");
        require(tasks_ != address(0) && disputes_ != address(0), "task manager is the zero address");
        require(governor_ != address(0) && grants_ != address(0), "governor is the zero address");
        tasks = tasks_;
        disputes = disputes_;
        governor = governor_;
        grants = grants_;
        emit Initialized(tasks_, disputes_);
    }

    modifier onlyTasks() {
        require(msg.sender == tasks || msg.sender == disputes, "caller is not the task manager");
        _;
    }

    modifier onlyGovernor() {
        require(msg.sender == governor, "only governance changes parameters");
        _;
    }

    // ------------------------------------------------------------------ validators

    /// @notice Add `amount` (approve first) to your self-stake and set your HPKE public key (a
    ///         canonical X25519 point outside the small-order subgroup). The first stake registers
    ///         the validator with a 0 commission.
    function stake(uint256 amount, bytes32 hpkeKey) external nonReentrant {
        Pool storage p = pools[msg.sender];
        require(!p.tombstoned, "validator was slashed and is tombstoned: register from a new address");
        require(p.unlockAt == 0, "unstake pending: withdraw first");
        require(validKey(hpkeKey), "HPKE public key is empty, low-order or not canonical");
        _distribute();
        _settle(p);
        p.hpkeKey = hpkeKey;
        if (amount > 0) _addShares(p, delegations[msg.sender][msg.sender], amount);
        require(selfStakeOf(msg.sender) >= minStake, "stake below minimum");
        if (!_listed[msg.sender]) {
            _listed[msg.sender] = true;
            _stakers.push(msg.sender);
        }
        _reweigh(msg.sender, p);
        emit Staked(msg.sender, amount, p.tokens, hpkeKey);
        if (amount > 0) token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Stop validating (no new tasks, no rewards); the self-stake can be withdrawn
    ///         `unstakeDelay` seconds later, once every task it serves has ended. Delegators undelegate.
    function requestUnstake() external {
        Pool storage p = pools[msg.sender];
        require(delegations[msg.sender][msg.sender].shares > 0, "nothing staked");
        require(p.unlockAt == 0, "unstake already requested");
        _distribute();
        _settle(p);
        uint64 unlockAt = uint64(block.timestamp) + unstakeDelay;
        p.unlockAt = unlockAt;
        _reweigh(msg.sender, p);
        emit UnstakeRequested(msg.sender, unlockAt);
    }

    /// @notice Withdraw the whole self-stake once the unstake delay has passed and no task holds a
    ///         bond (a tombstoned validator too). The HPKE key is cleared; rewards stay claimable.
    function withdraw() external nonReentrant {
        Pool storage p = pools[msg.sender];
        Delegation storage d = delegations[msg.sender][msg.sender];
        require(p.unlockAt != 0, "no unstake requested");
        require(block.timestamp >= p.unlockAt, "unstake delay not over");
        require(p.bonded == 0, "stake is bonded to a task in progress");
        require(d.shares > 0, "nothing to withdraw");
        _distribute();
        _settle(p);
        _settleDelegation(p, d);
        uint256 amount = _removeShares(p, d, d.shares);
        p.hpkeKey = bytes32(0);
        if (!p.tombstoned) p.unlockAt = 0; // may register again (a tombstone stays)
        _reweigh(msg.sender, p);
        emit Withdrawn(msg.sender, amount);
        if (amount > 0) token.safeTransfer(msg.sender, amount);
    }

    /// @notice Announce a new commission (basis points, at most `maxCommissionBps`); it applies
    ///         `commissionNotice` seconds from now (at once while nobody else has delegated).
    function setCommission(uint16 bps) external {
        Pool storage p = pools[msg.sender];
        require(p.hpkeKey != bytes32(0) && !p.tombstoned, "not a registered validator");
        require(bps <= maxCommissionBps, "commission above the maximum");
        _distribute();
        _settle(p);
        uint64 at = uint64(block.timestamp);
        if (p.shares != delegations[msg.sender][msg.sender].shares) at += commissionNotice;
        p.nextCommission = bps;
        p.commissionAt = at;
        if (at == block.timestamp) _applyCommission(p);
        emit CommissionAnnounced(msg.sender, bps, at);
    }

    // ------------------------------------------------------------------ delegators

    /// @notice Delegate `amount` (approve first) to `validator`, an active one.
    function delegate(address validator, uint256 amount) external nonReentrant {
        require(amount > 0, "nothing to delegate");
        Pool storage p = pools[validator];
        require(isActive(validator), "validator is not active");
        _distribute();
        _settle(p);
        uint256 shares = _addShares(p, delegations[validator][msg.sender], amount);
        _reweigh(validator, p);
        emit Delegated(validator, msg.sender, amount, shares);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Move `amount` of your delegation to `validator` into its unbonding pool; it can be
    ///         withdrawn `unstakeDelay` seconds from now (`withdrawUnbonded`) and is slashed like the
    ///         pool until then. Each undelegation waits its own delay; at most 7 wait at once per
    ///         validator. Stake bonded to tasks in progress cannot leave.
    function undelegate(address validator, uint256 amount) external nonReentrant {
        require(amount > 0, "nothing to undelegate");
        require(validator != msg.sender, "a validator leaves with requestUnstake and withdraw");
        Pool storage p = pools[validator];
        Delegation storage d = delegations[validator][msg.sender];
        _distribute();
        _settle(p);
        _settleDelegation(p, d);
        require(p.tokens > 0, "the pool was slashed to nothing");
        uint256 shares = (amount * p.shares + p.tokens - 1) / p.tokens; // round against the leaver
        require(shares <= d.shares, "undelegating more than the delegation");
        require(uint256(p.tokens) - amount >= p.bonded, "stake is bonded to tasks in progress");
        d.shares -= uint128(shares);
        p.shares -= uint128(shares);
        p.tokens -= uint128(amount);
        totalBonded -= amount;
        require(p.ubShares == 0 || p.ubTokens > 0, "the unbonding pool was slashed to nothing");
        uint256 ub = p.ubShares == 0 ? amount : (amount * p.ubShares) / p.ubTokens;
        d.ubShares += uint128(ub);
        p.ubShares += uint128(ub);
        p.ubTokens += uint128(amount);
        totalUnbonding += amount;
        uint256 releaseAt = block.timestamp + unstakeDelay;
        uint256[] storage q = _unbonding[validator][msg.sender];
        uint256 n = q.length;
        if (n > 0 && q[n - 1] >> 128 == releaseAt) q[n - 1] += ub;
        else {
            require(n < MAX_ENTRIES, "7 undelegations from this validator are unbonding: withdraw the released ones or wait");
            q.push((releaseAt << 128) | ub);
        }
        _reweigh(validator, p);
        emit Undelegated(validator, msg.sender, amount, releaseAt);
    }

    /// @notice Withdraw every undelegation from `validator` whose unbonding delay is over.
    function withdrawUnbonded(address validator) external nonReentrant returns (uint256 amount) {
        Pool storage p = pools[validator];
        Delegation storage d = delegations[validator][msg.sender];
        require(d.ubShares > 0, "nothing unbonding");
        uint256[] storage q = _unbonding[validator][msg.sender];
        uint256 n = q.length;
        uint256 k;
        uint256 ripe;
        while (k < n && q[k] >> 128 <= block.timestamp) ripe += uint128(q[k++]);
        require(k > 0, "unbonding delay not over");
        for (uint256 i = k; i < n; i++) q[i - k] = q[i];
        for (uint256 i = 0; i < k; i++) q.pop();
        amount = (ripe * p.ubTokens) / p.ubShares;
        p.ubShares -= uint128(ripe);
        p.ubTokens -= uint128(amount);
        totalUnbonding -= amount;
        d.ubShares -= uint128(ripe);
        emit UnbondedWithdrawn(validator, msg.sender, amount);
        if (amount > 0) token.safeTransfer(msg.sender, amount);
    }

    /// @notice Claim your rewards from `validator`'s pool (the validator: its commission too), or with
    ///         `compound` add them to your delegation (the pool must be active).
    function claimRewards(address validator, bool compound) external nonReentrant returns (uint256 amount) {
        Pool storage p = pools[validator];
        Delegation storage d = delegations[validator][msg.sender];
        _distribute();
        _settle(p);
        _settleDelegation(p, d);
        amount = d.owed;
        d.owed = 0;
        if (msg.sender == validator) {
            amount += p.commissionOwed;
            p.commissionOwed = 0;
        }
        require(amount > 0, "no rewards to claim");
        rewardsPaid += amount;
        emit RewardsClaimed(validator, msg.sender, amount, compound);
        if (compound) {
            require(isActive(validator), "validator is not active: claim instead of compounding");
            _addShares(p, d, amount);
            _reweigh(validator, p);
        } else {
            token.safeTransfer(msg.sender, amount);
        }
    }

    /// @notice Rewards `delegator` could claim from `validator`'s pool now (emission due included).
    function pendingRewards(address validator, address delegator) external view returns (uint256 amount) {
        Pool storage p = pools[validator];
        Delegation storage d = delegations[validator][delegator];
        uint256 acc = accPerWeight;
        uint256 due = _due();
        if (totalWeight > 0 && due + undistributed > 0) acc += ((due + undistributed) * ACC) / totalWeight;
        uint256 r = (uint256(p.weight) * (acc - p.accGlobal)) / ACC;
        uint256 commission = p.commission;
        if (p.commissionAt != 0 && block.timestamp >= p.commissionAt && p.nextCommission < commission) commission = p.nextCommission;
        uint256 c = (r * commission) / BPS;
        uint256 perShare = p.accPerShare;
        if (p.shares > 0) perShare += ((r - c) * ACC) / p.shares;
        else c = r;
        amount = d.owed + (uint256(d.shares) * (perShare - d.acc)) / ACC;
        if (delegator == validator) amount += p.commissionOwed + c;
    }

    /// @notice Bring `validator`'s pool up to date (anyone): collect its rewards and count it in the
    ///         active stake only if it is still active. A parameter change (a raised minimum stake)
    ///         reaches a pool at its next operation or poke.
    function poke(address validator) external nonReentrant {
        Pool storage p = pools[validator];
        _distribute();
        _settle(p);
        _reweigh(validator, p);
    }

    // ------------------------------------------------------------------ rewards in

    /// @notice Mint the emission due by the schedule and share it among active pools (anyone;
    ///         every staking operation does it first).
    function distribute() external nonReentrant {
        _distribute();
    }

    /// @notice Pay `amount` (approve first) as fees earned by `validator`: `feeBurnBps` is burnt,
    ///         `publicGoodsBps` goes to the public-goods pool, the rest to the validator's commission
    ///         and its pool's shares (all to the validator when its pool has no shares left). DinTasks
    ///         pays every validator's task fee this way.
    function notifyFees(address validator, uint256 amount) external nonReentrant {
        require(amount > 0, "no fees");
        Pool storage p = pools[validator];
        _distribute();
        _settle(p);
        uint256 burnt = (amount * feeBurnBps) / BPS;
        uint256 goods = (amount * publicGoodsBps) / BPS;
        uint256 rest = amount - burnt - goods;
        rewardsIn += rest;
        _credit(p, rest);
        emit FeesNotified(validator, msg.sender, amount, burnt, goods);
        token.safeTransferFrom(msg.sender, address(this), amount);
        if (burnt > 0) DinToken(address(token)).burn(burnt);
        if (goods > 0) token.safeTransfer(grants, goods);
    }

    // ------------------------------------------------------------------ tasks

    /// @notice Bond `amount` of `validator`'s free stake to a task (task manager only).
    function bond(address validator, uint256 amount) external onlyTasks {
        Pool storage p = pools[validator];
        require(isActive(validator), "stake below minimum");
        uint256 bonded = uint256(p.bonded) + amount;
        require(bonded <= p.tokens, "free stake below the task's slash amount");
        p.bonded = uint128(bonded);
    }

    /// @notice Release `amount` of `validator`'s bond (task manager only).
    function unbond(address validator, uint256 amount) external onlyTasks {
        Pool storage p = pools[validator];
        p.bonded = p.bonded > amount ? p.bonded - uint128(amount) : 0; // a larger slash may have shrunk it
    }

    /// @notice Slash `validator` for a protocol offence (task manager only): burn the larger of
    ///         `amount` (at most its bond) and `offenceSlashBps` of its pool, bonded and unbonding
    ///         stake by the same fraction, so every delegator loses that fraction; tombstone it.
    ///         Returns what was burnt.
    function slash(address validator, uint256 amount) external onlyTasks nonReentrant returns (uint256 burnt) {
        Pool storage p = pools[validator];
        _distribute();
        _settle(p);
        uint256 base = uint256(p.tokens) + p.ubTokens;
        uint256 fromBond = amount < p.bonded ? amount : p.bonded;
        uint256 floor = (base * offenceSlashBps) / BPS;
        burnt = fromBond > floor ? fromBond : floor;
        if (burnt > base) burnt = base;
        if (burnt > 0) {
            // rounding falls on the bonded side: the unbonding pool is emptied only by a 100 % slash
            uint256 fromUb = (burnt * p.ubTokens) / base;
            p.ubTokens -= uint128(fromUb);
            p.tokens -= uint128(burnt - fromUb);
            totalBonded -= burnt - fromUb;
            totalUnbonding -= fromUb;
        }
        p.bonded -= uint128(fromBond); // the task's bond is spent
        if (p.bonded > p.tokens) p.bonded = p.tokens;
        if (!p.tombstoned) {
            p.tombstoned = true;
            uint64 unlockAt = uint64(block.timestamp) + unstakeDelay;
            if (p.unlockAt < unlockAt) p.unlockAt = unlockAt;
            emit Tombstoned(validator);
        }
        _reweigh(validator, p);
        emit Slashed(validator, msg.sender, burnt);
        if (burnt > 0) DinToken(address(token)).burn(burnt);
    }

    // ------------------------------------------------------------------ governance

    /// @notice Change a parameter (the governor only, after a proposal passed its vote and
    ///         timelock). Bounds: minimum stake > 0; offence slash, fee burn and public-goods
    ///         shares in basis points (burn + public goods <= 100%).
    function setMinStake(uint256 value) external onlyGovernor {
        require(value > 0, "minimum stake must be positive");
        minStake = value;
        emit ParameterChanged("minStake", value);
    }

    function setOffenceSlashBps(uint16 value) external onlyGovernor {
        require(value <= BPS, "slash above 100%");
        offenceSlashBps = value;
        emit ParameterChanged("offenceSlashBps", value);
    }

    function setFeeShares(uint16 burnBps, uint16 goodsBps) external onlyGovernor {
        require(uint256(burnBps) + goodsBps <= BPS, "fee shares above 100%");
        feeBurnBps = burnBps;
        publicGoodsBps = goodsBps;
        emit ParameterChanged("feeBurnBps", burnBps);
        emit ParameterChanged("publicGoodsBps", goodsBps);
    }

    /// @notice Restart the emission schedule from now with a new first-epoch emission and decay;
    ///         what was due under the old one is minted first. The token's cap still bounds supply.
    function setInflation(uint128 emission, uint16 decay) external onlyGovernor {
        require(decay > 0 && decay <= BPS, "decay must be 1..10000 bps");
        _distribute();
        scheduleBase = emitted;
        scheduleStart = uint64(block.timestamp);
        epochEmission = emission;
        decayBps = decay;
        emit ParameterChanged("epochEmission", emission);
        emit ParameterChanged("decayBps", decay);
    }

    // ------------------------------------------------------------------ reads

    /// @notice The emission the schedule has released by time `at` (not counting the token's cap).
    function scheduled(uint256 at) public view returns (uint256) {
        if (at <= scheduleStart) return scheduleBase;
        uint256 elapsed = at - scheduleStart;
        uint256 n = elapsed / epochLength;
        uint256 whole = _released(n);
        // within an epoch, linear between the whole epochs' totals: never decreasing
        uint256 next = _released(n + 1);
        uint256 part = next > whole ? ((next - whole) * (elapsed - n * epochLength)) / epochLength : 0;
        return scheduleBase + whole + part;
    }

    /// @dev What the schedule releases in its first `n` epochs: E0 (1 - r^n) / (1 - r).
    function _released(uint256 n) internal view returns (uint256) {
        uint256 rn = _pow(((BPS - decayBps) * ONE) / BPS, n);
        return (uint256(epochEmission) * BPS * (ONE - rn)) / (uint256(decayBps) * ONE);
    }

    /// @notice Whether `validator` may bond a new task and earns rewards: registered, self-stake at
    ///         least `minStake`, not unstaking, not tombstoned.
    function isActive(address validator) public view returns (bool) {
        Pool storage p = pools[validator];
        return p.hpkeKey != bytes32(0) && p.unlockAt == 0 && !p.tombstoned && selfStakeOf(validator) >= minStake;
    }

    /// @notice The validator's own stake (its shares' worth).
    function selfStakeOf(address validator) public view returns (uint256) {
        return delegationOf(validator, validator);
    }

    /// @notice What `delegator`'s delegation to `validator` is worth now (bonded part).
    function delegationOf(address validator, address delegator) public view returns (uint256) {
        Pool storage p = pools[validator];
        if (p.shares == 0) return 0;
        return (uint256(delegations[validator][delegator].shares) * p.tokens) / p.shares;
    }

    /// @notice What `delegator` has unbonding from `validator` now, when all of it is released
    ///         (0: nothing unbonding), and what `withdrawUnbonded` would pay now.
    function unbondingOf(address validator, address delegator) external view returns (uint256 amount, uint256 releaseAt, uint256 ready) {
        Pool storage p = pools[validator];
        Delegation storage d = delegations[validator][delegator];
        uint256[] storage q = _unbonding[validator][delegator];
        if (q.length > 0) releaseAt = q[q.length - 1] >> 128;
        if (p.ubShares == 0) return (0, releaseAt, 0);
        amount = (uint256(d.ubShares) * p.ubTokens) / p.ubShares;
        uint256 ripe;
        for (uint256 i = 0; i < q.length && q[i] >> 128 <= block.timestamp; i++) ripe += uint128(q[i]);
        ready = (ripe * p.ubTokens) / p.ubShares;
    }

    /// @notice The registry's view of a validator as tasks and disputes read it: its whole stake,
    ///         when it may withdraw (tombstoned: set), what is bonded, its HPKE key.
    function validators(address validator) external view returns (uint96 stake_, uint64 unlockAt, uint96 bonded, bytes32 hpkeKey) {
        Pool storage p = pools[validator];
        return (uint96(p.tokens), p.unlockAt, uint96(p.bonded), p.hpkeKey);
    }

    /// @notice The stakers at list positions `indices` and their weight (stake while active, else 0)
    ///         at the end of block `blockNumber`: what dispute committees are drawn by.
    function weightsAt(uint256[] calldata indices, uint256 blockNumber) external view returns (address[] memory who, uint256[] memory weight) {
        uint256 n = indices.length;
        who = new address[](n);
        weight = new uint256[](n);
        for (uint256 i = 0; i < n; i++) {
            address a = _stakers[indices[i]];
            who[i] = a;
            weight[i] = _weightOn(a, blockNumber);
        }
    }

    /// @notice How many accounts ever staked (withdrawn ones stay listed; `isActive` tells them apart).
    function stakerCount() external view returns (uint256) {
        return _stakers.length;
    }

    /// @notice The `i`-th account that ever staked (0-based, in order of first stake).
    function stakerAt(uint256 i) external view returns (address) {
        return _stakers[i];
    }

    function stakeOf(address validator) external view returns (uint256) {
        return pools[validator].tokens;
    }

    function bondedOf(address validator) external view returns (uint256) {
        return pools[validator].bonded;
    }

    function hpkeKeyOf(address validator) external view returns (bytes32) {
        return pools[validator].hpkeKey;
    }

    /// @notice Whether `key` (X25519 public key bytes) is canonical (as a little-endian integer below
    ///         2^255 - 19) and not one of the small-order points (0, 1, p - 1, the two of order 8).
    function validKey(bytes32 key) public pure returns (bool) {
        uint256 u = _littleEndian(key);
        if (u >= P25519 - 1 || u <= 1) return false;
        if (u == 325606250916557431795983626356110631294008115727848805560023387167927233504) return false;
        if (u == 39382357235489614581723060781553021112529911719440698176882885853963445705823) return false;
        return true;
    }

    // ------------------------------------------------------------------ internals

    function _due() internal view returns (uint256 due) {
        uint256 s = scheduled(block.timestamp);
        if (s <= emitted) return 0;
        due = s - emitted;
        DinToken t = DinToken(address(token));
        uint256 room = t.cap() - t.totalMinted();
        if (due > room) due = room;
    }

    /// @dev Mint the emission due and spread it (with what waited) over the active stake.
    function _distribute() internal {
        uint256 due = _due();
        if (due > 0) {
            emitted += due;
            rewardsIn += due;
            emit Emitted(due, emitted);
            DinToken(address(token)).mint(address(this), due);
        }
        uint256 amount = due + undistributed;
        if (amount == 0) return;
        if (totalWeight == 0) {
            undistributed = amount;
            return;
        }
        undistributed = 0;
        accPerWeight += (amount * ACC) / totalWeight;
    }

    /// @dev Collect pool `p`'s share of what was spread since it last did.
    function _settle(Pool storage p) internal {
        uint256 acc = accPerWeight;
        uint256 r = (uint256(p.weight) * (acc - p.accGlobal)) / ACC;
        p.accGlobal = acc;
        if (r > 0) _credit(p, r);
        else if (p.commissionAt != 0 && block.timestamp >= p.commissionAt) _applyCommission(p); // nothing accrued across it
    }

    /// @dev A commission change applies from its announced time; rewards collected across that
    ///      time (accrued partly before it) pay the lower of the two rates, so a raise never reaches
    ///      rewards earned before it (a poke at the change splits them exactly).
    function _credit(Pool storage p, uint256 r) internal {
        uint256 rate = p.commission;
        if (p.commissionAt != 0 && block.timestamp >= p.commissionAt) {
            if (p.nextCommission < rate) rate = p.nextCommission;
            _applyCommission(p);
        }
        uint256 c = (r * rate) / BPS;
        if (p.shares > 0) p.accPerShare += ((r - c) * ACC) / p.shares;
        else c = r;
        p.commissionOwed += c;
    }

    function _applyCommission(Pool storage p) internal {
        p.commission = p.nextCommission;
        p.commissionAt = 0;
    }

    function _settleDelegation(Pool storage p, Delegation storage d) internal {
        uint256 acc = p.accPerShare;
        if (d.shares > 0) d.owed += (uint256(d.shares) * (acc - d.acc)) / ACC;
        d.acc = acc;
    }

    /// @dev Add `amount` tokens (already counted by the caller) to `p` as shares of `d`.
    function _addShares(Pool storage p, Delegation storage d, uint256 amount) internal returns (uint256 shares) {
        _settleDelegation(p, d);
        require(p.shares == 0 || p.tokens > 0, "the pool was slashed to nothing");
        shares = p.shares == 0 ? amount : (amount * p.shares) / p.tokens;
        require(shares > 0, "amount below one share");
        require(uint256(p.tokens) + amount < 2 ** 96, "stake above 2^96 units");
        d.shares += uint128(shares);
        p.shares += uint128(shares);
        p.tokens += uint128(amount);
        totalBonded += amount;
    }

    function _removeShares(Pool storage p, Delegation storage d, uint256 shares) internal returns (uint256 amount) {
        amount = (shares * p.tokens) / p.shares;
        d.shares -= uint128(shares);
        p.shares -= uint128(shares);
        p.tokens -= uint128(amount);
        totalBonded -= amount;
    }

    /// @dev Count `p` in the active stake by its tokens while it is active, else not at all.
    function _reweigh(address validator, Pool storage p) internal {
        uint256 w = isActive(validator) ? p.tokens : 0;
        if (w == p.weight) return;
        totalWeight = totalWeight - p.weight + w;
        p.weight = uint128(w);
        uint256[] storage h = _weightAt[validator];
        uint256 n = h.length;
        uint256 e = (block.number << 208) | w; // tokens < 2^96
        if (n > 0 && h[n - 1] >> 208 == block.number) h[n - 1] = e;
        else h.push(e);
    }

    /// @dev `validator`'s weight at the end of block `b` (binary search: a pool that changes every
    ///      block cannot make a draw expensive).
    function _weightOn(address validator, uint256 b) internal view returns (uint256) {
        uint256[] storage h = _weightAt[validator];
        uint256 lo = 0;
        uint256 hi = h.length; // entries before lo are at or before b, from hi on after it
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            if (h[mid] >> 208 <= b) lo = mid + 1;
            else hi = mid;
        }
        return lo == 0 ? 0 : h[lo - 1] & ((1 << 208) - 1);
    }

    function _pow(uint256 x, uint256 n) internal pure returns (uint256 z) {
        z = ONE;
        while (n > 0) {
            if (n & 1 == 1) z = (z * x) / ONE;
            x = (x * x) / ONE;
            n >>= 1;
        }
    }

    function _littleEndian(bytes32 b) internal pure returns (uint256 v) {
        v = uint256(b);
        v = ((v & 0xFF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00) >> 8)
            | ((v & 0x00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF00FF) << 8);
        v = ((v & 0xFFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000) >> 16)
            | ((v & 0x0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF0000FFFF) << 16);
        v = ((v & 0xFFFFFFFF00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF00000000) >> 32)
            | ((v & 0x00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF00000000FFFFFFFF) << 32);
        v = ((v & 0xFFFFFFFFFFFFFFFF0000000000000000FFFFFFFFFFFFFFFF0000000000000000) >> 64)
            | ((v & 0x0000000000000000FFFFFFFFFFFFFFFF0000000000000000FFFFFFFFFFFFFFFF) << 64);
        v = (v >> 128) | (v << 128);
    }
}
