// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title Settlement arithmetic: which revealed score vector a strict majority agreed on.
/// @notice Mirrors din_cli/chain/settlement.py. Honest validators compute the same integer
///         score vector, so they agree exactly: a vector hash revealed by MORE than half of the
///         subgroup's live validators (non-revealers count in the denominator; validators removed
///         from the task for a proven lie or silence do not) is accepted. There is no tolerance: any
///         other revealed vector is a provable lie.
library Settlement {
    /// @notice Index + 1 of a validator whose revealed hash more than `live` / 2 of `hashes` share,
    ///         or 0 when no hash has a strict majority. bytes20(0) marks a validator that did not
    ///         reveal or was removed; `live` is the number of validators not removed.
    /// @dev O(k^2) comparisons; k, the validators per subgroup, is at most 64.
    function majority(bytes20[] memory hashes, uint256 live) internal pure returns (uint256) {
        uint256 k = hashes.length;
        uint256 need = live / 2 + 1;
        for (uint256 a = 0; a + need <= k; a++) { // a holder of `need` copies shows up by k - need
            bytes20 h = hashes[a];
            if (h == bytes20(0)) continue;
            uint256 count = 0;
            for (uint256 b = a; b < k; b++) {
                if (hashes[b] == h) count++;
            }
            if (count >= need) return a + 1;
        }
        return 0;
    }
}
