"""xDS: pure resource builders, immutable snapshots, the snapshot cache and the ADS server.

Implements the xDS REST/gRPC protocol (envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol):
ADS state-of-the-world (``StreamAggregatedResources``) and incremental/Delta
(``DeltaAggregatedResources``) for LDS, RDS, CDS and EDS.
"""
