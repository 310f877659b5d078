// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";

/// @title Validator registry: stake DIN above a minimum, publish an HPKE key, unstake after a delay.
/// @notice A validator is *active* while its stake is at least `minStake` and it has not asked to
///         unstake. Contracts the owner marks as slashers (the task manager) may slash stakes; slashed
///         tokens are burnt, so nobody profits from provoking a slash.
contract ValidatorRegistry is Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    struct Validator {
        uint128 stake;
        uint64 unlockAt; // 0 = staked; otherwise the time from which `withdraw` works
        bytes32 hpkeKey; // X25519 public key for key wrapping
    }

    IERC20 public immutable token;
    uint256 public immutable minStake;
    uint64 public immutable unstakeDelay;
    mapping(address => Validator) public validators;
    mapping(address => bool) public slashers;

    event Staked(address indexed validator, uint256 amount, uint256 total, bytes32 hpkeKey);
    event UnstakeRequested(address indexed validator, uint256 unlockAt);
    event Withdrawn(address indexed validator, uint256 amount);
    event Slashed(address indexed validator, address indexed by, uint256 amount);
    event SlasherSet(address indexed slasher, bool allowed);

    constructor(IERC20 token_, uint256 minStake_, uint64 unstakeDelay_) Ownable(msg.sender) {
        require(minStake_ > 0, "minimum stake must be positive");
        token = token_;
        minStake = minStake_;
        unstakeDelay = unstakeDelay_;
    }

    /// @notice Lock `amount` more tokens (approve first) and set the HPKE public key.
    function stake(uint256 amount, bytes32 hpkeKey) external nonReentrant {
        Validator storage v = validators[msg.sender];
        require(v.unlockAt == 0, "unstake pending: withdraw first");
        require(hpkeKey != bytes32(0), "HPKE public key is empty");
        uint256 total = uint256(v.stake) + amount;
        require(total >= minStake, "stake below minimum");
        v.stake = uint128(total);
        v.hpkeKey = hpkeKey;
        emit Staked(msg.sender, amount, total, hpkeKey);
        if (amount > 0) token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Stop validating; the stake can be withdrawn `unstakeDelay` seconds later.
    function requestUnstake() external {
        Validator storage v = validators[msg.sender];
        require(v.stake > 0, "nothing staked");
        require(v.unlockAt == 0, "unstake already requested");
        uint64 unlockAt = uint64(block.timestamp) + unstakeDelay;
        v.unlockAt = unlockAt;
        emit UnstakeRequested(msg.sender, unlockAt);
    }

    /// @notice Withdraw the whole stake once the unstake delay has passed.
    function withdraw() external nonReentrant {
        Validator storage v = validators[msg.sender];
        require(v.unlockAt != 0, "no unstake requested");
        require(block.timestamp >= v.unlockAt, "unstake delay not over");
        uint256 amount = v.stake;
        require(amount > 0, "nothing to withdraw");
        delete validators[msg.sender];
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Burn up to `amount` of `validator`'s stake (slashers only); returns what was burnt.
    function slash(address validator, uint256 amount) external nonReentrant returns (uint256 burnt) {
        require(slashers[msg.sender], "caller is not a slasher");
        Validator storage v = validators[validator];
        burnt = amount < v.stake ? amount : v.stake;
        v.stake -= uint128(burnt);
        emit Slashed(validator, msg.sender, burnt);
        if (burnt > 0) ERC20Burnable(address(token)).burn(burnt);
    }

    /// @notice Allow or forbid `slasher` to slash (owner only).
    function setSlasher(address slasher, bool allowed) external onlyOwner {
        slashers[slasher] = allowed;
        emit SlasherSet(slasher, allowed);
    }

    /// @notice Whether `validator` has at least the minimum stake and is not unstaking.
    function isActive(address validator) external view returns (bool) {
        Validator storage v = validators[validator];
        return v.stake >= minStake && v.unlockAt == 0;
    }

    function stakeOf(address validator) external view returns (uint256) {
        return validators[validator].stake;
    }

    function hpkeKeyOf(address validator) external view returns (bytes32) {
        return validators[validator].hpkeKey;
    }
}
