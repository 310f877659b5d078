// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";

/// @title DIN token: the ERC-20 that validators and delegators stake and model owners deposit as rewards.
/// @notice `initialSupply` goes to the deployer at deployment. Afterwards only the `minter`, named
///         once by the deployer (the validator registry, whose code mints nothing but its emission
///         schedule), can mint, and never more than `cap` over the token's whole life (burnt tokens
///         do not make room again). There is no owner. Slashed stakes and the burnt share of fees
///         are burnt through ERC20Burnable. A dev network's faucet hands out the deployer's tokens.
contract DinToken is ERC20, ERC20Burnable {
    uint256 public immutable cap; // most tokens ever minted, initial supply included
    uint256 public totalMinted;
    address public minter;
    address internal immutable deployer;

    event MinterSet(address minter);

    constructor(uint256 initialSupply, uint256 cap_) ERC20("DIN Token", "DIN") {
        require(cap_ >= initialSupply, "cap below the initial supply");
        cap = cap_;
        deployer = msg.sender;
        totalMinted = initialSupply;
        _mint(msg.sender, initialSupply);
    }

    /// @notice Name the minter (the deployer, once; nothing can change it afterwards).
    function setMinter(address minter_) external {
        require(msg.sender == deployer, "only the deployer sets the minter");
        require(minter == address(0), "minter already set");
        require(minter_ != address(0), "minter is the zero address");
        minter = minter_;
        emit MinterSet(minter_);
    }

    /// @notice Mint `amount` to `to` (the minter only, within the cap).
    function mint(address to, uint256 amount) external {
        require(msg.sender == minter, "caller is not the minter");
        uint256 minted = totalMinted + amount;
        require(minted <= cap, "mint above the supply cap");
        totalMinted = minted;
        _mint(to, amount);
    }
}
