// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";

/// @title Validator registry: stake DIN above a minimum, publish an HPKE key, unstake after a delay.
/// @notice There is no owner. The deployer names the task manager and the dispute contract once
///         (`initialize`); from then on only those two may bond, unbond and slash, and nothing can
///         change them. Every account that ever staked is listed (`stakerAt`), so a dispute
///         committee can be drawn from the whole staked set.
///         Every task a validator serves bonds that task's slash amount of its stake; the bond is
///         released when the task is settled or abandoned. A slash burns from the bond (burnt
///         tokens profit nobody). `withdraw` needs no bond outstanding, so stake serving a task stays
///         locked until that task ends. A validator is *active* (may bond a new task) while its stake
///         is at least `minStake` and it has not asked to unstake.
contract ValidatorRegistry is ReentrancyGuard {
    using SafeERC20 for IERC20;

    struct Validator {
        uint96 stake;
        uint64 unlockAt; // 0 = staked; otherwise the time from which `withdraw` works
        uint96 bonded; // stake bonded to tasks in progress (<= stake)
        bytes32 hpkeKey; // X25519 public key for key wrapping
    }

    uint256 internal constant P25519 = 2 ** 255 - 19;

    IERC20 public immutable token;
    uint256 public immutable minStake;
    uint64 public immutable unstakeDelay;
    address internal immutable deployer;
    address public tasks; // the task manager: may bond, unbond and slash; set once
    address public disputes; // the dispute contract: may bond, unbond and slash; set once
    mapping(address => Validator) public validators;
    address[] internal _stakers; // every account that ever staked, in order of its first stake
    mapping(address => bool) internal _listed;

    event Staked(address indexed validator, uint256 amount, uint256 total, bytes32 hpkeKey);
    event UnstakeRequested(address indexed validator, uint256 unlockAt);
    event Withdrawn(address indexed validator, uint256 amount);
    event Slashed(address indexed validator, address indexed by, uint256 amount);
    event Initialized(address tasks, address disputes);

    constructor(IERC20 token_, uint256 minStake_, uint64 unstakeDelay_) {
        require(minStake_ > 0, "minimum stake must be positive");
        token = token_;
        minStake = minStake_;
        unstakeDelay = unstakeDelay_;
        deployer = msg.sender;
    }

    /// @notice Name the task manager and the dispute contract (the deployer, once; nothing can
    ///         change them afterwards).
    function initialize(address tasks_, address disputes_) external {
        require(msg.sender == deployer, "only the deployer initializes");
        require(tasks == address(0), "already initialized");
        require(tasks_ != address(0) && disputes_ != address(0), "task manager is the zero address");
        tasks = tasks_;
        disputes = disputes_;
        emit Initialized(tasks_, disputes_);
    }

    modifier onlyTasks() {
        require(msg.sender == tasks || msg.sender == disputes, "caller is not the task manager");
        _;
    }

    /// @notice Lock `amount` more tokens (approve first) and set the HPKE public key (a canonical
    ///         X25519 point outside the small-order subgroup).
    function stake(uint256 amount, bytes32 hpkeKey) external nonReentrant {
        Validator storage v = validators[msg.sender];
        require(v.unlockAt == 0, "unstake pending: withdraw first");
        require(validKey(hpkeKey), "HPKE public key is empty, low-order or not canonical");
        uint256 total = uint256(v.stake) + amount;
        require(total >= minStake, "stake below minimum");
        require(total < 2 ** 96, "stake above 2^96 units");
        v.stake = uint96(total);
        v.hpkeKey = hpkeKey;
        if (!_listed[msg.sender]) {
            _listed[msg.sender] = true;
            _stakers.push(msg.sender);
        }
        emit Staked(msg.sender, amount, total, hpkeKey);
        if (amount > 0) token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Stop validating (no new tasks); the stake can be withdrawn `unstakeDelay` seconds
    ///         later, once every task it serves has ended.
    function requestUnstake() external {
        Validator storage v = validators[msg.sender];
        require(v.stake > 0, "nothing staked");
        require(v.unlockAt == 0, "unstake already requested");
        uint64 unlockAt = uint64(block.timestamp) + unstakeDelay;
        v.unlockAt = unlockAt;
        emit UnstakeRequested(msg.sender, unlockAt);
    }

    /// @notice Withdraw the whole stake once the unstake delay has passed and no task holds a bond.
    function withdraw() external nonReentrant {
        Validator storage v = validators[msg.sender];
        require(v.unlockAt != 0, "no unstake requested");
        require(block.timestamp >= v.unlockAt, "unstake delay not over");
        require(v.bonded == 0, "stake is bonded to a task in progress");
        uint256 amount = v.stake;
        require(amount > 0, "nothing to withdraw");
        delete validators[msg.sender];
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Bond `amount` of `validator`'s free stake to a task (task manager only).
    function bond(address validator, uint256 amount) external onlyTasks {
        Validator storage v = validators[validator];
        require(v.stake >= minStake && v.unlockAt == 0, "stake below minimum");
        uint256 bonded = uint256(v.bonded) + amount;
        require(bonded <= v.stake, "free stake below the task's slash amount");
        v.bonded = uint96(bonded);
    }

    /// @notice Release `amount` of `validator`'s bond (task manager only).
    function unbond(address validator, uint256 amount) external onlyTasks {
        Validator storage v = validators[validator];
        v.bonded -= uint96(amount);
    }

    /// @notice Burn up to `amount` of `validator`'s bonded stake (task manager only); the bond shrinks
    ///         by the same amount. Returns what was burnt.
    function slash(address validator, uint256 amount) external onlyTasks nonReentrant returns (uint256 burnt) {
        Validator storage v = validators[validator];
        burnt = amount < v.bonded ? amount : v.bonded;
        v.stake -= uint96(burnt);
        v.bonded -= uint96(burnt);
        emit Slashed(validator, msg.sender, burnt);
        if (burnt > 0) ERC20Burnable(address(token)).burn(burnt);
    }

    /// @notice Whether `validator` has at least the minimum stake and is not unstaking.
    function isActive(address validator) external view returns (bool) {
        Validator storage v = validators[validator];
        return v.stake >= minStake && v.unlockAt == 0;
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
        return validators[validator].stake;
    }

    function bondedOf(address validator) external view returns (uint256) {
        return validators[validator].bonded;
    }

    function hpkeKeyOf(address validator) external view returns (bytes32) {
        return validators[validator].hpkeKey;
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
