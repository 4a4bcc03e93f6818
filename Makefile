# Two entry points for newcomers: `make demo` and `make test`. Both set everything up first.
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: setup demo test lint types unit bench vectors clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/voipgw demo

lint: setup
	$(BIN)/ruff check ratchet voipgw tests
	$(BIN)/ruff format --check ratchet voipgw tests

types: setup
	$(BIN)/mypy

# The fast subset (under 2 minutes here): no test that starts real processes or takes seconds.
unit: setup
	$(BIN)/pytest -q -m "not integration"

test: setup
	$(BIN)/ruff check ratchet voipgw tests
	$(BIN)/ruff format --check ratchet voipgw tests
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: setup
	$(BIN)/voipgw bench crypto
	$(BIN)/voipgw bench call
	$(BIN)/voipgw bench gateway
	$(BIN)/voipgw bench scaleout

vectors: setup
	$(PY) -m tests.vectors.generate

# Hardening (docs/RELIABILITY.md). fuzz: atheris on every parser target, then hypothesis with a large budget.
.PHONY: fuzz reliability
FUZZ_SECONDS ?= 60
fuzz: setup
	$(BIN)/pip install -q -e '.[fuzz]'
	$(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS)
	VOIPGW_FUZZ_EXAMPLES=5000 $(BIN)/pytest -q -p no:cacheprovider tests/fuzz/test_parsers.py tests/fuzz/test_structured.py

reliability: setup
	$(PY) -m tests.reliability.impair_report

# Load: hold SOAK_CALLS pass-through calls through two gateways for SOAK_SECONDS, sampling loss, latency, memory and
# file descriptors; fails on a lost call, a sample over 1 % late/lost, or growth. Default: 80 % of the capacity
# measured here (docs/RELIABILITY.md), for 30 minutes. Not in CI.
.PHONY: soak
SOAK_CALLS ?= 120
SOAK_SECONDS ?= 1800
soak: setup
	$(BIN)/voipgw bench soak --calls $(SOAK_CALLS) --duration $(SOAK_SECONDS) --out soak.json

# Churn: sipp places PCMU calls (INVITE, key exchange, transcoded audio, BYE) through the two gateways at rising rates
# beside CHURN_BACKGROUND measured calls; reports the largest rate held (0 failed calls, < 1 % late/lost), then runs it
# for CHURN_CONFIRM seconds. Not in CI. Measured here: 20 background calls leave room for 2 calls/s of 10 s calls.
.PHONY: churn
CHURN_BACKGROUND ?= 20
CHURN_HOLD ?= 10
CHURN_CONFIRM ?= 300
churn: setup
	$(BIN)/voipgw bench churn --background $(CHURN_BACKGROUND) --hold $(CHURN_HOLD) --confirm $(CHURN_CONFIRM) --out churn.json

# The README's picture of the web phone in a call: the real browser test (Kamailio, a gateway with [web], a voipgw
# softphone, headless Chromium) saves the page while the call is up.
.PHONY: screenshots
screenshots: setup
	VOIPGW_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/python -m pytest -q -p no:cacheprovider tests/web/test_browser.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
