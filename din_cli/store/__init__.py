"""Content addressing: a UnixFS importer giving Kubo's CIDs, CAR v1, and two stores.

``open_store()`` gives the embedded default, a :class:`LocalStore` in
``$DIN_HOME/blocks``; ``open_store("/ip4/127.0.0.1/tcp/5001")`` a
:class:`KuboStore` talking to an IPFS node's RPC API. Both offer ``add``,
``cat``, ``cat_to``, ``has``, ``export_car``/``import_car`` and verify every
block they read against its CID.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from din_cli.store.base import Store

__all__ = ["open_store"]


def open_store(ipfs_api: str | None = None) -> Store:
    """The store to use: a KuboStore for a multiaddr, else the LocalStore in ``$DIN_HOME/blocks``."""
    if ipfs_api:
        from din_cli.store.kubo import KuboStore

        return KuboStore(ipfs_api)
    from din_cli.config import din_home
    from din_cli.store.local import LocalStore

    return LocalStore(din_home() / "blocks")
