// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";

/// @title DIN token: the ERC-20 that validators stake and model owners deposit as rewards.
/// @notice The whole supply, `initialSupply`, goes to the deployer at deployment; nobody can mint
///         afterwards (there is no owner). Slashed stakes are burnt through ERC20Burnable, so the
///         supply only shrinks. A dev network's faucet hands out the deployer's tokens.
contract DinToken is ERC20, ERC20Burnable {
    constructor(uint256 initialSupply) ERC20("DIN Token", "DIN") {
        _mint(msg.sender, initialSupply);
    }
}
