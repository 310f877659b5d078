"""``din keys``: identities (Ethereum keystore + HPKE key) and the test-set key exchange."""

from __future__ import annotations

import click

from din_cli.cli import output as out
from din_cli.cli.options import (
    acting_options,
    chain_option,
    context,
    json_option,
    key_option,
    output_option,
    quiet_option,
    read_password,
    round_option,
    task_option,
    unlock,
)
from din_cli.errors import UsageError


def _binding_options(f):
    f = click.option(
        "--chain-id",
        metavar="ID",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Chain id the key is bound to (0: not bound to a chain).",
    )(f)
    f = round_option("Round the key is bound to.", required=True, min=0)(f)
    return task_option("Task id the key is bound to.", metavar="ID", type=click.IntRange(min=0))(f)


def _print_info(info, as_json: bool) -> None:
    if as_json:
        out.emit_json(info.to_json())
    else:
        out.emit(info.address)
        out.note(
            f"key {info.name}: address {info.address}, HPKE public key 0x{info.hpke_public.hex()}"
        )


@click.command("new")
@click.argument("name")
@click.option(
    "--light-kdf",
    is_flag=True,
    help="Cheap scrypt (n=2^14) for throw-away dev accounts; default is eth-account's n=2^18.",
)
@json_option()
@quiet_option()
def keys_new(name, light_kdf, as_json):
    """Create an identity: an Ethereum account and an HPKE encryption key.

    Prints the new address. The password comes from the file named by
    DIN_PASSWORD_FILE, or a hidden prompt; the keys are written to
    $DIN_HOME/keys/NAME.json (keystore v3) and NAME.hpke.json, mode 600.
    An existing key is never overwritten.

    \b
    Example:
        export DIN_PASSWORD_FILE=~/.din-password
        ADDR=$(din keys new alice)
        din keys show alice --json | jq -r .hpke_public
    """
    from din_cli.crypto.keystore import Keystore, check_name

    check_name(name)
    info = Keystore().new(
        name, read_password(f"Password for {name}", confirm=True), light_kdf=light_kdf
    )
    _print_info(info, as_json)


@click.command("list")
@json_option()
def keys_list(as_json):
    """List identities: NAME, tab, ADDRESS per line (no password needed).

    \b
    Example:
        din keys list | cut -f2
    """
    from din_cli.crypto.keystore import Keystore

    infos = Keystore().list()
    out.emit_doc([i.to_json() for i in infos], as_json, *(f"{i.name}\t{i.address}" for i in infos))


@click.command("show")
@click.argument("name")
@click.option(
    "--field", type=click.Choice(["address", "hpke_public"]), help="Print only this value."
)
@json_option()
def keys_show(name, field, as_json):
    """Show an identity's address and HPKE public key (one per line).

    \b
    Example:
        din keys wrap --key K.bin --to "$(din keys show val1 --field hpke_public)" --task 1 --round 0
    """
    from din_cli.crypto.keystore import Keystore

    info = Keystore().show(name)
    if as_json:
        out.emit_json(info.to_json())
    elif field:
        out.emit(info.to_json()[field])
    else:
        out.emit(info.address, "0x" + info.hpke_public.hex())


@click.command("import")
@click.argument("name")
@click.argument("source", metavar="[KEYSTORE.json|-]", default="-")
@click.option(
    "--light-kdf",
    is_flag=True,
    help="Cheap scrypt for the new HPKE key file (and a re-encrypted key).",
)
@json_option()
@quiet_option()
def keys_import(name, source, light_kdf, as_json):
    """Import an Ethereum key: a keystore v3 JSON file, or a hex private key on stdin.

    The key's password (also used for the new HPKE key) comes from
    DIN_PASSWORD_FILE or a prompt. A private key is read from stdin (or a
    hidden prompt on a terminal), never from the command line.

    \b
    Example:
        din keys import deployer ~/.foundry/keystores/deployer
        cat key.hex | din keys import dev -
    """
    from din_cli.crypto.keystore import Keystore, check_name

    check_name(name)
    keyfile, private_key = _read_import_source(source)
    info = Keystore().import_eth(
        name,
        read_password(f"Password for {name}"),
        keyfile=keyfile,
        private_key=private_key,
        light_kdf=light_kdf,
    )
    _print_info(info, as_json)


