# The image of one stkgate binary, built with no registry: FROM scratch, the
# static binary and the CA certificates (for TLS to Daraja and to an OTLP
# collector), nothing else: no shell, no package manager, no libc.
# `make images` (scripts/images) builds the binary on the host and a context
# of its own for each image:
#   <context>/service              the static binary (CGO_ENABLED=0)
#   <context>/ca-certificates.crt  the host's CA bundle
#   <context>/healthcheck          deploy/cmd/healthcheck, static: GETs /readyz
#                                  for a health check (no shell, no curl here)
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY healthcheck /healthcheck
COPY service /service
# A numeric user, so that a runtime that checks runAsNonRoot can see it is
# not root without an /etc/passwd (scratch has none).
USER 65532:65532
ENTRYPOINT ["/service"]
