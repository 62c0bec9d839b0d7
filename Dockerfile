# The images of synterix-kube-proxy, for a Docker engine:
#   make docker-build IMG=<registry>/synterix-kube-proxy:<tag>
# builds the targets "manager" (the operator) and "agent" (the node agent).
#
# Without a Docker engine, `make images` builds the same images: hack/image
# reads this file and takes from it the base releases, the agent's packages,
# the go build commands and flags, the files copied, the users, entrypoints,
# environment and labels. It understands only the instructions used here and
# fails on any other, and `make test` fails when the two builds drift (see
# hack/image/README.md).
#
# The base images are named here and nowhere else: pin each by digest here
# (name:tag@sha256:...).
ARG GOLANG_IMAGE=golang:1.26-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${GOLANG_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY agent/ agent/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
# VERSION is stamped into both binaries; AGENT_IMAGE is the manager's default
# agent image (empty: the project's agent image at VERSION).
ARG VERSION=dev
ARG AGENT_IMAGE=
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.agentImage=${AGENT_IMAGE}" -o /out/manager ./cmd/manager
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/agent ./cmd/agent

# CA certificates for the manager, from Debian's ca-certificates.
FROM ${DEBIAN_IMAGE} AS certs
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*

# The manager: a static binary on an empty base with CA certificates and a
# passwd naming the nonroot user 65532; no shell, no package manager.
FROM scratch AS manager
ARG VERSION=dev
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY hack/image/manager/passwd hack/image/manager/group /etc/
COPY --from=build /out/manager /manager
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.title="synterix-kube-proxy manager" \
      org.opencontainers.image.description="Operator of synterix-kube-proxy" \
      org.opencontainers.image.source="https://github.com/synterix/synterix-kube-proxy" \
      org.opencontainers.image.version="${VERSION}"
USER 65532:65532
ENTRYPOINT ["/manager"]

# The agent programs the node's kernel, so it runs as root with Debian's
# netfilter userspace: iptables (nft and legacy) it runs itself; nft, ipset
# and conntrack are there to inspect a node. It runs no modprobe (the kernel
# loads the modules it needs on first use), so there is no kmod.
FROM ${DEBIAN_IMAGE} AS agent
ARG VERSION=dev
RUN apt-get update && apt-get install -y --no-install-recommends iptables nftables ipset conntrack && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/agent /agent
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.title="synterix-kube-proxy agent" \
      org.opencontainers.image.description="Node agent of synterix-kube-proxy" \
      org.opencontainers.image.source="https://github.com/synterix/synterix-kube-proxy" \
      org.opencontainers.image.version="${VERSION}"
USER 0:0
ENTRYPOINT ["/agent"]
