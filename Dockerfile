# One image, two commands: /manager (the operator) and /agent (the per-node proxy).
# Build: make docker-build IMG=<registry>/synterix-kube-proxy:<tag>
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY agent/ agent/
COPY cmd/ cmd/
COPY controllers/ controllers/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/manager ./cmd/manager && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/agent ./cmd/agent

# The agent drives iptables-restore, ipset and conntrack, so the runtime image
# carries Debian's userspace for them (both the nft and the legacy iptables).
FROM debian:bookworm-slim
RUN apt-get update && \
    apt-get install -y --no-install-recommends iptables ipset conntrack kmod && \
    rm -rf /var/lib/apt/lists/*
COPY --from=build /out/manager /out/agent /
USER 0:0
ENTRYPOINT ["/manager"]
