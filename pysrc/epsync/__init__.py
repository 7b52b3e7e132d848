"""epsync: datastore sync for Calico-style WorkloadEndpoints."""

from epsync._core import VERSION as CORE_VERSION

__all__ = ["CORE_VERSION"]
