// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title Settlement arithmetic: which revealed score vector a strict majority agreed on.
/// @notice Mirrors din_cli/chain/settlement.py. Honest validators compute the same integer
///         score vector, so they agree exactly: a vector hash revealed by MORE than half of the
///         subgroup's validators (non-revealers count in the denominator) is accepted. There is no
///         tolerance: any other revealed vector is a provable lie.
library Settlement {
    /// @notice Index + 1 of a validator whose revealed hash more than half of `hashes` share, or 0
    ///         when no hash has a strict majority. bytes20(0) marks a validator that did not reveal.
    /// @dev O(k^2) comparisons; k, the validators per subgroup, is at most 64.
    function majority(bytes20[] memory hashes) internal pure returns (uint256) {
        uint256 k = hashes.length;
        for (uint256 a = 0; a < k; a++) {
            bytes20 h = hashes[a];
            if (h == bytes20(0)) continue;
            uint256 count = 0;
            for (uint256 b = 0; b < k; b++) {
                if (hashes[b] == h) count++;
            }
            if (count * 2 > k) return a + 1;
            if ((a + 1) * 2 >= k) return 0; // a majority holder would have shown up among the first half
        }
        return 0;
    }
}
