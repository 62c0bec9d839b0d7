# synterix-kube-proxy

# Version stamped into the binaries (-X main.version) and the image tags.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
# Image of the manager; the agent's is the manager's repository with -agent,
# same tag (a digest does not carry over). The manager's default agent image
# is AGENT_IMG (-X main.agentImage).
IMG ?= ghcr.io/synterix/synterix-kube-proxy:$(VERSION)
AGENT_IMG ?= $(shell echo '$(IMG)' | sed -E 's/@.*$$//; /:[^:\/]+$$/!s/$$/-agent/; s/^(.*[^:\/]+)(:[^:\/]+)$$/\1-agent\2/')
# Test images, for clusters built on this machine (never pushed).
PAUSE_IMG ?= localhost/synterix/pause:test
ECHO_IMG ?= localhost/synterix/echo:test
# Where make images writes the OCI archives, and their creation time.
IMAGES_DIR ?= bin/images
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# Kubernetes version of the binaries the tests run: the one hack/k8s/go.mod pins
# (read by hack/k8s-version.sh), unless K8S_VERSION names another folder of bin/k8s.
# It is exported, so test/testenv and hack/build-k8s.sh use the same one.
ifeq ($(origin K8S_VERSION),undefined)
K8S_VERSION := $(shell hack/k8s-version.sh)
endif
ifeq ($(K8S_VERSION),)
$(error no Kubernetes version: hack/k8s-version.sh failed to read hack/k8s/go.mod)
endif
export K8S_VERSION
K8S_BIN ?= $(CURDIR)/bin/k8s/$(K8S_VERSION)
export KUBEBUILDER_ASSETS ?= $(K8S_BIN)

CONTROLLER_GEN ?= go tool controller-gen
GO_TEST_FLAGS ?=

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate CRDs and RBAC roles from the markers in api/, controllers/ and agent/.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths=./controllers/... output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) rbac:roleName=synterix-agent paths=./agent/... output:rbac:artifacts:config=config/agent/rbac

.PHONY: generate
generate: ## Generate the DeepCopy methods of the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: verify-generated
verify-generated: ## Fail when the generated files are stale.
	hack/verify-generated.sh

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: k8s-binaries
k8s-binaries: ## Build kube-apiserver, etcd and kubectl of the version hack/k8s/go.mod pins, from the Go module proxy into bin/k8s (reused when present).
	hack/build-k8s.sh etcd kube-apiserver kubectl

.PHONY: deps
deps: ## Install the Debian packages make test needs when they are missing (the kernel userspace, containerd and runc, mmdebstrap, promtool).
	hack/deps.sh kernel cluster images promtool

.PHONY: test
test: deps verify-generated vet k8s-binaries ## Run every test: unit, CRD validation against a real kube-apiserver, operator, agent and kernel tests in network namespaces.
	go test $(GO_TEST_FLAGS) ./... -coverprofile cover.out

# What the real cluster needs: the control plane, kubelet, and the images.
CLUSTER_K8S_BINARIES = etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet

.PHONY: test-e2e
test-e2e: build ## Run the end-to-end suite on a real cluster (kubelet and containerd per node, the product from config/default and the images built here), then the specs only the process tier can run; docs/testing.md.
	hack/deps.sh kernel cluster images
	hack/build-k8s.sh $(CLUSTER_K8S_BINARIES)
	$(MAKE) images
	E2E=1 go test ./test/cluster/... ./test/kubenode/... -count=1 -timeout 20m
	E2E=1 go test ./test/e2e/... -count=1 -v -ginkgo.v -timeout 60m
	E2E=1 E2E_TIER=process go test ./test/e2e/... -count=1 -v -ginkgo.v -ginkgo.label-filter=process -timeout 20m

.PHONY: test-e2e-nftables
test-e2e-nftables: build ## Run the end-to-end suite on the real cluster with the nftables backend (mode NFTables).
	hack/deps.sh kernel cluster images
	hack/build-k8s.sh $(CLUSTER_K8S_BINARIES)
	$(MAKE) images
	E2E=1 E2E_MODE=NFTables go test ./test/e2e/... -count=1 -v -ginkgo.v -timeout 60m

.PHONY: test-upgrade
test-upgrade: build ## Upgrade the operator from release N-1 (built from UPGRADE_FROM, default the commit before the pod-template merge, in a git worktree) to this checkout and back, on the real cluster under traffic; docs/testing.md.
	hack/deps.sh kernel cluster images
	hack/build-k8s.sh $(CLUSTER_K8S_BINARIES)
	$(MAKE) images
	E2E=1 $(if $(UPGRADE_FROM),UPGRADE_FROM=$(UPGRADE_FROM)) go test ./test/upgrade/... -count=1 -v -run '^TestUpgrade$$' -timeout 40m

.PHONY: test-ipvs-vm
test-ipvs-vm: ## Run the IPVS backend's kernel tests in a qemu VM booting Debian's kernel (all but the shared scenarios: make test-ipvs-vm-scenarios).
	hack/vm/run.sh -args=-test.skip=^TestScenarios$$

