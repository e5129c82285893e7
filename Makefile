# castway — the two commands are `make run` and `make test`; both set up what is missing first.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
RUST_SRC := $(shell find rust -name '*.rs') Cargo.toml Cargo.lock build.rs
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: setup system run test test-rust test-python lint protos wheel bench check-stubs clean

setup: system .stamp-ext

system:
	@bash ci/setup-system.sh

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

.stamp-venv: ci/requirements-dev.txt | $(PY)
	$(PY) -m pip install -q -r ci/requirements-dev.txt
	touch $@

# The extension, built in release mode and installed into the venv (editable: python/ is used
# in place).
.stamp-ext: $(RUST_SRC) pyproject.toml .stamp-venv
	$(VENV)/bin/maturin develop --release --quiet
	touch $@

# The gRPC server with its demo route (a test pattern on srt://:9710); the store lives in
# .castway/. The first start writes the admin key to .castway/admin.key (mode 0600).
run: setup
	$(VENV)/bin/castway serve --data-dir .castway --demo

test-rust: system
	cargo test --no-default-features

lint: setup
	bash ci/check-protos.sh
	$(PY) ci/check-notebooks.py
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/mypy python/castway
	$(PY) -m mypy.stubtest castway._castway

test-python: setup
	$(PY) -m pytest

# pytest runs last so its summary line ends the output.
test: test-rust lint test-python

# Regenerates python/castway/v1 from proto/ (commit the result; `make lint` fails on drift).
protos: .stamp-venv
	bash ci/gen-protos.sh

wheel: setup
	$(VENV)/bin/maturin build --release --out dist

bench: setup
	$(PY) benches/relay.py
	$(PY) benches/failover.py
	$(PY) benches/control.py
	$(PY) benches/scale.py
	$(PY) benches/scale.py --kind srt
	$(PY) benches/observability.py
	$(PY) benches/instant_start.py
	$(PY) benches/notebook.py
	$(PY) benches/record.py
	$(PY) benches/srt_loss.py
	$(PY) benches/shared_port.py

clean:
	rm -rf target dist .stamp-* $(VENV) python/castway/*.so .castway
