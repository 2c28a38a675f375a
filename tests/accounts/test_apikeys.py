"""API key format: what is handed out, what the shape check lets through, how it is hashed."""

from __future__ import annotations

import pytest

from gateway.accounts.apikeys import hash_key, new_key, same_hash, well_formed


def test_new_keys_have_the_contract_shape_and_are_unique() -> None:
    keys = [new_key() for _ in range(200)]
    for key in keys:
        assert key.secret.startswith("cg_") and len(key.secret) >= 35
        assert well_formed(key.secret)
        assert key.key_hash == hash_key(key.secret) and len(key.key_hash) == 64
        assert key.secret not in key.key_hash and key.display_prefix == key.secret[:7]
    assert len({k.secret for k in keys}) == len({k.key_id for k in keys}) == 200


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "cg_short",
        "sk_" + "a" * 43,
        "cg_" + "a" * 43 + "\n",
        "cg_" + "a" * 42 + "!",
        " cg_" + "a" * 43,
        "cg_" + "a" * 129,
    ],
)
def test_malformed_keys_are_refused_before_any_lookup(secret: str) -> None:
    assert not well_formed(secret)


def test_hash_comparison() -> None:
    key = new_key()
    assert same_hash(key.key_hash, hash_key(key.secret))
    assert not same_hash(key.key_hash, hash_key(key.secret + "x"))
