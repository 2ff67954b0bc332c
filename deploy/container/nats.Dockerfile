# nats-server built from the module the tests embed (events/go.mod's
# github.com/nats-io/nats-server/v2), FROM scratch, with no registry.
# `make images` (scripts/images) builds its context:
#   <context>/service              nats-server, static
#   <context>/ca-certificates.crt  the host's CA bundle
#   <context>/healthcheck          deploy/cmd/healthcheck, static: GETs /readyz
#                                  for a health check (no shell, no curl here)
#   <context>/data/                an empty directory: /data, JetStream's store
# The configuration is mounted at run time (compose.yaml: nats.conf; the Helm
# chart of the NATS project makes its own).
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY healthcheck /healthcheck
COPY service /nats-server
# A named volume mounted on /data takes this directory's owner, so the
# server, not root, can write its store.
COPY --chown=65532:65532 data /data
USER 65532:65532
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
