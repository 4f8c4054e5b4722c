# voxvisor — run `make help` for the targets.
GO       ?= go
TAGS     := libvirt_dlopen
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
BIN      := bin/voxvisor
# Debian packages the test suite drives.
TEST_DEBS := sip-tester baresip-core linphone-cli kamailio rtpengine-daemon socat sipvicious tshark chromium redis-server
# ... and those of the provisioning tests (libvirt-daemon-system creates the
# libvirt-qemu user the QEMU driver needs), installed without recommends.
PROV_DEBS := lvm2 nftables iptables ebtables iproute2 e2fsprogs libvirt0 libvirt-daemon libvirt-daemon-driver-qemu \
	libvirt-daemon-system qemu-system-x86 qemu-utils

.PHONY: help build run test test-deps lint vet fmt-check bench bench-smoke gobench bpf clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/voxvisor
	$(GO) build -tags $(TAGS) -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/voxvisor

run: build ## run the softswitch on the embedded default config
	./$(BIN) serve

test-deps: ## install the Debian packages the tests need, when missing
	@$(call install-debs,$(TEST_DEBS),)
	@$(call install-debs,$(PROV_DEBS),--no-install-recommends)

# install-debs installs the packages of $(1) that are missing, with apt-get
# options $(2); apt-get update runs only when something is missing.
define install-debs
missing=""; for p in $(1); do \
	dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
	echo "installing:$$missing"; \
	SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(2) $$missing; \
fi
endef

# The softswitch package (SIPp, real softphones, the NAT lab, sipvicious
# against running switches) is the heaviest; it runs after the others,
# alone, so that its timers do not share the 2 cores with them.
SOLO := ./internal/softswitch/

test: test-deps lint ## install test packages, then vet, gofmt, go mod tidy, the whole suite with -race, and bench-smoke
	$(GO) test -tags $(TAGS) -race -count=1 -timeout 40m $$($(GO) list ./... | grep -v '/internal/softswitch$$')
	$(GO) test -tags $(TAGS) -race -count=1 -timeout 40m $(SOLO)
	$(MAKE) bench-smoke

vet: ## go vet
	$(GO) vet -tags $(TAGS) ./...

fmt-check: ## fail when a file is not gofmt-clean
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint: vet fmt-check ## vet and gofmt; go mod tidy must change nothing
	$(GO) mod tidy -diff

bench: build test-deps ## voxvisor side by side with Kamailio and rtpengine; writes BENCHMARKS.md (~25 min)
	$(GO) run ./bench/vxbench -mode full -bin $(BIN) -out BENCHMARKS.md
	$(GO) test -tags $(TAGS) -run '^$$' -bench 'Plan100|Reapply100|Check100' -benchmem ./provisioning/... | tee bench/provision-bench.txt
	$(GO) test -run '^$$' -bench 'Register|Visibility' -benchtime 2000x ./sip/location/ | tee bench/location-bench.txt

bench-smoke: build test-deps ## the same harness briefly (< 2 min); figures are not asserted
	$(GO) run ./bench/vxbench -mode smoke -bin $(BIN) -out bench/BENCHMARKS-smoke.md

gobench: ## Go micro-benchmarks, each run once
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchtime 1x -benchmem ./...

bpf: ## regenerate the kernel path's BPF objects from media/kernel/rtpfwd.c (needs clang and libbpf-dev; building does not)
	$(GO) generate ./media/kernel/

clean: ## remove build output
	rm -rf bin
