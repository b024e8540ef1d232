# The two set-up commands: `make run` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: install install-dev run test key lint format bench clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements.txt
	touch $@

# Real photos of two people for the identity tests: the test images of the face_recognition sdist (MIT), taken
# from PyPI by hash; the package itself is not installed.
FACE_PHOTOS := $(VENV)/share/face-photos

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-testdata.txt
	$(PIP) -r requirements-dev.txt
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: --require-hashes \
		-r requirements-testdata.txt -d $(VENV)/downloads
	mkdir -p $(FACE_PHOTOS)
	tar -xzf $(VENV)/downloads/face_recognition-1.3.0.tar.gz -C $(FACE_PHOTOS) --strip-components=3 \
		face_recognition-1.3.0/tests/test_images
	tar -xzf $(VENV)/downloads/face_recognition-1.3.0.tar.gz -C $(FACE_PHOTOS) --strip-components=1 \
		face_recognition-1.3.0/LICENSE
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

run: install
	$(PY) app.py

# two workers, one test file each at a time (module fixtures such as a served app stay in one process)
test: install-dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 --dist loadfile

# an API key for a user, printed once: `make key USER=alice` (USER from the command line, not the login name)
key: install
	@test "$(origin USER)" = "command line" || { echo "say whose key: make key USER=alice" >&2; exit 2; }
	$(PY) -m admin create-key "$(USER)"

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install-dev
	HF_HUB_OFFLINE=1 $(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
