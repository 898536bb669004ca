"""Scope matching as JupyterHub's check_scopes does it (pure)."""

from hubtwist.hub.scopes import covers, granted, split_scope

SERVER_SCOPES = ("access:servers!server=alice/", "access:servers!user=alice")


def test_split_scope():
    assert split_scope("access:servers") == ("access:servers", None, None)
    assert split_scope("access:servers!server=alice/srv1") == ("access:servers", "server", "alice/srv1")


def test_the_owners_oauth_token_scope_grants_her_server():
    assert granted({"access:servers!server=alice/", "read:users:name!user=alice"}, SERVER_SCOPES) == (
        "access:servers!server=alice/",)


def test_a_user_filter_covers_every_server_of_that_user():
    assert covers(frozenset({"access:servers!user=alice"}), "access:servers!server=alice/srv1")
    assert not covers(frozenset({"access:servers!user=alice"}), "access:servers!server=alicex/")


def test_an_unfiltered_scope_covers_every_filter():
    assert granted({"access:servers"}, SERVER_SCOPES) == SERVER_SCOPES


def test_a_filtered_scope_does_not_cover_an_unfiltered_requirement():
    assert not covers(frozenset({"access:services!service=mgd"}), "access:services")
    assert granted({"access:services!service=mgd"}, ("access:services", "access:services!service=mgd")) == (
        "access:services!service=mgd",)


def test_other_users_and_other_bases_grant_nothing():
    assert granted({"access:servers!user=bob", "access:servers!server=bob/"}, SERVER_SCOPES) == ()
    assert granted({"admin:servers", "servers!user=alice"}, SERVER_SCOPES) == ()
    assert granted({"access:services"}, SERVER_SCOPES) == ()


def test_group_filters_are_not_resolved_without_the_hubs_database():
    # As in JupyterHub's own services: a group grant does not reach a user's server here.
    assert granted({"access:servers!group=staff"}, SERVER_SCOPES) == ()
    assert granted({"access:services!group=staff"}, ("access:services!group=staff",)) == (
        "access:services!group=staff",)
