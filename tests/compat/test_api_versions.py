"""Version negotiation on the raw wire, with no client library in between.

Every client starts with ApiVersions; if this is wrong nothing else works, so
these tests say so directly instead of through a client timeout."""

from weir_compat import API_KEYS_REQUIRED, ERROR_UNSUPPORTED_VERSION, api_versions_raw


def test_api_versions_v0_advertises_every_api_of_the_contract(broker):
    reply = api_versions_raw(broker.host, broker.port, version=0)
    assert reply.correlation_id == 0x5EED
    assert reply.error_code == 0
    missing = {name for key, name in API_KEYS_REQUIRED.items() if key not in reply.api_versions}
    assert not missing, f"ApiVersions does not list: {sorted(missing)}"
    for api_key, (min_version, max_version) in reply.api_versions.items():
        assert 0 <= min_version <= max_version, f"api {api_key}: bad range {min_version}..{max_version}"
    # Message format v2 (record batches, headers) needs Produce v3+ and Fetch v4+.
    assert reply.api_versions[0][1] >= 3, f"Produce max version {reply.api_versions[0][1]} < 3"
    assert reply.api_versions[1][1] >= 4, f"Fetch max version {reply.api_versions[1][1]} < 4"
    # Offsets by timestamp need ListOffsets v1+.
    assert reply.api_versions[2][1] >= 1, f"ListOffsets max version {reply.api_versions[2][1]} < 1"


def test_api_versions_unsupported_version_gets_v0_reply_with_error_35(broker):
    # A client newer than the broker sends its highest ApiVersions version; the
    # broker must answer in v0 form with UNSUPPORTED_VERSION and its ranges, so
    # that the client can retry at a version both support.
    reply = api_versions_raw(broker.host, broker.port, version=127)
    assert reply.correlation_id == 0x5EED
    assert reply.error_code == ERROR_UNSUPPORTED_VERSION
    assert 18 in reply.api_versions, "the error reply must still list ApiVersions' own range"
    min_version, max_version = reply.api_versions[18]
    assert min_version == 0
    assert max_version < 127
