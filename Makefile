# stkgate — `make run` starts the whole system, `make test` runs every test.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c

GO        ?= go
MODULES   := events api dispatcher callback-ingest deploy
BIN       := $(CURDIR)/bin
TOOLS     := $(CURDIR)/bin/tools
STATICCHECK_VERSION := v0.8.2
FUZZTIME  ?= 30s
# FUZZ_SHORT: how long `make test` fuzzes each target beside the unit tests
# (which run every target's seeds and corpus either way); empty or 0, the
# default, fuzzes nothing: building the instrumented binaries costs as much
# CPU as the race build of the whole tree, for a second of fuzzing each.
# `make fuzz` fuzzes them for FUZZTIME.
FUZZ_SHORT ?= 0
# Binaries `make build` produces: one per service, plus the dev stack.
CMDS := api/cmd/api api/cmd/projector api/cmd/stkgate-admin dispatcher/cmd/dispatcher dispatcher/cmd/webhooks \
        callback-ingest/cmd/callback-ingest deploy/cmd/stkgate-dev

.PHONY: all run test test-short build images container-test lint staticcheck tools vet fmt bench bench-micro fuzz clean tidy chaos cluster-test docs-bundle

all: lint test build

## run: the whole system in one process with embedded NATS, Postgres and a Daraja simulator
run:
	$(GO) run ./deploy/cmd/stkgate-dev

## test: every module's tests (the fuzz targets' seeds among them), with the race detector, against real Postgres and JetStream (scripts/test); FUZZ_SHORT=1s fuzzes each target beside them
test:
	@GO=$(GO) FUZZ_SHORT=$(FUZZ_SHORT) scripts/test

## chaos: the fault test of issue 3 (real binaries, kill -9s, Postgres stopped); CHAOS_FLAGS adds flags, e.g. -seed 42
CHAOS_N ?= 2000
chaos:
	cd deploy && $(GO) run ./chaos -n $(CHAOS_N) $(CHAOS_FLAGS)

## cluster-test: the cluster test of issue 13 (docs/SCALING.md): three nats-servers clustered on loopback, streams 3 replicas, two instances of each service, under load the stream leader's node stopped and another killed -9, kill -9s, leader stepdowns and a rolling SIGTERM restart; CLUSTER_FLAGS adds flags, e.g. -instances 1 -cluster-faults=false to measure
CLUSTER_N ?= 1000
cluster-test:
	cd deploy && $(GO) run ./chaos -cluster -n $(CLUSTER_N) -faults quick $(CLUSTER_FLAGS)

## build: one binary per service into bin/
build:
	@mkdir -p $(BIN)
	@for c in $(CMDS); do \
	  m=$${c%%/cmd/*}; n=$${c##*/}; \
	  echo "build $$n"; (cd $$m && $(GO) build -trimpath -tags grpcnotrace -o $(BIN)/$$n ./cmd/$$n); \
	done

## images: one FROM-scratch image per binary and nats-server's, built with no registry: static binaries built here, then docker build (scripts/images; docs/DEPLOY.md); STKGATE_TAG names the tag (local)
images:
	@GO=$(GO) scripts/images

## container-test: builds the images, brings the compose stack up (Daraja the simulator, Postgres this host's) and passes one payment through it; says SKIPPED where no container engine answers. Not part of make test
container-test:
	cd deploy && $(GO) run ./containertest $(CONTAINER_TEST_FLAGS)

## lint: gofmt, go vet and staticcheck over every module, one version of each dependency across them, and every link of the docs resolving
# LINT_VET= leaves lint's go vet out, for a caller that has just run `make
# vet`: a second vet over every module, its results cached, still costs
# some 36 CPU-seconds. LINT_STATICCHECK= leaves staticcheck out (.ci/run:
# building it from source costs a fifth of CI's CPU; see .ci/run).
LINT_VET ?= vet
LINT_STATICCHECK ?= staticcheck
lint: $(LINT_VET) $(LINT_STATICCHECK)
	@scripts/depversions $(MODULES)
	@scripts/checklinks
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

## staticcheck: staticcheck over every module (built into bin/tools by make tools); every module is checked, the failures reported together
staticcheck: $(TOOLS)/staticcheck
	@failed=; for m in $(MODULES); do (cd $$m && GOFLAGS="$(LINTFLAGS)" $(TOOLS)/staticcheck ./...) || failed="$$failed $$m"; done; \
	  if [ -n "$$failed" ]; then echo "staticcheck: findings in$$failed"; exit 1; fi

# vet and staticcheck type-check against the race detector's build of every
# package (-race), the build make test makes: one compile of the tree
# serves both, where a plain build would compile everything a second time.
# One go vet over every module of the workspace: one invocation keeps both
# cores busy across the modules' boundaries, where one per module would
# finish each module's last packages on one core.
LINTFLAGS := -race $(GOFLAGS)
vet:
	@$(GO) vet -race $(addsuffix /...,$(addprefix ./,$(MODULES)))

## tools: the linters make lint runs, built into bin/tools
tools: $(TOOLS)/staticcheck

$(TOOLS)/staticcheck:
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

fmt:
	gofmt -w $(MODULES)

## bench: every path against its bare engine, end to end and latency (issue 11; docs/BENCHMARKS.md); BENCH_FLAGS adds flags, e.g. -rounds 5
bench:
	cd deploy && $(GO) run ./bench $(BENCH_FLAGS)

## bench-micro: the Go micro-benchmarks of every module (speed is measured here, never asserted in tests)
bench-micro:
	@for m in $(MODULES); do (cd $$m && $(GO) test -run '^$$' -bench . -benchmem ./...) || exit 1; done

## fuzz: every fuzz target for FUZZTIME each (default 30s)
fuzz:
	@GO=$(GO) scripts/fuzz $(FUZZTIME) $(MODULES)

## docs-bundle: fetch Redoc's standalone bundle (npm package redoc, REDOC_VERSION) into api/docs/, which the api embeds for /docs
REDOC_VERSION ?= 2.5.4
docs-bundle:
	@tmp=$$(mktemp -d) && trap 'rm -rf '$$tmp EXIT && \
	  (cd $$tmp && npm pack --silent redoc@$(REDOC_VERSION) >/dev/null && \
	   tar xzf redoc-$(REDOC_VERSION).tgz package/LICENSE package/bundles/redoc.standalone.js package/bundles/redoc.standalone.js.LICENSE.txt) && \
	  cp $$tmp/package/bundles/redoc.standalone.js $$tmp/package/bundles/redoc.standalone.js.LICENSE.txt api/docs/ && \
	  cp $$tmp/package/LICENSE api/docs/redoc.LICENSE && \
	  echo "api/docs/redoc.standalone.js: redoc $(REDOC_VERSION)"

tidy:
	@for m in $(MODULES); do (cd $$m && $(GO) mod tidy); done

clean:
	rm -rf $(BIN) .data
