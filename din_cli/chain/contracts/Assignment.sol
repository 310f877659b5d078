// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title Subgroup assignment: a keyed Feistel permutation of indices, cut into consecutive blocks.
/// @notice Mirrors din_cli/chain/assignment.py bit for bit. For a domain of n indices, pick the
///         smallest h >= 1 with 4^h >= n, run a 4-round balanced Feistel network on 2h-bit values
///         (round function: low h bits of keccak256(abi.encode(key, round, right))), and cycle-walk
///         (re-apply) until the value falls below n. Checking one index costs O(1) hashes
///         (expected fewer than 4 walks).
library Assignment {
    uint256 internal constant PARTICIPANTS = 0;
    uint256 internal constant VALIDATORS = 1;

    /// @notice The permutation key for one population (`PARTICIPANTS` or `VALIDATORS`) under `seed`.
    function key(bytes32 seed, uint256 population) internal pure returns (bytes32) {
        return keccak256(abi.encode(seed, population));
    }

    /// @notice Position of `index` (< n) in the permutation of [0, n) keyed by `k`.
    function permute(bytes32 k, uint256 index, uint256 n) internal pure returns (uint256 x) {
        require(index < n, "index out of range");
        uint256 h = 1;
        while ((uint256(1) << (2 * h)) < n) h++;
        uint256 mask = (uint256(1) << h) - 1;
        x = index;
        do {
            uint256 l = x >> h;
            uint256 r = x & mask;
            for (uint256 i = 0; i < 4; i++) {
                uint256 f;
                assembly ("memory-safe") {
                    let p := mload(0x40)
                    mstore(p, k)
                    mstore(add(p, 32), i)
                    mstore(add(p, 64), r)
                    f := and(keccak256(p, 96), mask)
                }
                (l, r) = (r, l ^ f);
            }
            x = (l << h) | r;
        } while (x >= n);
    }

    /// @notice Number of participant subgroups: ceil(n / size).
    function groupCount(uint256 n, uint256 size) internal pure returns (uint256) {
        return (n + size - 1) / size;
    }

    /// @notice Subgroup of participant position `pos` when n positions are cut into g balanced blocks.
    function groupOf(uint256 pos, uint256 n, uint256 g) internal pure returns (uint256) {
        return (pos * g) / n;
    }

    /// @notice First position of block `group` (blocks hold floor or ceil of n/g positions).
    function groupStart(uint256 group, uint256 n, uint256 g) internal pure returns (uint256) {
        return (group * n + g - 1) / g;
    }
}
