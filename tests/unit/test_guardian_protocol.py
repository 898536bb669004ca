import io

from hubtwist._guardian import read_groups


def test_guardian_follows_added_and_removed_groups():
    stream = io.BytesIO(b"+10\n+11\n-10\ngarbage\n+\n+12\n")
    assert read_groups(stream) == {11, 12}
