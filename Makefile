# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
DATASET_PKG := dataset-fashion-mnist

.PHONY: demo test data browser postgres jdk web-runtime install benchmark-baseline benchmark-train-defaults benchmark-deploy benchmark-pipeline benchmark-peers clean

# pip compiles the installed bytecode on one core; compileall compiles the same files on every core (the few files
# written for newer Pythons fail to compile here, as they do under pip: hence the '-').
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev,litert]'
	-@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null
	@touch $(STAMP)

install: $(STAMP)

# onnxruntime-web, for the web format's page: pinned in package.json and package-lock.json, installed from the npm registry.
NODE_STAMP := node_modules/.installed
$(NODE_STAMP): package.json package-lock.json
	$(call apt_require,command -v npm,npm,the web page's runtime)
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

web-runtime: $(NODE_STAMP)

# Fashion-MNIST is the default data set; Debian ships it as IDX files.
data:
	@if [ -f "$(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz" ] || [ -n "$$UDACISENSE_FASHION_MNIST" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "Installing Fashion-MNIST: apt-get update && apt-get install -y $(DATASET_PKG)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DATASET_PKG); \
	else \
		echo "Fashion-MNIST is missing. Install it with:"; \
		echo "  sudo apt-get update && sudo apt-get install -y $(DATASET_PKG)"; \
		exit 1; \
	fi

# $(call apt_require,<check>,<package>,<what needs it>): when <check> fails, install the Debian package as root;
# otherwise print the command that installs it and stop.
define apt_require
@if { $(1); } >/dev/null 2>&1; then :; \
elif [ "$$(id -u)" = 0 ]; then \
	echo "Installing $(2) for $(3): apt-get install -y $(2)"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
else \
	echo "$(2) is missing ($(3) needs it). Install it with:"; \
	echo "  sudo apt-get update && sudo apt-get install -y $(2)"; \
	exit 1; \
fi
endef

# The shared-study search test starts (and stops) a throwaway PostgreSQL server of its own; it needs the server binaries.
postgres:
	$(call apt_require,ls /usr/lib/postgresql/*/bin/initdb,postgresql,the shared-study search test)

# The generated Java selector is compiled with javac in the tests; Debian's JDK package provides it.
jdk:
	$(call apt_require,command -v javac,default-jdk-headless,the generated Java selector test)

# The report test renders report.html in headless Chromium; Debian ships it as 'chromium'.
browser:
	$(call apt_require,command -v chromium || command -v chromium-browser,chromium,the report test)

# The main job on the default data: the quickstart recipe (src/udacisense/recipes/quickstart.yaml) end to end (baseline, pruning, int8, export, report).
demo: install data
	$(BIN)/udacisense run quickstart --overwrite
	@echo "Open runs/quickstart/report.html in a browser (self-contained); the bundle is in runs/quickstart/deploy/"

# Lint first (ruff, seconds), then the whole suite: the slow real-data tests are part of it. Two workers, one test
# file each at a time (module fixtures are shared within a file), longest files first, one intra-op thread each
# (tests/conftest.py).
test: install data browser postgres jdk web-runtime
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25

# Full-length baselines (hours on 2 CPU cores; minutes on a GPU).
benchmark-baseline: install data
	$(BIN)/python benchmarks/baseline.py

# Training defaults: three models x two data sets x four settings (about 40 minutes on 2 CPU cores).
benchmark-train-defaults: install data
	$(BIN)/python benchmarks/train_defaults.py

benchmark-deploy: install data
	$(BIN)/python benchmarks/deploy.py

# seed.yaml vs mobile.yaml at full length, plus onnxruntime static int8 of the baseline (hours on 2 CPU cores).
benchmark-pipeline: install data
	$(BIN)/python benchmarks/pipeline.py

# Peers side by side (benchmarks/peers.py): a 30-epoch MobileNetV3-Small on 12,000 Fashion-MNIST images, then mobile.yaml,
# a search with twice its time, and every peer's int8 of the same baseline (NNCF/OpenVINO in their own venv); about
# 1.5 hours on 2 CPU cores. Resumable: run it again after an interruption.
PEERS_RUNS ?= runs/benchmarks/peers
PEERS_SUBSET ?= 12000
benchmark-peers: install data
	@test -f $(PEERS_RUNS)/baseline/best.pt || $(BIN)/udacisense train --model mobilenet_v3_small --train-subset $(PEERS_SUBSET) --epochs 30 \
		--name baseline --runs-dir $(PEERS_RUNS) --overwrite
	$(BIN)/python benchmarks/peers.py --baseline $(PEERS_RUNS)/baseline/best.pt --runs-dir $(PEERS_RUNS) --set data.train_subset=$(PEERS_SUBSET)

clean:
	rm -rf runs .pytest_cache
