"""The gRPC contract ``castway.v1``, generated from ``proto/castway/v1`` by ``ci/gen-protos.sh``."""
