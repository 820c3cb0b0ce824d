# Every target that runs code depends on `install`, so `make test` and
# `make demo` each work alone on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_STAMP := $(VENV)/.apt
PYTEST_ARGS ?=

.PHONY: install test demo lint bench soak sim clean
SOAK_BUDGET ?= 300
SOAK_FAULTS ?= 200

install: $(APT_STAMP) $(STAMP)

# System packages: Debian's ZooKeeper (jars only; never `zookeeperd`, which
# auto-starts a server on 2181), OpenSSH server (the lab runs its own sshd
# processes), iproute2/iptables (network-namespace partitions). The
# monitoring tools the tests run as an operator would: promtool (Debian's
# `prometheus`; its server is stopped and disabled where systemd would start
# it) and check_http / check_curl (monitoring-plugins-basic / -standard;
# check_curl's libraries are only Recommends of the latter: named here);
# chromium + chromium-driver (the status page and the drill report are
# rendered in a real headless browser).
$(APT_STAMP): Makefile  # a package added here is installed on the next `make install`
	@missing=""; \
	for p in zookeeper openssh-server iproute2 iptables default-jre-headless \
	         prometheus monitoring-plugins-basic monitoring-plugins-standard liburiparser1 libcurl4 \
	         chromium chromium-driver; do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi; \
	fi
	@mkdir -p $(VENV) && touch $@

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The deterministic simulator first (seeded fault schedules against the real
# agent code, tests/sim), then every test: pure, simulated and real-process.
# `pytest -m "not lab"` runs the tiers that need no ZooKeeper or sshd.
SIM_SEEDS ?= 5000
SEEDS ?= 20000
test: install
	$(PY) -m tests.sim.explore --seeds $(SIM_SEEDS) --jobs 2
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# More schedules: `make sim SEEDS=N` (replay one: python -m tests.sim.explore --seed S --verbose).
sim: install
	$(PY) -m tests.sim.explore --seeds $(SEEDS) --jobs 2

lint: install
	$(VENV)/bin/ruff check failover tests
	$(VENV)/bin/ruff format --check failover tests

demo: install
	$(VENV)/bin/python -m failover.demo

# wrk (Debian) generates the HTTP load from a separate process.
bench: install
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	$(PY) -m bench.run

# Seeded fault soak (a small one runs in `make test`): SOAK_BUDGET seconds at
# most, SOAK_FAULTS faults; the seed is printed for replay (SOAK_SEED=N).
soak: install
	$(PY) -m tests.soak --budget $(SOAK_BUDGET) --faults $(SOAK_FAULTS) $(if $(SOAK_SEED),--seed $(SOAK_SEED),)

clean:
	rm -rf $(VENV) build *.egg-info
