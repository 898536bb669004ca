"""The identity cache (pure, with a fake clock)."""

from hubtwist.hub.identity import UNKNOWN, Identity, IdentityCache, cache_key


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


ALICE = Identity.from_model({"name": "alice", "kind": "user", "groups": ["staff"],
                             "scopes": ["access:servers!server=alice/"], "admin": False})


def test_identity_from_the_hubs_model():
    assert ALICE.scopes == frozenset({"access:servers!server=alice/"})
    assert ALICE.groups == ("staff",) and ALICE.describe() == "user alice"
    assert '"name":"alice"' in ALICE.as_header()


def test_the_key_hides_the_token_and_includes_the_session():
    key = cache_key("secret-token", "session")
    assert "secret-token" not in key and key.startswith("session:")
    assert cache_key("secret-token", "other") != key


def test_identities_are_fresh_for_max_age_then_only_stale():
    clock = FakeClock()
    cache = IdentityCache(clock, max_age=300)
    assert cache.fresh("k") is UNKNOWN
    cache.remember("k", ALICE)
    clock.now += 299
    assert cache.fresh("k") == ALICE
    clock.now += 2
    assert cache.fresh("k") is UNKNOWN
    assert cache.stale("k") == ALICE


def test_refusals_are_cached_briefly_and_leave_no_stale_identity():
    clock = FakeClock()
    cache = IdentityCache(clock, max_age=300, invalid_max_age=10)
    cache.remember("k", ALICE)
    cache.remember("k", None)  # revoked
    assert cache.fresh("k") is None
    clock.now += 11
    assert cache.fresh("k") is UNKNOWN
    assert cache.stale("k") is None


def test_the_cache_is_bounded():
    cache = IdentityCache(FakeClock(), max_entries=2)
    for key in "abc":
        cache.remember(key, ALICE)
    assert cache.stale("a") is None and cache.stale("c") == ALICE
