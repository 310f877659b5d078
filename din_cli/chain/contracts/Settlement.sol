// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title Settlement arithmetic: per-participant medians of validators' scores and tolerance checks.
/// @notice Mirrors din_cli/chain/settlement.py. The median of c values is the LOWER median:
///         the element at index (c - 1) / 2 (integer division) of the values sorted ascending, so
///         for an even count it is the smaller of the two middle values; with no values it is 0.
///         A validator is penalised when any of its scores differs from the median by MORE than the
///         tolerance (|score - median| > tolerance).
library Settlement {
    /// @notice Fill `out[i]` with the lower median of the revealed vectors' i-th scores; return,
    ///         per validator, whether one of its scores lies beyond `tolerance` of a median.
    /// @dev Each revealed vector must hold out.length scores. The inner loops read calldata and
    ///      an insertion-sort buffer in assembly (k, the validators per subgroup, is small).
    function medians(uint256[][] calldata vectors, bool[] memory revealed, uint256[] memory out, uint256 tolerance)
        internal
        pure
        returns (bool[] memory penalised)
    {
        uint256 k = vectors.length;
        uint256 size = out.length;
        penalised = new bool[](k);
        uint256[] memory ptrs = new uint256[](k); // calldata offsets of the revealed vectors' scores
        uint256[] memory who = new uint256[](k); // their validator slots
        uint256 c = 0;
        for (uint256 j = 0; j < k; j++) {
            if (!revealed[j]) continue;
            uint256[] calldata v = vectors[j];
            require(v.length == size, "score vector length differs from the subgroup size");
            uint256 p;
            assembly ("memory-safe") {
                p := v.offset
            }
            ptrs[c] = p;
            who[c] = j;
            c++;
        }
        if (c == 0) return penalised; // every median stays 0
        uint256[] memory buf = new uint256[](c);
        uint256 mid = (c - 1) / 2;
        assembly ("memory-safe") {
            let bufData := add(buf, 32)
            let ptrData := add(ptrs, 32)
            let whoData := add(who, 32)
            let penData := add(penalised, 32)
            let outData := add(out, 32)
            for { let i := 0 } lt(i, size) { i := add(i, 1) } {
                let off := shl(5, i)
                for { let a := 0 } lt(a, c) { a := add(a, 1) } {
                    let s := calldataload(add(mload(add(ptrData, shl(5, a))), off))
                    let q := a
                    for {} gt(q, 0) {} {
                        let prev := mload(add(bufData, shl(5, sub(q, 1))))
                        if iszero(gt(prev, s)) { break }
                        mstore(add(bufData, shl(5, q)), prev)
                        q := sub(q, 1)
                    }
                    mstore(add(bufData, shl(5, q)), s)
                }
                let med := mload(add(bufData, shl(5, mid)))
                mstore(add(outData, off), med)
                for { let a := 0 } lt(a, c) { a := add(a, 1) } {
                    let s := calldataload(add(mload(add(ptrData, shl(5, a))), off))
                    let d := sub(s, med)
                    if lt(s, med) { d := sub(med, s) }
                    if gt(d, tolerance) { mstore(add(penData, shl(5, mload(add(whoData, shl(5, a))))), 1) }
                }
            }
        }
    }
}
