// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title DIN token: the ERC-20 that validators stake and model owners deposit as rewards.
/// @notice The deployer receives `initialSupply` and may mint more (a dev-network faucet);
///         slashed stakes are burnt through ERC20Burnable.
contract DinToken is ERC20, ERC20Burnable, Ownable {
    constructor(uint256 initialSupply) ERC20("DIN Token", "DIN") Ownable(msg.sender) {
        _mint(msg.sender, initialSupply);
    }

    /// @notice Mint `amount` to `to` (owner only).
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
