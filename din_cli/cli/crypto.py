"""``din data encrypt`` / ``din data decrypt``: AES-256-GCM files in the din-aead v1 framing."""

from __future__ import annotations

import click

from din_cli.cli import output as out
from din_cli.cli.options import output_option, quiet_option
from din_cli.errors import UsageError


def _size(path):
    import os

    try:
        return os.stat(path).st_size if path != "-" else None
    except OSError:
        return None


@click.command("encrypt")
@click.argument("file", metavar="FILE|-")
@click.option(
    "--key", "key_file", metavar="K.bin", help="Encrypt with this existing 32-byte key file."
)
@click.option(
    "--key-out",
    metavar="K.bin",
    help="Make a fresh key and write it here (mode 600, never overwritten).",
)
@output_option()
@quiet_option()
def data_encrypt(file, key_file, key_out, output):
    """Encrypt a file with AES-256-GCM in authenticated 1 MiB chunks.

    Give --key-out to make a fresh key K, or --key to reuse one. Truncation,
    reordering or any altered byte is detected on decryption.

    \b
    Example:
        din data encrypt --key-out K.bin test.csv -o - | din ipfs add -
    """
    from din_cli.crypto import aead

    if (key_file is None) == (key_out is None):
        raise UsageError(
            "give exactly one of --key K.bin and --key-out K.bin", "--key-out makes a fresh key"
        )
    if "-" in (file, key_file) and file == key_file:
        raise UsageError(
            "the file and the key cannot both come from stdin", "give one of them as a file"
        )
    with out.progress("encrypting", total=_size(file), unit="bytes") as advance:
        if key_out is not None:
            aead.encrypt_file_new_key(file, output, key_out, progress=advance)
        else:
            aead.encrypt_file(file, output, aead.read_key(key_file), progress=advance)


@click.command("decrypt")
@click.argument("file", metavar="FILE.enc|-")
@click.option(
    "--key",
    "key_file",
    metavar="K.bin",
    required=True,
    help="File holding the 32-byte key (- for stdin).",
)
@output_option()
@quiet_option()
def data_decrypt(file, key_file, output):
    """Decrypt a din-encrypted file; nothing is written unless all of it verifies.

    An altered, truncated or reordered file exits 3 with no output.

    \b
    Example:
        din ipfs cat "$CID" | din data decrypt --key K.bin - -o test.csv
    """
    from din_cli.crypto import aead

    if file == "-" and key_file == "-":
        raise UsageError(
            "the file and the key cannot both come from stdin", "give one of them as a file"
        )
    with out.progress("decrypting", total=_size(file), unit="bytes") as advance:
        aead.decrypt_file(file, output, aead.read_key(key_file), progress=advance)