# The shared kernel scenarios over IPv4, IPv6 and dual-stack take about half
# an hour in the VM under software emulation (TCG), too long for CI.
.PHONY: test-ipvs-vm-scenarios
test-ipvs-vm-scenarios: ## Run the shared kernel scenarios (agent/backend/backendtest) on the IPVS backend in the VM, both families.
	hack/vm/run.sh -timeout=90m -args=-test.timeout=85m -run=^TestScenarios$$ ./agent/ipvs/

.PHONY: test-images
test-images: image-tools ## Build the images and run them in a private containerd (needs root, containerd and runc).
	go test ./hack/image/ ./test/images/... -count=1 -v

.PHONY: bench
bench: ## Run the Go benchmarks.
	go test ./... -run '^$$' -bench . -benchmem

# Sizes of bench-compare, in Services (× 10 endpoints each).
BENCH_SIZES ?= 1k,10k,30k

.PHONY: bench-compare
bench-compare: ## Measure our agent and upstream kube-proxy side by side (BENCH_SIZES=1k,10k,30k; see docs/performance.md); writes docs/bench/.
	BENCH_COMPARE=1 BENCH_SIZES=$(BENCH_SIZES) go test ./test/bench -run '^TestCompare$$' -count=1 -timeout 0 -v

##@ Build

.PHONY: build
build: ## Build the manager and the agent into bin/.
	CGO_ENABLED=0 go build -o bin/manager ./cmd/manager
	CGO_ENABLED=0 go build -o bin/agent ./cmd/agent

.PHONY: plugin
plugin: ## Build the kubectl plugin into bin/kubectl-synterix (put bin/ on PATH, then: kubectl synterix status).
	CGO_ENABLED=0 go build -ldflags "-X main.version=$(VERSION)" -o bin/kubectl-synterix ./cmd/kubectl-synterix

.PHONY: demo
demo: ## Bring up a real cluster (kubelet and containerd per node, no kube-proxy), install the product from config/default with the images built here, send real traffic, walk a Manual rollout, tear down (KEEP=1: after Ctrl-C).
	hack/deps.sh kernel cluster images
	hack/build-k8s.sh $(CLUSTER_K8S_BINARIES)
	$(MAKE) images
	go run ./test/cluster/cmd/demo $(if $(KEEP),-keep)

IMAGE_FLAGS = -out $(IMAGES_DIR) -build-arg VERSION=$(VERSION) -build-arg AGENT_IMAGE=$(AGENT_IMG) \
	-image manager=$(IMG) -image agent=$(AGENT_IMG) -image pause=$(PAUSE_IMG) -image echo=$(ECHO_IMG)

.PHONY: images
images: image-tools ## Build the manager, agent, pause and echo images as OCI archives in bin/images, without a Docker engine.
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) go run ./hack/image $(IMAGE_FLAGS)

.PHONY: image-manager image-agent image-pause image-echo
image-manager image-agent image-pause image-echo: image-%: image-tools ## Build one image (bin/images/<name>.tar).
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) go run ./hack/image $(IMAGE_FLAGS) $*

.PHONY: image-tools
image-tools: ## Install mmdebstrap, which builds the Debian bases of the images, when missing.
	@command -v mmdebstrap >/dev/null || { apt-get update && apt-get install -y --no-install-recommends mmdebstrap; }

.PHONY: docker-build
docker-build: ## Build the manager and agent images from the Dockerfile (needs a Docker engine).
	docker build --target manager --build-arg VERSION=$(VERSION) --build-arg AGENT_IMAGE=$(AGENT_IMG) -t $(IMG) .
	docker build --target agent --build-arg VERSION=$(VERSION) -t $(AGENT_IMG) .

##@ Deployment

.PHONY: install
install: manifests ## Install the CRDs into the cluster of the current kubeconfig.
	kubectl apply -k config/crd

.PHONY: uninstall
uninstall: ## Remove the CRDs from the cluster of the current kubeconfig.
	kubectl delete -k config/crd --ignore-not-found

.PHONY: deploy
deploy: manifests ## Deploy the operator to the cluster of the current kubeconfig, with IMG as its image and AGENT_IMG as the agents' default.
	IMG=$(IMG) AGENT_IMG=$(AGENT_IMG) hack/deploy.sh

.PHONY: undeploy
undeploy: ## Remove everything in order: GatewayConfigs and ProxyPolicies (finalizers released), then the operator, then the CRDs.
	hack/undeploy.sh

##@ Release artefacts (for the release of hack/release/release.yaml; make test fails when they are stale)

.PHONY: bundle
bundle: manifests ## Generate the OLM bundle (bundle/, bundle.Dockerfile) from config/.
	go run ./hack/release bundle

.PHONY: build-installer
build-installer: manifests ## Generate dist/install.yaml (the kustomize render of config/default) and the Helm chart dist/chart.
	go run ./hack/release installer
