# stream-sync: `make run` runs the product, `make test` runs every check. Both build
# their own virtual environment from the pinned versions in requirements.lock.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test lint typecheck unit screenshots install install-dev lock clean bench fuzz \
	fuzz-corpus

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The hot path is compiled at install (setup.py): a changed source is rebuilt.
HOT_PATH := stream_sync/rtmp/chunk.py stream_sync/rtmp/counters.py stream_sync/rtmp/flv.py

$(VENV)/.runtime: $(BIN)/python pyproject.toml requirements.lock setup.py $(HOT_PATH)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

run: $(VENV)/.runtime
	$(BIN)/stream-sync serve $(ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy stream_sync

unit: $(VENV)/.dev
	$(BIN)/pytest tests/unit

# FFmpeg 7.0 for the compatibility suite (tests/compat): the static build inside the
# imageio-ffmpeg 0.6.0 wheel, unpacked beside the venv's imageio-ffmpeg 0.8.1 (FFmpeg 9),
# since pip installs one version of a package at a time.
FFMPEG7 := $(VENV)/encoders/ffmpeg-7.0
$(FFMPEG7): $(BIN)/python
	rm -rf $(VENV)/encoders && mkdir -p $(VENV)/encoders
	$(BIN)/pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
		--platform manylinux2014_x86_64 --dest $(VENV)/encoders imageio-ffmpeg==0.6.0
	$(BIN)/python -c 'import sys, zipfile; \
		wheel = zipfile.ZipFile(sys.argv[1]); \
		name, = [n for n in wheel.namelist() if "/binaries/ffmpeg-" in n]; \
		open(sys.argv[2], "wb").write(wheel.read(name))' $(VENV)/encoders/imageio_ffmpeg-0.6.0-*.whl $@
	chmod +x $@

test: lint typecheck $(FFMPEG7)
	$(BIN)/pytest

# Retake the README's screenshots (real server, FFmpeg and headless Chromium).
screenshots: $(VENV)/.dev
	STREAM_SYNC_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/e2e/test_screenshots.py

# The ingest benchmark of issue 8: stream-sync beside nginx-rtmp, results in benchmarks/results/
# (about half an hour; as root it installs nginx + libnginx-mod-rtmp when missing).
bench: $(VENV)/.runtime
	dpkg -s nginx libnginx-mod-rtmp >/dev/null 2>&1 || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx libnginx-mod-rtmp)
	$(BIN)/python -m benchmarks.ingest $(ARGS)

# Coverage-guided fuzzing of the RTMP core (issue 9): 2.5 million inputs into each of the four
# targets in tests/fuzz, two at a time; figures in benchmarks/results/fuzz.md (1 to 1.5 hours).
fuzz: $(VENV)/.dev
	$(BIN)/python -m benchmarks.fuzz $(ARGS)

# Fold new seeds (from the captures) and what `make fuzz` found into tests/fuzz/corpus,
# keeping only the inputs that add coverage (libFuzzer's -merge=1).
FUZZ_TARGETS := server session amf0 media
fuzz-corpus: $(VENV)/.dev
	rm -rf build/fuzz/seeds
	$(BIN)/python -m tests.fuzz.seeds build/fuzz/seeds
	for target in $(FUZZ_TARGETS); do \
		mkdir -p tests/fuzz/corpus/$$target build/fuzz/$$target && \
		$(BIN)/python -m tests.fuzz.run $$target -merge=1 tests/fuzz/corpus/$$target \
			build/fuzz/seeds/$$target build/fuzz/$$target || exit 1; \
	done

# Re-pin every dependency (needs pip-tools in the venv: make install-dev && .venv/bin/pip install pip-tools).
lock:
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links --extra dev --output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
