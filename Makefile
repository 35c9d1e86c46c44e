# cnnc: every target is a thin layer over swift; `make train` and `make test` install what is missing.
SWIFT   ?= swift
CNNC     = .build/release/cnnc
GRAPHS   = $(wildcard Graphs/*.graph)
APT_PKGS = llvm-19-dev libopenblas-dev zlib1g-dev

.PHONY: deps build release test train generate check-generated clean

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# Tests that train run in a release build (debug Swift runs numeric loops very slowly).
test: deps
	$(SWIFT) build -c release
	$(SWIFT) test -c release
	$(MAKE) check-generated

train: release
	$(CNNC) train Graphs/simplecnn.graph --epochs 1

generate: release
	mkdir -p Generated
	for g in $(GRAPHS); do n=$$(basename $$g .graph); $(CNNC) dump-ir $$g --stage grad > Generated/$$n.grad.graph || exit 1; done

check-generated: generate
	@git diff --exit-code --stat -- Generated/ && test -z "$$(git status --porcelain -- Generated/)" \
	  || { echo "Generated/ is out of date: run 'make generate' and commit the result"; exit 1; }

clean:
	rm -rf .build
