// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

interface ICredits {
    function creditsAt(address account, uint256 blockNumber) external view returns (uint256);
}

/// @title DIN grants: the public-goods pool and its quadratic-funding rounds.
/// @notice The registry sends `publicGoodsBps` of every network fee here; anyone may donate too.
///         Anyone opens a round over a fixed list of projects (recipient and a content-store CID of
///         its description); the round reserves `roundShareBps` of the pool's free balance as its
///         matching fund. Until the round ends anyone contributes to its projects; contributions go
///         to the projects whole. At the end (`finalize`, anyone) the matching fund is split in
///         proportion to each project's quadratic-funding match (sum of the square roots of its
///         counted contributions)^2 - (their sum); integer rounding goes to the last project with a
///         match, so the payouts sum exactly to the fund. Without any match the fund returns to the
///         pool.
///
///         Collusion and Sybil defence: a contribution counts toward matching only when its
///         contributor held governance credits (earned by honest work in tasks, see DinGovernor) when
///         the round opened, so splitting money across fresh addresses buys no match; and each
///         contributor's counted total per project is capped at `contributionCap`, which bounds what a
///         group of credit holders can steer toward one project: k colluders move the match by at
///         most about k^2 * cap. A lone contributor never creates a match ((sqrt c)^2 - c = 0).
///         Finalisation costs gas linear in the number of projects and nothing per contribution.
contract DinGrants is ReentrancyGuard {
    using SafeERC20 for IERC20;

    struct Round {
        uint64 end;
        uint48 snapshot; // credits counted as of this block
        uint32 projects;
        bool finalized;
        uint256 matching; // the fund reserved for this round
    }

    struct Project {
        address recipient;
        uint256 sumSqrt; // sum of sqrt(counted contribution), token units^(1/2)
        uint256 counted; // sum of counted contributions
        uint256 contributed; // everything contributed (paid to the project)
        uint256 matched; // its share of the matching fund (after finalize)
        bool claimed;
    }

    IERC20 public immutable token;
    ICredits public immutable credits;
    uint16 public immutable roundShareBps;
    uint256 public immutable contributionCap;

    uint256 public reserved; // matching funds of rounds not yet finalized
    uint256 public held; // contributions and matches not yet claimed
    uint256 public roundCount;
    mapping(uint256 => Round) public rounds;
    mapping(uint256 => mapping(uint256 => Project)) public projects;
    mapping(uint256 => mapping(uint256 => mapping(address => uint256))) public contributionOf;

    event RoundOpened(uint256 indexed round, address indexed by, address[] recipients, bytes[] cids, uint256 matching, uint256 end);
    event Contributed(uint256 indexed round, uint256 indexed project, address indexed contributor, uint256 amount, bool counted);
    event RoundFinalized(uint256 indexed round, uint256[] matched);
    event GrantClaimed(uint256 indexed round, uint256 indexed project, address indexed recipient, uint256 amount);

    constructor(IERC20 token_, ICredits credits_, uint16 roundShareBps_, uint256 contributionCap_) {
        require(roundShareBps_ > 0 && roundShareBps_ <= 10000, "round share must be 1..10000 bps");
        require(contributionCap_ > 0, "contribution cap must be positive");
        token = token_;
        credits = credits_;
        roundShareBps = roundShareBps_;
        contributionCap = contributionCap_;
    }

    /// @notice The pool's balance not reserved by rounds nor owed to projects.
    function available() public view returns (uint256) {
        return token.balanceOf(address(this)) - reserved - held;
    }

    /// @notice Open a funding round over `recipients` (with their description CIDs) that takes
    ///         contributions for `duration` seconds. Returns the round id (from 1).
    function openRound(address[] calldata recipients, bytes[] calldata cids, uint64 duration) external returns (uint256 id) {
        require(recipients.length >= 2 && recipients.length <= 200, "a round needs 2..200 projects");
        require(cids.length == recipients.length, "one CID per project");
        require(duration > 0, "duration must be positive");
        uint256 matching = (available() * roundShareBps) / 10000;
        require(matching > 0, "the public-goods pool is empty");
        id = ++roundCount;
        Round storage r = rounds[id];
        r.end = uint64(block.timestamp) + duration;
        r.snapshot = uint48(block.number - 1);
        r.projects = uint32(recipients.length);
        r.matching = matching;
        reserved += matching;
        for (uint256 i = 0; i < recipients.length; i++) {
            require(recipients[i] != address(0) && cids[i].length > 0, "project without recipient or CID");
            projects[id][i].recipient = recipients[i];
        }
        emit RoundOpened(id, msg.sender, recipients, cids, matching, r.end);
    }

    /// @notice Contribute `amount` (approve first) to project `project` of round `id`.
    function contribute(uint256 id, uint256 project, uint256 amount) external nonReentrant {
        Round storage r = rounds[id];
        require(r.end != 0 && block.timestamp < r.end, "round is not open for contributions");
        require(project < r.projects, "no such project");
        require(amount > 0, "nothing to contribute");
        Project storage p = projects[id][project];
        uint256 before = contributionOf[id][project][msg.sender];
        uint256 total = before + amount;
        contributionOf[id][project][msg.sender] = total;
        p.contributed += amount;
        held += amount;
        bool counts = credits.creditsAt(msg.sender, r.snapshot) > 0;
        if (counts) {
            uint256 was = before < contributionCap ? before : contributionCap;
            uint256 now_ = total < contributionCap ? total : contributionCap;
            p.sumSqrt = p.sumSqrt + Math.sqrt(now_) - Math.sqrt(was);
            p.counted = p.counted + now_ - was;
        }
        emit Contributed(id, project, msg.sender, amount, counts);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice A project's quadratic-funding match before scaling: (sum sqrt c)^2 - sum c (>= 0).
    function rawMatch(uint256 id, uint256 project) public view returns (uint256) {
        Project storage p = projects[id][project];
        uint256 sq = p.sumSqrt * p.sumSqrt;
        return sq > p.counted ? sq - p.counted : 0;
    }

    /// @notice Split round `id`'s matching fund once it has ended (anyone).
    function finalize(uint256 id) external {
        Round storage r = rounds[id];
        require(r.end != 0 && block.timestamp >= r.end, "round has not ended");
        require(!r.finalized, "round already finalized");
        r.finalized = true;
        uint256 n = r.projects;
        uint256[] memory raw = new uint256[](n);
        uint256 total;
        uint256 last;
        for (uint256 i = 0; i < n; i++) {
            raw[i] = rawMatch(id, i);
            total += raw[i];
            if (raw[i] > 0) last = i;
        }
        reserved -= r.matching;
        uint256[] memory matched = new uint256[](n);
        if (total > 0) {
            uint256 paid;
            for (uint256 i = 0; i < n; i++) {
                if (i == last) matched[i] = r.matching - paid;
                else matched[i] = Math.mulDiv(r.matching, raw[i], total);
                paid += matched[i];
                projects[id][i].matched = matched[i];
            }
            held += r.matching;
        } // else: the fund returns to the pool
        emit RoundFinalized(id, matched);
    }

    /// @notice Pay project `project` of finalized round `id` its contributions and match (anyone;
    ///         the tokens go to the project's recipient).
    function claim(uint256 id, uint256 project) external nonReentrant returns (uint256 amount) {
        require(rounds[id].finalized, "round is not finalized");
        Project storage p = projects[id][project];
        require(p.recipient != address(0), "no such project");
        require(!p.claimed, "already claimed");
        p.claimed = true;
        amount = p.contributed + p.matched;
        held -= amount;
        emit GrantClaimed(id, project, p.recipient, amount);
        if (amount > 0) token.safeTransfer(p.recipient, amount);
    }
}