def _read_import_source(source):
    import json
    import sys

    from din_cli.errors import InputError
    from din_cli.files import is_stdio, open_input

    if is_stdio(source) and sys.stdin.isatty():
        data = click.prompt("Private key (hex)", hide_input=True, err=True).encode()
    else:
        with open_input(source) as f:
            data = f.read(1 << 20)
    text = data.strip()
    if text.startswith(b"{"):
        try:
            return json.loads(text), None
        except json.JSONDecodeError as e:
            raise InputError(f"{source}: not valid JSON ({e})", "give a keystore v3 file") from None
    hexpart = text.removeprefix(b"0x").removeprefix(b"0X")
    try:
        return None, bytes.fromhex(hexpart.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise InputError(
            f"{source}: neither keystore JSON nor a hex private key",
            "give a keystore v3 file or 64 hex digits",
        ) from None


@click.command("wrap")
@click.option(
    "--key",
    "key_file",
    metavar="K.bin",
    required=True,
    help="File holding the 32-byte test-set key K (- for stdin).",
)
@click.option(
    "--to",
    "recipients",
    metavar="RECIPIENT",
    multiple=True,
    help="Validator: HPKE public key, address (looked up in the local keystore), ADDRESS:HPKE_PUBLIC or a key name. "
    "Repeat; without --to, one per line on stdin.",
)
@click.option(
    "--cid", metavar="CID", help="Test set CID to sign with the owner's key and encrypt under K."
)
@key_option(
    "Owner identity that signs --cid  [env: DIN_KEY]; default: the only key.",
    flag="--signer",
    dest="signer",
)
@_binding_options
@click.option(
    "--post",
    is_flag=True,
    help="Publish on chain as TASK's test set (the task's owner signs with --signer): addresses resolve to the "
    "HPKE keys validators registered on chain; without --to, every validator assigned to the evaluation.",
)
@chain_option()
@json_option("Print the JSON document (the default).")
@click.option("--nl", is_flag=True, help="Print one JSON object per recipient per line instead.")
@output_option()
@quiet_option()
def keys_wrap(
    key_file, recipients, cid, signer, task, round_, chain_id, post, chain_url, as_json, nl, output
):
    """Wrap a test-set key K for validators (HPKE), bound to a task and round.

    With --cid the owner also signs the test set's CID (EIP-191) and encrypts
    the signature under K. Prints the din/test-key/v1 JSON document that
    `din keys unwrap` reads: addresses, wrapped keys (hex) and the encrypted
    signed CID. With --post (round 0, the evaluation) the owner also
    publishes it on chain, binding it to the chain's id; validators then
    score with `din evaluate --task TASK --commit`.

    \b
    Example:
        din data encrypt --key-out K.bin test.csv -o test.csv.enc
        CID=$(din ipfs add test.csv.enc)
        din keys list | cut -f2 | din keys wrap --key K.bin --cid "$CID" --task 1 --round 3 -o wrapped.json
        din keys wrap --key K.bin --cid "$CID" --task 1 --round 0 --post --signer dev1 -o /dev/null
    """
    if post:
        _wrap_and_post(
            key_file, recipients, cid, signer, task, round_, chain_id, chain_url, nl, output
        )
        return
    import sys

    from din_cli.crypto import aead, wrap
    from din_cli.crypto.keystore import Keystore
    from din_cli.files import write_atomic

    if as_json and nl:
        raise UsageError("--json and --nl cannot be used together", "choose one")
    specs = list(recipients)
    if not specs:
        if key_file == "-":
            raise UsageError(
                "K and the recipients cannot both come from stdin", "give recipients with --to"
            )
        if sys.stdin.isatty():
            raise UsageError("no recipients", "give --to RECIPIENT, or pipe one per line on stdin")
        specs = sys.stdin.read().split()
    ks = Keystore()
    key = aead.read_key(key_file)
    binding = wrap.Binding(chain_id, task, round_)
    targets = wrap.resolve_recipients(specs, keystore=ks)
    owner = unlock(signer) if cid is not None else None
    doc = wrap.wrap_test_key(key, targets, binding, cid=cid, owner=owner)
    write_atomic(output, wrap.dumps(doc, per_recipient=nl).encode())
    signed = f"; CID signed by {owner.address}" if owner else ""
    out.note(f"wrapped K for {len(targets)} recipient(s), task {task} round {round_}{signed}")


def _wrap_and_post(
    key_file, recipients, cid, signer, task, round_, chain_id, chain_url, nl, output
):
    """`din keys wrap --post`: wrap K for the task's validators (keys from chain) and publish it."""
    from din_cli.crypto import aead, wrap
    from din_cli.crypto.keystore import Keystore
    from din_cli.files import write_atomic
    from din_cli.protocol import evaluation

    if cid is None:
        raise UsageError("--post publishes the test set's signed CID", "give --cid CID")
    if round_ != evaluation.EVAL_ROUND:
        raise UsageError(
            f"--post publishes the evaluation's key, not round {round_}'s", "give --round 0"
        )
    key = aead.read_key(key_file)
    with context(chain_url, None, signer) as ctx:
        if chain_id not in (0, ctx.chain.chain_id):
            raise UsageError(
                f"--chain-id {chain_id} is not this chain's id {ctx.chain.chain_id}",
                "leave --chain-id out",
            )
        specs = list(recipients) or evaluation.evaluation_validators(ctx, task)
        targets = wrap.resolve_recipients(
            specs, keystore=Keystore(), resolver=evaluation.evaluation_keys(ctx, task)
        )
        binding = wrap.Binding(int(ctx.chain.chain_id), task, round_)
        doc = wrap.wrap_test_key(key, targets, binding, cid=cid, owner=ctx.identity)
        evaluation.post_wrapped(ctx, task, doc)
    write_atomic(output, wrap.dumps(doc, per_recipient=nl).encode())
    out.note(f"posted the test set of task {task}: K wrapped for {len(targets)} validator(s)")


@click.command("unwrap")
@click.argument("document", metavar="WRAPPED.json", default="-")
@key_option()
@click.option(
    "--owner",
    metavar="ADDRESS",
    help="Task owner's address: verify and print the signed test set CID.",
)
@_binding_options
@output_option(
    "Where to write K (mode 600, never overwritten); - writes raw bytes to stdout.",
    dest="key_out",
)
@quiet_option()
def keys_unwrap(document, key_name, owner, task, round_, chain_id, key_out):
    """Recover the test-set key K from a wrapped-key document, as a validator.

    Finds this identity's entry, recovers K and writes it to -o. With --owner
    it also decrypts the test set CID, checks that the owner signed it and
    prints it; a bad signature exits 3 and writes nothing.

    \b
    Example:
        CID=$(din keys unwrap --key val1 --owner "$OWNER" --task 1 --round 3 wrapped.json -o K.bin)
        din ipfs cat "$CID" | din data decrypt --key K.bin - -o test.csv
    """
    import sys

    from din_cli.crypto import aead, wrap
    from din_cli.crypto.keystore import Keystore
    from din_cli.files import is_stdio, open_input

    if is_stdio(key_out) and owner is not None:
        raise UsageError("K and the CID would both go to stdout", "write K to a file with -o K.bin")
    if is_stdio(key_out) and sys.stdout.isatty():
        raise UsageError(
            "K is 32 raw bytes, not for a terminal", "write it with -o K.bin, or pipe it"
        )
    with open_input(document) as f:
        doc = wrap.load_document(f.read(), str(document))
    binding = wrap.Binding(chain_id, task, round_)
    identity = unlock(key_name or _recipient_name(Keystore(), doc))
    opened = wrap.open_test_key(doc, identity, binding, owner_address=owner)
    aead.write_key(key_out, opened.key)
    if opened.cid is not None:
        out.emit(opened.cid)
    elif doc.get("encrypted_cid") and not is_stdio(key_out):
        out.note(
            "the document carries a signed test set CID: pass --owner ADDRESS to verify and print it"
        )


def _recipient_name(ks, doc) -> str:
    """The one local key that has an entry in ``doc``."""
    from din_cli.crypto import wrap
    from din_cli.errors import NotFoundError

    names = [
        i.name
        for i in ks.list()
        if wrap.find_entry(doc, hpke_public=i.hpke_public, address=i.address)
    ]
    if len(names) == 1:
        return names[0]
    if not names:
        raise NotFoundError(
            "none of the local keys is a recipient of this document",
            "check `din keys list` against it",
        )
    raise UsageError(
        f"several local keys are recipients ({', '.join(names)})", "choose one with --key NAME"
    )


@click.command("grant")
@task_option()
@click.option(
    "--dispute",
    "dispute_id",
    default=None,
    metavar="ID",
    help="Grant the disputed subgroup's keys to dispute ID's committee (default: to the evaluation validators).",
)
@acting_options(ipfs=True)
def keys_grant(task, dispute_id, chain_url, ipfs_api, key_name, as_json):
    """Grant the keys of the sealed updates you opened as a validator to the readers who need them.

    In a sealed task (`din model publish --privacy sealed`) only the validators
    of a participant's subgroup can open its update. Once the evaluation is
    drawn (the test-set phase), each of them runs this to wrap every key it
    opened to the task's evaluation validators; with --dispute ID, to the
    committee drawn for a dispute on its subgroup. The grant (a
    din/key-grant/v1 document) goes to the content store and is announced on
    chain; prints its CID. Readers use a granted key only if it matches the
    update's key check. A grant already announced exits 7.

    \b
    Example:
        din keys grant --task 1 --key dev7
        din keys grant --task 1 --dispute 2 --key dev8 --json | jq .readers
    """
    from din_cli.protocol import sealing
    from din_cli.protocol.roundflow import task_number

    task_id = task_number(task)
    with context(chain_url, ipfs_api, key_name) as ctx:
        if dispute_id is None:
            doc = sealing.grant_for_evaluation(ctx, task_id)
        else:
            from din_cli.protocol import disputes

            info = ctx.din.dispute_info(disputes.dispute_number(dispute_id))
            if info["task_id"] != task_id:
                raise UsageError(
                    f"dispute {info['dispute_id']} is on task {info['task_id']}, not {task_id}",
                    f"use --task {info['task_id']}",
                )
            doc = sealing.grant_for_dispute(ctx, task_id, info)
    out.note(f"granted {doc['keys']} key(s) of task {task_id} to {len(doc['readers'])} reader(s)")
    out.emit_doc(doc, as_json, doc["cid"] or "")


@click.command("unseal")
@click.argument("cid", metavar="CID")
@task_option()
@output_option("Where to write the update (never half-written); - for stdout.")
@acting_options(ipfs=True)
def keys_unseal(cid, task, output, chain_url, ipfs_api, key_name, as_json):
    """Open one sealed update of a sealed task as a reader it names (writes the safetensors file).

    A validator of the update's subgroup opens it with its own wrapped key;
    an evaluation validator or a dispute committee member with a key that a
    grant gave it. Anyone else gets exit 3 and nothing is written: that is
    what sealing promises. --json prints the update's round, subgroup and
    participant (the file then needs -o).

    \b
    Example:
        din keys unseal bafkrei... --task 1 --key dev8 -o update.safetensors
    """
    from din_cli.files import is_stdio
    from din_cli.protocol import sealing
    from din_cli.protocol.roundflow import task_number

    if as_json and is_stdio(output):
        raise UsageError("--json and the update cannot both go to stdout", "give -o FILE")
    with context(chain_url, ipfs_api, key_name) as ctx:
        doc = sealing.unseal(ctx, task_number(task), cid, output)
    out.note(
        f"opened round {doc['round']}'s update of {doc['participant']} (subgroup {doc['group']})"
    )
    if as_json:
        out.emit_json(doc)
