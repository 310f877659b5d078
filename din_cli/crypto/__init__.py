"""din_cli.crypto: recipes, so commands never touch raw ciphers.

- ``keystore``: identities (Ethereum keystore v3 + HPKE X25519 key), ``Keystore``/``KeyInfo``/``Identity``.
- ``aead``: chunked AES-256-GCM (``din-aead v1``): ``encrypt_stream``, ``decrypt_stream``, ``encrypt_bytes``, ``decrypt_bytes``,
  ``encrypt_file``, ``decrypt_file``, ``read_key``/``write_key``.
- ``hpke``: RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM: ``seal``, ``unseal``.
- ``wrap``: the test-set key exchange: ``wrap_key``, ``unwrap_key``, ``sign_cid``, ``open_signed_cid``,
  ``wrap_test_key``/``open_test_key`` (the ``din/test-key/v1`` document), ``chain_args``/``document_from_chain``.

Submodules import their heavy dependencies inside functions; importing this package costs nothing.
"""
