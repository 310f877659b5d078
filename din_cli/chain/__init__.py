"""din_cli.chain: contracts, the chain client and the embedded chain.

- ``client``: ``connect(url)`` -> ``Chain`` (embedded SQLite chain, ``"memory"``,
  or any JSON-RPC node); send / deploy / call / logs with decoded reverts.
- ``embedded``: py-evm through eth-tester, persisted in ``$DIN_HOME/chain.sqlite``
  with an event index.
- ``network``: ``$DIN_HOME/deployment.json`` and the chain-side steps of the
  ``init`` / ``chain`` / ``validator`` / ``participant`` / ``task`` commands.
- ``din``: the typed wrapper over the DIN contracts.

Nothing heavy is imported here; web3 and py-evm load inside the functions.
"""
