"""``din ipfs``: the content store (add, cat, CAR import/export) with Kubo's CIDs."""

from __future__ import annotations

import os
import sys

import click

from din_cli.cli import output as out
from din_cli.cli.options import ipfs_option, json_option, output_option, quiet_option
from din_cli.errors import UsageError


def _size(path: str) -> int | None:
    if path == "-":
        return None
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _cids_or_stdin(cids: tuple[str, ...]) -> list[str]:
    """The CIDs given, else those read from stdin (whitespace separated)."""
    if cids:
        return list(cids)
    if sys.stdin.isatty():
        raise UsageError("no CID given", "pass CIDs as arguments or pipe them in, one per line")
    found = sys.stdin.read().split()
    if not found:
        raise UsageError(
            "no CID given and none on stdin", "pass CIDs as arguments or pipe them in, one per line"
        )
    return found


@click.group("ipfs")
def ipfs():
    """Add and read content by CID; move DAGs in CAR files.

    CIDs equal Kubo's `ipfs add` (CIDv1, raw leaves, 256 KiB chunks by
    default). Content lives in $DIN_HOME/blocks unless --ipfs/DIN_IPFS names an
    IPFS node's RPC API. Every block read is verified against its CID.

    \b
    Example:
        CID=$(echo hello | din ipfs add -)
        din ipfs cat "$CID" | wc -c
    """


@ipfs.command("add")
@click.argument("files", nargs=-1, required=True, metavar="FILE|-...")
@click.option(
    "--cid-version",
    type=click.Choice(["0", "1"]),
    default="1",
    show_default=True,
    help="1: raw leaves, base32 (like `ipfs add --cid-version=1`); 0: classic Qm... CIDs.",
)
@click.option("-n", "--only-hash", is_flag=True, help="Only compute the CID; store nothing.")
@ipfs_option()
@quiet_option()
def ipfs_add(files, cid_version, only_hash, ipfs_api):
    """Add files (- for stdin) and print each one's CID, one per line.

    \b
    Example:
        CID=$(curl -sL https://example.com/model.safetensors | din ipfs add -)
        din ipfs add --only-hash --cid-version 0 model.safetensors
    """
    from din_cli.store import open_store

    store = open_store(ipfs_api)
    for path in files:
        with out.progress(f"adding {path}", total=_size(path), unit="bytes") as advance:
            out.emit(
                store.add(path, cid_version=int(cid_version), only_hash=only_hash, progress=advance)
            )


@ipfs.command("cat")
@click.argument("cid", required=False)
@output_option()
@ipfs_option()
@quiet_option()
def ipfs_cat(cid, output, ipfs_api):
    """Write a file's bytes (stdout, or -o FILE written atomically); CID from stdin if omitted.

    Every block is checked against its CID: a corrupt block stops the command
    with exit code 3 and its bytes are never written.

    \b
    Example:
        din ipfs add model.safetensors | din ipfs cat -o copy.safetensors
        din ipfs cat bafkrei... | sha256sum
    """
    from din_cli.store import open_store

    (cid,) = [cid] if cid else _cids_or_stdin(())[:1]
    with out.progress("reading", unit="bytes") as advance:
        open_store(ipfs_api).cat_to(cid, output, progress=advance)


@ipfs.command("has")
@click.argument("cids", nargs=-1)
@ipfs_option()
def ipfs_has(cids, ipfs_api):
    """Exit 0 if every CID's whole DAG is in the store, else 4 naming the first missing.

    CIDs come from stdin when none are given; nothing is fetched.

    \b
    Example:
        din ipfs has "$CID" || din ipfs car import model.car
    """
    from din_cli.errors import NotFoundError
    from din_cli.store import open_store

    store = open_store(ipfs_api)
    for c in _cids_or_stdin(cids):
        if not store.has(c):
            raise NotFoundError(
                f"{c} is not (completely) in {store.name}", "add it or import a CAR holding it"
            )


@ipfs.command("ls")
@json_option()
@ipfs_option()
def ipfs_ls(as_json, ipfs_api):
    """List the root CIDs added or imported (a node's recursive pins with --ipfs).

    \b
    Example:
        din ipfs ls | din ipfs car export -o everything.car
    """
    from din_cli.store import open_store

    roots = open_store(ipfs_api).roots()
    out.emit_doc(roots, as_json, *roots)


@ipfs.group("car")
def car():
    """Export DAGs to and import them from CAR v1 files (`ipfs dag export/import`).

    \b
    Example:
        din ipfs car export "$CID" -o - | ssh host ipfs dag import
    """


@car.command("export")
@click.argument("cids", nargs=-1)
@output_option()
@ipfs_option()
@quiet_option()
def car_export(cids, output, ipfs_api):
    """Write a CAR v1 holding the whole DAG of each CID (CIDs from stdin if none given).

    \b
    Example:
        din ipfs add model.safetensors | din ipfs car export -o model.car
    """
    from din_cli.store import open_store

    n = open_store(ipfs_api).export_car_to(_cids_or_stdin(cids), output)
    out.note(f"CAR written: {n} block{'' if n == 1 else 's'}")


@car.command("import")
@click.argument("file", metavar="FILE|-")
@ipfs_option()
@quiet_option()
def car_import(file, ipfs_api):
    """Import a CAR v1 (- for stdin), verifying every block; print its root CIDs.

    \b
    Example:
        ipfs dag export "$CID" | din ipfs car import - | xargs din ipfs cat -o model.safetensors
    """
    from din_cli.store import open_store

    out.emit(*open_store(ipfs_api).import_car(file))
