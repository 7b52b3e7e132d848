"""The server's validator (the Rust core's batch calls) with the Python reference's signature, one object a call.

So the rule-by-rule tests check what the server runs; tests/core/test_validation_parity.py holds the two
implementations to each other on random input.
"""

from __future__ import annotations

from epsync._core import normalize_endpoints, normalize_profiles
from epsync.errors import FieldViolation, InvalidArgument
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint


def normalize_workload_endpoint(wep: WorkloadEndpoint) -> WorkloadEndpoint:
    """The normalised endpoint, or InvalidArgument with every violation (uid and timestamps as given)."""
    (result,) = normalize_endpoints([(wep.SerializeToString(), None, None)])
    if isinstance(result, list):
        raise InvalidArgument([FieldViolation(path, description) for path, description in result])
    out = WorkloadEndpoint.FromString(result)
    out.metadata.resource_version = wep.metadata.resource_version  # stored without it; the reference keeps it
    return out


def normalize_profile(profile: Profile) -> Profile:
    (result,) = normalize_profiles([(profile.SerializeToString(), None, None)])
    if isinstance(result, list):
        raise InvalidArgument([FieldViolation(path, description) for path, description in result])
    out = Profile.FromString(result)
    out.metadata.resource_version = profile.metadata.resource_version
    return out
