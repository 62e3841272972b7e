# make demo | make test | make bench
# Each target creates .venv when missing, installs torch==2.13.0 first (a CPU wheel on these
# machines; an unpinned torch would pull a multi-GB CUDA build), then the package with all extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.potlearn-installed
# System packages of the DFT references: libxc and OpenBLAS for building GPAW, Quantum
# ESPRESSO's pw.x with its pseudopotentials (/usr/share/espresso/pseudo). Installed with
# apt-get when missing and running as root; skipped when present.
SYSPKGS := libxc-dev libopenblas-dev quantum-espresso quantum-espresso-data
# GPAW is built serial with g++: quantum-espresso pulls in Open MPI's compiler wrappers
# without its libraries, which GPAW's build would otherwise pick up and fail to link.
GPAW_SITECONFIG := $(VENV)/gpaw-siteconfig.py

.PHONY: install sysdeps demo test bench docs lint clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

sysdeps:
	@missing=$$(for p in $(SYSPKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else \
		echo "note: missing system packages for the DFT references: $$missing (as root:" \
			"apt-get install $$missing); GPAW and Quantum ESPRESSO tests will be skipped"; \
	fi

$(STAMP): $(PY) pyproject.toml
	$(MAKE) --no-print-directory sysdeps
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[all]"
	printf "mpi = False\ncompiler = 'g++'\n" > $(GPAW_SITECONFIG)
	if dpkg -s libxc-dev libopenblas-dev >/dev/null 2>&1; then \
		GPAW_CONFIG=$(GPAW_SITECONFIG) CC=g++ $(PY) -m pip install --quiet -e ".[gpaw]"; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/potlearn demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(VENV)/bin/ruff check potlearn_ase tests benchmarks examples

clean:
	rm -rf $(VENV) build *.egg-info
